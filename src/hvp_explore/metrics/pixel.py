"""The mean squared pixel difference as a metric in residual form (a reference)."""

from __future__ import annotations

import math

import torch

from hvp_explore.metrics.base import PerceptualMetric

__all__ = ["PixelMetric"]


class PixelMetric(PerceptualMetric):
    r"""Mean squared pixel difference, :math:`d = \frac1N \lVert x - x_0 \rVert^2`, residual :math:`(x - x_0) / \sqrt N`.

    A simple reference metric (N = C H W); any number of channels, any dtype.
    """

    name = "pixel"

    def residual(self, x: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        self._check_pair(x, x0)
        n = x.shape[1] * x.shape[2] * x.shape[3]
        return ((x - x0) / math.sqrt(n)).flatten(1)

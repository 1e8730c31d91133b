"""Perceptual distances between solutions: all pairs in one batched pass of the metric's residual."""

from __future__ import annotations

from collections.abc import Callable

import torch

from hvp_explore.operators.base import frozen_modules

__all__ = ["pairwise_distances"]


def pairwise_distances(metric: Callable, images: torch.Tensor, *, chunk: int = 256) -> torch.Tensor:
    r"""Perceptual distances between all pairs of images, (N, N), float64.

    For a metric with a residual form, :math:`d(x_i, x_j) = \|r(x_i, x_0) - r(x_j, x_0)\|^2` for any
    fixed :math:`x_0` (the residual is a difference of feature maps), so one batched pass gives all
    N^2 distances; a plain callable is evaluated on every pair.
    """
    N = images.shape[0]
    if N == 0:
        return torch.zeros(0, 0, dtype=torch.float64)
    with frozen_modules(metric), torch.no_grad():
        if callable(getattr(metric, "residual", None)):
            ref = images[:1]
            R = torch.cat([metric.residual(images[i : i + chunk], ref) for i in range(0, N, chunk)])
            # Centred, the Gram matrix keeps the precision of the residual itself without a float64 copy of R.
            R = R - R.mean(0, keepdim=True)
            sq = R.pow(2).sum(1)
            D = (sq[:, None] + sq[None, :] - 2 * R @ R.T).to(torch.float64).clamp_min(0)
            D.fill_diagonal_(0)
            return 0.5 * (D + D.T)
        D = torch.zeros(N, N, dtype=torch.float64)
        iu = torch.triu_indices(N, N, 1)
        for start in range(0, iu.shape[1], chunk):
            a, b = iu[0, start : start + chunk], iu[1, start : start + chunk]
            D[a, b] = metric(images[a], images[b]).to(torch.float64)
        return D + D.T

"""Perceptual distances between solutions: all pairs in one batched pass of the metric's residual, or a streamed summary.

Up to :data:`PAIRWISE_MATRIX_MAX` solutions the (N, N) matrix is formed; beyond, only its minimum, mean and
maximum are accumulated block by block (:func:`pairwise_summary`), so memory grows linearly in N.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from hvp_explore.operators.base import frozen_modules

__all__ = ["pairwise_distances", "pairwise_summary", "distances_to", "PAIRWISE_MATRIX_MAX"]

#: Largest number of solutions whose (N, N) distance matrix is formed (8 MB in float64); beyond it, a summary.
PAIRWISE_MATRIX_MAX = 1024


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
            R = _features(metric, images, chunk)
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


def _features(metric, images: torch.Tensor, chunk: int) -> torch.Tensor:
    """Residuals of every image against the first one: differences of rows are differences of features."""
    return torch.cat([metric.residual(images[i : i + chunk], images[:1]) for i in range(0, images.shape[0], chunk)])


def distances_to(metric: Callable, images: torch.Tensor, reference: torch.Tensor, *, chunk: int = 256) -> torch.Tensor:
    """Perceptual distance of each image to ``reference`` (1, C, H, W), (N,), float64: memory linear in N."""
    with frozen_modules(metric), torch.no_grad():
        return torch.cat([metric(images[i : i + chunk], reference) for i in range(0, images.shape[0], chunk)]).to(torch.float64)


def pairwise_summary(metric: Callable, images: torch.Tensor, *, chunk: int = 256) -> dict:
    r"""Minimum, mean and maximum of the distances between distinct images, without the (N, N) matrix.

    For a metric with a residual form the N feature rows are kept (linear in N) and the squared
    distances :math:`\lVert r_i - r_j \rVert^2` are formed ``chunk`` rows at a time; a plain callable is
    evaluated pair by pair in chunks.

    Returns:
        ``{"min", "mean", "max"}`` (None each for fewer than two images).
    """
    N = images.shape[0]
    if N < 2:
        return {"min": None, "mean": None, "max": None}
    low, high, total, count = float("inf"), float("-inf"), 0.0, 0
    with frozen_modules(metric), torch.no_grad():
        if callable(getattr(metric, "residual", None)):
            R = _features(metric, images, chunk)
            R = R - R.mean(0, keepdim=True)
            sq = R.pow(2).sum(1)
            for i in range(0, N, chunk):
                block = (sq[i : i + chunk, None] + sq[None, :] - 2 * R[i : i + chunk] @ R.T).to(torch.float64).clamp_min(0)
                rows = torch.arange(i, min(i + chunk, N))
                upper = torch.arange(N)[None, :] > rows[:, None]  # each pair once
                vals = block[upper]
                if vals.numel():
                    low, high = min(low, float(vals.min())), max(high, float(vals.max()))
                    total, count = total + float(vals.sum()), count + vals.numel()
        else:
            for i in range(N - 1):
                for j in range(i + 1, N, chunk):
                    vals = metric(images[i : i + 1].expand(min(chunk, N - j), *images.shape[1:]), images[j : j + chunk]).to(torch.float64)
                    low, high = min(low, float(vals.min())), max(high, float(vals.max()))
                    total, count = total + float(vals.sum()), count + vals.numel()
    return {"min": low, "mean": total / count, "max": high}

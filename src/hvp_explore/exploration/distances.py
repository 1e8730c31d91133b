"""Perceptual distances between solutions: all pairs in one batched pass of the metric's residual, or a streamed summary.

Up to :data:`PAIRWISE_MATRIX_MAX` solutions the (N, N) matrix is formed; beyond, only its minimum, mean and
maximum are accumulated block by block (:func:`pairwise_summary`), so memory grows linearly in N.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from hvp_explore.operators.base import frozen_modules
from hvp_explore.operators.memory import batch_limit

__all__ = ["pairwise_distances", "pairwise_summary", "distances_to", "unobserved_share", "PAIRWISE_MATRIX_MAX"]

#: Largest number of solutions whose (N, N) distance matrix is formed (8 MB in float64); beyond it, a summary.
PAIRWISE_MATRIX_MAX = 1024
#: Images per batch of the metric where no CPU limit applies (a GPU: memory is the limit).
UNLIMITED_CHUNK = 256


def _chunk(images: torch.Tensor, chunk: int | None) -> int:
    """``chunk``, else the batch that still pays on a CPU (:func:`~hvp_explore.operators.memory.batch_limit`), else 256.

    On a CPU a large batch runs slower per image: the summary of 100 face images (64 x 64 RGB, EfficientNet-Lite0 at
    128 x 128) took 1.62 s in one batch against 0.61 s in batches of 21, the limit, and 0.67 s in batches of 10.
    """
    return chunk or batch_limit(images[:1]) or UNLIMITED_CHUNK


def pairwise_distances(metric: Callable, images: torch.Tensor, *, chunk: int | None = None) -> torch.Tensor:
    r"""Perceptual distances between all pairs of images, (N, N), float64.

    For a metric with a residual form, :math:`d(x_i, x_j) = \|r(x_i, x_0) - r(x_j, x_0)\|^2` for any
    fixed :math:`x_0` (the residual is a difference of feature maps), so one batched pass gives all
    N^2 distances; a plain callable is evaluated on every pair.
    """
    N = images.shape[0]
    if N == 0:
        return torch.zeros(0, 0, dtype=torch.float64)
    chunk = _chunk(images, chunk)
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


def distances_to(metric: Callable, images: torch.Tensor, reference: torch.Tensor, *, chunk: int | None = None) -> torch.Tensor:
    """Perceptual distance of each image to ``reference`` (1, C, H, W), (N,), float64: memory linear in N."""
    chunk = _chunk(images, chunk)
    with frozen_modules(metric), torch.no_grad():
        return torch.cat([metric(images[i : i + chunk], reference) for i in range(0, images.shape[0], chunk)]).to(torch.float64)


def pairwise_summary(metric: Callable, images: torch.Tensor, *, chunk: int | None = None) -> dict:
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
    chunk = _chunk(images, chunk)
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


def unobserved_share(forward, images: torch.Tensor, reference: torch.Tensor, *, metric: Callable | None = None) -> dict:
    r"""Where the solutions' diversity lives: the share of their change that the measurements cannot see.

    With :math:`P = I - A^+ A` the projector onto the null space of A (:meth:`ForwardOperator.unobserved`:
    the hole for inpainting, the detail a downsampling removes for super-resolution) and
    :math:`\Delta_i = x_i - x_0`:

    - ``from_first``: :math:`\sum_i \|P \Delta_i\|^2 / \sum_i \|\Delta_i\|^2`, the energy of the change from the
      first solution that lies in the unobserved part;
    - ``pairwise``: the same over all pairs, :math:`\sum_{i<j} \|P(x_i - x_j)\|^2 / \sum_{i<j} \|x_i - x_j\|^2`
      (by :math:`\sum_{i<j} \|a_i - a_j\|^2 = N \sum_i \|a_i\|^2 - \|\sum_i a_i\|^2`, linear in N);
    - ``per_solution``: each solution's own fraction;
    - ``dimension_share``: :math:`(N - \mathrm{rank} A) / N`, the fraction a change spread evenly would have
      (the hole's share of the image for inpainting);
    - ``perceptual_pairwise_mean``: with a ``metric``, the mean pairwise perceptual distance between the
      images :math:`x_0 + P \Delta_i` (each solution's unobserved change alone, on the first solution):
      the diversity where the data is missing.

    Fractions are scale-free; ``None`` where there is no change.

    Args:
        forward: The forward operator (with ``unobserved``).
        images: Solutions (N, C, H, W) in [-1, 1].
        reference: The first solution (1, C, H, W) or (C, H, W).
        metric: Optional perceptual metric for ``perceptual_pairwise_mean``.
    """
    reference = reference.reshape(1, *images.shape[1:]).to(images.dtype)
    with torch.no_grad():
        delta = (images - reference).to(torch.float64)
        hidden = forward.unobserved(delta)
        total, part = delta.flatten(1).pow(2).sum(1), hidden.flatten(1).pow(2).sum(1)
        N = images.shape[0]

        def spread(a: torch.Tensor) -> float:
            return float(N * a.flatten(1).pow(2).sum() - a.sum(0).pow(2).sum())

        def ratio(num: float, den: float) -> float | None:
            return num / den if den > 0 else None

        out = {"from_first": ratio(float(part.sum()), float(total.sum())),
               "pairwise": ratio(spread(hidden), spread(delta)) if N > 1 else None,
               "per_solution": [ratio(float(p), float(t)) for p, t in zip(part, total)],
               "dimension_share": forward.unobserved_dim / forward.num_pixels}
        if metric is not None:
            composites = (reference + hidden.to(images.dtype)).clamp(-1, 1)
            out["perceptual_pairwise_mean"] = pairwise_summary(metric, composites)["mean"]
    return out

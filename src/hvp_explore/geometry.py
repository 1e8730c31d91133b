r"""The latent-space geometry of a generator (Wang & Ponce, ICLR 2021): its perceptual metric at many latents.

At each latent :math:`z_i` of a sample from the prior, the perceptual metric
:math:`H(z_i) = \tfrac12 \nabla^2_z d(G(z), G(z_i))` (:func:`~hvp_explore.operators.perceptual_hessian`) and
its top-k eigenpairs :math:`(\lambda_{ij}, u_{ij})`. What GAN-Geometry reads from them:

- **anisotropy**: how steep each spectrum is: :math:`\lambda_1 / \lambda_k`, the share of the top
  eigenvalue in the top-k, and the effective number of directions :math:`\exp(-\sum_j p_j \log p_j)`,
  :math:`p_j = \lambda_j / \sum_{j \le k} \lambda_j`;
- **consistency**: how much the top-k eigenspaces of two latents overlap,
  :math:`O_{ij} = \|U_i^T U_j\|_F^2 / k \in [0, 1]` (1: the same space; :math:`k / n` for random spaces);
- **the average metric** :math:`\bar H = \frac1L \sum_i H(z_i)` and its top eigenvectors, the latent axes
  that change the image most on average, and each latent's overlap with them;
- **the axes as images**: strips :math:`G(z_s + t\,\bar u_a)`, :math:`t \in [-t_a, t_a]`, with :math:`t_a`
  the step whose predicted perceptual change :math:`t^2 \bar\lambda_a` is ``span`` times that between two
  random images of the generator (capped at :math:`\sqrt n`).

Where the exact route is cheapest (a metric with a Jacobian of at most about twice as many columns as a
Krylov solve needs products: the 100-d face generator), each metric is formed densely from its Jacobian,
:math:`H = J^T J`, so the whole spectrum is known and the average is exact; otherwise the top-k come from
:func:`~hvp_explore.eigen.top_eigenpairs` and the average metric's from the mean of the operators
(:func:`~hvp_explore.operators.mean_operator`), matrix-free.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from hvp_explore.eigen.solvers import exact_route, top_eigenpairs
from hvp_explore.exploration.steps import default_eta_max, geometric_eta_max, perceptual_budget
from hvp_explore.io._progress import progress_bar
from hvp_explore.operators.base import frozen_modules, mean_operator, module_dtype_device
from hvp_explore.operators.curvature import perceptual_hessian
from hvp_explore.settings import (DEFAULT_GEOMETRY_AXES, DEFAULT_GEOMETRY_K, DEFAULT_GEOMETRY_LATENTS, DEFAULT_GEOMETRY_SPAN,
                                  DEFAULT_GEOMETRY_STRIP_LATENTS, DEFAULT_GEOMETRY_STRIP_STEPS, DEFAULT_TOL)

__all__ = ["LatentGeometry", "latent_geometry", "subspace_overlaps", "anisotropy"]


@dataclass(frozen=True)
class LatentGeometry:
    r"""The perceptual metric of a generator at many latents, and what it says about the latent space.

    Attributes:
        latents: (L, n) the latents :math:`z_i`.
        values: (L, k) top eigenvalues at each latent, descending.
        vectors: (L, n, k) their eigenvectors.
        spectra: (L, n) whole spectra when the metrics were formed densely, else ``None``.
        overlaps: (L, L) :math:`O_{ij} = \|U_i^T U_j\|_F^2 / k`, the consistency of the top-k eigenspaces.
        average_values: (k,) top eigenvalues of the average metric.
        average_vectors: (n, k) its eigenvectors, the average top axes.
        alignment: (L,) overlap of each latent's top-k with the average's.
        random_overlap: :math:`k / n`, the expected overlap of random k-dimensional spaces.
        anisotropy: Per-latent arrays ``ratio`` (:math:`\lambda_1/\lambda_k`), ``top_share`` and ``effective_dim``.
        strips: (A, S, T, C, H, W) images along the top ``A`` average axes from ``S`` latents, ``T`` steps each.
        strip_steps: (A, T) the steps :math:`t` of each axis's strip.
        dense: Whether the metrics were formed densely (exact route) or solved matrix-free.
        matvecs: Products used (metric solves and the average).
        seconds: Wall time per stage (``metrics``, ``average``, ``strips``, ``total``).
        converged: (L,) whether every pair of each latent converged (True for the dense route).
        info: Solver notes (the choice, tolerance, the perceptual budget of the strips).
    """

    latents: torch.Tensor
    values: torch.Tensor
    vectors: torch.Tensor
    spectra: torch.Tensor | None
    overlaps: torch.Tensor
    average_values: torch.Tensor
    average_vectors: torch.Tensor
    alignment: torch.Tensor
    random_overlap: float
    anisotropy: dict
    strips: torch.Tensor
    strip_steps: torch.Tensor
    dense: bool
    matvecs: int
    seconds: dict
    converged: torch.Tensor
    info: dict = field(default_factory=dict, compare=False)

    def summary(self) -> dict:
        """Medians and means a report quotes (numbers only)."""
        L = self.overlaps.shape[0]
        off = self.overlaps[~torch.eye(L, dtype=torch.bool)] if L > 1 else self.overlaps.reshape(-1)
        return {
            "latents": L, "k": int(self.values.shape[1]), "n": int(self.latents.shape[1]),
            "median_ratio": float(self.anisotropy["ratio"].median()),
            "median_top_share": float(self.anisotropy["top_share"].median()),
            "median_effective_dim": float(self.anisotropy["effective_dim"].median()),
            "mean_overlap": float(off.mean()), "min_overlap": float(off.min()), "random_overlap": self.random_overlap,
            "mean_alignment": float(self.alignment.mean()),
            "average_ratio": float(self.average_values[0] / self.average_values[-1]),
            "dense": self.dense, "matvecs": self.matvecs, "all_converged": bool(self.converged.all()),
        }


def subspace_overlaps(bases: torch.Tensor, other: torch.Tensor | None = None) -> torch.Tensor:
    r""":math:`\|U_i^T V_j\|_F^2 / k` for orthonormal bases ``U_i`` (L, n, k) and ``V_j`` (M, n, k) (default: the same).

    1 when two spaces coincide, 0 when they are orthogonal, :math:`k / n` on average for random spaces.
    """
    other = bases if other is None else other
    k = bases.shape[-1]
    return torch.einsum("ink,jnl->ijkl", bases, other).pow(2).sum(dim=(2, 3)) / k


def anisotropy(values: torch.Tensor) -> dict:
    r"""Steepness of spectra (rows of ``values``, descending, positive): :math:`\lambda_1/\lambda_k`, the top share and
    the effective number of directions :math:`\exp(H(p))`, :math:`p = \lambda / \sum \lambda` over the top-k."""
    v = values.clamp_min(0.0)
    p = v / v.sum(dim=1, keepdim=True).clamp_min(1e-300)
    entropy = -(p * p.clamp_min(1e-300).log()).sum(dim=1)
    return {"ratio": v[:, 0] / v[:, -1].clamp_min(1e-300), "top_share": p[:, 0], "effective_dim": entropy.exp()}


def latent_geometry(generator: Callable, metric: Callable, *, latents: int | torch.Tensor = DEFAULT_GEOMETRY_LATENTS,
                    k: int = DEFAULT_GEOMETRY_K, axes: int = DEFAULT_GEOMETRY_AXES, strip_latents: int = DEFAULT_GEOMETRY_STRIP_LATENTS,
                    strip_steps: int = DEFAULT_GEOMETRY_STRIP_STEPS, span: float = DEFAULT_GEOMETRY_SPAN, tol: float = DEFAULT_TOL,
                    dense: bool | None = None, seed: int = 0, quiet: bool | None = None) -> LatentGeometry:
    r"""The perceptual metric of ``generator`` at many latents: spectra, their consistency, the average metric's axes.

    Args:
        generator: Maps latents (B, n) to images (B, C, H, W) in [-1, 1] (with ``latent_dim``, or pass latents).
        metric: A perceptual metric (with a residual form for the Gauss-Newton products, or any ``d(x, x0)``).
        latents: How many latents to draw from :math:`\mathcal N(0, I)` (seeded), or the latents (L, n) themselves.
        k: Eigenpairs per latent (and of the average metric), 1 <= k < n.
        axes: Average axes drawn as image strips (at most k; 0 for none).
        strip_latents: Latents each strip starts from (the first ones).
        strip_steps: Images per strip (odd: the middle one is the latent itself).
        span: Perceptual change at a strip's ends, as a fraction of that between random images of the generator.
        tol: Relative eigensolver tolerance of the matrix-free route.
        dense: Form each metric densely from its Jacobian (``None``: when that is the cheaper exact route).
        seed: Seeds the latents and the solvers.
        quiet: Hide the progress bar (``None``: shown on a terminal only).

    Returns:
        A :class:`LatentGeometry`.

    Raises:
        ValueError: k, axes, strip sizes or span out of range, or latents of the wrong shape.
    """
    n = int(getattr(generator, "latent_dim", 0)) or (latents.shape[1] if isinstance(latents, torch.Tensor) else 0)
    if isinstance(latents, torch.Tensor):
        if latents.ndim != 2 or latents.shape[1] != n or latents.shape[0] < 1:
            raise ValueError(f"latents must have shape (L, n) with n = {n}, got {tuple(latents.shape)}")
        Z = latents.detach()
    else:
        if isinstance(latents, bool) or not isinstance(latents, int) or latents < 1:
            raise ValueError(f"latents must be a positive integer or an (L, n) tensor, got {latents!r}")
        if n < 2:
            raise ValueError("the generator has no latent_dim: pass the latents (L, n)")
        Z = torch.randn(latents, n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    dtype, device = module_dtype_device(generator) or (torch.float32, torch.device("cpu"))
    Z = Z.to(device=device, dtype=dtype)
    L = Z.shape[0]
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k < n:
        raise ValueError(f"k must be between 1 and n - 1 = {n - 1}, got {k!r}")
    if isinstance(axes, bool) or not isinstance(axes, int) or not 0 <= axes <= k:
        raise ValueError(f"axes must be between 0 and k = {k}, got {axes!r}")
    for name, value in (("strip_latents", strip_latents), ("strip_steps", strip_steps)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if not (isinstance(span, (int, float)) and not isinstance(span, bool) and span > 0 and math.isfinite(span)):
        raise ValueError(f"span must be a positive number, got {span!r}")
    strip_latents = min(strip_latents, L)
    seconds, matvecs = {}, 0
    t_start = time.perf_counter()

    values, vectors, spectra, grams, ops, converged, solvers = [], [], [], [], [], [], []
    with progress_bar("perceptual metric at each latent", L, quiet=quiet) as bar:
        for i in range(L):
            op = perceptual_hessian(generator, metric, Z[i])
            if i == 0:  # one generator and metric: the same route at every latent
                dense = dense if dense is not None else exact_route(op, k) is not None
            if dense:
                H = _dense_metric(op)
                w, V = torch.linalg.eigh(H)
                w, V = w.flip(0), V.flip(1)
                values.append(w[:k])
                vectors.append(V[:, :k])
                spectra.append(w)
                grams.append(H)
                converged.append(True)
                solvers.append("dense")
            else:
                res = top_eigenpairs(op, k, tol=tol, seed=seed, probe=False, warn=False)
                values.append(res.values)
                vectors.append(res.vectors)
                ops.append(op)
                converged.append(res.all_converged)
                solvers.append(res.solver)
            matvecs += op.num_matvecs
            bar.advance()
    seconds["metrics"] = time.perf_counter() - t_start
    values_t, vectors_t = torch.stack(values), torch.stack(vectors)

    t0 = time.perf_counter()
    if dense:
        w, V = torch.linalg.eigh(torch.stack(grams).mean(0))
        average_values, average_vectors = w.flip(0)[:k], V.flip(1)[:, :k]
    else:
        res = top_eigenpairs(mean_operator(ops), k, tol=tol, seed=seed, probe=False, warn=False)
        average_values, average_vectors = res.values, res.vectors
        matvecs += res.matvecs + res.check_matvecs
        converged.append(res.all_converged)
    seconds["average"] = time.perf_counter() - t0

    overlaps = subspace_overlaps(vectors_t)
    alignment = subspace_overlaps(vectors_t, average_vectors[None]).reshape(-1)

    t0 = time.perf_counter()
    A = min(axes, k)
    budget = perceptual_budget(generator, metric, Z[0], seed=seed) if A else 0.0
    if A:
        caps = geometric_eta_max(average_values[:A].clamp_min(0.0), span * budget).clamp_max(default_eta_max(n))
        steps = caps[:, None] * torch.linspace(-1.0, 1.0, strip_steps, dtype=torch.float64)[None]
        directions = average_vectors[:, :A].T.to(device=device, dtype=dtype)  # (A, n)
        points = Z[:strip_latents, None, None, :] + steps.to(device=device, dtype=dtype)[None, :, :, None] * directions[None, :, None, :]
        with frozen_modules(generator), torch.no_grad():
            images = generator(points.reshape(-1, n)).detach().cpu()
        strips = images.reshape(strip_latents, A, strip_steps, *images.shape[1:]).transpose(0, 1)
    else:
        steps = torch.zeros(0, strip_steps, dtype=torch.float64)
        strips = torch.zeros(0, strip_latents, strip_steps, *tuple(getattr(generator, "image_shape", (1, 1, 1))))
    seconds["strips"] = time.perf_counter() - t0
    seconds["total"] = time.perf_counter() - t_start
    return LatentGeometry(
        latents=Z.detach().cpu(), values=values_t.cpu(), vectors=vectors_t.cpu(),
        spectra=torch.stack(spectra).cpu() if len(spectra) == L else None, overlaps=overlaps.cpu(),
        average_values=average_values.cpu(), average_vectors=average_vectors.cpu(), alignment=alignment.cpu(),
        random_overlap=k / n, anisotropy={key: v.cpu() for key, v in anisotropy(values_t).items()}, strips=strips,
        strip_steps=steps.cpu(), dense=bool(dense), matvecs=matvecs, seconds=seconds,
        converged=torch.tensor(converged[:L]), info={"solvers": sorted(set(solvers)), "tol": tol, "perceptual_budget": budget,
                                                       "span": span, "average_converged": bool(all(converged[L:]))})


def _dense_metric(op) -> torch.Tensor:
    """The whole metric in float64: :math:`J^T J` from the Jacobian (Gauss-Newton operators), else n products."""
    if hasattr(op, "jacobian"):
        J = op.jacobian().to(torch.float64)
        return J.T @ J
    H = op.dense().to(torch.float64)
    return 0.5 * (H + H.T)

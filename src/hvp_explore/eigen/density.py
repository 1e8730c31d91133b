r"""The spectral density of a symmetric operator by stochastic Lanczos quadrature, batched over probes.

For a unit probe :math:`q` and :math:`m` Lanczos steps from it, the tridiagonal :math:`T_m = S \Theta S^T`
gives a Gauss quadrature of the spectral measure :math:`\mu_q = \sum_i (q^T u_i)^2 \delta_{\lambda_i}`: nodes
:math:`\theta_j` (Ritz values) and weights :math:`\tau_j = S_{1j}^2` that reproduce its moments exactly up
to degree :math:`2m - 1`, :math:`\sum_j \tau_j \theta_j^p = q^T H^p q`. Averaged over random probes
(:math:`E[\mu_q]` is the uniform measure on the eigenvalues) and smoothed by a Gaussian of width
:math:`\sigma`, it is the density of the spectrum (Lin, Saad, Yang 2016; PyHessian's ``density``, Ghorbani
et al. 2019; Papyan 2020):

.. math::

    \phi(t) = \frac{1}{P} \sum_{p=1}^{P} \sum_j \tau_{pj} \frac{1}{\sqrt{2\pi}\sigma} e^{-(t - \theta_{pj})^2 / 2\sigma^2},
    \qquad \int \phi = 1.

All ``P`` probes run together: each Lanczos step is one batched product of ``P`` columns, and each probe
keeps its own basis, fully reorthogonalised (the memory is ``P * steps * n`` float64 numbers). A probe whose
Krylov space closes early (an invariant subspace) stops there; its quadrature is then exact.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch

from hvp_explore.eigen._methods import float64_products
from hvp_explore.eigen.trace import PROBE_DISTRIBUTIONS, probe_vectors
from hvp_explore.operators.base import CurvatureOperator

__all__ = ["SpectralDensity", "spectral_density"]


@dataclass(frozen=True)
class SpectralDensity:
    r"""A smoothed spectral density and the quadrature it comes from.

    Attributes:
        grid: (G,) points :math:`t` where the density is evaluated, float64.
        density: (G,) :math:`\phi(t)`, integrating to about 1 over the grid.
        sigma: The Gaussian width.
        nodes: (P, m) Ritz values of every probe (NaN beyond a probe's own length).
        weights: (P, m) their quadrature weights (0 beyond a probe's length); each row sums to 1.
        steps: (P,) Lanczos steps each probe took.
        matvecs: Products used.
        seconds: Wall time.
        n: The operator's size (densities count eigenvalues per unit, times n).
        info: ``distribution``, ``breakdowns`` (probes that closed early).
    """

    grid: torch.Tensor
    density: torch.Tensor
    sigma: float
    nodes: torch.Tensor
    weights: torch.Tensor
    steps: torch.Tensor
    matvecs: int
    seconds: float
    n: int
    info: dict = field(default_factory=dict, compare=False)

    def moment(self, p: int) -> float:
        r"""The quadrature's estimate of :math:`\mathrm{tr}(H^p) / n` (exact for each probe up to degree ``2 m - 1``)."""
        nodes = torch.nan_to_num(self.nodes, nan=0.0)
        return float((self.weights * nodes.pow(p)).sum(dim=1).mean())

    @property
    def trace(self) -> float:
        r"""The trace estimate :math:`n\,E[q^T H q]` (Hutchinson with the same probes)."""
        return self.n * self.moment(1)

    def evaluate(self, t: torch.Tensor | float, sigma: float | None = None) -> torch.Tensor:
        """The smoothed density at the points ``t`` (another ``sigma`` smooths differently)."""
        return _smooth(torch.as_tensor(t, dtype=torch.float64).reshape(-1), self.nodes, self.weights,
                       self.sigma if sigma is None else sigma)


def _smooth(t: torch.Tensor, nodes: torch.Tensor, weights: torch.Tensor, sigma: float) -> torch.Tensor:
    valid = ~torch.isnan(nodes)
    x, w = nodes[valid].to(t.device), weights[valid].to(t.device)
    kernel = torch.exp(-0.5 * ((t[:, None] - x[None, :]) / sigma) ** 2) / (math.sqrt(2 * math.pi) * sigma)
    return kernel @ w / nodes.shape[0]


def spectral_density(op: CurvatureOperator, *, num_probes: int = 8, steps: int = 64, sigma: float | None = None,
                     grid: torch.Tensor | int = 1000, distribution: str = "rademacher", seed: int = 0) -> SpectralDensity:
    r"""Estimate the spectral density of a symmetric operator by stochastic Lanczos quadrature.

    Args:
        op: A :class:`~hvp_explore.operators.base.CurvatureOperator`.
        num_probes: Random probes, run together (each Lanczos step is one batched call of this many products).
        steps: Lanczos steps per probe (at most n); the quadrature resolves ``steps`` Ritz values per probe
            and is exact for polynomials up to degree ``2 * steps - 1``.
        sigma: Gaussian width; default 1% of the range of the Ritz values.
        grid: The points of the returned density, or their number (spread over the Ritz values' range
            widened by ``5 sigma`` at each end).
        distribution: ``"rademacher"`` or ``"normal"`` probes (normalised to unit length).
        seed: Seeds the probes.

    Returns:
        A :class:`SpectralDensity`; ``plot_spectral_density`` (:mod:`hvp_explore.io.figures`) draws it.

    Raises:
        ValueError: Non-positive probes, steps or sigma, an unknown distribution, or a grid of fewer than 2 points.
    """
    if distribution not in PROBE_DISTRIBUTIONS:
        raise ValueError(f"distribution must be one of {', '.join(PROBE_DISTRIBUTIONS)}, got {distribution!r}")
    for name, value in (("num_probes", num_probes), ("steps", steps)):
        if not (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if sigma is not None and not sigma > 0:
        raise ValueError(f"sigma must be positive, got {sigma!r}")
    n = op.shape[0]
    m = min(steps, n)
    gen = torch.Generator().manual_seed(seed)
    start, t0 = op.num_matvecs, time.perf_counter()
    G = probe_vectors(n, num_probes, gen, distribution, op.device)
    q = G / G.norm(dim=0)
    basis = torch.zeros(num_probes, m, n, dtype=torch.float64, device=op.device)  # probe p's Lanczos vectors
    alpha = torch.zeros(num_probes, m, dtype=torch.float64)
    beta = torch.zeros(num_probes, m, dtype=torch.float64)
    length = torch.full((num_probes,), m, dtype=torch.long)
    active = torch.ones(num_probes, dtype=torch.bool)
    q_prev = torch.zeros_like(q)
    scale = 0.0
    for j in range(m):
        basis[:, j] = q.T
        cols = torch.nonzero(active).flatten()
        W = torch.zeros_like(q)
        W[:, cols] = float64_products(op, q[:, cols])
        a = (q * W).sum(dim=0)
        alpha[:, j] = a.cpu()
        W = W - q * a - q_prev * beta[:, j - 1].to(W.device) if j else W - q * a
        for _ in range(2):  # full reorthogonalisation against the probe's own basis ("twice is enough")
            coef = torch.einsum("pjn,np->pj", basis[:, : j + 1], W)
            W = W - torch.einsum("pjn,pj->np", basis[:, : j + 1], coef)
        b = W.norm(dim=0)
        scale = max(scale, float(a.abs().max()), float(b.max()))
        if j + 1 == m:
            break
        closed = active & (b.cpu() <= 1e-10 * max(scale, 1e-300))  # an invariant subspace: this probe's quadrature is exact
        length[closed] = j + 1
        active &= ~closed
        if not bool(active.any()):
            break
        beta[:, j] = torch.where(active, b.cpu(), torch.zeros_like(b.cpu()))
        q_prev, q = q, torch.where(active.to(W.device), W / b.clamp_min(1e-300), torch.zeros_like(W))
    nodes = torch.full((num_probes, m), math.nan, dtype=torch.float64)
    weights = torch.zeros(num_probes, m, dtype=torch.float64)
    for p in range(num_probes):
        L = int(length[p])
        T = torch.diag(alpha[p, :L]) + torch.diag(beta[p, : L - 1], 1) + torch.diag(beta[p, : L - 1], -1)
        theta, S = torch.linalg.eigh(T)
        nodes[p, :L], weights[p, :L] = theta, S[0].pow(2)
    valid = nodes[~torch.isnan(nodes)]
    low, high = float(valid.min()), float(valid.max())
    if sigma is None:
        sigma = 0.01 * (high - low) if high > low else 1e-3 * max(abs(high), 1.0)
    if isinstance(grid, int):
        if grid < 2:
            raise ValueError(f"grid must have at least 2 points, got {grid}")
        grid = torch.linspace(low - 5 * sigma, high + 5 * sigma, grid, dtype=torch.float64)
    grid = torch.as_tensor(grid, dtype=torch.float64).reshape(-1)
    if grid.numel() < 2:
        raise ValueError(f"grid must have at least 2 points, got {grid.numel()}")
    return SpectralDensity(grid=grid, density=_smooth(grid, nodes, weights, sigma), sigma=float(sigma), nodes=nodes,
                           weights=weights, steps=length, matvecs=op.num_matvecs - start, seconds=time.perf_counter() - t0,
                           n=n, info={"distribution": distribution, "breakdowns": int((length < m).sum())})

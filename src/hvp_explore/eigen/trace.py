r"""Stochastic trace and diagonal estimates of a symmetric operator: Hutchinson and Hutch++, batched over probes.

**Hutchinson** (Girard 1989, Hutchinson 1989): for probes :math:`g` with :math:`E[g g^T] = I` (Rademacher
by default), :math:`E[g^T H g] = \mathrm{tr}\,H` and :math:`E[g \odot H g] = \mathrm{diag}\,H`. With
Rademacher probes a sample's variance is :math:`2 (\|H\|_F^2 - \sum_i H_{ii}^2)`, dominated by the largest
eigenvalues, which curvature spectra have a few of.

**Hutch++** (Meyer, Musco, Musco, Woodruff 2021) removes them first: a sketch :math:`Y = H S` of ``sketch``
random columns gives an orthonormal :math:`Q` (the range of the top eigenvectors, approximately), whose
part of the trace is exact, :math:`\mathrm{tr}(Q^T H Q)` (``sketch`` more products), and Hutchinson
estimates the rest, :math:`\mathrm{tr}((I - QQ^T) H)`, from samples :math:`g^T (I - QQ^T) H g` whose
variance involves only the spectrum outside :math:`Q`. On the Hessian of a 2,202-parameter CNN the
variance of one sample drops from :math:`(0.44\,\mathrm{tr}\,H)^2` to :math:`(0.05\,\mathrm{tr}\,H)^2` with a
sketch of 10 columns. The diagonal comes with it (Diag++): :math:`\mathrm{diag}(QQ^T H)` exactly,
:math:`E[g \odot (I - QQ^T) H g]` for the rest, so the diagonal estimate sums to the trace estimate.

**Stopping rule.** Remainder probes come in batched blocks of ``block`` products until the standard
error of the estimate (the sample standard deviation of the remainder's samples over their square root
of count) is at most ``max(atol, rtol * |estimate|)``, or ``max_matvecs`` products are spent. The
reported 95% interval uses Student's t quantile of the samples (honest for a handful of blocks).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import scipy.stats
import torch

from hvp_explore.eigen._methods import float64_products, orthonormalise
from hvp_explore.operators.base import CurvatureOperator

__all__ = ["TraceEstimate", "estimate_trace", "estimate_diagonal", "TRACE_METHODS", "PROBE_DISTRIBUTIONS"]

TRACE_METHODS = ("hutch++", "hutchinson")
PROBE_DISTRIBUTIONS = ("rademacher", "normal")


@dataclass(frozen=True)
class TraceEstimate:
    r"""A stochastic estimate of :math:`\mathrm{tr}\,H` (and optionally of its diagonal).

    Attributes:
        estimate: The trace estimate.
        stderr: Its standard error (0 when the sketch captured the whole operator).
        interval: The 95% confidence interval ``(low, high)`` (Student's t on the remainder's samples).
        exact_part: :math:`\mathrm{tr}(Q^T H Q)`, the sketch's exact share (0 for Hutchinson).
        sketch: Columns of :math:`Q`.
        probes: Remainder samples (Hutchinson probes).
        matvecs: Products used (sketch, :math:`HQ` and probes).
        seconds: Wall time.
        method: ``"hutch++"`` or ``"hutchinson"``.
        converged: Whether the stopping rule on the standard error was met (else the budget ran out).
        diagonal: (n,) estimate of :math:`\mathrm{diag}\,H` when asked for, else ``None``.
        diagonal_stderr: (n,) standard errors of its entries, when asked for.
        info: ``rtol``, ``atol``, ``block``, ``distribution``, ``samples`` (the remainder's samples).
    """

    estimate: float
    stderr: float
    interval: tuple[float, float]
    exact_part: float
    sketch: int
    probes: int
    matvecs: int
    seconds: float
    method: str
    converged: bool
    diagonal: torch.Tensor | None = None
    diagonal_stderr: torch.Tensor | None = None
    info: dict = field(default_factory=dict, compare=False)

    def contains(self, value: float) -> bool:
        """Whether ``value`` lies in the 95% interval."""
        return self.interval[0] <= value <= self.interval[1]


def probe_vectors(n: int, b: int, gen: torch.Generator, distribution: str, device: torch.device) -> torch.Tensor:
    """Seeded probes drawn on the CPU in float64 (results do not depend on the device's RNG)."""
    if distribution == "rademacher":
        G = torch.randint(0, 2, (n, b), generator=gen, dtype=torch.float64).mul_(2).sub_(1)
    else:
        G = torch.randn(n, b, generator=gen, dtype=torch.float64)
    return G.to(device)


def estimate_trace(op: CurvatureOperator, *, method: str = "hutch++", rtol: float = 1e-2, atol: float = 0.0,
                   max_matvecs: int | None = None, sketch: int | None = None, block: int = 16, min_probes: int | None = None,
                   distribution: str = "rademacher", diagonal: bool = False, seed: int = 0) -> TraceEstimate:
    r"""Estimate :math:`\mathrm{tr}\,H` (and :math:`\mathrm{diag}\,H`) of a symmetric operator from batched products.

    Args:
        op: A :class:`~hvp_explore.operators.base.CurvatureOperator` (any symmetric operator, indefinite too).
        method: ``"hutch++"`` (deflate a sketch, then Hutchinson on the rest; the default) or ``"hutchinson"``.
        rtol: Stop once the standard error is at most ``rtol * |estimate|`` (or ``atol``).
        atol: Absolute standard error to stop at (whichever of the two is larger).
        max_matvecs: Product budget (default ``max(4 * sketch + 16 * block, 256)``, at most ``2 n``).
        sketch: Columns of the Hutch++ sketch (default ``min(20, n // 4)``, at least 1).
        block: Probes per batched product (the remainder's probes come in blocks of this many).
        min_probes: Remainder probes before the stopping rule applies (default ``block``, at least 2).
        distribution: ``"rademacher"`` (the default, lowest variance) or ``"normal"``.
        diagonal: Also estimate the diagonal (from the same products).
        seed: Seeds the sketch and the probes (same seed, same estimate on CPU).

    Returns:
        A :class:`TraceEstimate`.

    Raises:
        ValueError: An unknown method or distribution, or a non-positive tolerance, block or budget.
    """
    if method not in TRACE_METHODS:
        raise ValueError(f"method must be one of {', '.join(TRACE_METHODS)}, got {method!r}")
    if distribution not in PROBE_DISTRIBUTIONS:
        raise ValueError(f"distribution must be one of {', '.join(PROBE_DISTRIBUTIONS)}, got {distribution!r}")
    if not (rtol >= 0 and atol >= 0 and (rtol > 0 or atol > 0)):
        raise ValueError(f"rtol and atol must be non-negative and not both zero, got rtol={rtol}, atol={atol}")
    if not (isinstance(block, int) and block >= 1):
        raise ValueError(f"block must be a positive integer, got {block!r}")
    n = op.shape[0]
    s = 0 if method == "hutchinson" else min(n, sketch if sketch is not None else max(1, min(20, n // 4)))
    if s < 0 or (method == "hutch++" and s < 1):
        raise ValueError(f"sketch must be a positive integer, got {sketch!r}")
    budget = max_matvecs if max_matvecs is not None else min(max(4 * s + 16 * block, 256), max(2 * n, 4 * s + 2 * block))
    if budget < 2 * s + 2:
        raise ValueError(f"max_matvecs = {budget} leaves no probe after the sketch's 2 x {s} products")
    min_probes = max(2, min_probes if min_probes is not None else block)
    gen = torch.Generator().manual_seed(seed)
    start = op.num_matvecs
    t0 = time.perf_counter()

    Q = torch.zeros(n, 0, dtype=torch.float64, device=op.device)
    exact, diag_exact = 0.0, torch.zeros(n, dtype=torch.float64, device=op.device)
    if s:
        Y = float64_products(op, probe_vectors(n, s, gen, distribution, op.device))
        Q = orthonormalise(Y)  # columns of an invariant subspace (or of a rank below s) are dropped
        if Q.shape[1]:
            HQ = float64_products(op, Q)
            exact = float((Q * HQ).sum())
            diag_exact = (Q * HQ).sum(dim=1)  # diag(Q Q^T H), H symmetric

    samples, diag_sum, diag_sq = [], torch.zeros(n, dtype=torch.float64, device=op.device), None
    if diagonal:
        diag_sq = torch.zeros(n, dtype=torch.float64, device=op.device)
    converged = Q.shape[1] >= n  # the sketch spans the whole space: the trace is exact
    while not converged:
        used = op.num_matvecs - start
        b = min(block, budget - used)
        if b < 1:
            break
        G = probe_vectors(n, b, gen, distribution, op.device)
        R = float64_products(op, G)
        if Q.shape[1]:
            R = R - Q @ (Q.T @ R)  # (I - QQ^T) H g
        samples += (G * R).sum(dim=0).tolist()
        if diagonal:
            D = G * R
            diag_sum += D.sum(dim=1)
            diag_sq += D.pow(2).sum(dim=1)
        if len(samples) >= min_probes:
            mean, err = _mean_stderr(samples)
            converged = err <= max(atol, rtol * abs(exact + mean))
    mean, err = _mean_stderr(samples) if samples else (0.0, 0.0)
    estimate = exact + mean
    quantile = float(scipy.stats.t.ppf(0.975, len(samples) - 1)) if len(samples) > 1 else math.inf
    half = quantile * err if err > 0 or len(samples) > 1 else (0.0 if converged else math.inf)
    diag_est = diag_err = None
    if diagonal:
        count = max(len(samples), 1)
        diag_est = diag_exact + diag_sum / count
        if len(samples) > 1:
            var = (diag_sq - diag_sum.pow(2) / count) / (count - 1)
            diag_err = (var.clamp_min(0.0) / count).sqrt()
        else:
            diag_err = torch.zeros(n, dtype=torch.float64, device=op.device) if converged else torch.full((n,), math.inf,
                                                                                                          dtype=torch.float64)
    return TraceEstimate(estimate=estimate, stderr=err, interval=(estimate - half, estimate + half), exact_part=exact,
                         sketch=Q.shape[1], probes=len(samples), matvecs=op.num_matvecs - start,
                         seconds=time.perf_counter() - t0, method=method, converged=bool(converged), diagonal=diag_est,
                         diagonal_stderr=diag_err,
                         info={"rtol": rtol, "atol": atol, "block": block, "distribution": distribution, "budget": budget,
                               "samples": samples})


def _mean_stderr(samples: list[float]) -> tuple[float, float]:
    t = torch.tensor(samples, dtype=torch.float64)
    if t.numel() < 2:
        return float(t.mean()), math.inf
    return float(t.mean()), float(t.std() / math.sqrt(t.numel()))


def estimate_diagonal(op: CurvatureOperator, **kwargs) -> TraceEstimate:
    r"""Estimate :math:`\mathrm{diag}\,H` (Diag++ or Hutchinson), with the trace: :func:`estimate_trace` with ``diagonal=True``.

    The result's ``diagonal`` and ``diagonal_stderr`` hold the estimate and its per-entry standard errors;
    its stopping rule is the trace's (pass ``rtol``, ``max_matvecs``...).
    """
    return estimate_trace(op, diagonal=True, **kwargs)

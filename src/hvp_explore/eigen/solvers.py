r"""Top-k eigenpairs of curvature operators, and of the pencil behind the generalized directions.

:func:`top_eigenpairs` runs one of several solvers on a
:class:`~hvp_explore.operators.base.CurvatureOperator` and returns an :class:`EigenResult` whose residuals
:math:`\|H v_i - \lambda_i v_i\|` are true residuals (free for the solvers that keep the products,
one batched block of k products otherwise). A pair is converged when its residual is at most
``tol * |lambda_i|`` (as ARPACK; floored at the rounding level of the products): by Bauer-Fike its
eigenvalue is then within ``tol * |lambda_i|`` of an exact one, and its eigenvector error is at most
about ``tol * lambda_i / gap_i``.

Solvers (see ``docs/operators.md`` for how to pick one):

=================  ===================================================================================
``"dense"``        reference: ``dense()`` (n products) then ``eigh``
``"jacobian"``     exact, for Gauss-Newton operators: the m x n Jacobian by m batched vjps, then its SVD (or eigh of J^T J)
``"arpack"``       scipy ``eigsh`` (implicitly restarted Lanczos) on ``to_scipy()``, single vectors
``"lanczos"``      torch-native Lanczos (gpytorch / linear_operator ``lanczos_tridiag``), single vectors
``"lobpcg"``       scipy ``lobpcg``: whole blocks through ``matmat``
``"block-krylov"`` randomised block Krylov with Rayleigh-Ritz: a few large batched blocks
``"auto"``         the cheapest of ``jacobian`` / ``dense`` / ``block-krylov`` by a cost model
=================  ===================================================================================
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from hvp_explore.eigen import _methods
from hvp_explore.operators.base import CurvatureOperator
from hvp_explore.settings import DEFAULT_EIGEN_TOL, DEFAULT_SOLVER, SOLVERS

__all__ = ["EigenResult", "ConvergenceWarning", "SOLVERS", "SOLVER_REGISTRY", "top_eigenpairs", "choose_solver",
           "subspace_cosines"]

#: Solver name -> implementation, for every name of :data:`SOLVERS` but ``"auto"`` (which picks one of
#: these). Each takes ``(op, k, *, tol, gen, max_matvecs, oversample)`` and returns ``(values, vectors, info)``.
SOLVER_REGISTRY: dict[str, Callable[..., _methods.Solution]] = {
    "dense": _methods.dense,
    "jacobian": _methods.jacobian,
    "arpack": _methods.arpack,
    "lanczos": _methods.lanczos,
    "lobpcg": _methods.lobpcg,
    "block-krylov": _methods.block_krylov,
}

# Cost model of "auto", in units of one batched vector-Jacobian product (one Jacobian row), fitted to
# benchmarks/crossover.py on the embedded DCGAN (docs/benchmarks.md): a Gauss-Newton product (jvp +
# vjp; forward mode costs about twice reverse mode) is about 2.5 units, and block Krylov needs about
# 2 p + 20 products for a block of p = k + oversampling columns on these steep spectra. Without a
# Jacobian route (double-backprop operators) the product cost cancels: only product counts compare.
GGN_PRODUCT_COST = 2.5
BLOCK_KRYLOV_PRODUCTS = (2.0, 20.0)  # products ~ a * p + b


class ConvergenceWarning(UserWarning):
    """Some eigenpairs did not reach the tolerance; they are returned and flagged, not dropped."""


@dataclass(frozen=True)
class EigenResult:
    r"""Top eigenpairs of a symmetric operator.

    Attributes:
        values: (k,) eigenvalues, descending, float64.
        vectors: (n, k) orthonormal eigenvectors (columns), float64, on the operator's device.
        residuals: (k,) :math:`\|H v_i - \lambda_i v_i\|`.
        converged: (k,) bool, ``residual <= tol * |values|`` (floored at the products' rounding level).
        matvecs: Vector products the solver used (a Jacobian row counts as one).
        check_matvecs: Extra products spent only to verify residuals (0 when they came free).
        seconds: Wall time, verification included.
        solver: The solver that ran (``"auto"`` records its choice here).
        tol: The relative tolerance.
        requested: The k asked for (``values`` holds fewer only when ARPACK stopped before finding them).
        info: Solver notes (steps, restarts, blocks; the reason for auto's choice).
    """

    values: torch.Tensor
    vectors: torch.Tensor
    residuals: torch.Tensor
    converged: torch.Tensor
    matvecs: int
    check_matvecs: int
    seconds: float
    solver: str
    tol: float
    requested: int
    info: dict = field(default_factory=dict, compare=False)

    @property
    def k(self) -> int:
        return int(self.values.numel())

    @property
    def all_converged(self) -> bool:
        return self.k == self.requested and bool(self.converged.all())

    @property
    def max_relative_residual(self) -> float:
        """Largest residual relative to its eigenvalue, ``max_i r_i / |lambda_i|`` (``tol`` bounds it when converged).

        Exact zero eigenvalues (beyond the rank of a Gauss-Newton operator) count relative to ``lambda_1``.
        """
        if not self.k:
            return float("nan")
        scale = torch.where(self.values.abs() > 0, self.values.abs(), self.values.abs().max().clamp_min(1e-300))
        return float((self.residuals / scale).max())


def subspace_cosines(U: torch.Tensor, V: torch.Tensor) -> torch.Tensor:
    """Cosines of the principal angles between the column spans of orthonormal U and V, descending.

    All equal to 1 when the subspaces coincide; the smallest is the cosine of the largest angle.
    """
    U, V = torch.as_tensor(U, dtype=torch.float64), torch.as_tensor(V, dtype=torch.float64).to(torch.as_tensor(U).device)
    return torch.linalg.svdvals(U.T @ V).clamp(max=1.0)


def choose_solver(op: CurvatureOperator, k: int, *, oversample: int | None = None) -> tuple[str, str]:
    """The solver ``"auto"`` picks for ``op`` and ``k``, with the reason (a cost-model comparison)."""
    n = op.shape[0]
    per_product = GGN_PRODUCT_COST
    p = min(n, k + (oversample if oversample is not None else max(10, k // 2)))
    a, b = BLOCK_KRYLOV_PRODUCTS
    costs = {"dense": n * per_product, "block-krylov": (a * p + b) * per_product}
    if hasattr(op, "jacobian"):
        costs["jacobian"] = float(op.residual_dim)
    choice = min(costs, key=costs.get)
    reason = ", ".join(f"{name} ~{cost:.0f}" for name, cost in sorted(costs.items(), key=lambda kv: kv[1]))
    return choice, f"cost in vjp units: {reason}"


def _check_k(op: CurvatureOperator, k: int, solver: str) -> None:
    n = op.shape[0]
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    if k > n:
        raise ValueError(f"k must be at most the latent dimension n = {n}, got {k}")
    if solver in ("arpack", "lanczos") and k >= n:
        raise ValueError(f"solver {solver!r} needs k < n = {n}; use solver='dense' for the whole spectrum")
    if solver == "jacobian" and not hasattr(op, "jacobian"):
        raise ValueError("solver 'jacobian' needs a Gauss-Newton operator (method='ggn')")


def top_eigenpairs(op: CurvatureOperator, k: int, *, solver: str = DEFAULT_SOLVER, tol: float = DEFAULT_EIGEN_TOL, seed: int = 0,
                   max_matvecs: int | None = None, oversample: int | None = None, warn: bool = True) -> EigenResult:
    r"""The k largest eigenpairs of a symmetric PSD operator, matrix-free.

    Args:
        op: The operator (e.g. from :func:`~hvp_explore.measurement_hessian`).
        k: Number of eigenpairs, 1 <= k <= n (k < n for ``"arpack"`` and ``"lanczos"``).
        solver: One of :data:`SOLVERS`.
        tol: Relative tolerance: pairs with :math:`\|H v - \lambda v\| \le tol\,|\lambda|` are converged.
        seed: Seeds the start vectors (deterministic results on CPU).
        max_matvecs: Product budget of the iterative solvers; ``None`` = the solver's own limit.
        oversample: Extra block columns of ``"block-krylov"`` and ``"lobpcg"`` (default max(10, k/2)
            and max(5, k/2)).
        warn: Emit a :class:`ConvergenceWarning` when some pairs are unconverged.

    Returns:
        An :class:`EigenResult`. Non-convergence never raises: unconverged pairs are returned with
        ``converged`` False (and fewer than k pairs only when ARPACK gave up before finding them).

    Raises:
        ValueError: Unknown solver, or k out of range.
    """
    if solver not in SOLVERS:
        raise ValueError(f"unknown solver {solver!r}; choose one of {', '.join(SOLVERS)}")
    if not tol > 0:
        raise ValueError(f"tol must be positive, got {tol}")
    _check_k(op, k, solver)
    info: dict = {}
    if solver == "auto":
        solver, info["auto"] = choose_solver(op, k, oversample=oversample)
    gen = torch.Generator().manual_seed(seed)
    start_matvecs = op.num_matvecs
    t0 = time.perf_counter()
    method = SOLVER_REGISTRY[solver]
    values, vectors, solver_info = method(op, k, tol=tol, gen=gen, max_matvecs=max_matvecs, oversample=oversample)
    matvecs = op.num_matvecs - start_matvecs
    HX = solver_info.pop("HX", None)
    if HX is None and values.numel():
        HX = op.matmat(vectors.to(op.dtype)).to(torch.float64)
    residuals = (HX - vectors * values).norm(dim=0) if values.numel() else values.new_zeros(0)
    seconds = time.perf_counter() - t0
    converged = residuals <= _methods.thresholds(values, tol, op.dtype)
    info.update(solver_info)
    result = EigenResult(values=values, vectors=vectors, residuals=residuals, converged=converged, matvecs=matvecs,
                         check_matvecs=op.num_matvecs - start_matvecs - matvecs, seconds=seconds, solver=solver, tol=tol,
                         requested=k, info=info)
    if warn and not result.all_converged:
        warnings.warn(f"{op.name}: {int((~result.converged).sum()) + k - result.k} of {k} eigenpairs did not reach "
                      f"tol={tol:g} with solver {solver!r} (largest relative residual {result.max_relative_residual:.2e})",
                      ConvergenceWarning, stacklevel=2)
    return result

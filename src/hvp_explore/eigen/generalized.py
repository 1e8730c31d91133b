r"""Top eigenpairs of the pencil :math:`H_X d = \mu (H_Y + \epsilon I) d` ("generalized directions").

The top generalized eigenvectors maximise the Rayleigh quotient
:math:`\frac{d^T H_X d}{d^T (H_Y + \epsilon I) d}`: perceptual change per unit of measurement change
(plus a small step-size penalty). Solvers:

- ``"whitened"``: exact whitening by :math:`W = (H_Y + \epsilon I)^{-1/2}` when :math:`H_Y` is a
  Gauss-Newton operator with a short residual (its Jacobian ``J`` has m rows): with the thin SVD
  :math:`J = U \Sigma V^T`,
  :math:`W = V \operatorname{diag}((\sigma^2 + \epsilon)^{-1/2}) V^T + \epsilon^{-1/2} (I - V V^T)`.
  The standard problem :math:`W H_X W y = \mu y` is solved matrix-free (``H_X`` products only) and
  :math:`d = W y`. As :math:`\epsilon \to 0` the directions tend to the top eigenvectors of
  :math:`P H_X P` with :math:`P` the projector off the range of :math:`H_Y`.
- ``"lobpcg"``: scipy's LOBPCG with ``B = H_Y + eps I`` as an operator (any ``H_Y``): the solver
  ``"lobpcg"`` of :func:`~hvp_explore.eigen.solvers.top_eigenpairs` given ``B = H_Y.shifted(eps)``.
- ``"dense"``: LAPACK on the dense pencil. A Gauss-Newton operator gives its matrix as :math:`J^T J` from its
  Jacobian (n forward-mode columns, kept by the operator: the Jacobian eigensolve of H_X already took them),
  any other operator by n products. ``"auto"`` takes it when whitening does not apply, both operators are
  Gauss-Newton and n <= :data:`DENSE_PENCIL_MAX_N`: on the face generator (n = 100, m = 768 or 9,216) LOBPCG
  needed 1,330-3,170 products and stopped short of tol in 4 of 6 held-out runs, where the dense pencil is exact
  and costs n Jacobian columns of each operator.
"""

from __future__ import annotations

import time
import warnings

import torch

from hvp_explore.eigen import _methods
from hvp_explore.eigen.solvers import ConvergenceWarning, EigenResult, top_eigenpairs
from hvp_explore.operators.base import CurvatureOperator
from hvp_explore.settings import DEFAULT_EIGEN_TOL, GENERALIZED_SOLVERS

__all__ = ["top_generalized_eigenpairs", "WhitenedOperator", "GENERALIZED_SOLVERS", "DENSE_PENCIL_MAX_N", "DENSE_PENCIL_MAX_BYTES",
           "pencil_solver"]

#: Largest latent dimension for which ``"auto"`` solves the pencil densely (an ``eigh`` of this size takes about 0.1 s).
DENSE_PENCIL_MAX_N = 1024
#: Largest Jacobian (m x n, in the operator's dtype) ``"auto"`` forms for the dense pencil; above it, LOBPCG.
DENSE_PENCIL_MAX_BYTES = 1 << 30


def _dense64(op: CurvatureOperator) -> torch.Tensor:
    """The operator's matrix in float64: the kept :math:`J^T J` of a Gauss-Newton operator, else ``dense()`` (n products)."""
    if hasattr(op, "gram"):
        return op.gram()
    M = op.dense().to(torch.float64)
    return 0.5 * (M + M.T)


def _dense_affordable(A: CurvatureOperator, B: CurvatureOperator) -> bool:
    n = A.shape[0]
    return n <= DENSE_PENCIL_MAX_N and all(hasattr(op, "gram") and op.residual_dim * n * op.dtype.itemsize <= DENSE_PENCIL_MAX_BYTES
                                           for op in (A, B))


def pencil_solver(A: CurvatureOperator, B: CurvatureOperator) -> str:
    """The solver ``solver="auto"`` of :func:`top_generalized_eigenpairs` takes for the pencil of ``A`` against ``B``."""
    if hasattr(B, "jacobian") and B.residual_dim <= 4 * A.shape[0]:
        return "whitened"
    return "dense" if _dense_affordable(A, B) else "lobpcg"


class WhitenedOperator(CurvatureOperator):
    r""":math:`C = W A W` with :math:`W = (J^T J + \epsilon I)^{-1/2}` given by the thin SVD of ``J``."""

    def __init__(self, A: CurvatureOperator, J: torch.Tensor, eps: float):
        super().__init__(A.shape[0], dtype=torch.float64, device=A.device)
        _, s, Vh = torch.linalg.svd(J.to(torch.float64), full_matrices=False)
        self.A, self.V, self.eps = A, Vh.T, eps
        self._w = (s.pow(2) + eps).rsqrt()
        self.name = f"whitened {A.name}"

    def _scale(self, X: torch.Tensor, w: torch.Tensor, w_perp: float) -> torch.Tensor:
        coef = self.V.T @ X
        return self.V @ (coef * w[:, None]) + w_perp * (X - self.V @ coef)

    def whiten(self, X: torch.Tensor) -> torch.Tensor:
        """:math:`W X`."""
        return self._scale(X, self._w, self.eps ** -0.5)

    def unwhiten(self, X: torch.Tensor) -> torch.Tensor:
        """:math:`W^{-1} X = (J^T J + \\epsilon I)^{1/2} X`."""
        return self._scale(X, self._w.reciprocal(), self.eps ** 0.5)

    def _matmat(self, V: torch.Tensor) -> torch.Tensor:
        WV = self.whiten(V)
        return self.whiten(self.A.matmat(WV.to(self.A.dtype)).to(torch.float64))


def _pencil_result(A: CurvatureOperator, B: CurvatureOperator, Bs: CurvatureOperator, values: torch.Tensor, D: torch.Tensor, *,
                   k: int, matvecs: int, seconds: float, solver: str, tol: float, info: dict, warn: bool,
                   dense: tuple[torch.Tensor, torch.Tensor] | None = None) -> EigenResult:
    r"""Unit-length directions with their pencil residuals :math:`\|A d - \mu (B + \epsilon I) d\|`.

    ``Bs`` is :math:`B + \epsilon I` (``B.shifted(eps)``; its products count toward B's). A pair counts
    as converged when its residual is at most ``tol`` times :math:`\|A d_1\| + \mu_1 \|(B + \epsilon I) d_1\|`
    (the scale of the top pair, ``info["residual_scale"]``), the analogue of ``tol * lambda_1`` for a standard problem;
    ``max_relative_residual`` is relative to that scale.
    Verification costs k products of A and of B, none when the dense matrices are given (``dense``: they are
    the operators, from their Jacobians, as the Jacobian eigensolver's residuals are).
    """
    D = D / D.norm(dim=0)
    check_start = A.num_matvecs + B.num_matvecs
    if dense is not None:
        AD, BD = dense[0] @ D, dense[1] @ D
    else:
        AD = A.matmat(D.to(A.dtype)).to(torch.float64)
        BD = Bs.matmat(D.to(Bs.dtype)).to(torch.float64)
    residuals = (AD - BD * values).norm(dim=0)
    scale = float(AD[:, 0].norm() + values[0].abs() * BD[:, 0].norm()) if values.numel() else 0.0
    converged = residuals <= tol * scale
    info["residual_scale"] = scale  # what max_relative_residual divides by: the test's own scale, not each mu
    result = EigenResult(values=values, vectors=D, residuals=residuals, converged=converged, matvecs=matvecs,
                         check_matvecs=A.num_matvecs + B.num_matvecs - check_start, seconds=seconds, solver=solver, tol=tol,
                         requested=k, info=info)
    if warn and not result.all_converged:
        warnings.warn(f"generalized pencil: {int((~converged).sum())} of {values.numel()} pairs did not reach tol={tol:g} "
                      f"with solver {solver!r}", ConvergenceWarning, stacklevel=3)
    return result


def top_generalized_eigenpairs(A: CurvatureOperator, B: CurvatureOperator, k: int, *, eps: float = 1e-3, solver: str = "auto",
                               tol: float = DEFAULT_EIGEN_TOL, seed: int = 0, max_matvecs: int | None = None,
                               inner_solver: str = "auto", probe: bool = True, warn: bool = True) -> EigenResult:
    r"""Top-k pairs of :math:`A d = \mu (B + \epsilon I) d` (A = :math:`H_X`, B = :math:`H_Y`), matrix-free in A.

    Args:
        A: The perceptual operator :math:`H_X`.
        B: The measurement operator :math:`H_Y` (a Gauss-Newton operator enables ``"whitened"``).
        k: Number of pairs.
        eps: The regularisation :math:`\epsilon > 0`, in units of B's eigenvalues.
        solver: ``"auto"`` (whitened when B has a Jacobian of at most 4n rows, else dense when both are Gauss-Newton
            operators with n <= :data:`DENSE_PENCIL_MAX_N` and Jacobians under :data:`DENSE_PENCIL_MAX_BYTES`, else lobpcg),
            ``"whitened"``, ``"lobpcg"`` or ``"dense"``.
        tol: Relative tolerance of the inner eigensolver.
        seed: Seeds the start vectors.
        max_matvecs: Product budget of the iterative solver.
        inner_solver: Solver of the whitened standard problem (see :func:`top_eigenpairs`).
        probe: Whether an ``"auto"`` inner solver times a probe (see :func:`top_eigenpairs`).

    Returns:
        An :class:`~hvp_explore.eigen.solvers.EigenResult` with ``values`` = :math:`\mu` (descending) and
        ``vectors`` = unit-norm directions (B-orthogonal, not orthonormal); ``residuals`` are
        :math:`\|A d - \mu (B + \epsilon I) d\|` for unit d.
    """
    if solver not in GENERALIZED_SOLVERS:
        raise ValueError(f"unknown generalized solver {solver!r}; choose one of {', '.join(GENERALIZED_SOLVERS)}")
    if not eps > 0:
        raise ValueError(f"eps must be positive, got {eps}")
    n = A.shape[0]
    if B.shape != A.shape:
        raise ValueError(f"A and B must have the same shape, got {A.shape} and {B.shape}")
    if not 1 <= k <= n:
        raise ValueError(f"k must be between 1 and n = {n}, got {k}")
    has_jacobian = hasattr(B, "jacobian")
    if solver == "auto":
        solver = pencil_solver(A, B)
    if solver == "whitened" and not has_jacobian:
        raise ValueError("solver 'whitened' needs B as a Gauss-Newton operator (method='ggn'); use 'lobpcg'")
    t0 = time.perf_counter()
    start = A.num_matvecs + B.num_matvecs
    info: dict = {"eps": eps}
    Bs = B.shifted(eps)
    dense = None
    if solver == "dense":
        Ad, Bd = _dense64(A), _dense64(B) + eps * torch.eye(n, dtype=torch.float64, device=A.device)
        values, D = _methods.scipy_generalized_dense(Ad.cpu().numpy(), Bd.cpu().numpy(), k)
        values, D = torch.from_numpy(values).to(A.device), torch.from_numpy(D).to(A.device)
        dense = (Ad, Bd)
    elif solver == "whitened":
        C = WhitenedOperator(A, B.jacobian(), eps)
        inner = top_eigenpairs(C, k, solver=inner_solver, tol=tol, seed=seed, max_matvecs=max_matvecs, probe=probe, warn=False)
        values, D = inner.values, C.whiten(inner.vectors)
        notes = {key: value for key, value in inner.info.items() if key != "HX"}
        info["inner"] = {"solver": inner.solver, "matvecs": inner.matvecs, **notes}
    else:
        gen = torch.Generator().manual_seed(seed)
        values, D, lobpcg_info = _methods.lobpcg(A, k, B=Bs, tol=tol, gen=gen, max_matvecs=max_matvecs)
        info.update(lobpcg_info)
    matvecs = A.num_matvecs + B.num_matvecs - start
    return _pencil_result(A, B, Bs, values, D, k=k, matvecs=matvecs, seconds=time.perf_counter() - t0, solver=solver, tol=tol,
                          info=info, warn=warn, dense=dense)

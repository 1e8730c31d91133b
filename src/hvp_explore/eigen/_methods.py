"""Private implementations of the top-k symmetric eigensolvers behind :func:`hvp_explore.top_eigenpairs`.

Every solver takes a :class:`~hvp_explore.operators.base.CurvatureOperator`, the number of wanted pairs ``k``,
a relative tolerance ``tol``, a seeded ``torch.Generator`` and a product budget, and returns
``(values, vectors, info)`` in float64 on the operator's device, values descending. ``info`` holds
solver-specific notes (steps, restarts, blocks). Convergence is judged by the caller from true
residuals, so each solver only needs to aim for the criterion of :func:`thresholds`.
"""

from __future__ import annotations

import warnings

import numpy as np
import scipy.linalg
import scipy.sparse.linalg
import torch

with warnings.catch_warnings():
    # linear_operator decorates helpers with torch.jit.script, deprecated in recent torch
    warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.*", category=FutureWarning)
    from linear_operator.utils.lanczos import lanczos_tridiag

from hvp_explore.operators.base import CurvatureOperator

Solution = tuple[torch.Tensor, torch.Tensor, dict]


def floor_level(theta: torch.Tensor, dtype: torch.dtype) -> float:
    r"""The rounding level of the products: :math:`\epsilon_{dtype} |\theta_1|`, below which no residual can be trusted.

    Measured on H_X of the embedded default in float32 against float64 products: a product's error is
    about :math:`2 \epsilon \|H v\|` for the top eigenvector and below :math:`0.15\,\epsilon \lambda_1`
    for the others, so one machine epsilon of :math:`\lambda_1` bounds it (and lets the exact zero
    eigenvalues of a rank-deficient operator pass).
    """
    top = float(theta.abs().max()) if theta.numel() else 0.0
    return torch.finfo(dtype).eps * top


def thresholds(theta: torch.Tensor, tol: float, dtype: torch.dtype) -> torch.Tensor:
    r"""Residual bounds of converged Ritz pairs: :math:`tol \cdot |\theta_i|`, as ARPACK, floored at :func:`floor_level`.

    A bound relative to each eigenvalue (not to :math:`\lambda_1`) is what keeps the eigenvectors of
    small eigenvalues accurate in a strongly anisotropic spectrum: the eigenvector error is about
    residual / gap, and gaps shrink with the eigenvalues. Pairs that pass only by the floor are
    reported as such by :func:`~hvp_explore.eigen.solvers.top_eigenpairs` (``info["floor"]``).
    """
    return (tol * theta.abs()).clamp_min(floor_level(theta, dtype))


def _randn(n: int, b: int, gen: torch.Generator, device: torch.device) -> torch.Tensor:
    """Seeded Gaussian block, drawn on the CPU so results do not depend on the device's RNG."""
    return torch.randn(n, b, generator=gen, dtype=torch.float64).to(device)


def _products(op: CurvatureOperator, V: torch.Tensor) -> torch.Tensor:
    """Products in the operator's own dtype, returned in float64 (solvers work in float64)."""
    return op.matmat(V.to(op.dtype)).to(torch.float64)


def _orthonormalise(X: torch.Tensor, against: torch.Tensor | None = None, *, drop_tol: float = 1e-10) -> torch.Tensor:
    """Orthonormal basis of the columns of X, made orthogonal to ``against`` (classical Gram-Schmidt, twice).

    Columns that are (numerically) inside the span of ``against`` or of each other are dropped, so
    an invariant subspace ends the iteration instead of filling it with noise.
    """
    scale = X.norm(dim=0).clamp_min(torch.finfo(X.dtype).tiny)
    X = X / scale
    for _ in range(2):  # "twice is enough" (Kahan, Parlett)
        if against is not None and against.shape[1]:
            X = X - against @ (against.T @ X)
    Q, R = torch.linalg.qr(X)
    keep = R.diagonal().abs() > drop_tol
    Q = Q[:, keep]
    if against is not None and against.shape[1] and Q.shape[1]:
        Q = Q - against @ (against.T @ Q)
        Q, _ = torch.linalg.qr(Q)
    return Q


def dense(op: CurvatureOperator, k: int, **_) -> Solution:
    """Reference: the full matrix by n products, then ``eigh`` in float64."""
    M = op.dense().to(torch.float64)
    M = 0.5 * (M + M.T)
    values, vectors = torch.linalg.eigh(M)
    values, vectors = values.flip(0)[:k], vectors.flip(1)[:, :k]
    return values, vectors, {"HX": M @ vectors}


def jacobian(op: CurvatureOperator, k: int, *, gen: torch.Generator, **_) -> Solution:
    r"""Exact top-k of :math:`J^T J` from the full Jacobian (m vjps) and its SVD (``eigh`` of :math:`J^T J` when m >= n).

    The eigenvalues are the squared singular values, the eigenvectors the right singular vectors;
    when k exceeds the rank bound m, the remaining pairs have eigenvalue 0 and vectors spanning
    part of the null space (exact eigenpairs too).
    """
    J = op.jacobian().to(torch.float64)
    if J.shape[0] >= J.shape[1]:
        # A tall Jacobian (inpainting: 768 x 512): eigh of the n x n Gram matrix is ~2.5x faster than
        # the SVD. Squaring costs eigenvalue accuracy only below eps64 * lambda_1, far under the
        # float32 rounding floor of the products that judges convergence (thresholds()).
        values, vectors = torch.linalg.eigh(J.T @ J)
        values, vectors = values.flip(0).clamp_min(0.0), vectors.flip(1)
    else:
        _, s, Vh = torch.linalg.svd(J, full_matrices=False)
        values, vectors = s.pow(2), Vh.T
    if k > vectors.shape[1]:
        extra = _orthonormalise(_randn(op.shape[0], k - vectors.shape[1], gen, vectors.device), vectors)
        vectors = torch.cat([vectors, extra], dim=1)
        values = torch.cat([values, values.new_zeros(extra.shape[1])])
    values, vectors = values[:k], vectors[:, :k]
    return values, vectors, {"jacobian_rows": J.shape[0], "HX": J.T @ (J @ vectors)}


def arpack(op: CurvatureOperator, k: int, *, tol: float, gen: torch.Generator, max_matvecs: int | None, **_) -> Solution:
    """ARPACK's implicitly restarted Lanczos (scipy ``eigsh``, ``which="LA"``) on ``to_scipy()``."""
    n = op.shape[0]
    ncv = min(n, max(2 * k + 1, 20))
    maxiter = None if max_matvecs is None else max(1, (max_matvecs - ncv) // max(ncv - k, 1) + 1)
    v0 = torch.randn(n, generator=gen, dtype=torch.float64).numpy()
    info: dict = {"ncv": ncv}
    try:
        values, vectors = scipy.sparse.linalg.eigsh(op.to_scipy(), k=k, which="LA", v0=v0, ncv=ncv, tol=tol, maxiter=maxiter)
    except scipy.sparse.linalg.ArpackNoConvergence as exc:
        values, vectors = exc.eigenvalues, exc.eigenvectors
        info["arpack_error"] = "no convergence"
    order = np.argsort(values)[::-1]
    values = torch.from_numpy(np.ascontiguousarray(values[order])).to(op.device)
    vectors = torch.from_numpy(np.ascontiguousarray(vectors[:, order])).to(op.device)
    return values, vectors, info


def lanczos(op: CurvatureOperator, k: int, *, tol: float, gen: torch.Generator, max_matvecs: int | None, steps: int | None = None,
            **_) -> Solution:
    r"""Lanczos with full reorthogonalisation (gpytorch / linear_operator's ``lanczos_tridiag``).

    One run of m + 1 steps gives the m x m tridiagonal :math:`T_m` and the next coefficient
    :math:`\beta_m`; the Ritz pairs :math:`(\theta_i, Q_m s_i)` have residuals
    :math:`\beta_m |e_m^T s_i|` (exact in exact arithmetic, and full reorthogonalisation keeps them
    so), which decide convergence without extra products. Unconverged runs restart (explicit
    restart, Saad) from the sum of the wanted Ritz vectors with k more steps, within the product
    budget.
    """
    n = op.shape[0]
    budget = max(2, max_matvecs if max_matvecs is not None else 20 * max(k, 10))
    # 2k + k/4 steps resolve the top k of the steep spectra of generator metrics in one run (2k is
    # often just short of it); every restart adds k more steps.
    m = min(n, steps if steps is not None else 2 * k + max(5, k // 4))
    start = _randn(n, 1, gen, op.device)
    state = {"used": 0, "scale": None}

    def closure(q: torch.Tensor) -> torch.Tensor:
        Hq = _products(op, q)
        state["used"] += 1
        if state["scale"] is None:
            # lanczos_tridiag stops on an absolute |beta| <= 1e-6: work with the operator scaled
            # by ||H q0|| (between the smallest and the largest eigenvalue, and > 0 unless H q0 = 0).
            state["scale"] = float(Hq.norm()) or 1.0
        return Hq / state["scale"]

    restarts = 0
    while True:
        steps_now = min(m + 1, n, budget - state["used"])
        Q, T = lanczos_tridiag(closure, steps_now, torch.float64, op.device, (n, n), init_vecs=start, tol=1e-12)
        size = T.shape[0]
        if size == steps_now and 1 < size < n:  # a complete run: the last step supplies beta_m
            m_eff = size - 1
            beta, T_m, Q_m = float(T[m_eff, m_eff - 1]), T[:m_eff, :m_eff], Q[:, :m_eff]
        else:  # breakdown (an invariant subspace) or the whole space: the Ritz pairs are exact
            beta, T_m, Q_m = 0.0, T, Q
        theta, S = torch.linalg.eigh(T_m)
        theta, S = theta.flip(0), S.flip(1)
        kk = min(k, theta.numel())
        residual_estimates = beta * S[-1, :kk].abs()
        values, vectors = theta[:kk] * state["scale"], Q_m @ S[:, :kk]
        converged = bool((residual_estimates <= thresholds(theta[:kk], tol, op.dtype)).all()) and kk == k
        if converged or beta == 0.0 or m >= n or budget - state["used"] < 2:
            break
        restarts += 1
        start = vectors.sum(dim=1, keepdim=True)
        m = min(n, m + k)
    return values, vectors, {"steps": T_m.shape[0], "restarts": restarts,
                             "residual_estimates": residual_estimates * state["scale"]}


def lobpcg(op: CurvatureOperator, k: int, *, tol: float, gen: torch.Generator, max_matvecs: int | None,
           oversample: int | None = None, B: CurvatureOperator | None = None, **_) -> Solution:
    r"""scipy's LOBPCG on ``to_scipy()``: every iteration feeds whole blocks to ``matmat``.

    With ``B`` (symmetric positive definite, e.g. ``H_Y.shifted(eps)``) it solves the pencil
    :math:`A x = \mu B x` instead, and the vectors are B-orthonormal as LOBPCG returns them; without it
    they are orthonormalised. Both operators are bridged to scipy in float64 (``to_scipy()``).
    """
    n = op.shape[0]
    block = min(n, k + (oversample if oversample is not None else max(5, k // 2)))
    X0 = torch.randn(n, block, generator=gen, dtype=torch.float64).numpy()
    A, Bsp = op.to_scipy(), None if B is None else B.to_scipy()
    maxiter = 200 if max_matvecs is None else max(1, (max_matvecs - block) // (3 * block))
    # LOBPCG's tolerance is absolute and the spectrum's scale unknown: a short first pass (10
    # iterations) estimates the Ritz values, a second pass from its vectors aims at tol times the k-th.
    # Below n = 5 * block scipy solves densely instead (n products, whatever the tolerance): one pass.
    # The pencil keeps one pass at scipy's own tolerance: on the face generator's pencil the two passes
    # cost 3,258 products against 1,790 for the same directions (cosines >= 0.9996).
    target, start = (None if B is not None else 1e-300), X0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # non-convergence is judged from true residuals by the caller
        if n >= 5 * block and B is None:
            values, start = scipy.sparse.linalg.lobpcg(A, X0, B=Bsp, largest=True, tol=1e-300, maxiter=min(maxiter, 10))
            ordered = np.sort(np.abs(values))[::-1]
            # the k-th Ritz value, floored at the products' rounding level (as in thresholds())
            target = max(tol * ordered[min(k, len(values)) - 1], torch.finfo(op.dtype).eps * ordered[0], 1e-300)
        values, vectors = scipy.sparse.linalg.lobpcg(A, start, B=Bsp, largest=True, tol=target, maxiter=maxiter)
    order = np.argsort(values)[::-1][:k]
    values = torch.from_numpy(np.ascontiguousarray(values[order])).to(op.device)
    vectors = torch.from_numpy(np.ascontiguousarray(vectors[:, order])).to(op.device)
    if B is None:
        vectors = _orthonormalise(vectors)  # LOBPCG returns orthonormal columns up to rounding
    return values, vectors, {"block": block, "maxiter": maxiter}


def block_krylov(op: CurvatureOperator, k: int, *, tol: float, gen: torch.Generator, max_matvecs: int | None,
                 oversample: int | None = None, block: int | None = None,
                 start: tuple[torch.Tensor, torch.Tensor] | None = None, **_) -> Solution:
    r"""Block Krylov with Rayleigh-Ritz on the whole basis (block Lanczos, full reorthogonalisation), blocks of ``block``.

    Start from a seeded Gaussian block of ``b = block`` columns; each iteration applies the operator
    to one block (a single batched call), Rayleigh-Ritz on the accumulated basis :math:`Q` uses the
    stored products :math:`HQ` (no extra products), and the next block is the residual block
    :math:`H x_i - \theta_i x_i` of the first ``b`` Ritz pairs not yet converged among the top
    ``p = k + oversample`` (the residuals lie in the next Krylov space; converged pairs stop costing
    products, the pairs beyond k keep the gap open). Ritz residuals come free,
    :math:`R = (HQ) S - Q S \Theta`: equal to :math:`H (QS) - QS\Theta` up to the rounding of the products.

    ``block = 1`` is Lanczos (35 products for the top 20 of H_X of the embedded default at tol 1e-3);
    larger blocks take more products (50 at b = 4, 64 at 8, 100 at 20) in fewer batched calls, which
    pays while a batched product costs much less per vector than a single one. The default block is
    ``p`` (as in randomised subspace methods); ``top_eigenpairs(solver="auto")`` picks it from the
    measured cost of a product and of a block, and hands its probe vectors and their products as
    ``start`` = (V, HV) (float64): the first basis is then :math:`Q R = V`, :math:`HQ = (HV) R^{-1}`,
    with no new product.
    """
    n = op.shape[0]
    device = op.device
    p = min(n, k + (oversample if oversample is not None else max(10, k // 2)))
    b = min(n, block if block is not None else p)
    if b < 1:
        raise ValueError(f"block must be a positive integer, got {block}")
    budget = max_matvecs if max_matvecs is not None else max(30 * p, 10 * n // 4)
    if start is not None and start[0].shape[1] <= n:
        Q, R = torch.linalg.qr(start[0])
        HQ = torch.linalg.solve_triangular(R, start[1], upper=True, left=False)
    else:
        Q = _orthonormalise(_randn(n, b, gen, device))
        HQ = _products(op, Q)
    iterations = 1
    while True:
        T = Q.T @ HQ
        theta, S = torch.linalg.eigh(0.5 * (T + T.T))
        theta, S = theta.flip(0), S.flip(1)
        width = min(p, theta.numel())
        X, HX = Q @ S[:, :width], HQ @ S[:, :width]
        R = HX - X * theta[:width]
        converged = R.norm(dim=0) <= thresholds(theta[:width], tol, op.dtype)
        if (width >= k and bool(converged[:k].all())) or Q.shape[1] >= n or Q.shape[1] >= budget:
            break
        # Converged pairs are locked; the first b unconverged among the top p feed the next block.
        pending = torch.nonzero(~converged).flatten()[:b]
        # A basis still narrower than k whose Ritz pairs all converged grows by fresh random directions.
        grow = R[:, pending] if pending.numel() else _randn(n, b, gen, device)
        new = _orthonormalise(grow, Q)[:, : max(budget - Q.shape[1], 0)]
        if new.shape[1] == 0:  # the basis spans an invariant subspace, or the budget is spent
            break
        Q, HQ = torch.cat([Q, new], dim=1), torch.cat([HQ, _products(op, new)], dim=1)
        iterations += 1
    kk = min(k, theta.numel())
    return theta[:kk], X[:, :kk], {"block": b, "tracked": p, "iterations": iterations, "basis": Q.shape[1],
                                   "HX": HX[:, :kk]}


def scipy_generalized_dense(A: torch.Tensor, B: torch.Tensor, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k of the dense symmetric-definite pencil (A, B) with LAPACK (reference)."""
    values, vectors = scipy.linalg.eigh(A, B)
    return values[::-1][:k].copy(), vectors[:, ::-1][:, :k].copy()

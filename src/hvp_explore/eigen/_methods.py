"""Private implementations of the top-k symmetric eigensolvers behind :func:`hvp_explore.top_eigenpairs`.

Every solver takes a :class:`~hvp_explore.operators.base.CurvatureOperator`, the number of wanted pairs ``k``,
which end of the spectrum (``which``, one of :data:`WHICH`), a relative tolerance ``tol``, a seeded
``torch.Generator`` and a product budget, and returns ``(values, vectors, info)`` in float64 on the
operator's device, ordered as :func:`select` orders them. ``info`` holds solver-specific notes (steps,
restarts, blocks) and ``scale``, the largest magnitude of the spectrum the solver has seen (the rounding
floor of :func:`thresholds` is relative to it). Convergence is judged by the caller from true residuals,
so each solver only needs to aim for the criterion of :func:`thresholds`.
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
from hvp_explore.settings import WHICH

Solution = tuple[torch.Tensor, torch.Tensor, dict]

#: The ends of the spectrum a solve can ask for (``which``), and scipy's names of them.
WHICH_ALIASES = {"LA": "largest", "SA": "smallest", "LM": "magnitude", "BE": "both"}
#: scipy ``eigsh``'s name of each end.
ARPACK_WHICH = {v: k for k, v in WHICH_ALIASES.items()}


def check_which(which: str) -> str:
    """The canonical name of ``which`` (scipy's ``LA``, ``SA``, ``LM``, ``BE`` accepted).

    Raises:
        ValueError: Anything else.
    """
    if which in WHICH:
        return which
    if which in WHICH_ALIASES:
        return WHICH_ALIASES[which]
    raise ValueError(f"which must be one of {', '.join(WHICH)} (or scipy's {', '.join(WHICH_ALIASES)}), got {which!r}")


def select(theta: torch.Tensor, k: int, which: str) -> torch.Tensor:
    """Indices of the ``k`` values of ``theta`` that ``which`` asks for, in the order results are returned.

    ``largest``: descending; ``smallest``: ascending (the most negative first); ``magnitude``: descending
    in absolute value; ``both``: the ``ceil(k/2)`` largest and the ``floor(k/2)`` smallest, all descending
    (the spectrum read from its top to its bottom). Fewer than ``k`` values: all of them, in that order.
    """
    k = min(k, theta.numel())
    if which == "largest":
        return torch.argsort(theta, descending=True)[:k]
    if which == "smallest":
        return torch.argsort(theta)[:k]
    if which == "magnitude":
        return torch.argsort(theta.abs(), descending=True)[:k]
    order = torch.argsort(theta, descending=True)
    top, bottom = (k + 1) // 2, k // 2
    return torch.cat([order[:top], order[order.numel() - bottom:]]) if bottom else order[:top]


def floor_level(theta: torch.Tensor, dtype: torch.dtype, scale: float | None = None) -> float:
    r"""The rounding level of the products: :math:`\epsilon_{dtype} \|H\|`, below which no residual can be trusted.

    :math:`\|H\|` is ``scale`` (the largest magnitude of the spectrum a solver has seen) or, without it,
    the largest :math:`|\theta_i|`. Measured on H_X of the embedded default in float32 against float64
    products: a product's error is about :math:`2 \epsilon \|H v\|` for the top eigenvector and below
    :math:`0.15\,\epsilon \lambda_1` for the others, so one machine epsilon of :math:`\|H\|` bounds it (and
    lets the exact zero eigenvalues of a rank-deficient operator pass). On an indefinite operator the
    scale is the far end: the error of a product does not shrink with the eigenvalue sought.
    """
    top = float(theta.abs().max()) if theta.numel() else 0.0
    return torch.finfo(dtype).eps * max(top, scale or 0.0)


def thresholds(theta: torch.Tensor, tol: float, dtype: torch.dtype, scale: float | None = None) -> torch.Tensor:
    r"""Residual bounds of converged Ritz pairs: :math:`tol \cdot |\theta_i|`, as ARPACK, floored at :func:`floor_level`.

    A bound relative to each eigenvalue (not to :math:`\lambda_1`) is what keeps the eigenvectors of
    small eigenvalues accurate in a strongly anisotropic spectrum: the eigenvector error is about
    residual / gap, and gaps shrink with the eigenvalues. Pairs that pass only by the floor are
    reported as such by :func:`~hvp_explore.eigen.solvers.top_eigenpairs` (``info["floor"]``).
    """
    return (tol * theta.abs()).clamp_min(floor_level(theta, dtype, scale))


def _scale(theta: torch.Tensor) -> float:
    return float(theta.abs().max()) if theta.numel() else 0.0


def seeded_randn(n: int, b: int, gen: torch.Generator, device: torch.device) -> torch.Tensor:
    """Seeded Gaussian block, drawn on the CPU so results do not depend on the device's RNG."""
    return torch.randn(n, b, generator=gen, dtype=torch.float64).to(device)


def float64_products(op: CurvatureOperator, V: torch.Tensor) -> torch.Tensor:
    """Products in the operator's own dtype, returned in float64 (solvers work in float64)."""
    return op.matmat(V.to(op.dtype)).to(torch.float64)


def orthonormalise(X: torch.Tensor, against: torch.Tensor | None = None, *, drop_tol: float = 1e-10) -> torch.Tensor:
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


def dense(op: CurvatureOperator, k: int, *, which: str = "largest", **_) -> Solution:
    """Reference: the full matrix by n products, then ``eigh`` in float64 (any ``which``)."""
    M = op.dense().to(torch.float64)
    M = 0.5 * (M + M.T)
    values, vectors = torch.linalg.eigh(M)
    idx = select(values, k, which)
    vectors = vectors[:, idx]
    return values[idx], vectors, {"HX": M @ vectors, "scale": _scale(values)}


def jacobian(op: CurvatureOperator, k: int, *, gen: torch.Generator, which: str = "largest", **_) -> Solution:
    r"""Exact eigenpairs of :math:`J^T J` from the full Jacobian (min(m, n) products) and its SVD (``eigh`` of :math:`J^T J` when m >= n).

    The eigenvalues are the squared singular values, the eigenvectors the right singular vectors;
    beyond the rank bound m the eigenvalue is 0: for the largest pairs, vectors spanning part of the null
    space (exact eigenpairs too); for any other ``which``, the full SVD's basis of the null space.
    """
    m, n = op.residual_dim, op.shape[0]
    if m >= n:
        # A tall Jacobian (inpainting: 768 x 512): eigh of the n x n Gram matrix is ~2.5x faster than
        # the SVD. Squaring costs eigenvalue accuracy only below eps64 * lambda_1, far under the
        # float32 rounding floor of the products that judges convergence (thresholds()). The operator
        # keeps the Gram matrix, so a dense generalized pencil on it takes no more products.
        gram = op.gram()
        values, vectors = torch.linalg.eigh(gram)
        values = values.clamp_min(0.0)
        apply = gram.__matmul__
    else:
        J = op.jacobian().to(torch.float64)
        if which == "largest":
            _, s, Vh = torch.linalg.svd(J, full_matrices=False)
            values, vectors = s.pow(2), Vh.T
            if k > vectors.shape[1]:
                extra = orthonormalise(seeded_randn(n, k - vectors.shape[1], gen, vectors.device), vectors)
                vectors = torch.cat([vectors, extra], dim=1)
                values = torch.cat([values, values.new_zeros(extra.shape[1])])
        else:
            _, s, Vh = torch.linalg.svd(J, full_matrices=True)
            values, vectors = torch.cat([s.pow(2), s.new_zeros(n - s.numel())]), Vh.T

        def apply(V: torch.Tensor) -> torch.Tensor:
            return J.T @ (J @ V)
    idx = select(values, k, which)
    scale = _scale(values)
    values, vectors = values[idx], vectors[:, idx]
    return values, vectors, {"jacobian_rows": m, "HX": apply(vectors), "scale": scale}


def arpack(op: CurvatureOperator, k: int, *, tol: float, gen: torch.Generator, max_matvecs: int | None,
           which: str = "largest", **_) -> Solution:
    r"""ARPACK's implicitly restarted Lanczos (scipy ``eigsh``, ``which`` as ``LA``, ``SA``, ``LM`` or ``BE``) on ``to_scipy()``.

    ARPACK judges convergence by :math:`\|r\| \le tol\,|\theta|`, which float32 products cannot meet for
    eigenvalues near the products' rounding level (the top of an indefinite operator close to 0). When
    it stops with fewer than k pairs it returns only those; for ``largest`` and ``smallest`` the solve is
    then repeated once on :math:`H \pm s I`, ``s`` an estimate of :math:`\|H\|` (one short run for the
    largest magnitude), where its relative test becomes one relative to :math:`\|H\|`: every pair comes
    back and the caller's true residuals decide which converged (``info["retry"]``).
    """
    n = op.shape[0]
    ncv = min(n, max(2 * k + 1, 20))
    maxiter = None if max_matvecs is None else max(1, (max_matvecs - ncv) // max(ncv - k, 1) + 1)
    v0 = torch.randn(n, generator=gen, dtype=torch.float64).numpy()
    info: dict = {"ncv": ncv}
    A = op.to_scipy()
    # maxiter caps ARPACK's restarts; without a budget, at most ~10 n products (its default allows 10 n restarts)
    maxiter = maxiter if maxiter is not None else max(1, 10 * n // max(ncv - k, 1))
    try:
        values, vectors = scipy.sparse.linalg.eigsh(A, k=k, which=ARPACK_WHICH[which], v0=v0, ncv=ncv, tol=tol, maxiter=maxiter)
    except scipy.sparse.linalg.ArpackNoConvergence as exc:
        values, vectors = exc.eigenvalues, exc.eigenvectors
        info["arpack_error"] = f"no convergence ({len(values)} of {k} pairs)"
        if len(values) < k and which in ("largest", "smallest"):
            values, vectors = _arpack_shifted(A, k, which, tol=tol, v0=v0, ncv=ncv, maxiter=maxiter, info=info)
    idx = select(torch.from_numpy(np.ascontiguousarray(values)), k, which).numpy()
    values = torch.from_numpy(np.ascontiguousarray(values[idx])).to(op.device)
    vectors = torch.from_numpy(np.ascontiguousarray(vectors[:, idx])).to(op.device)
    if not values.numel():
        return values, vectors, info
    # The residual check's products, taken here (the caller reuses them, and counts them as checks): they tell
    # whether the rounding floor matters.
    before = op.num_matvecs
    HX = float64_products(op, vectors)
    if which in ("magnitude", "both"):  # these include the largest magnitude
        info.setdefault("scale", _scale(values))
    elif "scale" not in info:
        residuals = (HX - vectors * values).norm(dim=0)
        if bool((residuals > thresholds(values, tol, op.dtype)).any()):
            # The far end of the spectrum may set the rounding floor: estimate it (a short run, ~20 products).
            info["scale"] = _arpack_norm(A, v0, maxiter)
    info.update(HX=HX, check_products=op.num_matvecs - before)
    return values, vectors, info


def _arpack_norm(A, v0: np.ndarray, maxiter: int | None) -> float:
    r"""An estimate of :math:`\|H\|` (the largest magnitude, to 1%) by a short ARPACK run; 0 when it fails."""
    try:
        return float(np.abs(scipy.sparse.linalg.eigsh(A, k=1, which="LM", v0=v0, tol=1e-2, return_eigenvectors=False,
                                                      maxiter=maxiter)).max())
    except scipy.sparse.linalg.ArpackNoConvergence:
        return 0.0


def _arpack_shifted(A, k: int, which: str, *, tol: float, v0: np.ndarray, ncv: int, maxiter: int | None, info: dict):
    r"""ARPACK on :math:`H + s I` (largest) or :math:`H - s I` (smallest), ``s`` an estimate of :math:`\|H\|`, shifted back."""
    shift = 1.1 * _arpack_norm(A, v0, maxiter)
    if not shift > 0:
        return np.zeros(0), np.zeros((A.shape[0], 0))
    sign = 1.0 if which == "largest" else -1.0
    shifted = scipy.sparse.linalg.LinearOperator(A.shape, matvec=lambda x: A.matvec(x) + sign * shift * x,
                                                 matmat=lambda X: A.matmat(X) + sign * shift * X, dtype=A.dtype)
    try:
        values, vectors = scipy.sparse.linalg.eigsh(shifted, k=k, which=ARPACK_WHICH[which], v0=v0, ncv=ncv, tol=tol,
                                                    maxiter=maxiter)
    except scipy.sparse.linalg.ArpackNoConvergence as exc:
        values, vectors = exc.eigenvalues, exc.eigenvectors
    info.update(retry=f"shifted by {sign * shift:.3g} (an estimate of the operator's norm)", scale=shift / 1.1)
    return values - sign * shift, vectors


def lanczos(op: CurvatureOperator, k: int, *, tol: float, gen: torch.Generator, max_matvecs: int | None, steps: int | None = None,
            which: str = "largest", **_) -> Solution:
    r"""Lanczos with full reorthogonalisation (gpytorch / linear_operator's ``lanczos_tridiag``), any ``which``.

    One run of m + 1 steps gives the m x m tridiagonal :math:`T_m` and the next coefficient
    :math:`\beta_m`; the Ritz pairs :math:`(\theta_i, Q_m s_i)` have residuals
    :math:`\beta_m |e_m^T s_i|` (exact in exact arithmetic, and full reorthogonalisation keeps them
    so), which decide convergence without extra products. An unconverged run is followed by one of
    twice the steps from the same start vector, within the product budget: its Krylov space contains the
    shorter run's, so the Ritz values only improve (a restart from a combination of poor Ritz vectors
    could lose the wanted directions: it did on an indefinite operator whose top eigenvalues are tiny).
    """
    n = op.shape[0]
    # The default budget reaches a run over the whole space (exact) on small operators.
    budget = max(2, max_matvecs if max_matvecs is not None else max(20 * max(k, 10), 2 * n))
    # 2k + k/4 steps resolve the top k of the steep spectra of generator metrics in one run (2k is
    # often just short of it); every restart doubles the steps, or takes the whole space past n/2.
    m = min(n, steps if steps is not None else 2 * k + max(5, k // 4))
    start = seeded_randn(n, 1, gen, op.device)
    state = {"used": 0, "scale": None}

    def closure(q: torch.Tensor) -> torch.Tensor:
        Hq = float64_products(op, q)
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
        idx = select(theta, k, which)
        residual_estimates = beta * S[-1, idx].abs()
        values, vectors = theta[idx] * state["scale"], Q_m @ S[:, idx]
        converged = bool((residual_estimates <= thresholds(theta[idx], tol, op.dtype, _scale(theta))).all()) and idx.numel() == k
        longer = min(n if 2 * m > n // 2 else 2 * m, budget - state["used"] - 1)  # what the budget allows a new run
        if converged or beta == 0.0 or m >= n or longer <= T_m.shape[0]:
            break
        restarts += 1
        m = longer
    return values, vectors, {"steps": T_m.shape[0], "restarts": restarts, "scale": _scale(theta) * state["scale"],
                             "residual_estimates": residual_estimates * state["scale"]}


#: The ends of the spectrum LOBPCG can find (one end per run).
LOBPCG_WHICH = ("largest", "smallest")


def lobpcg(op: CurvatureOperator, k: int, *, tol: float, gen: torch.Generator, max_matvecs: int | None,
           oversample: int | None = None, B: CurvatureOperator | None = None, which: str = "largest", **_) -> Solution:
    r"""scipy's LOBPCG on ``to_scipy()``: every iteration feeds whole blocks to ``matmat``; ``which`` largest or smallest.

    With ``B`` (symmetric positive definite, e.g. ``H_Y.shifted(eps)``) it solves the pencil
    :math:`A x = \mu B x` instead, and the vectors are B-orthonormal as LOBPCG returns them; without it
    they are orthonormalised. Both operators are bridged to scipy in float64 (``to_scipy()``).
    """
    if which not in LOBPCG_WHICH:
        raise ValueError(f"solver 'lobpcg' finds one end of the spectrum (which='largest' or 'smallest'), got which={which!r}; "
                         "use 'block-krylov', 'lanczos', 'arpack' or 'dense'")
    largest = which == "largest"
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
            values, start = scipy.sparse.linalg.lobpcg(A, X0, B=Bsp, largest=largest, tol=1e-300, maxiter=min(maxiter, 10))
            wanted = np.abs(values[select(torch.from_numpy(values), k, which).numpy()])
            # the k-th Ritz value, floored at the products' rounding level (as in thresholds())
            target = max(tol * wanted[-1], torch.finfo(op.dtype).eps * np.abs(values).max(), 1e-300)
        values, vectors = scipy.sparse.linalg.lobpcg(A, start, B=Bsp, largest=largest, tol=target, maxiter=maxiter)
    order = select(torch.from_numpy(np.ascontiguousarray(values)), k, which).numpy()
    values = torch.from_numpy(np.ascontiguousarray(values[order])).to(op.device)
    vectors = torch.from_numpy(np.ascontiguousarray(vectors[:, order])).to(op.device)
    if B is None:
        vectors = orthonormalise(vectors)  # LOBPCG returns orthonormal columns up to rounding
    return values, vectors, {"block": block, "maxiter": maxiter}


def block_krylov(op: CurvatureOperator, k: int, *, tol: float, gen: torch.Generator, max_matvecs: int | None,
                 oversample: int | None = None, block: int | None = None,
                 start: tuple[torch.Tensor, torch.Tensor] | None = None, which: str = "largest", **_) -> Solution:
    r"""Block Krylov with Rayleigh-Ritz on the whole basis (block Lanczos, full reorthogonalisation), blocks of ``block``.

    Any ``which``: Krylov spaces approximate both ends of the spectrum, and the Ritz pairs tracked are
    the ``p`` that ``which`` asks for (:func:`select`).

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
        Q = orthonormalise(seeded_randn(n, b, gen, device))
        HQ = float64_products(op, Q)
    iterations = 1
    T = Q.T @ HQ
    T = 0.5 * (T + T.T)  # the projected matrix, grown by one block per iteration (its full product cost O(n m^2))
    while True:
        theta, S = torch.linalg.eigh(T)
        scale = _scale(theta)
        tracked = select(theta, p, which)  # the p Ritz pairs of the wanted end(s), in the order returned
        theta, S = theta[tracked], S[:, tracked]
        width = theta.numel()
        X, HX = Q @ S, HQ @ S
        R = HX - X * theta
        converged = R.norm(dim=0) <= thresholds(theta, tol, op.dtype, scale)
        wanted = select(theta, min(k, width), which)  # the k wanted among the tracked
        if (width >= k and bool(converged[wanted].all())) or Q.shape[1] >= n or Q.shape[1] >= budget:
            break
        # Converged pairs are locked; the first b unconverged among the top p feed the next block.
        pending = torch.nonzero(~converged).flatten()[:b]
        # A basis still narrower than k whose Ritz pairs all converged grows by fresh random directions.
        grow = R[:, pending] if pending.numel() else seeded_randn(n, b, gen, device)
        new = orthonormalise(grow, Q)[:, : max(budget - Q.shape[1], 0)]
        if new.shape[1] == 0:  # the basis spans an invariant subspace, or the budget is spent
            break
        H_new = float64_products(op, new)
        C = 0.5 * (Q.T @ H_new + (new.T @ HQ).T)
        D = new.T @ H_new
        T = torch.cat([torch.cat([T, C], dim=1), torch.cat([C.T, 0.5 * (D + D.T)], dim=1)], dim=0)
        Q, HQ = torch.cat([Q, new], dim=1), torch.cat([HQ, H_new], dim=1)
        iterations += 1
    return theta[wanted], X[:, wanted], {"block": b, "tracked": p, "iterations": iterations, "basis": Q.shape[1],
                                         "HX": HX[:, wanted], "scale": scale}


def scipy_generalized_dense(A: torch.Tensor, B: torch.Tensor, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k of the dense symmetric-definite pencil (A, B) with LAPACK (reference)."""
    values, vectors = scipy.linalg.eigh(A, B)
    return values[::-1][:k].copy(), vectors[:, ::-1][:, :k].copy()

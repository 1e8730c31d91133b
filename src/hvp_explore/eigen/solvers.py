r"""Top-k eigenpairs of curvature operators, and of the pencil behind the generalized directions.

:func:`top_eigenpairs` runs one of several solvers on a
:class:`~hvp_explore.operators.base.CurvatureOperator` and returns an :class:`EigenResult` whose residuals
:math:`\|H v_i - \lambda_i v_i\|` are true residuals (free for the solvers that keep the products,
one batched block of k products otherwise). A pair is converged when its residual is at most
``tol * |lambda_i|`` (as ARPACK; floored at the rounding level of the products, and the result lists the
pairs that passed only by that floor): by Bauer-Fike its
eigenvalue is then within ``tol * |lambda_i|`` of an exact one, and its eigenvector error is at most
about ``tol * lambda_i / gap_i``.

Solvers (see ``docs/operators.md`` for how to pick one):

=================  ===================================================================================
``"dense"``        reference: ``dense()`` (n products) then ``eigh``
``"jacobian"``     exact, for Gauss-Newton operators: the m x n Jacobian by m batched vjps, then its SVD (or eigh of J^T J)
``"arpack"``       scipy ``eigsh`` (implicitly restarted Lanczos) on ``to_scipy()``, single vectors
``"lanczos"``      torch-native Lanczos (gpytorch / linear_operator ``lanczos_tridiag``), single vectors
``"lobpcg"``       scipy ``lobpcg``: whole blocks through ``matmat``
``"block-krylov"`` block Krylov with Rayleigh-Ritz: blocks of ``block`` products (default k + oversampling)
``"auto"``         the cheapest of ``jacobian`` / ``dense`` / ``block-krylov`` (and its block size) by the
                   measured cost of one product and of one block (:func:`measure_cost`)
=================  ===================================================================================

``EigenResult.info`` records, for every solver, ``products`` (vector products, as ``matvecs``) and
``passes`` (batched calls of the operator: each is one batched forward-mode and one batched reverse-mode
pass of a Gauss-Newton operator), and ``floor`` when some pair passed only by the rounding floor.
"""

from __future__ import annotations

import math
import time
import warnings
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from hvp_explore.eigen import _methods
from hvp_explore.operators.base import CurvatureOperator
from hvp_explore.settings import DEFAULT_EIGEN_TOL, DEFAULT_SOLVER, DEFAULT_WHICH, SOLVERS, WHICH

__all__ = ["EigenResult", "ConvergenceWarning", "SOLVERS", "WHICH", "SOLVER_REGISTRY", "top_eigenpairs", "choose_solver",
           "subspace_cosines", "ProductCost", "measure_cost", "krylov_products", "exact_route", "static_half_products", "static_block",
           "BLOCK_SIZES", "STATIC_BLOCK", "CHEAP_CALL_SECONDS", "CHEAP_BUILD_SECONDS"]

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

# Static cost model of choose_solver without a measured cost, in units of one batched vector-Jacobian
# product (one Jacobian row), fitted to benchmarks/crossover.py on the embedded DCGAN: a Gauss-Newton
# product is about 2.5 units; block Krylov's products come from krylov_products().
GGN_PRODUCT_COST = 2.5

#: Largest block of block Krylov when ``auto`` does not probe (``probe=False``, the default): the fastest block
#: for the top 20 of H_X on the default (n = 512) and the random conv generator (n = 2048), one thread and two
#: (benchmarks/peers.py, docs/benchmarks.md); fewer pairs take smaller blocks (:func:`static_block`).
STATIC_BLOCK = 8

#: Seconds under which the first batched call of block Krylov marks an operator as cheap: there the solver's own
#: Rayleigh-Ritz and orthogonalisation (several ms per iteration on a basis of a hundred vectors of length 2,000)
#: cost more than the products, and ARPACK's single-vector iteration, whose own work per product is a few tens of
#: microseconds, is faster (the top 10 of the Hessian of an extended Rosenbrock function, n = 2,000: a block of 4
#: took 1-2 ms, block Krylov 0.25 s in 36 calls, ARPACK 0.06 s; on H_X of the embedded default a block of 8 takes
#: 20-30 ms and block Krylov wins).
CHEAP_CALL_SECONDS = 0.005

#: Seconds under which an operator's own build (:attr:`~hvp_explore.operators.base.CurvatureOperator.build_seconds`,
#: one pass of the function at z0) marks it as cheap before any product: ARPACK then starts at once and the timed
#: first block is saved. Measured builds: 0.9 ms for the extended Rosenbrock function (n = 2,000; its first
#: block of 8 took 1.2-3.7 ms), 8 ms for H_Y and 15 ms for H_X of the embedded default (first blocks 32 and 76 ms).
CHEAP_BUILD_SECONDS = 0.002


def static_block(k: int) -> int:
    """The block of block Krylov without a probe: about 0.4 k, at least 1 and at most :data:`STATIC_BLOCK`.

    8 was the fastest block for the top 20 of H_X (benchmarks/peers.py); for the top 5 of a CNN's loss Hessian,
    blocks of 1 to 4 took 1.0-1.1 s (15-28 products) and blocks of 5 and 8 1.33 s (35 and 40 products): a block
    much wider than the pairs wanted buys little convergence for its products.
    """
    return max(1, min(STATIC_BLOCK, round(0.4 * k)))

#: Block sizes ``auto`` considers for block Krylov.
BLOCK_SIZES = (1, 2, 4, 6, 8, 12, 16, 24, 32, 48, 64)


# Products of block Krylov per wanted pair, by block size: the top 20 (_TABLE_K) of H_X of the embedded default at
# tol 1e-3 (35 products at b = 1, 41 at 2, 50 at 4, 64 at 8, 72 at 12, 90 at 16, 100 at 20, 120 at 30).
_TABLE_K = 20
_KRYLOV_PRODUCTS_PER_PAIR = ((1, 1.75), (2, 2.05), (4, 2.5), (8, 3.2), (12, 3.6), (16, 4.5), (20, 5.0), (32, 6.5), (64, 10.0))


def krylov_products(k: int, block: int) -> float:
    """Products block Krylov needs for the top k with blocks of ``block`` (interpolated in log b from measurements).

    The measurements are of the top 20; what a block costs depends on its size relative to k, so a block b
    for k pairs is read at ``b * 20 / k`` (a block of 8 for the top 5 costs as a block of 32 for the top 20:
    measured on the loss Hessian of a 2,202-parameter CNN, 15 products at b = 1, 20 at 2, 28 at 4, 40 at 8, in
    the table's proportions). Steep spectra are alike, and the model only has to rank block sizes for ``auto``.
    """
    sizes = [b for b, _ in _KRYLOV_PRODUCTS_PER_PAIR]
    relative = max(block * _TABLE_K / max(k, 1), 1.0)
    ratio = float(np.interp(math.log2(relative), np.log2(sizes), [r for _, r in _KRYLOV_PRODUCTS_PER_PAIR]))
    return max(k * ratio, float(block))


@dataclass(frozen=True)
class ProductCost:
    """Measured seconds of one product, of a batched pair and of a batched block of ``size`` products.

    A single vector may take another route than a block (the Gauss-Newton operator's double vjp), so
    it is its own measurement; a batched call of ``b >= 2`` products is modelled by the line through
    the pair and the block: a fixed cost per call (the forward pass at z0, dispatch) plus a cost per
    vector. ``iteration`` is the solver's own linear algebra per block Krylov iteration (Rayleigh-Ritz
    and orthogonalisation on a basis of typical width), which many small blocks pay many times.
    """

    single: float
    pair: float
    block: float
    size: int
    limit: int | None = None
    iteration: float = 0.0

    def seconds(self, b: int) -> float:
        """Predicted seconds of ``b`` products, split into calls of at most ``limit`` (the memory budget)."""
        per_call = min(self.limit or b, b)
        calls, last = divmod(b, per_call)
        slope = max(self.block - self.pair, 0.0) / max(self.size - 2, 1)

        def call(c: int) -> float:
            return self.single if c == 1 else self.pair + slope * (c - 2)

        return calls * call(per_call) + (call(last) if last else 0.0)


# operator -> its measured cost: repeated solves on one operator probe once
_COSTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _probe(op: CurvatureOperator, *, size: int, seed: int, basis: int = 64) -> tuple[ProductCost, torch.Tensor, torch.Tensor]:
    """Time a product, a pair and a block of ``size`` (after an untimed warm product), and one solver iteration on a
    basis of ``basis`` columns; return the cost and the ``3 + size`` probe vectors with their products (float64),
    which block Krylov reuses as its start."""
    n = op.shape[0]
    size = max(3, min(size, n - 3)) if n > 5 else 2
    g = torch.Generator().manual_seed(seed)
    V = torch.randn(n, min(size + 3, n), generator=g, dtype=torch.float64)
    parts, seconds = [], []
    for cols in (slice(0, 1), slice(1, 2), slice(2, 4), slice(4, None)):  # warm, single, pair, block
        t0 = time.perf_counter()
        parts.append(op.matmat(V[:, cols].to(op.device, op.dtype)).to(torch.float64))
        seconds.append(time.perf_counter() - t0)
    block = V.shape[1] - 4
    cost = ProductCost(single=seconds[1], pair=seconds[2], block=seconds[3] if block >= 3 else seconds[2],
                       size=max(block, 3), limit=op.block_size or op.memory_block(), iteration=_iteration_seconds(n, basis, op.device))
    return cost, V.to(op.device), torch.cat(parts, dim=1)


def _iteration_seconds(n: int, width: int, device: torch.device) -> float:
    """Seconds of one block Krylov iteration's own work on a basis of ``width`` columns (no product):
    the projected matrix, its eigendecomposition, the Ritz residuals and the orthogonalisation of a new block."""
    width = max(2, min(width, n))
    g = torch.Generator().manual_seed(0)
    Q = torch.linalg.qr(torch.randn(n, width, generator=g, dtype=torch.float64))[0].to(device)
    HQ = Q * torch.linspace(1.0, 2.0, width, dtype=torch.float64, device=device)
    best = math.inf
    for _ in range(2):  # the smaller of two: the first may pay for allocation
        t0 = time.perf_counter()
        T = Q.T @ HQ
        theta, S = torch.linalg.eigh(0.5 * (T + T.T))
        R = HQ @ S - (Q @ S) * theta
        new = R[:, : min(8, width)]
        new = new - Q @ (Q.T @ new)
        torch.linalg.qr(new)
        best = min(best, time.perf_counter() - t0)
    return best


def measure_cost(op: CurvatureOperator, *, size: int = 8, seed: int = 0) -> ProductCost:
    """Time one product, a batched pair and a batched block of ``size`` products of ``op`` (once per operator).

    The ``3 + size`` products (a first, untimed one warms caches and the Gauss-Newton operator's choice of
    single-vector route) count toward ``op.num_matvecs``.
    """
    if op not in _COSTS:
        _COSTS[op] = _probe(op, size=size, seed=seed)[0]
    return _COSTS[op]


class ConvergenceWarning(UserWarning):
    """Some eigenpairs did not reach the tolerance; they are returned and flagged, not dropped."""


@dataclass(frozen=True)
class EigenResult:
    r"""Top eigenpairs of a symmetric operator.

    Attributes:
        values: (k,) eigenvalues, float64, ordered as ``which`` asks (descending for ``"largest"``).
        vectors: (n, k) orthonormal eigenvectors (columns), float64, on the operator's device.
        residuals: (k,) :math:`\|H v_i - \lambda_i v_i\|`.
        converged: (k,) bool, ``residual <= tol * |values|``, or at most the products' rounding level
            (one machine epsilon of :math:`\lambda_1`); pairs that pass only by that floor are listed in
            ``info["floor"]``.
        matvecs: Vector products the solver used (a Jacobian row counts as one).
        check_matvecs: Extra products spent only to verify residuals (0 when they came free).
        seconds: Wall time, verification included.
        solver: The solver that ran (``"auto"`` records its choice here).
        tol: The relative tolerance.
        requested: The k asked for (``values`` holds fewer only when ARPACK stopped before finding them).
        info: Solver notes: ``products`` and ``passes`` (batched calls of the operator) for every solver,
            steps, restarts, blocks, the reason for auto's choice, ``scale`` (the largest magnitude of the
            spectrum the solver saw), and ``floor`` when some pair passed only by the rounding floor.
        which: The end(s) of the spectrum: ``"largest"``, ``"smallest"``, ``"magnitude"`` or ``"both"``.
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
    which: str = "largest"

    @property
    def k(self) -> int:
        return int(self.values.numel())

    @property
    def all_converged(self) -> bool:
        return self.k == self.requested and bool(self.converged.all())

    @property
    def max_relative_residual(self) -> float:
        """Largest residual relative to its eigenvalue, ``max_i r_i / |lambda_i|`` (``tol`` bounds it when converged).

        Exact zero eigenvalues (beyond the rank of a Gauss-Newton operator) count relative to ``lambda_1``. A generalized
        pencil's residuals count relative to the scale its convergence test uses (``info["residual_scale"]``, see
        :func:`~hvp_explore.eigen.generalized.top_generalized_eigenpairs`), so that ``tol`` bounds it there too.
        """
        if not self.k:
            return float("nan")
        if self.info.get("residual_scale"):
            return float(self.residuals.max() / self.info["residual_scale"])
        scale = torch.where(self.values.abs() > 0, self.values.abs(), self.values.abs().max().clamp_min(1e-300))
        return float((self.residuals / scale).max())


def subspace_cosines(U: torch.Tensor, V: torch.Tensor) -> torch.Tensor:
    """Cosines of the principal angles between the column spans of orthonormal U and V, descending.

    All equal to 1 when the subspaces coincide; the smallest is the cosine of the largest angle.
    """
    U, V = torch.as_tensor(U, dtype=torch.float64), torch.as_tensor(V, dtype=torch.float64).to(torch.as_tensor(U).device)
    return torch.linalg.svdvals(U.T @ V).clamp(max=1.0)


def choose_solver(op: CurvatureOperator, k: int, *, oversample: int | None = None,
                  cost: ProductCost | None = None) -> tuple[str, str]:
    """The solver ``"auto"`` picks for ``op`` and ``k``, with the reason (a cost comparison).

    With a measured ``cost`` (:func:`measure_cost`) the candidates are compared in predicted seconds:
    ``dense`` (n products in batches), ``jacobian`` (min(m, n) rows or columns, half a product each,
    in batches) and block Krylov with each block size of :data:`BLOCK_SIZES` up to ``k + oversample``
    (:func:`krylov_products` products in calls of ``b``, each call plus one iteration of the solver's own
    linear algebra, ``cost.iteration``); the reason names the block, e.g.
    ``"block-krylov:8"``. Without it, a static model in units of one vector-Jacobian product.
    """
    n = op.shape[0]
    p = min(n, k + (oversample if oversample is not None else max(10, k // 2)))
    if cost is None:
        block = static_block(k)
        costs = {"dense": n * GGN_PRODUCT_COST, f"block-krylov:{block}": krylov_products(k, block) * GGN_PRODUCT_COST}
        if hasattr(op, "jacobian"):
            costs["jacobian"] = float(min(op.residual_dim, n))  # rows or columns, whichever side is shorter
        choice = min(costs, key=costs.get)
        reason = ", ".join(f"{name} ~{c:.0f}" for name, c in sorted(costs.items(), key=lambda kv: kv[1]))
        return choice, f"cost in vjp units: {reason}"
    widest = max(BLOCK_SIZES)
    costs = {"dense": cost.seconds(n) if n <= 4 * widest else math.inf}
    if hasattr(op, "jacobian"):
        costs["jacobian"] = 0.5 * cost.seconds(min(op.residual_dim, n))
    for b in BLOCK_SIZES:
        if b <= max(p, 2):
            products = krylov_products(k, b)
            costs[f"block-krylov:{b}"] = math.ceil(products / b) * (cost.seconds(b) + cost.iteration)
    choice = min(costs, key=costs.get)
    reason = ", ".join(f"{name} ~{c * 1e3:.3g} ms" for name, c in sorted(costs.items(), key=lambda kv: kv[1])[:4])
    return choice, (f"measured {cost.single * 1e3:.3g} ms per product, {cost.pair * 1e3:.3g} ms per pair, "
                    f"{cost.block * 1e3:.3g} ms per block of {cost.size}; predicted: {reason}")


def exact_route(op: CurvatureOperator, k: int) -> tuple[str, str] | None:
    """``jacobian`` or ``dense`` when it needs no more products than block Krylov with its static block.

    Those blocks already batch well, and the Jacobian's min(m, n) half-products (or the dense matrix's n
    products) come in the largest batches memory allows: no timing can make block Krylov cheaper then,
    and a probe (11 products, a second on the face generator) is saved.
    """
    route, _, reason = _static_route(op.residual_dim if hasattr(op, "jacobian") else None, op.shape[0], k)
    return None if route == "block-krylov" else (route, reason)


def _static_route(m: float | None, n: int, k: int) -> tuple[str, float, str]:
    """The route of ``auto`` without a probe for the top k of an n x n operator (a Gauss-Newton one when its residual
    length ``m`` is given), its half-products (a vjp or a jvp each), and why."""
    krylov = krylov_products(k, static_block(k))
    if m is not None and 0.5 * min(m, n) <= krylov:
        return "jacobian", min(m, n), f"min(m, n) = {min(m, n)} half-products, no more than block Krylov's ~{krylov:.0f}"
    if n <= krylov:
        return "dense", 2 * n, f"n = {n} products, no more than block Krylov's ~{krylov:.0f}"
    return "block-krylov", 2 * krylov, ""


def static_half_products(m: float, n: int, k: int) -> float:
    """Vectors that ``auto`` (without a probe) passes through a Gauss-Newton operator :math:`J^T J` (J m x n) for its top k:
    the Jacobian's min(m, n) when :func:`exact_route` takes it, else two per product (a jvp and a vjp).

    What the two eigensolves of an exploration would pass through the generator, against the n products of its
    Jacobian (:class:`~hvp_explore.operators.linearized.LinearizedGenerator`).
    """
    return _static_route(m, n, k)[1]


def _first_block(op: CurvatureOperator, k: int, block: int, *, seed: int) -> tuple[str, tuple | None, str]:
    """Block Krylov's first block, its products timed: the solver and start ``auto`` goes on with.

    The block is the one block Krylov would start from (same seed), so nothing is wasted when it goes on;
    when the call took under :data:`CHEAP_CALL_SECONDS` the operator is cheap and ARPACK takes over
    (``block`` products spent on the measurement). An operator whose own build took under
    :data:`CHEAP_BUILD_SECONDS` is cheap without that block.
    """
    n = op.shape[0]
    build = getattr(op, "build_seconds", None)
    if build is not None and build < CHEAP_BUILD_SECONDS and k < n:
        return "arpack", None, (f"; it was built in {build * 1e3:.2f} ms < {CHEAP_BUILD_SECONDS * 1e3:g} ms: "
                                "a cheap operator, ARPACK")
    V = _methods.orthonormalise(_methods.seeded_randn(n, block, torch.Generator().manual_seed(seed), op.device))
    t0 = time.perf_counter()
    HV = _methods.float64_products(op, V)
    seconds = time.perf_counter() - t0
    if seconds < CHEAP_CALL_SECONDS and k < n:
        return "arpack", None, (f"; its first call of {block} products took {seconds * 1e3:.1f} ms < "
                                f"{CHEAP_CALL_SECONDS * 1e3:g} ms: a cheap operator, ARPACK")
    return "block-krylov", (V, HV), f"; its first call of {block} products took {seconds * 1e3:.1f} ms"


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
                   max_matvecs: int | None = None, oversample: int | None = None, block: int | None = None,
                   probe: bool = False, warn: bool = True, which: str = DEFAULT_WHICH) -> EigenResult:
    r"""k eigenpairs of a symmetric operator from one or both ends of its spectrum (the largest by default), matrix-free.

    Args:
        op: The operator (e.g. from :func:`~hvp_explore.measurement_hessian`); it may be indefinite.
        k: Number of eigenpairs, 1 <= k <= n (k < n for ``"arpack"`` and ``"lanczos"``).
        which: ``"largest"`` (algebraic, descending; the default), ``"smallest"`` (algebraic, ascending:
            the most negative first), ``"magnitude"`` (largest ``|lambda|``, descending in magnitude) or
            ``"both"`` (``ceil(k/2)`` from the top and ``floor(k/2)`` from the bottom, descending); scipy's
            ``"LA"``, ``"SA"``, ``"LM"``, ``"BE"`` are accepted. ``"lobpcg"`` finds one end only (largest or
            smallest) and says so; every other solver takes every ``which``.
        solver: One of :data:`SOLVERS`. ``"auto"`` takes the exact route when it needs no more products than a
            Krylov solve (:func:`exact_route`), else block Krylov with :func:`static_block`; with ``probe=True``
            it times one product and one block of the operator first (:func:`measure_cost`, once per operator;
            those products count in ``matvecs``) and runs the cheapest solver and block size by
            :func:`choose_solver`, a choice that depends on timings.
        tol: Relative tolerance: pairs with :math:`\|H v - \lambda v\| \le tol\,|\lambda|` are converged.
        seed: Seeds the start vectors (deterministic results on CPU for a given solver and block).
        max_matvecs: Product budget of the iterative solvers; ``None`` = the solver's own limit.
        oversample: Extra tracked Ritz pairs of ``"block-krylov"`` and block columns of ``"lobpcg"``
            (default max(10, k/2) and max(5, k/2)).
        block: Block size of ``"block-krylov"`` (default k + oversample; ``"auto"`` chooses it).
        probe: Whether ``"auto"`` times a probe (``True``) or chooses by a static model of product counts (``False``,
            the default: :func:`choose_solver` without a cost), so the same seed gives the same result on every
            run. The probe's dozen products cost more than its choice saves on cheap operators and small k.
        warn: Emit a :class:`ConvergenceWarning` when some pairs are unconverged.

    Returns:
        An :class:`EigenResult`. Non-convergence never raises: unconverged pairs are returned with
        ``converged`` False (and fewer than k pairs only when ARPACK gave up before finding them).
        A pair is converged when its residual is at most ``tol * |lambda_i|``, or at most the rounding
        level of the products (:func:`~hvp_explore.eigen._methods.floor_level`, one machine epsilon of the
        largest :math:`|\lambda|` the solver saw); pairs that pass only by that floor are listed in ``info["floor"]``.

    Raises:
        ValueError: Unknown solver or ``which``, a ``which`` the solver cannot find, k out of range, or a block below 1.
    """
    which = _methods.check_which(which)
    if solver == "lobpcg" and which not in _methods.LOBPCG_WHICH:
        raise ValueError(f"solver 'lobpcg' finds one end of the spectrum (which='largest' or 'smallest'), got which={which!r}; "
                         "use 'block-krylov', 'lanczos', 'arpack' or 'dense'")
    if solver not in SOLVERS:
        raise ValueError(f"unknown solver {solver!r}; choose one of {', '.join(SOLVERS)}")
    if not tol > 0:
        raise ValueError(f"tol must be positive, got {tol}")
    if block is not None and not (isinstance(block, (int, np.integer)) and block >= 1):
        raise ValueError(f"block must be a positive integer, got {block!r}")
    _check_k(op, k, solver)
    info: dict = {}
    start_matvecs, start_calls = op.num_matvecs, op.num_calls
    t0 = time.perf_counter()
    start = None
    if solver == "auto" and (shortcut := exact_route(op, k)):
        solver, info["auto"] = shortcut
    elif solver == "auto" and not probe:
        solver, info["auto"] = choose_solver(op, k, oversample=oversample)
        if solver.startswith("block-krylov:"):
            solver, block = "block-krylov", int(solver.split(":")[1])
            solver, start, note = _first_block(op, k, block, seed=seed)
            info["auto"] += note
    elif solver == "auto":
        if op in _COSTS:
            cost = _COSTS[op]
        else:  # the probe's products are not wasted: block Krylov starts from them
            cost, *start = _probe(op, size=8, seed=seed, basis=int(krylov_products(k, 8)))
            _COSTS[op] = cost
        solver, info["auto"] = choose_solver(op, k, oversample=oversample, cost=cost)
        if solver.startswith("block-krylov:"):
            solver, block = "block-krylov", int(solver.split(":")[1])
            if block < 4:  # a wide random start costs Lanczos more products than it saves (52 against 46 on H_X)
                start = None
    gen = torch.Generator().manual_seed(seed)
    method = SOLVER_REGISTRY[solver]
    values, vectors, solver_info = method(op, k, tol=tol, gen=gen, max_matvecs=max_matvecs, oversample=oversample, block=block,
                                          start=start, which=which)
    # products a solver took only to verify its pairs count as checks, as the caller's own below
    matvecs, calls = op.num_matvecs - start_matvecs - solver_info.pop("check_products", 0), op.num_calls - start_calls
    HX = solver_info.pop("HX", None)
    if HX is None and values.numel():
        HX = op.matmat(vectors.to(op.dtype)).to(torch.float64)
    residuals = (HX - vectors * values).norm(dim=0) if values.numel() else values.new_zeros(0)
    seconds = time.perf_counter() - t0
    scale = solver_info.get("scale")
    converged = residuals <= _methods.thresholds(values, tol, op.dtype, scale)
    info.update(solver_info)
    info.update(products=matvecs, passes=calls)
    by_floor = converged & (residuals > tol * values.abs())
    if bool(by_floor.any()):
        info["floor"] = {"level": _methods.floor_level(values, op.dtype, scale), "pairs": torch.nonzero(by_floor).flatten().tolist(),
                         "reason": f"rounding of {op.dtype} products (machine epsilon times the largest |eigenvalue| seen)"}
    result = EigenResult(values=values, vectors=vectors, residuals=residuals, converged=converged, matvecs=matvecs,
                         check_matvecs=op.num_matvecs - start_matvecs - matvecs, seconds=seconds, solver=solver, tol=tol,
                         requested=k, info=info, which=which)
    if warn and not result.all_converged:
        warnings.warn(f"{op.name}: {int((~result.converged).sum()) + k - result.k} of {k} eigenpairs did not reach "
                      f"tol={tol:g} with solver {solver!r} (largest relative residual {result.max_relative_residual:.2e})",
                      ConvergenceWarning, stacklevel=2)
    return result

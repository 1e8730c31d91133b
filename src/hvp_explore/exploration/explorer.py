r"""e-GLASS: new solutions of a linear inverse problem from the latent geometry at a first solution.

The pipeline (:func:`explore`) reads top to bottom:

1. inversion: a first solution :math:`z_0` (:func:`~hvp_explore.inversion.invert`);
2. the measurement metric :math:`H_Y = U \Lambda U^T` and the perceptual metric
   :math:`H_X = V \Omega V^T` at :math:`z_0`, top eigenpairs only;
3. directions: e-GLASS projections of :math:`v^K, v^{K-1}, \dots` off the top :math:`u^j`
   (Algorithm 1 of Montanaro, Valsesia & Magli, ICIP 2022), generalized directions (top pencil
   eigenvectors of :math:`H_X d = \mu (H_Y + \epsilon I) d`), or the raw :math:`v^K` for comparison;
4. steps: for each direction and sign, the largest :math:`|\eta|` keeping the measurement MSE of
   :math:`G(z_0 + \eta d)` under :math:`\tau`, by bracketing and safeguarded interpolation on batched
   forward passes, so every returned solution is feasible by construction;
5. distances: perceptual distance of each solution to the first one and between solutions.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from hvp_explore.eigen.generalized import pencil_solver
from hvp_explore.eigen.solvers import EigenResult, static_half_products, top_eigenpairs
from hvp_explore.exploration.directions import (
    Direction,
    coupling_matrix,
    default_k_y,
    make_directions,
    num_directions,
)
from hvp_explore.exploration.frames import Frames, exploration_frames
from hvp_explore.exploration.distances import PAIRWISE_MATRIX_MAX, distances_to, pairwise_distances, pairwise_summary, unobserved_share
from hvp_explore.exploration.walks import WalkResult, feasible_walks
from hvp_explore.exploration.steps import (
    deliver,
    ellipsoid_steps,
    feasible_steps,
    geometric_eta_max,
    perceptual_budget,
    predicted_steps,
)
from hvp_explore.generators import load_generator
from hvp_explore.inversion import InversionResult, PulseResult, invert, pulse
from hvp_explore.io._progress import progress_bar
from hvp_explore.io.images import quantize
from hvp_explore.io.weights import load_state_into
from hvp_explore.operators.base import CurvatureOperator, as_latent
from hvp_explore.operators.curvature import measurement_hessian, perceptual_hessian, unobserved_hessian
from hvp_explore.operators.linearized import LinearizedGenerator
from hvp_explore.metrics import default_metric, load_metric
from hvp_explore.operators.memory import batch_limit, check_one_product, fit_block_size, resolve_budget
from hvp_explore.problems import Observation, load_observation, measurement_mse, resolve_tau
from hvp_explore.settings import (
    DEFAULT_DEVICE,
    DEFAULT_EPS,
    DEFAULT_FRAMES,
    DEFAULT_GENERATOR,
    DEFAULT_K,
    DEFAULT_MAX_MEMORY,
    DEFAULT_METRIC,
    DEFAULT_MODE,
    DEFAULT_NUM_SOLUTIONS,
    DEFAULT_SEED,
    DEFAULT_SOLVER,
    DEFAULT_TAU,
    DEFAULT_THRESHOLD,
    DEFAULT_TOL,
    DEFAULT_WALKERS,
    DELIVERY_MARGIN,
    H_Y_RANK_RTOL,
    MODES,
    PENCIL_MODES,
    SWITCHES,
    DirectionSettings,
    EigenSettings,
    InversionSettings,
    ProblemSettings,
    ProjectSettings,
    PulseSettings,
    RenderSettings,
    StepSettings,
    WalkSettings,
    flag_of,
)

__all__ = ["Solution", "ExplorationResult", "render_solutions", "EigenStage", "eigenpairs", "explore", "Explorer", "step_caps", "capped_solutions",
           "numerical_rank_part", "walk_and_select", "farthest_first", "direction_curvatures"]


@dataclass(frozen=True)
class Solution:
    """One explored solution.

    Attributes:
        latent: (n,) latent z0 + eta d.
        image: (C, H, W) image in [-1, 1].
        direction: Label of its direction, with its sign (``"+v10"``).
        eta: Signed step length.
        measurement_mse: MSE of its measurements against y ([0, 1] scale).
        feasible: ``measurement_mse <= tau``.
        perceptual_distance: Distance to the first solution.
        status: The step search's status (see :class:`Step`).
    """

    latent: torch.Tensor
    image: torch.Tensor
    direction: str
    eta: float
    measurement_mse: float
    feasible: bool
    perceptual_distance: float
    status: str


@dataclass(frozen=True)
class ExplorationResult:
    """Everything an exploration produced (see :func:`explore`).

    Attributes:
        inversion: The first solution.
        first_image: The first solution's image as saved (8-bit, in [-1, 1]), (C, H, W).
        first_mse: Its measurement MSE ([0, 1] scale), the number reported for ``first_solution.png``.
        eig_y, eig_x: Top eigenpairs of H_Y and H_X.
        pencil: Top pencil eigenpairs (``mode="generalized"`` or ``"unobserved"`` only).
        directions: The directions used, in order.
        solutions: The explored solutions (feasible ones first in direction order).
        pairwise: (N, N) perceptual distances between solutions, or for more than
            :data:`~hvp_explore.exploration.distances.PAIRWISE_MATRIX_MAX` solutions their ``{"min", "mean", "max"}``.
        timings: Seconds per stage and ``total``.
        settings: The options that produced it.
        rejected: Signed directions that admitted no useful step (label and status).
        walk: The feasible walks (``walk_steps > 0``), whose points are candidates among the solutions.
        unobserved: Where the change lives (:func:`~hvp_explore.exploration.distances.unobserved_share`): the fraction
            of the solutions' change, from the first solution and pairwise, in the part the measurements do not see.
    """

    inversion: InversionResult
    first_image: torch.Tensor
    first_mse: float
    eig_y: EigenResult
    eig_x: EigenResult
    pencil: EigenResult | None
    directions: tuple[Direction, ...]
    solutions: tuple[Solution, ...]
    pairwise: torch.Tensor | dict
    timings: dict
    settings: dict
    rejected: tuple[dict, ...] = field(default=())
    walk: WalkResult | None = None
    unobserved: dict | None = None

    @property
    def coupling(self) -> torch.Tensor:
        """:math:`C = U^T V` of the computed eigenvectors."""
        return coupling_matrix(self.eig_y.vectors, self.eig_x.vectors)


def render_solutions(generator: Callable, forward: Callable, y: torch.Tensor, z0: torch.Tensor, first_image: torch.Tensor,
                     directions: list[Direction], *, metric: Callable, num_solutions: int, tau: float = DEFAULT_TAU,
                     eta_max: float | torch.Tensor, chunk: int | None = None) -> tuple[list[Solution], list[dict], torch.Tensor | dict, dict]:
    """Feasible steps along both signs of every direction, the solutions as saved (8-bit), then perceptual distances.

    Eigenvector directions get the largest feasible step (:func:`feasible_steps`). Combinations of
    them (:func:`combine_directions`) start from the step the eigenvector directions' steps predict
    (:func:`ellipsoid_steps`) and backtrack only when it is infeasible (:func:`predicted_steps`), so one
    more solution usually costs one forward pass. Both aim at ``tau * (1 - DELIVERY_MARGIN)``;
    :func:`deliver` then rounds the chosen images to 8 bits and checks them against ``tau`` itself,
    so every solution's image and measurement MSE are those of the PNG that is saved.

    Solutions alternate signs direction by direction (``+v10, -v10, +v9, ...``) up to
    ``num_solutions``; signed directions with no feasible step are reported in ``rejected``. ``chunk``
    is the largest batch of one forward pass (default: :func:`~hvp_explore.operators.memory.batch_limit` of the images, else 256).

    Returns:
        ``(solutions, rejected, pairwise, timings)`` with ``pairwise`` the (N, N) distances between solutions
        (up to :data:`~hvp_explore.exploration.distances.PAIRWISE_MATRIX_MAX` of them, else their min, mean and max)
        and ``timings`` the seconds of the ``steps`` and ``distances`` stages.
    """
    timings = {}
    z0 = as_latent(z0)
    chunk = chunk or batch_limit(first_image) or 256
    count = len(directions)
    t0 = time.perf_counter()
    base = [i for i, d in enumerate(directions) if d.combination is None]
    combos = [i for i, d in enumerate(directions) if d.combination is not None]
    if combos and base != list(range(len(base))):
        raise ValueError("combinations must follow the eigenvector directions they combine")
    D = torch.stack([d.vector for d in directions], dim=1)
    nb, nc = len(base), len(combos)
    caps = torch.as_tensor(eta_max, dtype=torch.float64).expand(count).cpu()  # one cap per direction, both signs share it
    target = tau * (1 - DELIVERY_MARGIN)
    base_steps, base_images = feasible_steps(generator, forward, y, z0, torch.cat([D[:, :nb], -D[:, :nb]], dim=1), tau=target,
                                             eta_max=caps[:nb].repeat(2), chunk=chunk)
    combo_steps, combo_images = [], base_images[:0]
    if combos:
        # A base direction without a step would predict 0 for every combination using it: stand in the
        # smallest step found along any base direction (the smallest grid step if none was found).
        found = [st.eta for st in base_steps if st.eta > 0]
        fallback = min(found) if found else float(caps.min()) / 16
        eta_plus = torch.tensor([base_steps[j].eta or fallback for j in range(nb)], dtype=torch.float64)
        eta_minus = torch.tensor([base_steps[nb + j].eta or fallback for j in range(nb)], dtype=torch.float64)
        C = torch.tensor([directions[i].combination for i in combos], dtype=torch.float64).T  # (nb, c)
        guesses = torch.cat([ellipsoid_steps(C, eta_plus, eta_minus), ellipsoid_steps(-C, eta_plus, eta_minus)])
        Dc = D[:, nb:]
        combo_steps, combo_images = predicted_steps(generator, forward, y, z0, torch.cat([Dc, -Dc], dim=1),
                                                    guesses, tau=target, eta_max=caps[nb:].repeat(2), chunk=chunk)
    # column i is +directions[i], column count + i is -directions[i]; base directions come first
    steps = base_steps[:nb] + combo_steps[:nc] + base_steps[nb:] + combo_steps[nc:]
    images = torch.cat([base_images[:nb], combo_images[:nc], base_images[nb:], combo_images[nc:]])
    search_seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    chosen, rejected = [], []
    for i in (i for pair in zip(range(count), range(count, 2 * count)) for i in pair):
        label = ("+" if i < count else "-") + directions[i % count].label
        if steps[i].status == "no-step":
            rejected.append({"direction": label, "status": steps[i].status, "measurement_mse": steps[i].measurement_mse})
        elif len(chosen) < num_solutions:
            chosen.append((i, label))
    columns = [i for i, _ in chosen]
    signs = torch.tensor([1.0 if i < count else -1.0 for i in columns], dtype=torch.float64)
    sol_images, sol_mses, sol_etas, shrunk = deliver(generator, forward, y, z0, D[:, [i % count for i in columns]].to(torch.float64) * signs,
                                                     torch.tensor([steps[i].eta for i in columns], dtype=torch.float64),
                                                     images[columns], tau=tau, chunk=chunk)
    timings["steps"] = search_seconds + time.perf_counter() - t0
    t0 = time.perf_counter()
    first = first_image.reshape(1, *sol_images.shape[1:]).to(sol_images.dtype)
    if len(chosen) <= PAIRWISE_MATRIX_MAX:
        dist = pairwise_distances(metric, torch.cat([first, sol_images]), chunk=chunk)
        to_first, pairwise = dist[0, 1:], dist[1:, 1:]
    else:  # memory linear in N: the distances to the first solution and a summary of the others
        to_first, pairwise = distances_to(metric, sol_images, first, chunk=chunk), pairwise_summary(metric, sol_images, chunk=chunk)
    timings["distances"] = time.perf_counter() - t0
    solutions = []
    for row, (i, label) in enumerate(chosen):
        eta = float(sol_etas[row]) if i < count else -float(sol_etas[row])
        mse = float(sol_mses[row])
        solutions.append(Solution(latent=z0 + eta * directions[i % count].vector.to(z0.dtype), image=sol_images[row],
                                  direction=label, eta=eta, measurement_mse=mse, feasible=mse <= tau,
                                  perceptual_distance=float(to_first[row]), status="shrunk" if shrunk[row] else steps[i].status))
    return solutions, rejected, pairwise, timings


@dataclass(frozen=True)
class EigenStage:
    """The operators and top eigenpairs at a first solution (see :func:`eigenpairs`).

    Attributes:
        H_Y, H_X: The measurement and perceptual operators.
        eig_y, eig_x: Their top eigenpairs.
        block_sizes: Largest block of one batched product of each operator (None: no limit).
        timings: Seconds of ``eigen_y`` and ``eigen_x`` (and of ``linearize`` when the generator's Jacobian was taken).
        generator: What the operators were built on: the generator's first-order model at ``z0``
            (:class:`~hvp_explore.operators.linearized.LinearizedGenerator`) when the stage linearized, else the generator;
            a pencil's other Gauss-Newton operator at ``z0`` (``H_U``) is the same matrix on it.
    """

    H_Y: CurvatureOperator
    H_X: CurvatureOperator
    eig_y: EigenResult
    eig_x: EigenResult
    block_sizes: dict
    timings: dict
    generator: Callable


def farthest_first(distances: torch.Tensor, count: int, start: int) -> list[int]:
    """Greedy farthest-point order: ``start``, then repeatedly the point farthest from those chosen (``count`` of them)."""
    chosen = [start]
    nearest = distances[start].clone()
    while len(chosen) < min(count, distances.shape[0]):
        nearest[chosen] = -1.0
        nxt = int(nearest.argmax())
        chosen.append(nxt)
        nearest = torch.minimum(nearest, distances[nxt])
    return chosen


def walk_and_select(generator: Callable, forward: Callable, y: torch.Tensor, first_image: torch.Tensor, solutions: list[Solution],
                    pairwise: torch.Tensor, *, metric: Callable, steps: int, walkers: int, num_solutions: int,
                    tau: float = DEFAULT_TAU, quiet: bool | None = None) -> tuple[WalkResult, list[Solution], torch.Tensor]:
    """Feasible walks from the e-GLASS solutions, then the ``num_solutions`` most diverse of all the solutions found.

    The walkers start at the ``walkers`` e-GLASS solutions that are farthest apart (greedy farthest-point
    order on their perceptual distances, from the one farthest from the first solution). The solutions
    returned are the e-GLASS ones and every point of the walks, ordered the same way and cut at
    ``num_solutions``: a set spread as widely as the candidates allow.

    Returns:
        ``(walk, solutions, pairwise)``.
    """
    images = torch.stack([s.image for s in solutions])
    start = int(torch.tensor([s.perceptual_distance for s in solutions]).argmax())
    order = farthest_first(pairwise, walkers, start)
    starts = torch.stack([solutions[i].latent for i in order])
    walk = feasible_walks(generator, forward, y, starts, metric=metric, found=torch.cat([first_image.reshape(1, *images.shape[1:]), images]),
                          steps=steps, tau=tau, quiet=quiet)
    walked = [Solution(latent=p.latent, image=p.image, direction=f"w{p.walker + 1}.{p.step}", eta=p.eta,
                       measurement_mse=p.measurement_mse, feasible=p.feasible, perceptual_distance=0.0, status="walk")
              for p in walk.points]
    candidates = list(solutions) + walked
    stack = torch.cat([first_image.reshape(1, *images.shape[1:]), torch.stack([c.image for c in candidates])])
    distances = pairwise_distances(metric, stack)
    chosen = [i + 1 for i in farthest_first(distances[1:, 1:], num_solutions, int(distances[0, 1:].argmax()))]
    selected = [replace(candidates[i - 1], perceptual_distance=float(distances[0, i])) for i in chosen]
    return walk, selected, distances[chosen][:, chosen]


def direction_curvatures(H: CurvatureOperator, D: torch.Tensor, *, rtol: float = 1e-10) -> torch.Tensor:
    r"""The curvatures :math:`d_i^T H d_i` of the columns of ``D`` (n, P), in as few products as their span needs.

    Beyond 2K solutions the directions are combinations of the K eigenvector directions (and of the top
    H_Y eigenvectors Algorithm 1 removes), so P of them span only r < P dimensions. With an orthonormal
    basis Q of that span (the left singular vectors of D above ``rtol`` times the largest singular value),
    :math:`d_i = Q c_i` and :math:`d_i^T H d_i = c_i^T (Q^T H Q) c_i`: r products instead of P, exact up to
    the part of each direction outside the span (at most ``rtol`` of the largest singular value).
    """
    D = D.to(device="cpu", dtype=torch.float64)
    U, S, _ = torch.linalg.svd(D, full_matrices=False)
    Q = U[:, : int((S > rtol * S[0]).sum()) if S.numel() else 0]  # r <= P columns: independent directions keep P
    C = H.projected(Q.to(device=H.device, dtype=H.dtype)).to(device="cpu", dtype=torch.float64)  # Q^T H Q
    coefficients = Q.T @ D
    return (coefficients * (C @ coefficients)).sum(0)


def step_caps(generator: Callable, metric: Callable, z0: torch.Tensor, directions: list[Direction], H_X: CurvatureOperator, *,
              eta_max: float | None = None, seed: int = 0) -> tuple[torch.Tensor, float | None]:
    r"""The largest step along each direction: ``eta_max`` for all, or, when it is None, each direction's geometric cap.

    The geometric cap (:func:`~hvp_explore.exploration.steps.geometric_eta_max`) is the step whose
    perceptual change, to second order (:math:`\eta^2 d^T H_X d`),
    equals the perceptual distance between the first solution and a random image of the generator
    (:func:`~hvp_explore.exploration.steps.perceptual_budget`). The curvatures take one product per
    dimension of the directions' span (:func:`direction_curvatures`).

    Returns:
        ``(caps, budget)``: (len(directions),) float64 caps and the perceptual budget (None for a given ``eta_max``).
    """
    if eta_max is not None:
        return torch.full((len(directions),), float(eta_max), dtype=torch.float64), None
    curvatures = direction_curvatures(H_X, torch.stack([d.vector for d in directions], dim=1))
    budget = perceptual_budget(generator, metric, z0, seed=seed)
    return geometric_eta_max(curvatures, budget), budget


def capped_solutions(generator: Callable, forward: Callable, y: torch.Tensor, z0: torch.Tensor, first_image: torch.Tensor,
                     directions: list[Direction], *, metric: Callable, H_X: CurvatureOperator | None, num_solutions: int,
                     tau: float = DEFAULT_TAU, eta_max: float | None = None, seed: int = 0, chunk: int | None = None):
    """:func:`step_caps`, then :func:`render_solutions` under those caps; the caps' time counts in the ``steps`` stage.

    Returns:
        ``(solutions, rejected, pairwise, timings, caps, budget)``: :func:`render_solutions`'s four, then
        :func:`step_caps`'s two.
    """
    t0 = time.perf_counter()
    caps, budget = step_caps(generator, metric, z0, directions, H_X, eta_max=eta_max, seed=seed)
    caps_seconds = time.perf_counter() - t0
    solutions, rejected, pairwise, timings = render_solutions(generator, forward, y, z0, first_image, directions, metric=metric,
                                                              num_solutions=num_solutions, tau=tau, eta_max=caps, chunk=chunk)
    timings["steps"] += caps_seconds
    return solutions, rejected, pairwise, timings, caps, budget


def numerical_rank_part(result: EigenResult, rtol: float = H_Y_RANK_RTOL) -> EigenResult:
    """The pairs of ``result`` whose eigenvalue exceeds ``rtol`` times the largest (``info["numerical_rank"]`` says how many).

    H_Y has rank at most min(m, n) and often less (saturated pixels carry no gradient); its eigenvectors
    for (numerically) zero eigenvalues span its null space in an arbitrary basis, and removing them
    from a direction (Algorithm 1) would remove perceptual change for nothing.
    """
    values = result.values
    keep = values > rtol * values[0].clamp_min(0) if values.numel() else values.bool()
    rank = int(keep.sum())
    if rank == values.numel():
        return replace(result, info={**result.info, "numerical_rank": rank})
    return replace(result, values=values[keep], vectors=result.vectors[:, keep], residuals=result.residuals[keep],
                   converged=result.converged[keep], info={**result.info, "numerical_rank": rank, "dropped": int((~keep).sum())})


def worth_linearizing(forward: Callable, metric: Callable, n: int, *, k: int = DEFAULT_K, k_y: int | None = None,
                      pencil: bool = False) -> bool:
    r"""Whether the exploration's eigen stage should take the generator's Jacobian first (n Jacobian-vector products).

    Yes when the metric has a residual form (then every operator is a Gauss-Newton form, which depends on the generator
    only through its Jacobian at z0; a metric without one is differentiated by double backprop, which this rule leaves
    on the generator) and the eigensolves, by the static product counts ``auto`` goes by
    (:func:`~hvp_explore.eigen.solvers.static_half_products`), would pass at least n vectors through the generator: the
    face generator (n = 100, x4 super-resolution: 36 for the top 6 of H_Y and 64 for the top 10 of H_X), not the
    embedded default (n = 512: 128). With ``pencil`` a generalized pencil of two such operators follows (the
    ``generalized`` and ``unobserved`` modes): it takes H_Y's Jacobian (min(m, n)) and at least what the top k of the
    other one costs (the faces' default mode: 36 + 32 + 100 + 32 for k = 5). It is a static rule, so the same seed gives
    the same outputs; the Jacobian's n products come in batches, cheaper per vector than a solve's blocks, so the rule
    errs towards the generator.
    """
    if not callable(getattr(metric, "residual", None)):
        return False
    m = getattr(forward, "num_measurements", None)
    if m is None:
        return False  # the measurement count is unknown before a product: keep the generator
    k_y = k_y if k_y is not None else default_k_y(m, n)
    perceptual = static_half_products(math.inf, n, k)  # a metric's residual is long
    passes = static_half_products(m, n, k_y) + perceptual + ((min(m, n) + perceptual) if pencil else 0)
    return passes >= n


def eigenpairs(generator: Callable, forward: Callable, metric: Callable, z0: torch.Tensor, *, k: int = DEFAULT_K,
               k_y: int | None = None, solver: str = DEFAULT_SOLVER, tol: float = DEFAULT_TOL, max_memory: int | None = None,
               batch: int | None = None, seed: int = 0, pencil: bool = False, pencil_follows: bool = False,
               linearize: bool | str = "auto") -> EigenStage:
    """Top eigenpairs of H_Y and H_X at ``z0``: the eigen stage of :func:`explore` and of ``hvp-explore eig``.

    Args:
        generator, forward, metric: As in :func:`explore`.
        z0: The first solution (n,).
        k: H_X eigenpairs.
        k_y: H_Y eigenpairs (default :func:`~hvp_explore.exploration.default_k_y`: its whole range when m < n, else n/16);
            those below its numerical rank are dropped (:func:`numerical_rank_part`).
        solver, tol, seed: As in :func:`~hvp_explore.top_eigenpairs`.
        max_memory: Memory budget in bytes of one batched product (blocks are fitted to it); None = no budget.
        batch: Largest block on a CPU (:func:`~hvp_explore.operators.memory.batch_limit`); also the cap of a fitted block.
        pencil: H_X goes on into the generalized pencil: when that pencil will be solved densely
            (:func:`~hvp_explore.eigen.generalized.pencil_solver`) and ``solver`` is ``"auto"``, H_X's pairs come from the
            Jacobian it needs anyway (``solver="jacobian"``; the operator keeps :math:`J^T J` for the pencil).
        pencil_follows: A generalized pencil of Gauss-Newton operators at ``z0`` follows the stage (``explore``'s
            ``generalized`` and ``unobserved`` modes; implied by ``pencil``): its products count for ``linearize="auto"``,
            and it can be built on the stage's ``generator``.
        linearize: Build both operators on the generator's first-order model at ``z0``
            (:class:`~hvp_explore.operators.linearized.LinearizedGenerator`: the same matrices, whose products skip the
            generator) after taking its Jacobian, n products: ``True``, ``False``, or ``"auto"`` (the default): when the
            solves would pass at least n vectors through the generator (:func:`worth_linearizing`) and the metric has a
            residual form (Gauss-Newton operators; the rule leaves double-backprop Hessians on the generator).

    Raises:
        ValueError: ``k`` or ``k_y`` outside 1..n-1.
    """
    z0 = as_latent(z0)
    n = z0.numel()

    def check(label: str, count: object) -> int:
        if not isinstance(count, int) or not 1 <= count < n:
            raise ValueError(f"{label} must be between 1 and n - 1 = {n - 1}, got {count!r}")
        return count

    k, k_y = check("k", k), (None if k_y is None else check("k_y", k_y))
    timings, block_sizes, ops, results = {}, {}, {}, {}
    if linearize == "auto":
        linearize = worth_linearizing(forward, metric, n, k=k, k_y=k_y, pencil=pencil or pencil_follows)
    if linearize:
        t0 = time.perf_counter()
        generator = LinearizedGenerator(generator, z0, block_size=batch, max_memory=max_memory)
        timings["linearize"] = time.perf_counter() - t0
    for name, build in (("H_Y", lambda: measurement_hessian(generator, forward, z0)),
                        ("H_X", lambda: perceptual_hessian(generator, metric, z0))):
        t0 = time.perf_counter()
        op = build()
        if max_memory is not None:
            block_sizes[name] = fit_block_size(op, max_memory, largest=batch or 1024)
        else:
            op.block_size = block_sizes[name] = batch
        count = k if name == "H_X" else (k_y if k_y is not None else check("k_y", default_k_y(op.residual_dim, n)))
        chosen = solver
        if name == "H_X" and pencil and solver == "auto" and pencil_solver(op, ops["H_Y"]) == "dense":
            chosen = "jacobian"  # the dense pencil takes H_X's Jacobian: its eigenpairs come with it
        result = top_eigenpairs(op, count, solver=chosen, tol=tol, seed=seed, probe=False)  # reproducible: no timing
        ops[name], results[name] = op, (numerical_rank_part(result) if name == "H_Y" else result)
        timings["eigen_y" if name == "H_Y" else "eigen_x"] = time.perf_counter() - t0
    return EigenStage(ops["H_Y"], ops["H_X"], results["H_Y"], results["H_X"], block_sizes, timings, generator)


def explore(generator: Callable, forward: Callable, y: torch.Tensor, *, metric: Callable, num_solutions: int = DEFAULT_NUM_SOLUTIONS,
            mode: str = DEFAULT_MODE, k_y: int | None = None, K: int | None = DEFAULT_K, threshold: float = DEFAULT_THRESHOLD, eps: float = DEFAULT_EPS,
            tau: float = DEFAULT_TAU, eta_max: float | None = None, solver: str = DEFAULT_SOLVER, tol: float = DEFAULT_TOL,
            inversion: InversionResult | None = None, invert_options: dict | None = None, max_memory: int | None = None,
            walk_steps: int = 0, walkers: int = DEFAULT_WALKERS, seed: int = 0, quiet: bool | None = None,
            noise_sigma: float | None = None) -> ExplorationResult:
    r"""Find a first solution, then explore ``num_solutions`` more along low-measurement, high-perceptual directions.

    Args:
        generator: Latents (B, n) -> images (B, C, H, W) in [-1, 1].
        forward: Linear forward operator (images -> measurements).
        y: The observation, measurements of shape (1, ...) or (...).
        metric: Perceptual metric (a :class:`~hvp_explore.metrics.base.PerceptualMetric` or a callable).
        num_solutions: N, the number of explored solutions (two per direction: both signs; beyond 2K
            solutions the directions are combinations of the K eigenvector directions, see
            :func:`make_directions`).
        mode: ``"eglass"`` (Algorithm 1 on v^K, v^{K-1}, ...), ``"generalized"`` (top pencil
            eigenvectors), or ``"raw"`` (unprojected v^K, for comparison).
        k_y: Eigenpairs of H_Y (default: :func:`default_k_y`).
        K: 1-based index of the first H_X eigenvector of e-GLASS/raw, H_X is solved for its top K
            pairs; in generalized mode the number of pencil eigenvectors (default :data:`DEFAULT_K`).
        threshold: Cosine above which a coupling with a top H_Y eigenvector is removed.
        eps: Regularisation of the pencil, relative to the top eigenvalue of H_Y.
        tau: Feasibility threshold on the measurement MSE ([0, 1] scale).
        eta_max: Largest step along any direction; None (the default) caps each direction where its
            perceptual change reaches that of a random image of the generator (:func:`step_caps`).
        solver: Eigensolver for both operators (see :func:`~hvp_explore.top_eigenpairs`).
        tol: Relative eigensolver tolerance.
        inversion: A first solution to start from (skips the inversion).
        invert_options: Keyword options for :func:`~hvp_explore.inversion.invert`.
        max_memory: Memory budget in bytes of one batched product (blocks are split to fit; see
            :mod:`hvp_explore.operators.memory`); ``None`` = no limit. On a CPU, blocks of products and batches of
            forward passes are also capped at :func:`~hvp_explore.operators.memory.cpu_batch_size` of the image
            size, where batching stops paying.
        walk_steps: Steps of feasible walks after the e-GLASS solutions (0: none). The walkers start at
            the e-GLASS solutions farthest apart, each step stays feasible
            (:func:`~hvp_explore.exploration.walks.feasible_walks`), every point they reach is a candidate,
            and the ``num_solutions`` returned are chosen among all candidates for diversity
            (:func:`walk_and_select`).
        walkers: Walkers of the feasible walks.
        seed: Seeds the inversion and the eigensolvers.
        noise_sigma: A known noise standard deviation of ``y`` ([0, 1] scale): ``tau`` is then
            :func:`~hvp_explore.problems.tau_from_noise` (the inversion aims at a quarter of it), raised to the first
            solution's own measurement MSE when that is larger (:func:`~hvp_explore.problems.resolve_tau`).
        quiet: Hide progress bars.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    if not isinstance(num_solutions, int) or num_solutions < 1:
        raise ValueError(f"the number of solutions must be a positive integer, got {num_solutions!r}")
    if not tau > 0:
        raise ValueError(f"tau must be positive, got {tau}")
    if not isinstance(walk_steps, int) or walk_steps < 0 or not isinstance(walkers, int) or walkers < 1:
        raise ValueError(f"walk steps must be a non-negative integer and walkers a positive one, got {walk_steps!r} and {walkers!r}")
    if walk_steps and num_solutions + walkers * walk_steps > PAIRWISE_MATRIX_MAX:
        raise ValueError(f"walks choose among all their candidates with an (N, N) distance matrix: num_solutions + walkers * walk_steps "
                         f"must be at most {PAIRWISE_MATRIX_MAX}, got {num_solutions + walkers * walk_steps}")
    timings: dict[str, float] = {}
    t_total = time.perf_counter()

    m_y = getattr(forward, "num_measurements", y.numel())
    noise_tau = resolve_tau(tau, noise_sigma, m_y)  # tau itself without a noise level
    # 1. first solution (aiming at a quarter of tau)
    provided = inversion is not None
    if not provided:
        inversion = invert(generator, forward, y, tau=noise_tau, seed=seed, quiet=quiet, **(invert_options or {}))
    timings["inversion"] = inversion.seconds
    tau = resolve_tau(tau, noise_sigma, m_y, floor=inversion.measurement_mse)
    G, z0 = inversion.generator, as_latent(inversion.latent)
    n = z0.numel()
    count = num_directions(num_solutions)
    K = DEFAULT_K if K is None else K
    if not isinstance(K, int) or not 1 <= K < n:
        raise ValueError(f"K must be an integer between 1 and n - 1 = {n - 1}, got {K!r}")
    batch = batch_limit(inversion.image)

    # 2-5. the metrics, directions, steps and distances, one progress step each
    with progress_bar("exploring", 4, quiet=quiet) as bar:
        bar.advance(0, status="eigenpairs")
        eig = eigenpairs(G, forward, metric, z0, k=min(count, K) if mode in PENCIL_MODES else K, k_y=k_y, solver=solver, tol=tol,
                         max_memory=max_memory, batch=batch, seed=seed, pencil=mode == "generalized", pencil_follows=mode in PENCIL_MODES)
        H_Y, H_X, eig_y, eig_x, k_y, m = eig.H_Y, eig.H_X, eig.eig_y, eig.eig_x, eig.eig_y.requested, eig.H_Y.residual_dim
        block_sizes = eig.block_sizes
        timings.update(eig.timings)
        bar.advance(2, status="directions")
        t0 = time.perf_counter()
        pencil_op = H_X
        if mode == "unobserved":  # the metric of what A cannot see, against H_Y (through the stage's Jacobian of G, if it took one)
            pencil_op = unobserved_hessian(eig.generator, forward, metric, z0)
            pencil_op.block_size = H_X.block_size
        directions, pencil = make_directions(mode, eig_y, eig_x, count=count, K=K, threshold=threshold, H_X=pencil_op, H_Y=H_Y,
                                             eps=eps, tol=tol, seed=seed)
        timings["directions"] = time.perf_counter() - t0
        bar.advance(status="feasible steps")
        with torch.no_grad():
            first_image = quantize(inversion.image.reshape(1, *inversion.image.shape[-3:]))
            first_mse = float(measurement_mse(forward, first_image, y)[0])
        solutions, rejected, pairwise, stage_times, caps, budget = capped_solutions(
            G, forward, y, z0, first_image, directions, metric=metric, H_X=H_X, num_solutions=num_solutions, tau=tau,
            eta_max=eta_max, seed=seed, chunk=batch)
        timings.update(stage_times)
        walk = None
        if walk_steps and solutions:
            bar.advance(0, status="feasible walks")
            t0 = time.perf_counter()
            walk, solutions, pairwise = walk_and_select(G, forward, y, first_image, solutions, pairwise, metric=metric, steps=walk_steps,
                                                        walkers=walkers, num_solutions=num_solutions, tau=tau, quiet=quiet)
            timings["walks"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        unobserved = solutions_unobserved_share(forward, solutions, first_image, metric=metric)
        timings["unobserved_share"] = time.perf_counter() - t0
        bar.advance(status="done")
    # an inversion passed in was paid for outside this call
    timings["total"] = time.perf_counter() - t_total + (inversion.seconds if provided else 0.0)
    settings = {"mode": mode, "num_solutions": num_solutions, "k_y": k_y, "k_x": eig_x.k, "K": K,
                "threshold": threshold, "eps": eps, "tau": tau, "eta_max": "geometric" if eta_max is None else eta_max,
                "eta_caps": caps.tolist(), "perceptual_budget": budget, "capped_steps": sum(s_.status == "capped" for s_ in solutions),
                "solver": solver, "tol": tol, "seed": seed,
                "k_y_rank": eig_y.k, "m": m, "n": n, "max_memory": max_memory, "block_sizes": block_sizes,
                "walk_steps": walk_steps, "walkers": walkers if walk_steps else 0}
    if noise_sigma is not None:
        settings["tau_from_noise"] = {"noise_sigma": noise_sigma, "noise_tau": noise_tau, "first_solution_mse": inversion.measurement_mse,
                                      "floored": tau > noise_tau}
    return ExplorationResult(inversion=inversion, first_image=first_image[0], first_mse=first_mse, eig_y=eig_y, eig_x=eig_x,
                             pencil=pencil, directions=tuple(directions), solutions=tuple(solutions), pairwise=pairwise,
                             timings=timings, settings=settings, rejected=tuple(rejected), walk=walk, unobserved=unobserved)


def solutions_unobserved_share(forward: Callable, solutions, first_image: torch.Tensor, *, metric: Callable | None = None) -> dict | None:
    """:func:`~hvp_explore.exploration.distances.unobserved_share` of solutions as saved (None without solutions or a
    forward operator that cannot say what it does not see)."""
    if not solutions or not callable(getattr(forward, "unobserved", None)):
        return None
    images = torch.stack([s.image.reshape(first_image.shape[-3:]) for s in solutions]).to(first_image.dtype)
    return unobserved_share(forward, images, first_image, metric=metric)


class Explorer:
    """A generator, a perceptual metric and a device loaded once; the stages of an exploration on any observation.

    What the command line's ``explore``, ``batch``, ``demo`` and stage commands use; every default is a
    field default of :mod:`hvp_explore.settings`.

    Example:
        >>> ex = Explorer("faces")                                          # doctest: +SKIP
        >>> obs = ex.observe("face16.png", ProblemSettings(problem="sr"))   # doctest: +SKIP
        >>> result = ex.explore(obs, directions=DirectionSettings(solutions=20))  # doctest: +SKIP

    Args:
        generator: A registered generator name, path or factory (:func:`~hvp_explore.generators.load_generator`).
        metric: A metric name (:func:`~hvp_explore.metrics.load_metric`), ``"auto"``: the generator's
            default (:func:`~hvp_explore.metrics.default_metric`), or None for the stages that need none
            (inversion, PULSE).
        device: Torch device.
        max_memory: Memory budget of one batched product: ``"auto"``, ``"none"``, a size such as ``"2GB"``, or bytes.
        generator_state: Weights to load into the generator (a fine-tuned copy saved by a stage).

    Raises:
        ValueError: Unknown generator or metric, missing weights, a metric that cannot take the
            generator's images, or a bad memory budget (one line each), before any work.
    """

    def __init__(self, generator: str = DEFAULT_GENERATOR, metric: str | None = DEFAULT_METRIC, *, device: str = DEFAULT_DEVICE,
                 max_memory: str | int | None = DEFAULT_MAX_MEMORY, generator_state: dict | None = None):
        self.generator_name = str(generator)
        self.device = device
        self.generator = load_generator(generator, device=device)
        if generator_state is not None:  # a fine-tuned copy from a stage folder: a mismatch is one line, not a traceback
            load_state_into(self.generator, generator_state, source="the stage's generator_state", error=ValueError)
        self.metric_name = default_metric(self.generator_name) if metric == "auto" else metric
        self.metric = None if metric is None else load_metric(self.metric_name, device=device)
        if self.metric is not None:
            self.metric.check_image_shape(tuple(self.generator.image_shape))
        self.budget = resolve_budget(max_memory, device)

    @property
    def latent_dim(self) -> int:
        """n, the generator's latent dimension."""
        return int(self.generator.latent_dim)

    def check(self, eigen: EigenSettings) -> None:
        """Refuse eigenpair counts the generator's latent dimension cannot have (one line, before any work)."""
        n = self.latent_dim
        for name in ("k", "k_y"):
            value = getattr(eigen, name)
            if value is not None and not 1 <= value < n:
                raise ValueError(f"{flag_of(EigenSettings, name)} must be between 1 and n - 1 = {n - 1} "
                                 f"(the latent dimension is {n}), got {value}")

    def check_memory(self, *, seed: int = DEFAULT_SEED) -> None:
        """Refuse a memory budget that cannot hold one product of H_X, measured at a prior latent before any inversion.

        H_X's products (generator and metric features) are the larger of the two operators' on every
        registered generator; H_Y's, which need the observation, are checked again when they are built.
        """
        if self.budget is None or self.metric is None:
            return
        z = torch.randn(self.latent_dim, generator=torch.Generator().manual_seed(seed)).to(self.device)
        check_one_product(perceptual_hessian(self.generator, self.metric, z), self.budget)

    def observe(self, path: Path | str, problem: ProblemSettings = ProblemSettings(), *, seed: int = DEFAULT_SEED) -> Observation:
        """The observation in ``path`` for this generator's images (see :func:`~hvp_explore.problems.load_observation`)."""
        return load_observation(path, image_shape=tuple(self.generator.image_shape), seed=seed, **problem.kwargs())

    def invert(self, observation: Observation, settings: InversionSettings = InversionSettings(), *, tau: float = DEFAULT_TAU,
               seed: int = DEFAULT_SEED, quiet: bool | None = None) -> InversionResult:
        """The first solution (:func:`~hvp_explore.inversion.invert`)."""
        return invert(self.generator, observation.forward.to(self.device), observation.y.to(self.device), tau=tau, seed=seed,
                      quiet=quiet, **_invert_kwargs(settings))

    def pulse(self, observation: Observation, settings: PulseSettings = PulseSettings(), *, tau: float = DEFAULT_TAU,
              seed: int = DEFAULT_SEED, quiet: bool | None = None) -> PulseResult:
        """The PULSE baseline's runs (:func:`~hvp_explore.inversion.pulse`)."""
        return pulse(self.generator, observation.forward.to(self.device), observation.y.to(self.device), settings.solutions,
                     steps=settings.steps, lr=settings.lr, eps=tau, batch=settings.batch, seed=seed, quiet=quiet)

    def eigenpairs(self, observation: Observation, z0: torch.Tensor, eigen: EigenSettings = EigenSettings(), *,
                   seed: int = DEFAULT_SEED) -> EigenStage:
        """The operators and top eigenpairs at ``z0`` (:func:`eigenpairs`), blocks sized as :func:`explore` sizes them."""
        self.check(eigen)
        with torch.no_grad():
            image = self.generator(as_latent(z0).to(self.device)[None])
        return eigenpairs(self.generator, observation.forward.to(self.device), self.metric, z0.to(self.device), k=eigen.k,
                          k_y=eigen.k_y, solver=eigen.solver, tol=eigen.tol, max_memory=self.budget, batch=batch_limit(image),
                          seed=seed)

    def operators(self, observation: Observation, z0: torch.Tensor, *, unobserved: bool = False
                  ) -> tuple[CurvatureOperator, CurvatureOperator]:
        """``(H_Y, H_X)`` at ``z0``, without eigenpairs; with ``unobserved``, ``(H_Y, H_U)``
        (:func:`~hvp_explore.operators.unobserved_hessian`: the perceptual metric of what A cannot see)."""
        z0, forward = as_latent(z0).to(self.device), observation.forward.to(self.device)
        perceptual = (unobserved_hessian(self.generator, forward, self.metric, z0) if unobserved
                      else perceptual_hessian(self.generator, self.metric, z0))
        return measurement_hessian(self.generator, forward, z0), perceptual

    def directions(self, observation: Observation, z0: torch.Tensor, eig_y: EigenResult, eig_x: EigenResult,
                   settings: ProjectSettings = ProjectSettings(), *, seed: int = DEFAULT_SEED) -> tuple[list[Direction], EigenResult | None]:
        """The directions of ``settings.solutions`` solutions from computed eigenpairs (:func:`make_directions`).

        Generalized and unobserved-part directions also need the operators of their pencil at ``z0``, which are built
        here (for ``unobserved``, :func:`~hvp_explore.operators.unobserved_hessian` in place of H_X).
        """
        H_Y, H_X = (self.operators(observation, z0, unobserved=settings.mode == "unobserved") if settings.mode in PENCIL_MODES
                    else (None, None))
        return make_directions(settings.mode, eig_y, eig_x, count=num_directions(settings.solutions), K=settings.k,
                               threshold=settings.threshold, H_X=H_X, H_Y=H_Y, eps=settings.eps, seed=seed)

    def render(self, observation: Observation, z0: torch.Tensor, first_image: torch.Tensor, directions: list[Direction],
               settings: RenderSettings = RenderSettings(), *, seed: int = DEFAULT_SEED, with_caps: bool = False) -> tuple:
        """Solutions along ``directions`` (:func:`render_solutions`): two per direction unless ``settings.solutions`` says.

        Steps are capped as :func:`explore` caps them (:func:`step_caps`: geometric unless ``settings.eta_max`` is given).

        Returns:
            ``(solutions, rejected, pairwise, timings)``, and the (len(directions),) step caps last with ``with_caps``
            (what :meth:`frames` spans).
        """
        z0 = as_latent(z0).to(self.device)
        num = settings.solutions if settings.solutions is not None else 2 * len(directions)
        H_X = perceptual_hessian(self.generator, self.metric, z0) if settings.eta_max is None else None
        return capped_solutions(self.generator, observation.forward.to(self.device), observation.y.to(self.device), z0,
                                first_image.to(self.device), directions, metric=self.metric, H_X=H_X, num_solutions=num,
                                tau=settings.tau, eta_max=settings.eta_max, seed=seed)[:5 if with_caps else 4]

    def frames(self, observation: Observation, z0: torch.Tensor, first_image: torch.Tensor, directions: list[Direction],
               solutions: list[Solution], *, eta_max, tau: float = DEFAULT_TAU, frames: int = DEFAULT_FRAMES, walk: WalkResult | None = None,
               generator: Callable | None = None) -> Frames:
        """The frames of report.html's sliders (:func:`~hvp_explore.exploration.frames.exploration_frames`).

        ``generator`` is the run's generator when it is not this explorer's (IAGAN's fine-tuned copy).
        """
        return exploration_frames(generator or self.generator, observation.forward.to(self.device), observation.y.to(self.device),
                                  as_latent(z0).to(self.device), first_image.to(self.device), directions, solutions, eta_max=eta_max,
                                  tau=tau, frames=frames, walk=walk, chunk=batch_limit(first_image))

    def exploration_frames(self, observation: Observation, result: ExplorationResult, *, frames: int = DEFAULT_FRAMES) -> Frames:
        """The frames of an exploration's report.html: its directions under its step caps, its walkers' paths."""
        return self.frames(observation, result.inversion.latent, result.first_image, list(result.directions), list(result.solutions),
                           eta_max=result.settings["eta_caps"], tau=result.settings["tau"], frames=frames, walk=result.walk,
                           generator=result.inversion.generator)

    def explore(self, observation: Observation, *, inversion: InversionSettings = InversionSettings(),
                eigen: EigenSettings = EigenSettings(), directions: DirectionSettings = DirectionSettings(),
                steps: StepSettings = StepSettings(), walks: WalkSettings = WalkSettings(), seed: int = DEFAULT_SEED,
                quiet: bool | None = None) -> ExplorationResult:
        """The whole pipeline on one observation (:func:`explore`), feasible walks included when ``walks.walk_steps`` > 0."""
        self.check(eigen)
        return explore(self.generator, observation.forward.to(self.device), observation.y.to(self.device), metric=self.metric,
                       num_solutions=directions.solutions, mode=directions.mode, k_y=eigen.k_y, K=eigen.k,
                       threshold=directions.threshold, eps=directions.eps, tau=steps.tau, eta_max=steps.eta_max, solver=eigen.solver,
                       tol=eigen.tol, invert_options=_invert_kwargs(inversion), max_memory=self.budget,
                       walk_steps=walks.walk_steps, walkers=walks.walkers, seed=seed, quiet=quiet, noise_sigma=steps.noise_sigma)


def _invert_kwargs(settings: InversionSettings) -> dict:
    """:func:`~hvp_explore.inversion.invert`'s keywords of the settings (the switches' on/off as True/False)."""
    kwargs = settings.kwargs()
    for name in ("gauss_newton", "iagan"):
        kwargs[name] = SWITCHES[kwargs[name]]
    return kwargs

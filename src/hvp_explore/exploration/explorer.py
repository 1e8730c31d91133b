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

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from hvp_explore.eigen.solvers import EigenResult, top_eigenpairs
from hvp_explore.exploration.directions import (
    Direction,
    coupling_matrix,
    default_k_y,
    make_directions,
    num_directions,
)
from hvp_explore.exploration.distances import pairwise_distances
from hvp_explore.exploration.steps import default_eta_max, deliver, ellipsoid_steps, feasible_steps, predicted_steps
from hvp_explore.inversion import InversionResult, invert
from hvp_explore.io._progress import progress_bar
from hvp_explore.io.images import quantize
from hvp_explore.operators.base import as_latent
from hvp_explore.operators.curvature import measurement_hessian, perceptual_hessian
from hvp_explore.operators.memory import batch_limit, fit_block_size
from hvp_explore.problems import measurement_mse
from hvp_explore.settings import DEFAULT_EPS, DEFAULT_K, DEFAULT_NUM_SOLUTIONS, DEFAULT_TAU, DEFAULT_THRESHOLD, DEFAULT_TOL, DELIVERY_MARGIN, MODES

__all__ = ["Solution", "ExplorationResult", "render_solutions", "explore"]


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
        pencil: Top pencil eigenpairs (``mode="generalized"`` only).
        directions: The directions used, in order.
        solutions: The explored solutions (feasible ones first in direction order).
        pairwise: (N, N) perceptual distances between solutions.
        timings: Seconds per stage and ``total``.
        settings: The options that produced it.
        rejected: Signed directions that admitted no useful step (label and status).
    """

    inversion: InversionResult
    first_image: torch.Tensor
    first_mse: float
    eig_y: EigenResult
    eig_x: EigenResult
    pencil: EigenResult | None
    directions: tuple[Direction, ...]
    solutions: tuple[Solution, ...]
    pairwise: torch.Tensor
    timings: dict
    settings: dict
    rejected: tuple[dict, ...] = field(default=())

    @property
    def coupling(self) -> torch.Tensor:
        """:math:`C = U^T V` of the computed eigenvectors."""
        return coupling_matrix(self.eig_y.vectors, self.eig_x.vectors)


def render_solutions(generator: Callable, forward: Callable, y: torch.Tensor, z0: torch.Tensor, first_image: torch.Tensor,
                     directions: list[Direction], *, metric: Callable, num_solutions: int, tau: float = DEFAULT_TAU,
                     eta_max: float, chunk: int | None = None) -> tuple[list[Solution], list[dict], torch.Tensor, dict]:
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
        ``(solutions, rejected, pairwise, timings)`` with ``pairwise`` (N, N) distances between solutions
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
    target = tau * (1 - DELIVERY_MARGIN)
    base_steps, base_images = feasible_steps(generator, forward, y, z0, torch.cat([D[:, :nb], -D[:, :nb]], dim=1), tau=target,
                                             eta_max=eta_max, chunk=chunk)
    combo_steps, combo_images = [], base_images[:0]
    if combos:
        # A base direction without a step would predict 0 for every combination using it: stand in the
        # smallest step found along any base direction (the smallest grid step if none was found).
        found = [st.eta for st in base_steps if st.eta > 0]
        fallback = min(found) if found else eta_max / 16
        eta_plus = torch.tensor([base_steps[j].eta or fallback for j in range(nb)], dtype=torch.float64)
        eta_minus = torch.tensor([base_steps[nb + j].eta or fallback for j in range(nb)], dtype=torch.float64)
        C = torch.tensor([directions[i].combination for i in combos], dtype=torch.float64).T  # (nb, c)
        guesses = torch.cat([ellipsoid_steps(C, eta_plus, eta_minus), ellipsoid_steps(-C, eta_plus, eta_minus)])
        Dc = D[:, nb:]
        combo_steps, combo_images = predicted_steps(generator, forward, y, z0, torch.cat([Dc, -Dc], dim=1),
                                                    guesses, tau=target, eta_max=eta_max, chunk=chunk)
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
    dist = pairwise_distances(metric, torch.cat([first_image.reshape(1, *sol_images.shape[1:]).to(sol_images.dtype), sol_images]),
                              chunk=chunk)
    timings["distances"] = time.perf_counter() - t0
    solutions = []
    for row, (i, label) in enumerate(chosen):
        eta = float(sol_etas[row]) if i < count else -float(sol_etas[row])
        mse = float(sol_mses[row])
        solutions.append(Solution(latent=z0 + eta * directions[i % count].vector.to(z0.dtype), image=sol_images[row],
                                  direction=label, eta=eta, measurement_mse=mse, feasible=mse <= tau,
                                  perceptual_distance=float(dist[0, row + 1]), status="shrunk" if shrunk[row] else steps[i].status))
    return solutions, rejected, dist[1:, 1:], timings


def explore(generator: Callable, forward: Callable, y: torch.Tensor, *, metric: Callable, num_solutions: int = DEFAULT_NUM_SOLUTIONS,
            mode: str = "eglass", k_y: int | None = None, K: int | None = DEFAULT_K, threshold: float = DEFAULT_THRESHOLD, eps: float = DEFAULT_EPS,
            tau: float = DEFAULT_TAU, eta_max: float | None = None, solver: str = "auto", tol: float = DEFAULT_TOL,
            inversion: InversionResult | None = None, invert_options: dict | None = None, max_memory: int | None = None,
            seed: int = 0, quiet: bool | None = None) -> ExplorationResult:
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
        eta_max: Largest step (default :func:`default_eta_max`).
        solver: Eigensolver for both operators (see :func:`~hvp_explore.top_eigenpairs`).
        tol: Relative eigensolver tolerance.
        inversion: A first solution to start from (skips the inversion).
        invert_options: Keyword options for :func:`~hvp_explore.inversion.invert`.
        max_memory: Memory budget in bytes of one batched product (blocks are split to fit; see
            :mod:`hvp_explore.operators.memory`); ``None`` = no limit. On a CPU, blocks of products and batches of
            forward passes are also capped at :func:`~hvp_explore.operators.memory.cpu_batch_size` of the image
            size, where batching stops paying.
        seed: Seeds the inversion and the eigensolvers.
        quiet: Hide progress bars.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    if not isinstance(num_solutions, int) or num_solutions < 1:
        raise ValueError(f"the number of solutions must be a positive integer, got {num_solutions!r}")
    if not tau > 0:
        raise ValueError(f"tau must be positive, got {tau}")
    timings: dict[str, float] = {}
    t_total = time.perf_counter()

    # 1. first solution
    provided = inversion is not None
    if not provided:
        inversion = invert(generator, forward, y, tau=tau, seed=seed, quiet=quiet, **(invert_options or {}))
    timings["inversion"] = inversion.seconds
    G, z0 = inversion.generator, as_latent(inversion.latent)
    n = z0.numel()
    count = num_directions(num_solutions)
    K = DEFAULT_K if K is None else K
    if not isinstance(K, int) or not 1 <= K < n:
        raise ValueError(f"K must be an integer between 1 and n - 1 = {n - 1}, got {K!r}")
    eta_max = eta_max if eta_max is not None else default_eta_max(n)
    batch = batch_limit(inversion.image)

    def block_size(op) -> int | None:
        if max_memory is not None:
            return fit_block_size(op, max_memory, largest=batch or 1024)
        op.block_size = batch
        return batch

    # 2-5. the metrics, directions, steps and distances, one progress step each
    with progress_bar("exploring", 4, quiet=quiet) as bar:
        bar.advance(0, status="H_Y eigenpairs")
        t0 = time.perf_counter()
        H_Y = measurement_hessian(G, forward, z0)
        block_sizes = {"H_Y": block_size(H_Y)}
        m = H_Y.residual_dim
        k_y = k_y if k_y is not None else default_k_y(m, n)
        if not 1 <= k_y < n:
            raise ValueError(f"k_y must be between 1 and n - 1 = {n - 1}, got {k_y}")
        eig_y = top_eigenpairs(H_Y, k_y, solver=solver, tol=tol, seed=seed)
        timings["eigen_y"] = time.perf_counter() - t0
        bar.advance(status="H_X eigenpairs")
        t0 = time.perf_counter()
        H_X = perceptual_hessian(G, metric, z0)
        block_sizes["H_X"] = block_size(H_X)
        eig_x = top_eigenpairs(H_X, min(count, K) if mode == "generalized" else K, solver=solver, tol=tol, seed=seed)
        timings["eigen_x"] = time.perf_counter() - t0
        bar.advance(status="directions")
        t0 = time.perf_counter()
        directions, pencil = make_directions(mode, eig_y, eig_x, count=count, K=K, threshold=threshold, H_X=H_X, H_Y=H_Y,
                                             eps=eps, tol=tol, seed=seed)
        timings["directions"] = time.perf_counter() - t0
        bar.advance(status="feasible steps")
        with torch.no_grad():
            first_image = quantize(inversion.image.reshape(1, *inversion.image.shape[-3:]))
            first_mse = float(measurement_mse(forward, first_image, y)[0])
        solutions, rejected, pairwise, stage_times = render_solutions(G, forward, y, z0, first_image, directions,
                                                                      metric=metric, num_solutions=num_solutions, tau=tau,
                                                                      eta_max=eta_max, chunk=batch)
        timings.update(stage_times)
        bar.advance(status="done")
    # an inversion passed in was paid for outside this call
    timings["total"] = time.perf_counter() - t_total + (inversion.seconds if provided else 0.0)
    settings = {"mode": mode, "num_solutions": num_solutions, "k_y": k_y, "k_x": eig_x.k, "K": K,
                "threshold": threshold, "eps": eps, "tau": tau, "eta_max": eta_max, "solver": solver, "tol": tol, "seed": seed,
                "m": m, "n": n, "max_memory": max_memory, "block_sizes": block_sizes}
    return ExplorationResult(inversion=inversion, first_image=first_image[0], first_mse=first_mse, eig_y=eig_y, eig_x=eig_x, pencil=pencil, directions=tuple(directions),
                             solutions=tuple(solutions), pairwise=pairwise, timings=timings, settings=settings,
                             rejected=tuple(rejected))

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
from dataclasses import dataclass, field

import torch

from ._base import as_latent, frozen_modules
from ._progress import progress_bar
from .curvature import measurement_hessian, perceptual_hessian
from .eigen import EigenResult, top_eigenpairs
from .generalized import top_generalized_eigenpairs
from .inversion import InversionResult, invert
from .images import quantize
from .memory import batch_limit, fit_block_size
from .problems import DEFAULT_TAU, measurement_mse

__all__ = [
    "MODES",
    "coupling_matrix",
    "significant_couplings",
    "Projection",
    "eglass_projection",
    "Direction",
    "Step",
    "feasible_steps",
    "ellipsoid_steps",
    "predicted_steps",
    "Solution",
    "ExplorationResult",
    "explore",
    "make_directions",
    "render_solutions",
    "pairwise_distances",
    "default_k_y",
    "DEFAULT_K",
    "DEFAULT_TOL",
    "combine_directions",
    "default_eta_max",
    "num_directions",
    "deliver",
    "DELIVERY_MARGIN",
]

MODES = ("eglass", "generalized", "raw")


# --- coupling and projection -----------------------------------------------------------------------

def coupling_matrix(U: torch.Tensor, V: torch.Tensor) -> torch.Tensor:
    r"""The coupling :math:`C = U^T V` (k_Y x k_X) of two orthonormal eigenbases: cosines between eigenvectors."""
    if U.ndim != 2 or V.ndim != 2 or U.shape[0] != V.shape[0]:
        raise ValueError(f"U and V must be (n, k) matrices with the same n, got {tuple(U.shape)} and {tuple(V.shape)}")
    return U.T.to(torch.float64) @ V.to(torch.float64)


def significant_couplings(C: torch.Tensor, threshold: float) -> torch.Tensor:
    """Boolean mask of the entries of ``C`` with ``|C| > threshold``."""
    if not 0 <= threshold < 1:
        raise ValueError(f"the cosine threshold must be in [0, 1), got {threshold}")
    return C.abs() > threshold


@dataclass(frozen=True)
class Projection:
    """The outcome of Algorithm 1 on one starting vector.

    Attributes:
        direction: The final unit direction d, shape (n,).
        cosines_before: :math:`U^T v` of the starting vector, shape (k_Y,).
        cosines_after: :math:`U^T d`, shape (k_Y,); every entry is at most the threshold in size.
        removed: 1-based indices j of the :math:`u^j` removed, in the order they were removed.
        passes: Sweeps over U until no cosine exceeded the threshold.
    """

    direction: torch.Tensor
    cosines_before: torch.Tensor
    cosines_after: torch.Tensor
    removed: tuple[int, ...]
    passes: int


def eglass_projection(v: torch.Tensor, U: torch.Tensor, *, threshold: float, max_passes: int = 10) -> Projection:
    r"""Algorithm 1 of e-GLASS: remove from ``v`` its components along the :math:`u^j` it is coupled with.

    For each column :math:`u^j` of U with :math:`|\langle d, u^j\rangle|` above the threshold:
    :math:`d \leftarrow d - \langle d, u^j\rangle u^j`, then :math:`d \leftarrow d / \|d\|`; sweeps repeat
    until no cosine exceeds the threshold (one sweep suffices in exact arithmetic, since the
    :math:`u^j` are orthonormal; rounding may need a second).

    Raises:
        ValueError: When the projection removes the whole vector (v inside the span of U).
    """
    significant_couplings(U.new_zeros(1), threshold)  # validates the threshold
    U = U.to(torch.float64)
    cutoff = max(threshold, 1e-12)  # cosines below 1e-12 are rounding, not coupling
    d = v.to(torch.float64) / v.norm()
    before = U.T @ d
    removed: list[int] = []
    passes = 0
    while passes < max_passes:
        cos = U.T @ d
        if not bool((cos.abs() > cutoff).any()):
            break
        passes += 1
        for j in range(U.shape[1]):
            c = torch.dot(d, U[:, j])
            if abs(float(c)) > cutoff:
                d = d - c * U[:, j]
                norm = d.norm()
                if float(norm) < 1e-12:
                    raise ValueError("the e-GLASS projection removed the whole direction: it lies in the span of the H_Y eigenvectors")
                d = d / norm
                removed.append(j + 1)
    return Projection(direction=d, cosines_before=before, cosines_after=U.T @ d, removed=tuple(removed), passes=passes)


@dataclass(frozen=True)
class Direction:
    """A unit direction in latent space and where it came from.

    Attributes:
        vector: (n,) unit vector, float64.
        mode: ``"eglass"``, ``"generalized"`` or ``"raw"``.
        label: Short name: ``"v10"`` (from the 10th H_X eigenvector), ``"g3"`` (3rd pencil eigenvector).
        index: 1-based eigenvector index it started from (0 for a combination).
        projection: The Algorithm 1 record (e-GLASS mode only).
        combination: For a combination ``"c3"`` of the eigenvector directions (see
            :func:`combine_directions`): its coefficients over them, scaled so that their weighted sum
            has unit norm; ``None`` for an eigenvector direction.
    """

    vector: torch.Tensor
    mode: str
    label: str
    index: int
    projection: Projection | None = None
    combination: tuple[float, ...] | None = None


# --- the feasible step ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Step:
    """The step along one signed direction.

    Attributes:
        eta: Signed step length (0 when no feasible step was found).
        measurement_mse: MSE of the measurements of G(z0 + eta d) ([0, 1] scale).
        feasible: ``measurement_mse <= tau``.
        status: ``"ok"`` (bracketed to ``rel_tol``), ``"capped"`` (feasible up to ``eta_max``),
            ``"no-step"`` (even the smallest tried step was infeasible), ``"unrefined"``
            (bracketed but the round budget ended first; still feasible), or, for a predicted step
            (:func:`predicted_steps`), ``"predicted"`` (feasible at the predicted step) or
            ``"backtracked"`` (feasible after shrinking it). A solution whose step :func:`deliver`
            shortened so that its 8-bit image meets tau gets ``"shrunk"``.
        evaluations: Forward passes spent on this signed direction.
        eta_infeasible: The smallest tried step beyond ``eta`` that broke feasibility (``inf`` if none).
    """

    eta: float
    measurement_mse: float
    feasible: bool
    status: str
    evaluations: int
    eta_infeasible: float = math.inf


def _mse_of(generator: Callable, forward: Callable, y: torch.Tensor, Z: torch.Tensor, *, chunk: int) -> tuple[torch.Tensor, torch.Tensor]:
    images, mses = [], []
    with torch.no_grad():
        for start in range(0, Z.shape[0], chunk):
            x = generator(Z[start : start + chunk])
            images.append(x)
            mses.append(measurement_mse(forward, x, y))
    return torch.cat(images), torch.cat(mses).to(torch.float64)


def _check_step_search(tau: float, eta_max: float) -> None:
    if not tau > 0:
        raise ValueError(f"tau must be positive, got {tau}")
    if not eta_max > 0:
        raise ValueError(f"eta_max must be positive, got {eta_max}")


def feasible_steps(generator: Callable, forward: Callable, y: torch.Tensor, z0: torch.Tensor, directions: torch.Tensor, *,
                   tau: float = DEFAULT_TAU, eta_max: float, grid: int = 4, rel_tol: float = 0.05, max_rounds: int = 6,
                   chunk: int = 256) -> tuple[list[Step], torch.Tensor]:
    r"""The largest feasible step along each column of ``directions`` (pass both signs as columns).

    For every direction d the measurement MSE of :math:`G(z_0 + \eta d)` is evaluated on a geometric
    grid :math:`\eta_{max} 2^{-(grid-1)}, \dots, \eta_{max}` (one batched forward pass for all
    directions); the first infeasible grid point brackets the boundary, which safeguarded
    interpolation in :math:`\sqrt{MSE}` (nearly linear in :math:`\eta` near a solution) refines to a
    relative width of ``rel_tol``, again batched over all directions per round. The returned step is
    always the feasible end of the bracket, so every solution satisfies MSE <= tau.

    Args:
        generator: Latents (B, n) -> images.
        forward: The forward operator.
        y: The observed measurements (1, ...) or (...).
        z0: The first solution (n,).
        directions: (n, P) directions (signed; not necessarily unit).
        tau: Feasibility threshold on the measurement MSE.
        eta_max: The largest step considered (keeps solutions near the latent prior's typical set).
        grid: Grid points of the bracketing pass.
        rel_tol: Relative width at which a bracket counts as refined.
        max_rounds: Refinement rounds (each one batched forward pass).
        chunk: Largest batch per forward pass.

    Returns:
        ``(steps, images)``: one :class:`Step` per column, and the images (P, C, H, W) at the returned
        steps (the first solution's image where no step was found).
    """
    _check_step_search(tau, eta_max)
    n, P = directions.shape
    z0 = as_latent(z0)
    D = directions.to(z0.dtype).T  # (P, n)
    with frozen_modules(generator, forward):
        x0, mse0 = _mse_of(generator, forward, y, z0[None], chunk=chunk)
        etas = eta_max * 2.0 ** torch.arange(-(grid - 1), 1, dtype=torch.float64)  # ascending
        Z = z0 + etas.to(z0.dtype)[None, :, None] * D[:, None, :]  # (P, grid, n)
        images, mses = _mse_of(generator, forward, y, Z.reshape(-1, n), chunk=chunk)
        images, mses = images.reshape(P, grid, *images.shape[1:]), mses.reshape(P, grid)
        evaluations = torch.full((P,), grid)
        lo = torch.zeros(P, dtype=torch.float64)
        lo_mse = mse0.expand(P).clone()
        hi = torch.full((P,), math.inf, dtype=torch.float64)
        hi_mse = torch.full((P,), math.inf, dtype=torch.float64)
        best = x0.expand(P, *x0.shape[1:]).clone()
        for p in range(P):
            bad = (mses[p] > tau).nonzero()
            first_bad = int(bad[0]) if bad.numel() else grid
            if first_bad > 0:
                lo[p], lo_mse[p], best[p] = etas[first_bad - 1], mses[p, first_bad - 1], images[p, first_bad - 1]
            if first_bad < grid:
                hi[p], hi_mse[p] = etas[first_bad], mses[p, first_bad]
        for _ in range(max_rounds):
            active = torch.isfinite(hi) & ((hi - lo) > rel_tol * hi)
            if not bool(active.any()):
                break
            idx = active.nonzero().flatten()
            # Interpolate where sqrt(MSE) crosses sqrt(tau); keep the guess inside the middle 80% of the bracket.
            s_lo, s_hi, s_tau = lo_mse[idx].sqrt(), hi_mse[idx].sqrt(), math.sqrt(tau)
            frac = ((s_tau - s_lo) / (s_hi - s_lo).clamp_min(1e-300)).clamp(0.1, 0.9)
            guess = lo[idx] + frac * (hi[idx] - lo[idx])
            imgs, m = _mse_of(generator, forward, y, z0 + guess.to(z0.dtype)[:, None] * D[idx], chunk=chunk)
            evaluations[idx] += 1
            ok = m <= tau
            lo[idx[ok]], lo_mse[idx[ok]], best[idx[ok]] = guess[ok], m[ok], imgs[ok]
            hi[idx[~ok]], hi_mse[idx[~ok]] = guess[~ok], m[~ok]
    steps = []
    for p in range(P):
        if lo[p] == 0:
            status = "no-step"
        elif not math.isfinite(float(hi[p])):
            status = "capped"
        elif float(hi[p] - lo[p]) > rel_tol * float(hi[p]):
            status = "unrefined"
        else:
            status = "ok"
        steps.append(Step(eta=float(lo[p]), measurement_mse=float(lo_mse[p]), feasible=bool(lo_mse[p] <= tau), status=status,
                          evaluations=int(evaluations[p]), eta_infeasible=float(hi[p])))
    return steps, best


def ellipsoid_steps(coefficients: torch.Tensor, eta_plus: torch.Tensor, eta_minus: torch.Tensor) -> torch.Tensor:
    r"""Predicted boundary steps along combinations of directions whose own boundary steps are known.

    Model: near :math:`z_0`, inside the span of the base directions :math:`d_1, \dots, d_b`, the point
    :math:`z_0 + \sum_i a_i d_i` is feasible iff :math:`\sum_i (a_i / \eta_i^{\pm})^2 \le 1`, where
    :math:`\eta_i^{+}` (:math:`\eta_i^{-}`) is the largest feasible step along :math:`+d_i`
    (:math:`-d_i`) and the sign follows :math:`a_i`. This is exact whenever the measurement MSE is any
    increasing function of a quadratic form that is diagonal in the :math:`d_i` (quadratic growth off
    the null space, quartic growth inside it: the same boundary). Along :math:`d = \sum_i c_i d_i` the
    step :math:`\eta` has :math:`a = \eta c`, so the predicted step is
    :math:`\hat\eta = (\sum_i (c_i / \eta_i^{\operatorname{sign} c_i})^2)^{-1/2}`. Cross terms are
    ignored; :func:`predicted_steps` checks every prediction and backtracks.

    Args:
        coefficients: (b, P) coefficients of P combinations (signed).
        eta_plus, eta_minus: (b,) positive boundary steps along +d_i and -d_i.

    Returns:
        (P,) predicted steps (positive; ``inf`` for a zero combination).
    """
    c = coefficients.to(torch.float64)
    if c.dim() != 2 or c.shape[0] != eta_plus.numel() or eta_plus.shape != eta_minus.shape:
        raise ValueError(f"coefficients must be (b, P) for b = {eta_plus.numel()} base steps, got {tuple(c.shape)}")
    if not (bool((eta_plus > 0).all()) and bool((eta_minus > 0).all())):
        raise ValueError("base steps must be positive")
    eta = torch.where(c >= 0, eta_plus.to(torch.float64)[:, None], eta_minus.to(torch.float64)[:, None])
    return (c / eta).pow(2).sum(0).rsqrt()


def predicted_steps(generator: Callable, forward: Callable, y: torch.Tensor, z0: torch.Tensor, directions: torch.Tensor,
                    guesses: torch.Tensor, *, tau: float = DEFAULT_TAU, eta_max: float, shrink: tuple[float, float] = (0.2, 0.9),
                    max_rounds: int = 6, chunk: int = 256) -> tuple[list[Step], torch.Tensor]:
    r"""A feasible step along each column of ``directions``, starting from a predicted one and backtracking.

    The image at the guess (capped at ``eta_max``) is evaluated in one batched forward pass; a feasible
    one is kept as it is (its image is the solution, so an accepted prediction costs one forward pass).
    An infeasible one is shrunk to where :math:`\sqrt{MSE}` would reach :math:`\sqrt\tau` on the line
    through :math:`(0, \sqrt{MSE_0})` and the failed point, kept within ``shrink`` of the failed step,
    and evaluated again, for at most ``max_rounds`` rounds. Unlike :func:`feasible_steps` the step is not
    the largest feasible one, only a feasible one near the prediction; every returned solution still
    satisfies MSE <= tau.

    Args:
        generator, forward, y, z0: As in :func:`feasible_steps`.
        directions: (n, P) directions (signed).
        guesses: (P,) predicted steps (positive), e.g. from :func:`ellipsoid_steps`.
        tau: Feasibility threshold on the measurement MSE.
        eta_max: The largest step considered.
        shrink: Bounds of the backtracking factor.
        max_rounds: Backtracking rounds (each one batched forward pass over the failed directions).
        chunk: Largest batch per forward pass.

    Returns:
        ``(steps, images)`` as in :func:`feasible_steps`.
    """
    _check_step_search(tau, eta_max)
    n, P = directions.shape
    if guesses.shape != (P,) or not bool((guesses > 0).all()):
        raise ValueError(f"guesses must be {P} positive steps, one per direction")
    z0 = as_latent(z0)
    D = directions.to(z0.dtype).T  # (P, n)
    eta = guesses.to(torch.float64).clamp(max=eta_max)
    with frozen_modules(generator, forward):
        x0, mse0 = _mse_of(generator, forward, y, z0[None], chunk=chunk)
        s0, s_tau = float(mse0[0].sqrt()), math.sqrt(tau)
        best = x0.expand(P, *x0.shape[1:]).clone()
        accepted = torch.zeros(P, dtype=torch.bool)
        mse = torch.full((P,), float(mse0[0]), dtype=torch.float64)
        failed = torch.full((P,), math.inf, dtype=torch.float64)
        evaluations = torch.zeros(P, dtype=torch.long)
        rounds = torch.zeros(P, dtype=torch.long)
        for r in range(max_rounds + 1):
            idx = (~accepted).nonzero().flatten()
            if idx.numel() == 0:
                break
            imgs, m = _mse_of(generator, forward, y, z0 + eta[idx].to(z0.dtype)[:, None] * D[idx], chunk=chunk)
            evaluations[idx] += 1
            ok = m <= tau
            good, bad = idx[ok], idx[~ok]
            accepted[good], mse[good], best[good], rounds[good] = True, m[ok], imgs[ok], r
            failed[bad] = eta[bad]
            # sqrt(MSE) is nearly linear in eta near a solution: aim where the chord meets sqrt(tau)
            frac = ((s_tau - s0) / (m[~ok].sqrt() - s0).clamp_min(1e-300)).clamp(*shrink)
            eta[bad] = eta[bad] * frac
    steps = []
    for p in range(P):
        if not accepted[p]:
            steps.append(Step(eta=0.0, measurement_mse=float(mse0[0]), feasible=bool(mse0[0] <= tau), status="no-step",
                              evaluations=int(evaluations[p]), eta_infeasible=float(failed[p])))
        else:
            steps.append(Step(eta=float(eta[p]), measurement_mse=float(mse[p]), feasible=True,
                              status="predicted" if rounds[p] == 0 else "backtracked", evaluations=int(evaluations[p]),
                              eta_infeasible=float(failed[p])))
    return steps, best


#: The step searches aim at ``tau * (1 - DELIVERY_MARGIN)``: rounding a solution to the 8 bits of its PNG moves its
#: measurement MSE by a fraction of a percent (at most 0.4% of tau in 60 held-out solutions), so the saved file
#: still meets tau; :func:`deliver` checks every file and shortens the rare step that does not.
DELIVERY_MARGIN = 0.01


def deliver(generator: Callable, forward: Callable, y: torch.Tensor, z0: torch.Tensor, directions: torch.Tensor, etas: torch.Tensor,
            images: torch.Tensor, *, tau: float, shrink: float = 0.9, max_rounds: int = 20,
            chunk: int = 256) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    r"""The solutions as they are saved: 8-bit images, each meeting ``tau`` when measured from the file.

    Each image is rounded to 8 bits (:func:`~hvp_explore.images.quantize`) and its measurement MSE
    recomputed; where the rounding took it over ``tau``, the step is shortened by ``shrink``
    (:math:`\eta \leftarrow 0.9 \eta`, one batched forward pass per round over the offending solutions)
    until the rounded image meets ``tau``, for at most ``max_rounds`` rounds.

    Args:
        generator, forward, y, z0: As in :func:`feasible_steps`.
        directions: (n, P) unit directions, already signed.
        etas: (P,) positive steps along them.
        images: (P, C, H, W) images at those steps.
        tau: Feasibility threshold on the measurement MSE of the saved image.

    Returns:
        ``(images, mses, etas, shrunk)``: the 8-bit images (in [-1, 1]), their measurement MSEs
        (float64), the steps that produced them, and which steps were shortened.
    """
    z0 = as_latent(z0)
    D = directions.to(z0.dtype).T  # (P, n)
    etas = etas.to(torch.float64).clone()
    with frozen_modules(generator, forward), torch.no_grad():
        images = quantize(images)
        mses = torch.cat([measurement_mse(forward, images[i : i + chunk], y) for i in range(0, images.shape[0], chunk)]).to(torch.float64)
        shrunk = torch.zeros(etas.shape, dtype=torch.bool)
        for _ in range(max_rounds):
            bad = (mses > tau).nonzero().flatten()
            if bad.numel() == 0:
                break
            etas[bad] *= shrink
            shrunk[bad] = True
            fresh, _ = _mse_of(generator, forward, y, z0 + etas[bad].to(z0.dtype)[:, None] * D[bad], chunk=chunk)
            images[bad] = quantize(fresh)
            mses[bad] = measurement_mse(forward, images[bad], y).to(torch.float64)
    return images, mses, etas, shrunk


# --- distances -------------------------------------------------------------------------------------

def pairwise_distances(metric: Callable, images: torch.Tensor, *, chunk: int = 256) -> torch.Tensor:
    r"""Perceptual distances between all pairs of images, (N, N), float64.

    For a metric with a residual form, :math:`d(x_i, x_j) = \|r(x_i, x_0) - r(x_j, x_0)\|^2` for any
    fixed :math:`x_0` (the residual is a difference of feature maps), so one batched pass gives all
    N^2 distances; a plain callable is evaluated on every pair.
    """
    N = images.shape[0]
    if N == 0:
        return torch.zeros(0, 0, dtype=torch.float64)
    with frozen_modules(metric), torch.no_grad():
        if callable(getattr(metric, "residual", None)):
            ref = images[:1]
            R = torch.cat([metric.residual(images[i : i + chunk], ref) for i in range(0, N, chunk)])
            # Centred, the Gram matrix keeps the precision of the residual itself without a float64 copy of R.
            R = R - R.mean(0, keepdim=True)
            sq = R.pow(2).sum(1)
            D = (sq[:, None] + sq[None, :] - 2 * R @ R.T).to(torch.float64).clamp_min(0)
            D.fill_diagonal_(0)
            return 0.5 * (D + D.T)
        D = torch.zeros(N, N, dtype=torch.float64)
        iu = torch.triu_indices(N, N, 1)
        for start in range(0, iu.shape[1], chunk):
            a, b = iu[0, start : start + chunk], iu[1, start : start + chunk]
            D[a, b] = metric(images[a], images[b]).to(torch.float64)
        return D + D.T


# --- results -----------------------------------------------------------------------------------------

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


def default_eta_max(n: int) -> float:
    r"""Default largest step, :math:`\sqrt{n}`: then :math:`\|z_0 + \eta d\|^2 \approx n + \eta^2 \le 2n` for
    d orthogonal to :math:`z_0`, within a factor :math:`\sqrt 2` of the prior's typical radius (see docs/exploration.md)."""
    return math.sqrt(n)


def default_k_y(m: int, n: int) -> int:
    """Default number of H_Y eigenpairs: its whole range when m < n, else n / 16.

    When m >= n (inpainting: m = 768, n = 512) H_Y has full rank and Algorithm 1 can only remove its
    most measurement-sensitive directions. In a paired sweep over 20 inpainting observations
    (``python benchmarks/exploration.py``, docs/results.md) perceptual change and diversity fall as
    k_y grows: n/4 gives about a fifth less of both than n/16 and moves more of the change out of the
    hole on 4-5 of the 20; n/32 gains 1-2% but moves it out on 2. Every solution is feasible either way.
    """
    return m if m < n else max(1, n // 16)


def num_directions(num_solutions: int) -> int:
    """Directions needed for N solutions: two per direction (both signs)."""
    return math.ceil(num_solutions / 2)


#: Default 1-based index of the first H_X eigenvector, for every N (see :func:`make_directions`).
DEFAULT_K = 10
#: Default relative eigensolver tolerance of an exploration: a direction needs its eigenvector to about three
#: digits, and 1e-3 saves a fifth of the H_X eigensolve against 1e-4 with the same solutions (docs/exploration.md).
DEFAULT_TOL = 1e-3


def combine_directions(base: list[Direction], count: int, *, U: torch.Tensor | None = None, threshold: float = 0.05,
                       seed: int = 0) -> list[Direction]:
    r"""``count`` random unit combinations of the directions ``base``: more directions at no eigensolver cost.

    :math:`c \sim \mathcal N(0, I_b)` from a generator seeded with ``seed``; the direction is
    :math:`\sum_i c_i d_i` normalised and, when ``U`` (the top :math:`H_Y` eigenvectors) is given,
    passed through Algorithm 1 again, since a combination of directions that each have cosines under
    the threshold can add up to one above it. The combinations span the same perceptual subspace as
    ``base``, so their feasible steps can be predicted from those of ``base`` (:func:`ellipsoid_steps`).

    Returns:
        Directions labelled ``c1, c2, ...`` in the mode of ``base[0]``, with index 0 and their
        ``combination`` coefficients (scaled so that :math:`\|\sum_i c_i d_i\| = 1`).
    """
    if count < 0 or not base:
        raise ValueError(f"combinations need at least one base direction and a count >= 0, got {len(base)} and {count}")
    B = torch.stack([d.vector.to(torch.float64) for d in base], dim=1)
    C = torch.randn(len(base), count, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    out = []
    for j in range(count):
        v = B @ C[:, j]
        c = C[:, j] / v.norm()
        proj = eglass_projection(v, U, threshold=threshold) if U is not None else None
        vector = proj.direction if proj is not None else v / v.norm()
        out.append(Direction(vector, base[0].mode, f"c{j + 1}", 0, proj, combination=tuple(float(x) for x in c)))
    return out


def make_directions(mode: str, eig_y: EigenResult, eig_x: EigenResult | None, *, count: int, K: int | None = None,
                    threshold: float = 0.05, H_X=None, H_Y=None, eps: float = 1e-3, tol: float = DEFAULT_TOL,
                    seed: int = 0) -> tuple[list[Direction], EigenResult | None]:
    r"""The exploration directions of one mode: up to K from eigenvectors, the rest combinations of them.

    The first ``min(count, K)`` directions come from eigenvectors; when ``count > K`` the others are
    random combinations of those (:func:`combine_directions`), so that N solutions cost K eigenpairs,
    not N / 2 (the eigensolve would otherwise grow with N; see docs/exploration.md).

    Args:
        mode: ``"eglass"``: Algorithm 1 on :math:`v^K, v^{K-1}, \dots`; ``"raw"``: those :math:`v^i`
            unprojected; ``"generalized"``: the top eigenvectors of
            :math:`H_X d = \mu (H_Y + \epsilon \lambda_1(H_Y) I) d` (needs the operators).
        eig_y, eig_x: Top eigenpairs of H_Y and H_X (``eig_x`` needs at least K pairs).
        count: Number of directions.
        K: 1-based index of the first H_X eigenvector (default ``eig_x.k``); in generalized mode, the
            number of pencil eigenvectors (default :data:`DEFAULT_K`).
        threshold: Cosine threshold of Algorithm 1.
        H_X, H_Y: The operators (generalized mode).
        eps: Pencil regularisation relative to the top eigenvalue of H_Y.
        tol: Pencil eigensolver tolerance.
        seed: Seeds the pencil solver and the combinations.

    Returns:
        ``(directions, pencil)``; ``pencil`` is the pencil's :class:`EigenResult` in generalized mode.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    if not isinstance(count, int) or count < 1:
        raise ValueError(f"the number of directions must be a positive integer, got {count!r}")
    pencil = None
    if mode == "generalized":
        if H_X is None or H_Y is None:
            raise ValueError("generalized directions need the operators H_X and H_Y")
        K = K if K is not None else DEFAULT_K
        pencil = top_generalized_eigenpairs(H_X, H_Y, min(count, K), eps=eps * max(float(eig_y.values[0]), 1e-30), tol=tol,
                                            seed=seed)
        directions = [Direction(pencil.vectors[:, i], mode, f"g{i + 1}", i + 1) for i in range(pencil.k)]
    else:
        K = K if K is not None else eig_x.k
        if not 1 <= K <= eig_x.k:
            raise ValueError(f"K must be between 1 and the {eig_x.k} computed H_X eigenpairs, got {K}")
        directions = []
        for index in range(K, max(K - count, 0), -1):
            v = eig_x.vectors[:, index - 1]
            if mode == "raw":
                directions.append(Direction(v / v.norm(), mode, f"v{index}", index))
            else:
                proj = eglass_projection(v, eig_y.vectors, threshold=threshold)
                directions.append(Direction(proj.direction, mode, f"v{index}", index, proj))
    if count > len(directions):
        directions += combine_directions(directions, count - len(directions), U=eig_y.vectors if mode == "eglass" else None,
                                         threshold=threshold, seed=seed)
    return directions, pencil


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
    is the largest batch of one forward pass (default: :func:`~hvp_explore.memory.batch_limit` of the images, else 256).

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


def explore(generator: Callable, forward: Callable, y: torch.Tensor, *, metric: Callable, num_solutions: int = 10,
            mode: str = "eglass", k_y: int | None = None, K: int | None = None, threshold: float = 0.05, eps: float = 1e-3,
            tau: float = DEFAULT_TAU, eta_max: float | None = None, solver: str = "auto", tol: float = DEFAULT_TOL,
            inversion: InversionResult | None = None, invert_options: dict | None = None, max_memory: int | None = None,
            seed: int = 0, quiet: bool | None = None) -> ExplorationResult:
    r"""Find a first solution, then explore ``num_solutions`` more along low-measurement, high-perceptual directions.

    Args:
        generator: Latents (B, n) -> images (B, C, H, W) in [-1, 1].
        forward: Linear forward operator (images -> measurements).
        y: The observation, measurements of shape (1, ...) or (...).
        metric: Perceptual metric (a :class:`~hvp_explore.metrics.PerceptualMetric` or a callable).
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
            :mod:`hvp_explore.memory`); ``None`` = no limit. On a CPU, blocks of products and batches of
            forward passes are also capped at :func:`~hvp_explore.memory.cpu_batch_size` of the image
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
    K = K if K is not None else DEFAULT_K
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

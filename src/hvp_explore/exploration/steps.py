r"""Feasible steps along directions: the largest step keeping the measurement MSE under tau, as saved.

For each signed direction :math:`d`, :func:`feasible_steps` finds the largest :math:`\eta` with
:math:`\mathrm{MSE}(A G(z_0 + \eta d), y) \le \tau` by bracketing and safeguarded interpolation on
batched forward passes; :func:`predicted_steps` checks steps predicted by :func:`ellipsoid_steps`;
:func:`deliver` rounds the images to 8 bits and checks them again, so every solution meets tau as saved.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from hvp_explore.io.images import quantize
from hvp_explore.operators.base import as_latent, frozen_modules
from hvp_explore.problems import measurement_mse
from hvp_explore.settings import DEFAULT_TAU, DELIVERY_MARGIN

__all__ = ["Step", "feasible_steps", "ellipsoid_steps", "predicted_steps", "deliver", "default_eta_max", "geometric_eta_max",
           "perceptual_budget", "DELIVERY_MARGIN"]


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


def _caps(eta_max: float | torch.Tensor, P: int, tau: float) -> torch.Tensor:
    """``eta_max`` as (P,) float64 caps, one per direction (a number applies to all), checked with ``tau``."""
    if not tau > 0:
        raise ValueError(f"tau must be positive, got {tau}")
    caps = torch.as_tensor(eta_max, dtype=torch.float64).detach().cpu()
    caps = caps.expand(P).clone() if caps.dim() == 0 else caps
    if caps.shape != (P,) or not bool((caps > 0).all()) or not bool(torch.isfinite(caps).all()):
        raise ValueError(f"eta_max must be a positive finite number or {P} of them, one per direction, got {eta_max!r}")
    return caps


def perceptual_budget(generator: Callable, metric: Callable, z0: torch.Tensor, *, samples: int = 8, seed: int = 0) -> float:
    r"""The perceptual scale of the generator around ``z0``: the median distance :math:`d(G(z_0), G(z_r))` to prior samples.

    :math:`z_r \sim \mathcal N(0, I)` (``samples`` of them, from a generator seeded with ``seed``): how
    far, perceptually, one random image of the generator is from another. A step that changes the
    first solution by more than that has left what the generator does around it.
    """
    z0 = as_latent(z0)
    draws = torch.randn(samples, z0.numel(), generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    with frozen_modules(generator, metric), torch.no_grad():
        x0 = generator(z0[None])
        d = metric(generator(draws.to(device=z0.device, dtype=z0.dtype)), x0)
    return float(d.double().median())


def geometric_eta_max(curvatures: torch.Tensor, budget: float) -> torch.Tensor:
    r"""Per-direction caps :math:`\eta_{max}(d) = \sqrt{D / d^T H_X d}`: the step whose perceptual change is ``budget``.

    To second order a step :math:`\eta d` changes the image by :math:`\eta^2 d^T H_X d` in the
    perceptual metric, so at this cap the solution would be as far from the first one as a random
    image of the generator is (:func:`perceptual_budget`). The cap follows each direction's own
    perceptual scale, instead of one latent radius (:func:`default_eta_max`) that, on a fine-tuned
    generator whose measurements hardly change anywhere, decided most steps.

    Args:
        curvatures: (P,) values :math:`d^T H_X d` of unit directions.
        budget: The perceptual distance D.

    Returns:
        (P,) float64 caps; a direction with no curvature gets the largest finite cap of the others
        (or :math:`\sqrt{D}` if none has one).
    """
    c = curvatures.detach().to("cpu", torch.float64)
    caps = torch.sqrt(torch.as_tensor(budget, dtype=torch.float64) / c.clamp_min(1e-300))
    finite = torch.isfinite(caps) & (c > 0)
    fill = float(caps[finite].max()) if bool(finite.any()) else math.sqrt(max(budget, 1e-300))
    return torch.where(finite, caps, torch.full_like(caps, fill))


def default_eta_max(n: int) -> float:
    r"""Default largest step, :math:`\sqrt{n}`: then :math:`\|z_0 + \eta d\|^2 \approx n + \eta^2 \le 2n` for
    d orthogonal to :math:`z_0`, within a factor :math:`\sqrt 2` of the prior's typical radius (see docs/exploration.md)."""
    return math.sqrt(n)


def feasible_steps(generator: Callable, forward: Callable, y: torch.Tensor, z0: torch.Tensor, directions: torch.Tensor, *,
                   tau: float = DEFAULT_TAU, eta_max: float | torch.Tensor, grid: int = 4, rel_tol: float = 0.05,
                   max_rounds: int = 6, chunk: int = 256) -> tuple[list[Step], torch.Tensor]:
    r"""The largest feasible step along each column of ``directions`` (pass both signs as columns).

    For every direction d the measurement MSE of :math:`G(z_0 + \eta d)` is evaluated on a geometric
    grid :math:`\eta_{max} 2^{-(grid-1)}, \dots, \eta_{max}` of its own cap (one batched forward pass for all
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
        eta_max: The largest step considered: one number, or (P,) caps, one per column
            (:func:`geometric_eta_max`).
        grid: Grid points of the bracketing pass.
        rel_tol: Relative width at which a bracket counts as refined.
        max_rounds: Refinement rounds (each one batched forward pass).
        chunk: Largest batch per forward pass.

    Returns:
        ``(steps, images)``: one :class:`Step` per column, and the images (P, C, H, W) at the returned
        steps (the first solution's image where no step was found).
    """
    n, P = directions.shape
    caps = _caps(eta_max, P, tau)
    z0 = as_latent(z0)
    D = directions.to(z0.dtype).T  # (P, n)
    with frozen_modules(generator, forward):
        x0, mse0 = _mse_of(generator, forward, y, z0[None], chunk=chunk)
        etas = caps[:, None] * 2.0 ** torch.arange(-(grid - 1), 1, dtype=torch.float64)  # (P, grid), ascending
        Z = z0 + etas.to(device=z0.device, dtype=z0.dtype)[:, :, None] * D[:, None, :]  # (P, grid, n)
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
                lo[p], lo_mse[p], best[p] = etas[p, first_bad - 1], mses[p, first_bad - 1], images[p, first_bad - 1]
            if first_bad < grid:
                hi[p], hi_mse[p] = etas[p, first_bad], mses[p, first_bad]
        for _ in range(max_rounds):
            active = torch.isfinite(hi) & ((hi - lo) > rel_tol * hi)
            if not bool(active.any()):
                break
            idx = active.nonzero().flatten()
            # Interpolate where sqrt(MSE) crosses sqrt(tau); keep the guess inside the middle 80% of the bracket.
            s_lo, s_hi, s_tau = lo_mse[idx].sqrt(), hi_mse[idx].sqrt(), math.sqrt(tau)
            frac = ((s_tau - s_lo) / (s_hi - s_lo).clamp_min(1e-300)).clamp(0.1, 0.9)
            guess = lo[idx] + frac * (hi[idx] - lo[idx])
            imgs, m = _mse_of(generator, forward, y, z0 + guess.to(device=z0.device, dtype=z0.dtype)[:, None] * D[idx], chunk=chunk)
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
                    guesses: torch.Tensor, *, tau: float = DEFAULT_TAU, eta_max: float | torch.Tensor,
                    shrink: tuple[float, float] = (0.2, 0.9),
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
        eta_max: The largest step considered (a number, or (P,) caps).
        shrink: Bounds of the backtracking factor.
        max_rounds: Backtracking rounds (each one batched forward pass over the failed directions).
        chunk: Largest batch per forward pass.

    Returns:
        ``(steps, images)`` as in :func:`feasible_steps`.
    """
    n, P = directions.shape
    caps = _caps(eta_max, P, tau)
    if guesses.shape != (P,) or not bool((guesses > 0).all()):
        raise ValueError(f"guesses must be {P} positive steps, one per direction")
    z0 = as_latent(z0)
    D = directions.to(z0.dtype).T  # (P, n)
    eta = torch.minimum(guesses.to(torch.float64).cpu(), caps)
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
            imgs, m = _mse_of(generator, forward, y, z0 + eta[idx].to(device=z0.device, dtype=z0.dtype)[:, None] * D[idx],
                              chunk=chunk)
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


def deliver(generator: Callable, forward: Callable, y: torch.Tensor, z0: torch.Tensor, directions: torch.Tensor, etas: torch.Tensor,
            images: torch.Tensor, *, tau: float, shrink: float = 0.9, max_rounds: int = 20,
            chunk: int = 256) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    r"""The solutions as they are saved: 8-bit images, each meeting ``tau`` when measured from the file.

    Each image is rounded to 8 bits (:func:`~hvp_explore.io.images.quantize`) and its measurement MSE
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
    if images.shape[0] == 0:  # nothing to deliver (every direction was rejected)
        return quantize(images), torch.zeros(0, dtype=torch.float64), etas, torch.zeros(0, dtype=torch.bool)
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

r"""GAN inversion for linear inverse problems: CSGM with batched restarts, then optional IAGAN fine-tuning.

Given an observation y = A x + n and a generator G, find a latent z with A G(z) close to y.

**CSGM** (Bora, Jalal, Price, Dimakis, ICML 2017): minimise the measurement error
MSE(z) = mean(((A G(z) - y) / 2)^2) (images in [-1, 1], error on the [0, 1] pixel scale, see
:func:`hvp_explore.problems.measurement_mse`) with Adam from several random starts and keep the best.
Here the R restarts are one optimisation: a single Adam over a latent tensor Z of shape (R, n) on the
loss sum_r MSE(Z_r). The gradient of row r depends on Z_r alone (the generator is in eval mode, so batch
norm uses its running statistics and rows never interact) and Adam's update is element-wise, so each
row follows exactly the trajectory it would follow alone, while the generator runs once per step for all
of them. The optimisation stops early once the best restart's MSE falls below ``tau * stop_factor``:
well under the feasibility threshold tau, so an exploration around the solution has room to move
before it leaves the feasible set.

**Gauss-Newton refinement**: CSGM hands over as soon as a restart is feasible (MSE < tau), or after
``handover`` steps, and Levenberg-Marquardt takes the best restart below ``tau * stop_factor``. Its
damped step :math:`\delta = -(J^T J + \mu s I)^{-1} J^T r` uses the exact Jacobian of the measurements
when min(m, n) <= :data:`GAUSS_NEWTON_EXACT_MAX` (min(m, n) batched products, as the ``jacobian``
eigensolver does; then updated by Broyden's secant formula after each accepted step), and conjugate
gradients on Gauss-Newton products otherwise; it converges in a few steps where Adam spends most of
its iterations on the last factor of four (docs/inversion.md). If it stalls above the margin, CSGM
resumes from its latent: with every step left when it is infeasible, with at most ``handover`` when it
is feasible already (a polish for room, not a search).

**IAGAN** (Abu Hussein, Tirer, Giryes, AAAI 2020): starting from the CSGM latent, jointly optimise z
(Adam, lr 1e-4) and all parameters of a deep copy of G (lr 1e-3) on the same loss for 300 steps. The
given generator is never modified. Optionally the final image is back-projected onto the measurement
set, x_bp = x + A^+(y - A x), so that A x_bp = y wherever A A^+ = I.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from hvp_explore.inversion._problem import positive_float, positive_int, prepare_problem
from hvp_explore.inversion.csgm import csgm
from hvp_explore.inversion.gauss_newton import levenberg_marquardt
from hvp_explore.inversion.iagan import iagan_finetune
from hvp_explore.inversion.priors import check_prior, check_truncation, sample_latents
from hvp_explore.operators.base import frozen_modules
from hvp_explore.problems import measurement_mse
from hvp_explore.settings import (
    DEFAULT_GAUSS_NEWTON_TRIALS,
    DEFAULT_HALVING,
    DEFAULT_HANDOVER,
    DEFAULT_IAGAN_LR_G,
    DEFAULT_IAGAN_LR_Z,
    DEFAULT_IAGAN_STEPS,
    DEFAULT_LR,
    DEFAULT_PRIOR,
    DEFAULT_RESTARTS,
    DEFAULT_STEPS,
    DEFAULT_STOP_FACTOR,
    DEFAULT_SWITCH,
    DEFAULT_TAU,
    DEFAULT_TRUNCATION,
    GAUSS_NEWTON_CG_ITERATIONS,
    GAUSS_NEWTON_EXACT_MAX,
)

__all__ = ["InversionResult", "invert"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class InversionResult:
    """The solution of :func:`invert`.

    Attributes:
        latent: Best latent, shape (n,), detached.
        generator: The generator that maps ``latent`` to ``image``: the fine-tuned copy when IAGAN ran,
            else the generator that was passed in.
        image: The solution image, shape (1, C, H, W) (back-projected when ``back_projected``).
        measurement_mse: Measurement MSE of ``image`` on the [0, 1] scale.
        loss_history: Measurement MSE per evaluated iterate: the best restart's at each CSGM step
            (including the starting point), then IAGAN's at each fine-tuning step and after the last.
        seconds: Total wall-clock time.
        timings: Seconds per stage that ran: ``"csgm"``, ``"iagan"``, ``"back_projection"``.
        restart_mses: Lowest MSE each CSGM restart reached (the latent kept per restart is that one).
        steps_run: Adam steps CSGM took (fewer than ``steps`` when it stopped early).
        fine_tuned: Whether IAGAN fine-tuned a copy of the generator.
        back_projected: Whether ``image`` is the back-projection of G(latent).
        stopped_early: Whether the inversion reached ``tau * stop_factor`` (before using all CSGM steps).
        gauss_newton_steps: Accepted Levenberg-Marquardt steps (0 when the refinement did not run).
        fine_tune_reason: Why IAGAN fine-tuned the generator (asked for, or CSGM's best MSE above tau), else None.
    """

    latent: torch.Tensor
    generator: Callable[[torch.Tensor], torch.Tensor]
    image: torch.Tensor
    measurement_mse: float
    loss_history: tuple[float, ...]
    seconds: float
    timings: dict[str, float]
    restart_mses: tuple[float, ...]
    steps_run: int
    fine_tuned: bool
    back_projected: bool
    stopped_early: bool
    gauss_newton_steps: int = 0
    fine_tune_reason: str | None = None


def invert(
    generator: Callable[[torch.Tensor], torch.Tensor],
    forward: Callable[[torch.Tensor], torch.Tensor],
    y: torch.Tensor,
    *,
    restarts: int = DEFAULT_RESTARTS,
    steps: int = DEFAULT_STEPS,
    lr: float = DEFAULT_LR,
    prior: str = DEFAULT_PRIOR,
    truncation: float = DEFAULT_TRUNCATION,
    tau: float = DEFAULT_TAU,
    stop_factor: float = DEFAULT_STOP_FACTOR,
    gauss_newton: bool | str = DEFAULT_SWITCH,
    gauss_newton_trials: int = DEFAULT_GAUSS_NEWTON_TRIALS,
    handover: int = DEFAULT_HANDOVER,
    halving: int = DEFAULT_HALVING,
    iagan: bool | str = DEFAULT_SWITCH,
    iagan_steps: int = DEFAULT_IAGAN_STEPS,
    iagan_lr_z: float = DEFAULT_IAGAN_LR_Z,
    iagan_lr_g: float | None = None,
    back_projection: bool = False,
    init: torch.Tensor | None = None,
    latent_dim: int | None = None,
    seed: int = 0,
    quiet: bool | None = None,
) -> InversionResult:
    """Find a latent whose image explains the observation: CSGM, then optionally IAGAN and back-projection.

    CSGM minimises sum_r MSE(z_r), MSE(z) = mean(((A G(z) - y) / 2)^2), over the R rows of one latent
    tensor with Adam (rows are independent, see the module docstring), starting from
    ``sample_latents(prior, R, n, generator=torch.Generator().manual_seed(seed))``. After each step the
    rows are projected onto the prior's support (sphere: renormalised to sqrt(n); truncated: clamped;
    normal: unconstrained). Each restart keeps its lowest-MSE iterate; the best restart wins. The loop
    stops as soon as that best MSE is below ``tau * stop_factor`` (``stop_factor=0`` runs all ``steps``).

    With ``iagan=True`` (Abu Hussein et al. 2020) z and every parameter of a deep copy of the generator
    (in eval mode, so batch norm keeps its running statistics) are optimised jointly with Adam at
    ``iagan_lr_z`` and ``iagan_lr_g`` for ``iagan_steps`` steps; the result's ``generator`` is the copy
    (same train/eval mode and requires_grad flags as the original, which is left untouched).

    With ``back_projection=True`` the returned image is x + A^+(y - A x), x = G(z), using the forward
    operator's ``pinv`` (A^+); then A x_bp = y up to rounding when A has full row rank, and
    ``measurement_mse`` is that of the back-projected image. The image may leave [-1, 1] and is no
    longer exactly in the generator's range; ``latent`` and ``generator`` still describe x.

    The generator is put in eval mode with parameter grads off during CSGM; both are restored after.

    Args:
        generator: Callable (usually an ``nn.Module`` with ``latent_dim``) mapping (B, n) latents to
            (B, C, H, W) images in [-1, 1]. IAGAN needs an ``nn.Module`` with parameters.
        forward: Linear forward operator A, images (B, C, H, W) -> measurements (B, ...).
        y: Observation, measurements of one image with or without the batch dimension.
        restarts: Number of random starts R, optimised together.
        steps: Maximum number of CSGM Adam steps; IAGAN's steps are bounded by it too.
        lr: CSGM Adam learning rate.
        prior: Latent prior of the starts and of the projection: ``"normal"``, ``"truncated"``, ``"sphere"``.
        truncation: Threshold of the ``"truncated"`` prior.
        tau: Feasibility threshold on the measurement MSE (SPEC: 2e-3).
        stop_factor: The inversion stops once the best MSE is below ``tau * stop_factor``; in [0, 1].
        gauss_newton: Refine with Levenberg-Marquardt once CSGM is feasible (or has used its steps):
            ``True``, ``False``, or ``"auto"``: when min(m, n) <= :data:`GAUSS_NEWTON_EXACT_MAX` (the
            exact Jacobian costs min(m, n) batched products and the damped system is min(m, n) square),
            or when the matrix-free route's largest cost, ``gauss_newton_trials`` x
            (:data:`GAUSS_NEWTON_CG_ITERATIONS` + 2) single-latent products, is at most CSGM's
            ``restarts`` x ``steps`` (single-latent passes). CSGM then stops at ``tau``; if the
            refinement ends above ``tau * stop_factor``, CSGM resumes from it (see the module docstring).
        gauss_newton_trials: Levenberg-Marquardt trial steps (accepted or not).
        handover: With the refinement, CSGM's steps before it hands over (earlier at a feasible iterate).
        halving: Every ``halving`` CSGM steps the worse half of the restarts still running is dropped, down to
            :data:`~hvp_explore.settings.HALVING_SURVIVORS` (successive halving: the survivors' trajectories are
            unchanged, the batch shrinks); 0 keeps every restart to the end.
        iagan: Whether to fine-tune a copy of the generator after CSGM: ``True``, ``False``, or
            ``"auto"`` (only when CSGM's best MSE stays above ``tau``, e.g. large inpainting holes of
            images outside the generator's range; see docs/inversion.md).
        iagan_steps: Number of IAGAN Adam steps (at most ``steps``).
        iagan_lr_z: IAGAN learning rate of the latent.
        iagan_lr_g: IAGAN learning rate of the generator's parameters; None takes the generator's own
            ``iagan_lr_g`` attribute when it declares one (the face generator: 1e-4, see
            docs/inversion.md), else :data:`DEFAULT_IAGAN_LR_G` (1e-3, IAGAN's published setting).
        back_projection: Whether to back-project the final image (needs ``forward.pinv``).
        init: Optional starting latents (R, n) or (n,) used instead of the seeded prior draws
            (then ``restarts`` is ignored).
        latent_dim: Latent size, for generators without a ``latent_dim`` attribute.
        seed: Seed of the starting latents.
        quiet: Hide the progress bars (they only show on a terminal anyway).

    Returns:
        An :class:`InversionResult`.

    Raises:
        ValueError: On invalid options, shapes, an unknown prior, IAGAN with a generator that has no
            parameters, or back-projection with an operator that has no ``pinv``.
    """
    start = time.perf_counter()
    check_prior(prior)
    if prior == "truncated":
        check_truncation(truncation)
    restarts = positive_int("restarts", restarts)
    steps = positive_int("steps", steps, minimum=0)
    lr = positive_float("lr", lr)
    tau = positive_float("tau", tau)
    if not (isinstance(stop_factor, (int, float)) and 0 <= stop_factor <= 1):
        raise ValueError(f"stop_factor must be in [0, 1] (CSGM stops below tau * stop_factor), got {stop_factor!r}")
    if gauss_newton not in (True, False, "auto"):
        raise ValueError(f"gauss_newton must be True, False or 'auto' (docs/inversion.md), got {gauss_newton!r}")
    gauss_newton_trials = positive_int("gauss_newton_trials", gauss_newton_trials)
    handover = positive_int("handover", handover, minimum=0)
    halving = positive_int("halving", halving, minimum=0)
    if iagan not in (True, False, "auto"):
        raise ValueError(f"iagan must be True, False or 'auto' (fine-tune only when CSGM stays above tau), got {iagan!r}")
    if iagan:
        iagan_steps = min(positive_int("iagan_steps", iagan_steps, minimum=0), steps)  # --steps bounds every loop
        iagan_lr_z = positive_float("iagan_lr_z", iagan_lr_z)
        if iagan_lr_g is None:
            iagan_lr_g = getattr(generator, "iagan_lr_g", DEFAULT_IAGAN_LR_G)
        iagan_lr_g = positive_float("iagan_lr_g", iagan_lr_g)
        if iagan is True and (not isinstance(generator, nn.Module) or not any(True for _ in generator.parameters())):
            raise ValueError("iagan=True fine-tunes the generator's parameters: pass a torch.nn.Module with parameters")
    if back_projection and not callable(getattr(forward, "pinv", None)):
        raise ValueError(
            f"back_projection=True needs a forward operator with a pinv(y) method (its pseudo-inverse A^+); "
            f"{type(forward).__name__} has none"
        )
    n, y, probe = prepare_problem(generator, forward, y, latent_dim)

    if init is None:
        z0 = sample_latents(
            prior, restarts, n, generator=torch.Generator().manual_seed(seed), truncation=truncation, dtype=probe.dtype
        ).to(probe.device)
    else:
        z0 = torch.as_tensor(init).to(dtype=probe.dtype, device=probe.device)
        z0 = z0.unsqueeze(0) if z0.dim() == 1 else z0
        if z0.dim() != 2 or z0.shape[1] != n:
            raise ValueError(f"init must have shape (R, {n}) or ({n},), got {tuple(torch.as_tensor(init).shape)}")

    exact = min(y[0].numel(), n) <= GAUSS_NEWTON_EXACT_MAX
    if gauss_newton == "auto":
        # the exact route, or a matrix-free one whose worst case is within CSGM's own budget (on
        # BigGAN-deep-128 with one restart of 100 steps it is not: benchmarks/solutions.py)
        gauss_newton = exact or gauss_newton_trials * (GAUSS_NEWTON_CG_ITERATIONS + 2) <= z0.shape[0] * steps
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    options = {"lr": lr, "prior": prior, "truncation": truncation, "quiet": quiet}
    with frozen_modules(generator):
        # With the refinement, CSGM hands over as soon as a restart is feasible.
        run = csgm(generator, forward, y, z0, steps=min(steps, handover) if gauss_newton else steps,
                   stop_mse=tau * (1.0 if gauss_newton else stop_factor), halving=halving, **options)
    timings["csgm"] = time.perf_counter() - t0
    best = int(run.best_mses.argmin())
    latent = run.best_latents[best].clone()
    best_mse = float(run.best_mses[best])
    history = list(run.history)
    steps_run, stopped_early, accepted = run.steps_run, run.stopped_early, 0
    if gauss_newton and best_mse >= tau * stop_factor:
        t0 = time.perf_counter()
        with frozen_modules(generator, forward):
            # the exact Jacobian when it is short on one side, conjugate gradients on Gauss-Newton products otherwise
            solve = "exact" if exact else "cg"
            latent, best_mse, gn_history, accepted = levenberg_marquardt(generator, forward, y, latent, target=tau * stop_factor,
                                                                         trials=gauss_newton_trials, prior=prior,
                                                                         truncation=truncation, solve=solve)
        history.extend(gn_history)
        timings["gauss_newton"] = time.perf_counter() - t0
        if best_mse >= tau * stop_factor and steps_run < steps:
            # the refinement stalled: CSGM resumes from its latent with the steps it has left, or, when the
            # latent is feasible already, with at most `handover` of them (a polish for margin, not a search)
            t0 = time.perf_counter()
            left = steps - steps_run if best_mse >= tau else min(steps - steps_run, handover)
            with frozen_modules(generator):
                more = csgm(generator, forward, y, latent[None], steps=left, stop_mse=tau * stop_factor, **options)
            latent, best_mse = more.best_latents[0].clone(), float(more.best_mses[0])
            history.extend(more.history[1:])
            steps_run += more.steps_run
            timings["csgm"] += time.perf_counter() - t0
        stopped_early = best_mse < tau * stop_factor

    used, reason = generator, None
    if iagan == "auto":
        # fine-tune only when CSGM could not reach feasibility, and only generators with parameters
        iagan = (best_mse > tau and isinstance(generator, nn.Module)
                 and any(True for _ in generator.parameters()))
        searched = "CSGM and Gauss-Newton" if "gauss_newton" in timings else "CSGM"
        reason = f"{searched} stayed above tau (best measurement MSE {best_mse:.2e} > tau = {tau:g})" if iagan else None
    elif iagan:
        reason = "asked for (iagan on)"
    if iagan:
        # announced before it starts: it is the longest stage of a photograph's run, and it changes the generator
        logger.info("IAGAN: fine-tuning a copy of the generator, %s; up to %d steps", reason, iagan_steps)
        t0 = time.perf_counter()
        used, latent, iagan_history = iagan_finetune(
            generator, forward, y, latent, steps=iagan_steps, lr_z=iagan_lr_z, lr_g=iagan_lr_g, stop_mse=tau * stop_factor, quiet=quiet
        )
        history.extend(iagan_history)
        timings["iagan"] = time.perf_counter() - t0

    with torch.no_grad(), frozen_modules(used):
        image = used(latent.unsqueeze(0))
        mse = float(measurement_mse(forward, image, y)[0])
        if iagan:
            history.append(mse)
        if back_projection:
            t0 = time.perf_counter()
            image = image + forward.pinv(y - forward(image)).reshape(image.shape)
            mse = float(measurement_mse(forward, image, y)[0])
            timings["back_projection"] = time.perf_counter() - t0

    return InversionResult(
        latent=latent,
        generator=used,
        image=image.detach(),
        measurement_mse=mse,
        loss_history=tuple(history),
        seconds=time.perf_counter() - start,
        timings=timings,
        restart_mses=tuple(float(v) for v in run.best_mses),
        steps_run=steps_run,
        fine_tuned=bool(iagan),
        back_projected=bool(back_projection),
        stopped_early=stopped_early,
        gauss_newton_steps=accepted,
        fine_tune_reason=reason,
    )

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

**Gauss-Newton refinement** (when the measurements are no more than the latent dimensions, m <= n:
super-resolution and compressed sensing on the default generator; or when the latent is short, n <=
:data:`GAUSS_NEWTON_MAX_LATENT`: every problem of the 100-d face generator):
CSGM hands over as soon as a restart is feasible (MSE < tau), or after its last step, and
Levenberg-Marquardt takes the best restart below ``tau * stop_factor``. Its damped step
:math:`\delta = -(J^T J + \mu s I)^{-1} J^T r` uses the exact Jacobian of the measurements
(min(m, n) batched vector-Jacobian or Jacobian-vector products, as the ``jacobian`` eigensolver does)
and converges in a few steps where Adam spends most of its iterations on the last factor of four
(docs/inversion.md).

**IAGAN** (Abu Hussein, Tirer, Giryes, AAAI 2020): starting from the CSGM latent, jointly optimise z
(Adam, lr 1e-4) and all parameters of a deep copy of G (lr 1e-3) on the same loss for 300 steps. The
given generator is never modified. Optionally the final image is back-projected onto the measurement
set, x_bp = x + A^+(y - A x), so that A x_bp = y wherever A A^+ = I.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from hvp_explore._base import frozen_modules, module_dtype_device
from hvp_explore._progress import progress_bar
from hvp_explore.curvature import measurement_hessian
from hvp_explore.priors import DEFAULT_TRUNCATION, _check_truncation, check_prior, project_latents, sample_latents
from hvp_explore.problems import measurement_mse

DEFAULT_TAU = 2e-3
DEFAULT_RESTARTS = 8
DEFAULT_STEPS = 300
DEFAULT_LR = 0.1
DEFAULT_STOP_FACTOR = 0.25
#: IAGAN's learning rate of the generator's parameters (Abu Hussein et al. 2020), for generators that declare none.
DEFAULT_IAGAN_LR_G = 1e-3
#: ``gauss_newton="auto"`` also refines when m > n if the latent has at most this many dimensions: the exact
#: Jacobian then costs n <= 256 batched jvps (about as much as 25-60 CSGM steps) and the damped system is n x n.
GAUSS_NEWTON_MAX_LATENT = 256


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


# ----------------------------------------------------------------------------------------------------
# Shared plumbing (also used by hvp_explore.pulse)


def _latent_dim(generator, latent_dim: int | None) -> int:
    n = latent_dim if latent_dim is not None else getattr(generator, "latent_dim", None)
    if not (isinstance(n, int) and n >= 1):
        raise ValueError("the generator has no integer 'latent_dim' attribute: pass latent_dim=<size of its latent>")
    return n


def _dtype_device(generator, y: torch.Tensor) -> tuple[torch.dtype, torch.device]:
    """Compute in the generator's floating dtype and on its device (the observation's for plain callables)."""
    found = module_dtype_device(generator)
    if found is not None:
        return found
    dtype = y.dtype if y.is_floating_point() else torch.get_default_dtype()
    return dtype, y.device


def _prepare(generator, forward, y, latent_dim: int | None) -> tuple[int, torch.Tensor, torch.Tensor]:
    """Validate the problem and return (n, y as a (1, ...) tensor, a probe latent of the right dtype/device).

    The measurement shape of one image is found by a forward pass of G(0), so that ``y`` may be given
    with or without its batch dimension.
    """
    if not callable(generator) or not callable(forward):
        raise ValueError("generator and forward must be callables (images = generator(latents), y = forward(images))")
    y = torch.as_tensor(y)
    n = _latent_dim(generator, latent_dim)
    dtype, device = _dtype_device(generator, y)
    z = torch.zeros(1, n, dtype=dtype, device=device)
    with torch.no_grad(), frozen_modules(generator):
        x = generator(z)
        if x.dim() != 4 or x.shape[0] != 1:
            raise ValueError(
                f"the generator must map latents (B, n) to images (B, C, H, W); a (1, {n}) latent gave {tuple(x.shape)}"
            )
        meas_shape = tuple(forward(x).shape)
    y = y.to(dtype=dtype, device=device)
    if tuple(y.shape) == meas_shape[1:]:
        y = y.unsqueeze(0)
    if tuple(y.shape) != meas_shape:
        raise ValueError(
            f"observation y has shape {tuple(y.shape)} but the forward operator maps one generated image to "
            f"measurements of shape {meas_shape} (or {meas_shape[1:]} without the batch dimension)"
        )
    return n, y, z


def _positive_int(name: str, value, *, minimum: int = 1) -> int:
    if not (isinstance(value, int) and not isinstance(value, bool) and value >= minimum):
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def _positive_float(name: str, value) -> float:
    if not (isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0 and value != float("inf")):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return float(value)


# ----------------------------------------------------------------------------------------------------
# Stages


@dataclass(frozen=True)
class _CSGMRun:
    best_latents: torch.Tensor  # (R, n): per restart, the iterate with the lowest MSE
    best_mses: torch.Tensor  # (R,)
    history: tuple[float, ...]
    steps_run: int
    stopped_early: bool


def _csgm(generator, forward, y, z0, *, steps, lr, prior, truncation, stop_mse, quiet) -> _CSGMRun:
    """Batched CSGM: one Adam over all restarts (rows of ``z0``), loss = sum of per-row MSEs."""
    z = z0.detach().clone().requires_grad_(True)
    opt = torch.optim.Adam([z], lr=lr)
    best_z = z0.detach().clone()
    best_mse = torch.full((z0.shape[0],), float("inf"), dtype=z0.dtype, device=z0.device)
    history: list[float] = []
    stopped = False
    t = 0
    with progress_bar("CSGM inversion", steps, quiet=quiet) as bar:
        while True:
            mse = measurement_mse(forward, generator(z), y)
            m = mse.detach()
            better = m < best_mse
            best_mse = torch.where(better, m, best_mse)
            best_z[better] = z.detach()[better]
            history.append(float(m.min()))
            if float(best_mse.min()) < stop_mse:
                stopped = True
                break
            if t == steps:
                break
            opt.zero_grad(set_to_none=True)
            mse.sum().backward()
            opt.step()
            if prior != "normal":
                with torch.no_grad():
                    z.copy_(project_latents(prior, z, truncation=truncation))
            t += 1
            bar.advance(status=f"best MSE {float(best_mse.min()):.2e}")
    return _CSGMRun(best_z, best_mse, tuple(history), t, stopped)


def _gauss_newton(generator, forward, y, latent, *, target, trials, prior, truncation):
    r"""Levenberg-Marquardt on the measurement residual from ``latent``, until MSE < ``target``.

    With :math:`r(z) = A G(z) - y` and its exact Jacobian J (m, n) the step is the damped
    Gauss-Newton step :math:`\delta = -(J^T J + \mu s I)^{-1} J^T r = -J^T (J J^T + \mu s I)^{-1} r`,
    :math:`s = \lVert J \rVert_F^2 / \min(m, n)`, solved in whichever form is smaller (n x n when the
    measurements outnumber the latent dimensions, m x m otherwise). A step that lowers the MSE is kept
    (then :math:`\mu \leftarrow \mu / 10` and J is recomputed at the new point); otherwise
    :math:`\mu \leftarrow 10 \mu` and the step is retried with the same J. Every step lies in the row
    space of J, so on a generator that is affine in z the iterates converge to the closest point to
    ``latent`` with :math:`A G(z) = y` when m <= n, and to the least-squares point when m > n.

    Returns:
        ``(latent, mse, history, accepted)`` with the MSE of every accepted step in ``history``.
    """
    z = latent.detach().clone()
    with torch.no_grad():
        mse = float(measurement_mse(forward, generator(z[None]), y)[0])
    history, accepted, mu, J = [], 0, 1e-3, None
    for _ in range(trials):
        if mse < target:
            break
        if J is None:
            J = measurement_hessian(generator, forward, z).jacobian().to(torch.float64)
            with torch.no_grad():
                r = (forward(generator(z[None])) - y).reshape(-1).to(torch.float64)
            tall = J.shape[0] > J.shape[1]
            gram = J.T @ J if tall else J @ J.T
            scale = float(gram.diagonal().mean())
            eye = torch.eye(gram.shape[0], dtype=torch.float64, device=gram.device)
        if tall:
            step = -torch.linalg.solve(gram + mu * scale * eye, J.T @ r)
        else:
            step = -(J.T @ torch.linalg.solve(gram + mu * scale * eye, r))
        trial = z + step.to(z.dtype)
        if prior != "normal":
            trial = project_latents(prior, trial[None], truncation=truncation)[0]
        with torch.no_grad():
            trial_mse = float(measurement_mse(forward, generator(trial[None]), y)[0])
        if trial_mse < mse:
            z, mse, mu, J = trial, trial_mse, mu / 10, None
            history.append(mse)
            accepted += 1
        else:
            mu *= 10
    return z, mse, history, accepted


def _iagan(generator: nn.Module, forward, y, latent, *, steps, lr_z, lr_g, stop_mse, quiet):
    """IAGAN: Adam on (z, all parameters of a deep copy of G); returns (copy, z, history) at the best iterate.

    Adam at lr 1e-3 on every parameter can raise the loss before lowering it, so the lowest-MSE
    iterate seen (and the final one) is kept, never a worse one. The fine-tuning stops at the first
    iterate below ``stop_mse`` (``tau * stop_factor``): fitting the measurements further only bends the
    generator towards them (a 64x64 face generator driven to MSE 1e-7 on a photograph's 16x16 copy
    paints blocky high frequencies the measurements cannot see; docs/inversion.md).
    """
    tuned = copy.deepcopy(generator)
    flags = [p.requires_grad for p in tuned.parameters()]
    modes = [m.training for m in tuned.modules()]
    # Batch norm stays in eval mode: a batch of one would make its batch statistics degenerate, and the
    # running statistics are part of what the generator learnt.
    tuned.eval()
    params = list(tuned.parameters())
    for p in params:
        p.requires_grad_(True)
        p.grad = None
    z = latent.detach().clone().unsqueeze(0).requires_grad_(True)
    opt = torch.optim.Adam([{"params": [z], "lr": lr_z}, {"params": params, "lr": lr_g}])
    history: list[float] = []
    best = (math.inf, None, None)
    with progress_bar("IAGAN fine-tuning", steps, quiet=quiet) as bar:
        for _ in range(steps):
            mse = measurement_mse(forward, tuned(z), y)
            history.append(float(mse.detach()[0]))
            if history[-1] < best[0]:
                best = (history[-1], z.detach().clone(), {k: v.detach().clone() for k, v in tuned.state_dict().items()})
            if history[-1] < stop_mse:
                break
            opt.zero_grad(set_to_none=True)
            mse.sum().backward()
            opt.step()
            bar.advance(status=f"MSE {history[-1]:.2e}")
    with torch.no_grad():
        final = float(measurement_mse(forward, tuned(z), y)[0])
    if best[1] is not None and best[0] < final:
        z = best[1].requires_grad_(True)
        tuned.load_state_dict(best[2])
    for p, flag in zip(params, flags):
        p.grad = None
        p.requires_grad_(flag)
    for m, training in zip(tuned.modules(), modes):
        m.train(training)
    return tuned, z.detach()[0], history


# ----------------------------------------------------------------------------------------------------
# Public entry point


def invert(
    generator: Callable[[torch.Tensor], torch.Tensor],
    forward: Callable[[torch.Tensor], torch.Tensor],
    y: torch.Tensor,
    *,
    restarts: int = DEFAULT_RESTARTS,
    steps: int = DEFAULT_STEPS,
    lr: float = DEFAULT_LR,
    prior: str = "normal",
    truncation: float = DEFAULT_TRUNCATION,
    tau: float = DEFAULT_TAU,
    stop_factor: float = DEFAULT_STOP_FACTOR,
    gauss_newton: bool | str = "auto",
    gauss_newton_trials: int = 10,
    iagan: bool | str = "auto",
    iagan_steps: int = 300,
    iagan_lr_z: float = 1e-4,
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
        steps: Maximum number of CSGM Adam steps.
        lr: CSGM Adam learning rate.
        prior: Latent prior of the starts and of the projection: ``"normal"``, ``"truncated"``, ``"sphere"``.
        truncation: Threshold of the ``"truncated"`` prior.
        tau: Feasibility threshold on the measurement MSE (SPEC: 2e-3).
        stop_factor: The inversion stops once the best MSE is below ``tau * stop_factor``; in [0, 1].
        gauss_newton: Refine with Levenberg-Marquardt once CSGM is feasible (or has used its steps):
            ``True``, ``False``, or ``"auto"`` (when m <= n, so that the exact Jacobian costs m <= n
            vector-Jacobian products and the damped system is m x m, or when n <=
            :data:`GAUSS_NEWTON_MAX_LATENT`, where it costs n Jacobian-vector products and the system is
            n x n). CSGM then stops at ``tau``; if the refinement ends above ``tau * stop_factor``,
            CSGM resumes from it with the steps it has left.
        gauss_newton_trials: Levenberg-Marquardt trial steps (accepted or not).
        iagan: Whether to fine-tune a copy of the generator after CSGM: ``True``, ``False``, or
            ``"auto"`` (only when CSGM's best MSE stays above ``tau``, e.g. large inpainting holes of
            images outside the generator's range; see docs/inversion.md).
        iagan_steps: Number of IAGAN Adam steps.
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
        _check_truncation(truncation)
    restarts = _positive_int("restarts", restarts)
    steps = _positive_int("steps", steps, minimum=0)
    lr = _positive_float("lr", lr)
    tau = _positive_float("tau", tau)
    if not (isinstance(stop_factor, (int, float)) and 0 <= stop_factor <= 1):
        raise ValueError(f"stop_factor must be in [0, 1] (CSGM stops below tau * stop_factor), got {stop_factor!r}")
    if gauss_newton not in (True, False, "auto"):
        raise ValueError(f"gauss_newton must be True, False or 'auto' (when m <= n or n <= {GAUSS_NEWTON_MAX_LATENT}), "
                         f"got {gauss_newton!r}")
    gauss_newton_trials = _positive_int("gauss_newton_trials", gauss_newton_trials)
    if iagan not in (True, False, "auto"):
        raise ValueError(f"iagan must be True, False or 'auto' (fine-tune only when CSGM stays above tau), got {iagan!r}")
    if iagan:
        iagan_steps = _positive_int("iagan_steps", iagan_steps, minimum=0)
        iagan_lr_z = _positive_float("iagan_lr_z", iagan_lr_z)
        if iagan_lr_g is None:
            iagan_lr_g = getattr(generator, "iagan_lr_g", DEFAULT_IAGAN_LR_G)
        iagan_lr_g = _positive_float("iagan_lr_g", iagan_lr_g)
        if iagan is True and (not isinstance(generator, nn.Module) or not any(True for _ in generator.parameters())):
            raise ValueError("iagan=True fine-tunes the generator's parameters: pass a torch.nn.Module with parameters")
    if back_projection and not callable(getattr(forward, "pinv", None)):
        raise ValueError(
            f"back_projection=True needs a forward operator with a pinv(y) method (its pseudo-inverse A^+); "
            f"{type(forward).__name__} has none"
        )
    n, y, probe = _prepare(generator, forward, y, latent_dim)

    if init is None:
        z0 = sample_latents(
            prior, restarts, n, generator=torch.Generator().manual_seed(seed), truncation=truncation, dtype=probe.dtype
        ).to(probe.device)
    else:
        z0 = torch.as_tensor(init).to(dtype=probe.dtype, device=probe.device)
        z0 = z0.unsqueeze(0) if z0.dim() == 1 else z0
        if z0.dim() != 2 or z0.shape[1] != n:
            raise ValueError(f"init must have shape (R, {n}) or ({n},), got {tuple(torch.as_tensor(init).shape)}")

    if gauss_newton == "auto":
        gauss_newton = y[0].numel() <= n or n <= GAUSS_NEWTON_MAX_LATENT
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    options = {"lr": lr, "prior": prior, "truncation": truncation, "quiet": quiet}
    with frozen_modules(generator):
        # With the refinement, CSGM hands over as soon as a restart is feasible.
        run = _csgm(generator, forward, y, z0, steps=steps, stop_mse=tau * (1.0 if gauss_newton else stop_factor), **options)
    timings["csgm"] = time.perf_counter() - t0
    best = int(run.best_mses.argmin())
    latent = run.best_latents[best].clone()
    best_mse = float(run.best_mses[best])
    history = list(run.history)
    steps_run, stopped_early, accepted = run.steps_run, run.stopped_early, 0
    if gauss_newton and best_mse >= tau * stop_factor:
        t0 = time.perf_counter()
        with frozen_modules(generator, forward):
            latent, best_mse, gn_history, accepted = _gauss_newton(generator, forward, y, latent, target=tau * stop_factor,
                                                                   trials=gauss_newton_trials, prior=prior, truncation=truncation)
        history.extend(gn_history)
        timings["gauss_newton"] = time.perf_counter() - t0
        if best_mse >= tau * stop_factor and steps_run < steps:
            # the refinement stalled: CSGM resumes from its latent with the steps it has left
            t0 = time.perf_counter()
            with frozen_modules(generator):
                more = _csgm(generator, forward, y, latent[None], steps=steps - steps_run, stop_mse=tau * stop_factor, **options)
            latent, best_mse = more.best_latents[0].clone(), float(more.best_mses[0])
            history.extend(more.history[1:])
            steps_run += more.steps_run
            timings["csgm"] += time.perf_counter() - t0
        stopped_early = best_mse < tau * stop_factor

    used = generator
    if iagan == "auto":
        # fine-tune only when CSGM could not reach feasibility, and only generators with parameters
        iagan = (best_mse > tau and isinstance(generator, nn.Module)
                 and any(True for _ in generator.parameters()))
    if iagan:
        t0 = time.perf_counter()
        used, latent, iagan_history = _iagan(
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
    )

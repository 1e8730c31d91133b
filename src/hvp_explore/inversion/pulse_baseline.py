"""The PULSE baseline (Menon, Damian, Hu, Ravi, Rudin, CVPR 2020): many solutions by re-running inversion.

Each run draws a latent uniformly on the sphere of radius sqrt(n) and minimises
100 * max(MSE(z), eps), MSE(z) = mean(((A G(z) - y) / 2)^2) (the [0, 1] pixel scale, as PULSE's L2 term on
[0, 1] images), with PULSE's ``SphericalOptimizer``: a plain Adam step (lr 0.4, torch defaults otherwise)
followed by rescaling every latent row back to its initial norm. The learning rate follows a per-step
schedule (``linear1cycledrop`` by default, see :func:`schedule_factor`), 100 steps.

Stopping. In PULSE's published code (github.com/adamian98/pulse, ``PULSE.py``) the clamp at eps zeroes
the gradient of the L2 term once a run is under eps (the loss cannot improve any more), the loop still
runs all ``steps``, a run is accepted when the smallest L2 seen along it is <= eps, and its best image
(strictly lowest loss) is therefore the first iterate with L2 <= eps. Here a run returns that same
iterate, the first with MSE <= eps, so the accepted runs and their solutions are PULSE's. By default
(``stop_at_eps=True``) the run also ends there, so it costs at most what PULSE's costs and the
baseline's timings are if anything optimistic; ``stop_at_eps=False`` runs all ``steps`` as the
published code does (same solutions, published cost). A run that never reaches eps returns its last
iterate (after ``steps`` updates) and is infeasible.

Runs. ``n`` runs go one after another by default, each timed on its own, as in the paper's timings.
``batch=B`` optimises B runs together in one Adam over a (B, n_latent) tensor with the loss summed over
rows: Adam is element-wise, the spherical rescaling is per row and the schedule depends only on the step
index, so every row follows the trajectory it would follow alone (the generator must not couple rows:
batch norm runs in eval mode). A row that reaches eps is recorded and ignored from then on; the batch
stops when all rows are done. Initial latents are drawn once for all ``n`` runs from one seeded
generator, so a given seed gives the same runs for any ``batch``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from hvp_explore.io._progress import progress_bar
from hvp_explore.operators.base import frozen_modules
from hvp_explore.inversion._problem import positive_float, positive_int, prepare_problem
from hvp_explore.inversion.priors import sample_latents
from hvp_explore.problems import measurement_mse

from hvp_explore.settings import DEFAULT_PULSE_LR, DEFAULT_PULSE_SCHEDULE, DEFAULT_PULSE_STEPS, DEFAULT_TAU
from hvp_explore.settings import PULSE_SCHEDULES as SCHEDULES

#: PULSE's feasibility threshold eps, the project's tau.
DEFAULT_EPS = DEFAULT_TAU


@dataclass(frozen=True)
class PulseResult:
    """The ``n`` runs of :func:`pulse`, in run order.

    Attributes:
        latents: Final latent of each run, shape (N, n_latent) (the first iterate with MSE <= eps, or
            the last iterate for runs that never got there).
        images: Their images, shape (N, C, H, W).
        measurement_mse: Measurement MSE of each image, shape (N,).
        feasible: ``measurement_mse <= eps``, shape (N,) bool.
        seconds_per_run: Wall-clock seconds of each run, shape (N,); a batch's time is split equally
            among its rows.
        seconds: Total wall-clock time (all runs, failed ones included).
        feasibility_rate: Fraction of feasible runs.
        steps_run: Adam updates that produced each returned latent, shape (N,) int64 (with
            ``stop_at_eps``, the steps each run took).
        runs: Number of runs N.
        batch: Runs optimised together.
        eps: The feasibility threshold.
    """

    latents: torch.Tensor
    images: torch.Tensor
    measurement_mse: torch.Tensor
    feasible: torch.Tensor
    seconds_per_run: torch.Tensor
    seconds: float
    feasibility_rate: float
    steps_run: torch.Tensor
    runs: int
    batch: int
    eps: float

    @property
    def num_feasible(self) -> int:
        """Number of feasible runs (solutions found)."""
        return int(self.feasible.sum())


def schedule_factor(schedule: str, step: int, steps: int) -> float:
    """Learning-rate factor of PULSE's schedules at optimiser step ``step`` of ``steps`` (a ``LambdaLR``).

    - ``"fixed"``: 1.
    - ``"linear1cycle"``: (9 (1 - 2 |s/S - 1/2|) + 1) / 10, i.e. 0.1 -> 1 at 50% -> 0.1 at 100%.
    - ``"linear1cycledrop"``: the same cycle compressed into the first 90% of the steps,
      (9 (1 - 2 |s / (0.9 S) - 1/2|) + 1) / 10 for s < 0.9 S (0.1 -> 1 at 45% -> 0.1 at 90%), then a linear
      drop 0.1 + (s - 0.9 S) / (0.1 S) (0.001 - 0.1) to 0.001 at 100%.
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown PULSE schedule {schedule!r}: expected one of {', '.join(map(repr, SCHEDULES))}")
    if schedule == "fixed":
        return 1.0
    if schedule == "linear1cycle":
        return (9 * (1 - abs(step / steps - 0.5) * 2) + 1) / 10
    if step < 0.9 * steps:
        return (9 * (1 - abs(step / (0.9 * steps) - 0.5) * 2) + 1) / 10
    return 0.1 + (step - 0.9 * steps) / (0.1 * steps) * (1e-3 - 0.1)


def spherical_project(z: torch.Tensor, radii: torch.Tensor) -> None:
    """PULSE's SphericalOptimizer rescaling, in place: each row back to its initial norm."""
    z.mul_(radii / z.norm(dim=1, keepdim=True))


def _pulse_batch(generator, forward, y, z0, *, steps, lr, eps, schedule, stop_at_eps):
    """Run the rows of ``z0`` as independent PULSE runs; returns (latents, images, mses, steps_run)."""
    b = z0.shape[0]
    z = z0.detach().clone().requires_grad_(True)
    radii = z0.detach().norm(dim=1, keepdim=True)
    opt = torch.optim.Adam([z], lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: schedule_factor(schedule, s, steps))
    out_z = torch.empty_like(z0)
    out_x: torch.Tensor | None = None
    out_mse = torch.empty(b, dtype=z0.dtype, device=z0.device)
    steps_run = torch.full((b,), steps, dtype=torch.int64)
    done = torch.zeros(b, dtype=torch.bool, device=z0.device)
    for step in range(steps + 1):
        x = generator(z)
        mse = measurement_mse(forward, x, y)
        if out_x is None:
            out_x = torch.empty_like(x.detach())
        # Rows under eps are finished (PULSE's loss is flat there); after the last update every row is.
        newly = ~done & (mse.detach() <= eps) if step < steps else ~done
        if bool(newly.any()):
            out_z[newly], out_x[newly], out_mse[newly] = z.detach()[newly], x.detach()[newly], mse.detach()[newly]
            steps_run[newly.cpu()] = step
            done |= newly
        if bool(done.all()) and (stop_at_eps or step == steps):
            break
        loss = 100 * mse.clamp(min=eps).sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        with torch.no_grad():
            spherical_project(z, radii)
    return out_z, out_x, out_mse, steps_run


def pulse(
    generator: Callable[[torch.Tensor], torch.Tensor],
    forward: Callable[[torch.Tensor], torch.Tensor],
    y: torch.Tensor,
    n: int,
    *,
    steps: int = DEFAULT_PULSE_STEPS,
    lr: float = DEFAULT_PULSE_LR,
    eps: float = DEFAULT_EPS,
    schedule: str = DEFAULT_PULSE_SCHEDULE,
    batch: int = 1,
    stop_at_eps: bool = True,
    latent_dim: int | None = None,
    seed: int = 0,
    quiet: bool | None = None,
) -> PulseResult:
    """Run PULSE ``n`` times from random latents on the sphere and report each run's solution.

    Run i starts from row i of ``sample_latents("sphere", n, n_latent,
    generator=torch.Generator().manual_seed(seed))`` and minimises 100 max(MSE, eps) with spherical
    Adam under the ``schedule`` (see the module docstring for the stopping rule and the batching).

    Args:
        generator: Callable (usually an ``nn.Module`` with ``latent_dim``) mapping (B, n_latent) latents
            to (B, C, H, W) images in [-1, 1]; put in eval mode with parameter grads off while it runs.
        forward: Linear forward operator A, images (B, C, H, W) -> measurements (B, ...).
        y: Observation, measurements of one image with or without the batch dimension.
        n: Number of independent runs (solutions asked for).
        steps: Adam steps per run.
        lr: Peak Adam learning rate.
        eps: Feasibility threshold on the measurement MSE; the loss is flat below it.
        schedule: ``"linear1cycledrop"``, ``"linear1cycle"`` or ``"fixed"``.
        batch: Runs optimised together (1: one after another, as PULSE).
        stop_at_eps: End each run at its first iterate with MSE <= eps (else run all ``steps``, as
            PULSE's code; the returned solutions are the same).
        latent_dim: Latent size, for generators without a ``latent_dim`` attribute.
        seed: Seed of the initial latents.
        quiet: Hide the progress bar (it only shows on a terminal anyway).

    Returns:
        A :class:`PulseResult`.
    """
    start = time.perf_counter()
    n = positive_int("n (number of runs)", n)
    steps = positive_int("steps", steps)
    batch = positive_int("batch", batch)
    lr = positive_float("lr", lr)
    eps = positive_float("eps", eps)
    schedule_factor(schedule, 0, steps)  # validates the name
    n_latent, y, probe = prepare_problem(generator, forward, y, latent_dim)
    z_init = sample_latents("sphere", n, n_latent, generator=torch.Generator().manual_seed(seed), dtype=probe.dtype)
    z_init = z_init.to(probe.device)

    latents, images, mses, seconds, steps_run = [], [], [], [], []
    with frozen_modules(generator), progress_bar("PULSE runs", n, quiet=quiet) as bar:
        for lo in range(0, n, batch):
            t0 = time.perf_counter()
            z, x, mse, k = _pulse_batch(
                generator, forward, y, z_init[lo : lo + batch],
                steps=steps, lr=lr, eps=eps, schedule=schedule, stop_at_eps=stop_at_eps,
            )  # fmt: skip
            rows = z.shape[0]
            seconds.append(torch.full((rows,), (time.perf_counter() - t0) / rows, dtype=torch.float64))
            latents.append(z)
            images.append(x)
            mses.append(mse)
            steps_run.append(k)
            found = sum(int((m <= eps).sum()) for m in mses)
            bar.advance(rows, status=f"{found} feasible")

    mse = torch.cat(mses)
    feasible = mse <= eps
    return PulseResult(
        latents=torch.cat(latents),
        images=torch.cat(images),
        measurement_mse=mse,
        feasible=feasible,
        seconds_per_run=torch.cat(seconds),
        seconds=time.perf_counter() - start,
        feasibility_rate=float(feasible.double().mean()),
        steps_run=torch.cat(steps_run),
        runs=n,
        batch=batch,
        eps=eps,
    )

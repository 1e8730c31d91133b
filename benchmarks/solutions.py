r"""The solutions benchmark: time to N feasible solutions, e-GLASS against PULSE, in one run.

On the same observations, generator and feasibility threshold :math:`\tau`, for every N in ``ns``:

``pulse``
    PULSE as its paper ran it: independent runs one after another, failed runs counted in the time.
    Time to N = the time until N feasible runs exist (the prefix of one sequence of runs, so one
    sequence serves every N). When a run budget ends first, the time is extrapolated from the runs
    done: runs are independent, so :math:`T(N) = N \bar t / r` (mean run time :math:`\bar t`,
    feasibility rate :math:`r`), and the row says so. With no feasible run in R, r is replaced by its
    95% upper confidence bound :math:`1 - 0.05^{1/R}` (:func:`rate_upper_bound`): the time is then a
    lower bound that holds with 95% confidence (``seconds_rate_one`` keeps the looser bound r = 1).
``pulse-batch``
    PULSE with its restarts optimised together in one batch (the strongest form of the baseline):
    :math:`\lceil N / r \rceil` rows (r from the sequential runs), topped up by further batches until N
    are feasible. Rows follow exactly the trajectories of sequential runs (see :mod:`hvp_explore.inversion.pulse_baseline`),
    so where a batch is too large to run here its time is extrapolated as steps times the measured
    seconds of one Adam step at that batch size.
``eglass-<solver>``
    e-GLASS (:func:`~hvp_explore.exploration.explore`) with the eigensolver ``<solver>`` for both
    :math:`H_Y` and :math:`H_X`: ``dense`` is the full-Hessian version the paper computed, the others
    are this project's matrix-free solvers.
``generalized``
    Generalized directions (top pencil eigenvectors of :math:`H_X d = \mu (H_Y + \epsilon I) d`).

e-GLASS methods share one inversion per observation: its seconds are added to every e-GLASS time (so
all of them pay for it, as each would alone). An e-GLASS time stops when ``explore`` has delivered its
solutions: the report figures it computes after (``_common.REPORT_STAGES``: the distances between the
solutions and the share of their change where the data is missing) are left out, as PULSE's time leaves out
the diversity computed of its solutions; the breakdown still lists them. The inversion and the stages after
it (eigensolves, directions, feasible steps) are repeated ``repeats`` times when cheap and the median is
kept. A run that returns M >= N feasible solutions also gives N of them, so the reported time to N is
the smallest measured time of a run with at least N feasible solutions (monotone in N by construction);
``seconds_run`` keeps each N's own run.

Every solution's measurement MSE is recomputed from its image; diversity is the mean pairwise
perceptual distance with the run's metric (and with real LPIPS when its backbone weights are in the
torch hub cache); the distance to the ground truth is the pixel MSE on the [0, 1] scale.

Relative output paths are resolved against the repository root.

    python benchmarks/solutions.py                                     # full run: JSON, plots, docs/benchmarks.md
    python benchmarks/solutions.py --problems sr --generators default --ns 1,10 --samples 1   # smoke run
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    INPAINT_BOX,
    ROOT,
    Case,
    biggan_cases,
    busy_warning,
    default_cases,
    fmt,
    load_average,
    machine_with_load,
    markdown_table,
    median_repetition,
    report_seconds,
    seed_from,
    update_doc_section,
)

from hvp_explore.eigen import ConvergenceWarning  # noqa: E402
from hvp_explore.exploration import ExplorationResult, explore, pairwise_distances  # noqa: E402
from hvp_explore.inversion import InversionResult, invert, pulse, sample_latents  # noqa: E402
from hvp_explore.io.atomic import write_json_atomic  # noqa: E402
from hvp_explore.operators.base import frozen_modules, module_dtype_device  # noqa: E402
from hvp_explore.problems import DEFAULT_TAU, measurement_mse  # noqa: E402

EGLASS_SOLVERS = ("dense", "auto", "block-krylov", "lanczos", "arpack", "lobpcg")
METHODS = ("pulse", "pulse-batch", *(f"eglass-{s}" for s in EGLASS_SOLVERS), "generalized")
GENERATORS = ("default", "biggan")
PROBLEMS = ("sr", "inpaint")

#: Methods run on BigGAN by default: the full-Hessian variant needs n = 256 products per operator,
#: each a forward and a backward pass through BigGAN-deep, which does not fit a CPU budget.
BIGGAN_METHODS = ("pulse", "pulse-batch", "eglass-auto")
#: The e-GLASS method the targets are evaluated on: the matrix-free default.
HEADLINE = "eglass-auto"
#: Methods drawn in the diversity plot (the solver variants give the same directions, so the same points).
PLOTTED_DIVERSITY = ("pulse", "pulse-batch", "eglass-dense", "eglass-auto", "generalized")

# Issue 5's targets: (generator, key) -> bound; None = report the figure without a bound.
TARGETS = {
    ("default", "vs_pulse@10"): 0.2, ("default", "vs_pulse@100"): 0.03,
    ("default", "vs_pulse_batch@10"): None, ("default", "vs_pulse_batch@100"): None,
    ("biggan", "vs_pulse@10"): 0.12, ("biggan", "vs_pulse@100"): 0.015,
    ("biggan", "vs_pulse_batch@10"): 0.5, ("biggan", "vs_pulse_batch@100"): 0.1,
}
MARGINAL_FORWARDS_TARGET = 3.0
EIGEN_RATIO_TARGET = 0.2


# --------------------------------------------------------------------------------------------------
# setups and cases


@dataclass(frozen=True)
class GeneratorSetup:
    """How one generator is benchmarked.

    Attributes:
        name: ``"default"`` or ``"biggan"`` (also any label, for user cases).
        ns: The numbers of solutions N.
        methods: Methods to run (see :data:`METHODS`).
        pulse_max_runs: Sequential PULSE stops after this many runs (then extrapolates).
        pulse_budget_s: ... or once this many seconds of runs have passed.
        pulse_steps: Adam steps per PULSE run (100 in PULSE; fewer only for smoke tests).
        pulse_batch_max_rows: Largest batch actually run; larger ones are extrapolated from step times.
        step_batches: Batch sizes at which one PULSE Adam step is timed (the regime measurement).
        step_repeats: Timed Adam steps per batch size (after one warm-up step).
        forward_repeats: Timed batch-1 forward passes (the unit of the per-solution cost).
        invert_options: Keyword options of :func:`~hvp_explore.inversion.invert`.
        k_y: H_Y eigenpairs for e-GLASS (None: :func:`~hvp_explore.exploration.default_k_y`).
        eglass_max_n: e-GLASS methods run only for N up to this (None: every N); PULSE runs every N.
        repeats: Repeats of the inversion and of the e-GLASS stages after it (median kept) ...
        repeat_under_s: ... when one repetition takes less than this.
    """

    name: str
    ns: tuple[int, ...] = (1, 10, 100)
    methods: tuple[str, ...] = METHODS
    pulse_max_runs: int = 300
    pulse_budget_s: float = 900.0
    pulse_steps: int = 100
    pulse_batch_max_rows: int = 1000
    step_batches: tuple[int, ...] = (1, 10, 100)
    step_repeats: int = 5
    forward_repeats: int = 20
    invert_options: Mapping[str, Any] = field(default_factory=dict)
    k_y: int | None = None
    eglass_max_n: int | None = None
    repeats: int = 3
    repeat_under_s: float = 30.0


@dataclass(frozen=True)
class SolutionsBenchmark:
    """Everything one benchmark run measured (see :func:`run_solutions_benchmark`).

    Attributes:
        rows: One record per (case, method, N); see :func:`benchmark_case` for the keys.
        summary: Medians over the cases of each (generator, problem, method, N).
        targets: Issue 5's targets with the measured values and whether each was met.
        regimes: Per generator: forward-pass and Adam-step timings and the batching regime.
        cases: Per case: problem, inversion, notes.
        diversity_points: Per-solution (MSE, diversity) points of the plotted case.
        notes: Honest notes (extrapolations, substitutions, missed targets and why).
        settings: The options of the run.
        machine: What it ran on.
        lpips: Whether real LPIPS was available, and why not.
        seconds: Wall time of the whole run.
    """

    rows: tuple[dict, ...]
    summary: tuple[dict, ...]
    targets: tuple[dict, ...]
    regimes: tuple[dict, ...]
    cases: tuple[dict, ...]
    diversity_points: dict
    notes: tuple[str, ...]
    settings: dict
    machine: dict
    lpips: dict
    seconds: float

    def to_json(self) -> dict:
        """A JSON-ready payload."""
        return {"benchmark": "solutions", **{f.name: getattr(self, f.name) for f in dataclasses.fields(self)}}


# --------------------------------------------------------------------------------------------------
# the arithmetic of times (pure functions, tested on their own)


def time_to_n_feasible(run_seconds: Sequence[float], feasible: Sequence[bool], n: int) -> tuple[float, int] | None:
    """Time until ``n`` feasible runs exist when runs go one after another.

    Returns:
        ``(seconds, runs)``: the summed seconds of the runs up to and including the n-th feasible one,
        and how many runs that was; None when fewer than n runs are feasible.
    """
    if len(run_seconds) != len(feasible):
        raise ValueError(f"one feasibility flag per run expected, got {len(feasible)} for {len(run_seconds)} runs")
    if n < 1:
        raise ValueError(f"n must be a positive integer, got {n}")
    total, found = 0.0, 0
    for i, (seconds, ok) in enumerate(zip(run_seconds, feasible)):
        total += float(seconds)
        found += bool(ok)
        if found == n:
            return total, i + 1
    return None


def extrapolated_time_to_n(n: int, mean_run_seconds: float, rate: float) -> float:
    r"""Expected time to ``n`` feasible runs of independent runs: :math:`n \bar t / r` (infinite when r = 0).

    With feasibility rate r each run succeeds with probability r, so n successes need n / r runs on
    average, each costing :math:`\bar t` on average (failed ones included in the mean).
    """
    if not 0 <= rate <= 1:
        raise ValueError(f"the feasibility rate must be in [0, 1], got {rate}")
    if not mean_run_seconds >= 0:
        raise ValueError(f"the mean run time must be >= 0, got {mean_run_seconds}")
    return math.inf if rate == 0 else n * mean_run_seconds / rate


def rate_upper_bound(feasible: int, runs: int, *, confidence: float = 0.95) -> float:
    r"""One-sided Clopper-Pearson upper confidence bound on a success rate from ``feasible`` of ``runs``.

    With no success it is :math:`1 - (1 - c)^{1/R}` (about 3 / R at c = 0.95, the "rule of three"):
    a rate above it would have produced a success in R runs with probability at least c. Dividing by it
    turns "no feasible run in R" into a lower bound on the time to N that holds with confidence c.
    """
    if not (isinstance(runs, int) and runs >= 1 and isinstance(feasible, int) and 0 <= feasible <= runs):
        raise ValueError(f"need 0 <= feasible <= runs and runs >= 1, got {feasible} of {runs}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if feasible == runs:
        return 1.0
    from scipy.stats import beta

    return float(beta.ppf(confidence, feasible + 1, runs - feasible))


def monotone_times(runs: Mapping[int, tuple[float | None, int]]) -> dict[int, float | None]:
    """Time to N from runs made for several N: the fastest run that returned at least N feasible solutions.

    Args:
        runs: N -> (seconds of the run made for N, feasible solutions it returned).

    Returns:
        N -> seconds (None when no run returned N feasible solutions); non-decreasing in N.
    """
    out = {}
    for n in sorted(runs):
        candidates = [s for s, found in runs.values() if s is not None and found >= n]
        out[n] = min(candidates) if candidates else None
    return out


def marginal_seconds(times: Mapping[int, float | None]) -> tuple[float, int, int] | None:
    """Seconds per extra solution between the two largest N with a time: (T(b) - T(a)) / (b - a).

    Returns:
        ``(seconds, a, b)``, or None with fewer than two timed N.
    """
    timed = sorted(n for n, t in times.items() if t is not None and math.isfinite(t))
    if len(timed) < 2:
        return None
    a, b = timed[-2], timed[-1]
    return (times[b] - times[a]) / (b - a), a, b


def step_envelope(table: Mapping[int, float]) -> dict[int, float]:
    """Timings made non-decreasing in the batch size: t'(b) = min over measured b' >= b of t(b').

    A batch of b rows never needs to cost more than a larger one (it could be padded), so a small
    batch measured slower than a larger one was disturbed (warm-up, a busy machine); the envelope
    takes the cheaper figure, in the baseline's favour.
    """
    sizes = sorted(table)
    return {b: min(float(table[c]) for c in sizes[i:]) for i, b in enumerate(sizes)}


def step_seconds_at(table: Mapping[int, float], batch: int) -> tuple[float, bool]:
    """Seconds of one Adam step at ``batch`` rows, from steps timed at a few batch sizes.

    Uses :func:`step_envelope` of the table; piecewise linear between measured sizes; beyond the
    largest, the line through the two largest (proportional to the batch with a single measurement);
    never below the smallest measured time.

    Returns:
        ``(seconds, extrapolated)``; ``extrapolated`` is False when ``batch`` was measured.
    """
    if not table:
        raise ValueError("no Adam-step timings to interpolate from")
    table = step_envelope(table)
    if batch in table:
        return float(table[batch]), False
    sizes = sorted(table)
    if len(sizes) == 1:
        return float(table[sizes[0]]) * batch / sizes[0], True
    if batch < sizes[0]:
        return float(table[sizes[0]]), True
    lo, hi = (sizes[-2], sizes[-1]) if batch > sizes[-1] else next((a, b) for a, b in zip(sizes, sizes[1:]) if a < batch < b)
    slope = (table[hi] - table[lo]) / (hi - lo)
    return max(float(table[lo] + slope * (batch - lo)), float(min(table.values()))), True


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or not (math.isfinite(a) and math.isfinite(b)) or b <= 0:
        return None
    return a / b


def _median(values: Iterable[float | None]) -> float | None:
    values = [v for v in values if v is not None and math.isfinite(v)]
    return statistics.median(values) if values else None


# --------------------------------------------------------------------------------------------------
# timing of the generator


def _dtype_device(generator: Callable) -> tuple[torch.dtype, torch.device]:
    """The floating dtype and device of a module (float32 on the CPU for plain callables)."""
    return module_dtype_device(generator) or (torch.get_default_dtype(), torch.device("cpu"))


def forward_pass_seconds(generator: Callable, latent_dim: int, *, repeats: int = 20) -> float:
    """Median seconds of one forward pass of a single latent (no gradients), after one warm-up pass."""
    dtype, device = _dtype_device(generator)
    z = torch.randn(1, latent_dim, generator=torch.Generator().manual_seed(0), dtype=dtype).to(device)
    times = []
    with frozen_modules(generator), torch.no_grad():
        for i in range(repeats + 1):
            t0 = time.perf_counter()
            generator(z)
            if i:
                times.append(time.perf_counter() - t0)
    return statistics.median(times)


def adam_step_seconds(generator: Callable, forward: Callable, y: torch.Tensor, batch_sizes: Iterable[int], *, repeats: int = 5,
                      lr: float = 0.4, eps: float = DEFAULT_TAU, seed: int = 0) -> dict[int, float]:
    """Median seconds of one PULSE optimiser step for B latents: forward, loss, backward, Adam, renormalisation.

    Each size gets one untimed warm-up step, then ``repeats`` timed ones. ``y`` is the observation with
    its batch dimension of 1 (it broadcasts over the latents).
    """
    dtype, device = _dtype_device(generator)
    n = int(generator.latent_dim)
    y = y.to(dtype=dtype, device=device)
    out = {}
    with frozen_modules(generator, forward):
        for b in batch_sizes:
            z0 = sample_latents("sphere", b, n, generator=torch.Generator().manual_seed(seed), dtype=dtype).to(device)
            z = z0.clone().requires_grad_(True)
            radii = z0.norm(dim=1, keepdim=True)
            opt = torch.optim.Adam([z], lr=lr)
            times = []
            for i in range(repeats + 1):
                t0 = time.perf_counter()
                loss = 100 * measurement_mse(forward, generator(z), y).clamp(min=eps).sum()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                with torch.no_grad():  # PULSE's SphericalOptimizer: each row back to its initial norm
                    z.mul_(radii / z.norm(dim=1, keepdim=True))
                if i:
                    times.append(time.perf_counter() - t0)
            out[int(b)] = statistics.median(times)
    return out


# --------------------------------------------------------------------------------------------------
# solution statistics


def _real_lpips() -> tuple[Callable | None, str]:
    """LPIPS-alex when its backbone weights are in the torch hub cache, else (None, the reason)."""
    from hvp_explore.metrics import LPIPSMetric, backbone_weights_path

    path = backbone_weights_path("alex")
    if not path.is_file():
        return None, f"unavailable: LPIPS (alex) needs {path.name} in {path.parent} (not present; nothing is downloaded)"
    return LPIPSMetric("alex"), "lpips-alex"


def _mean_pairwise(D: torch.Tensor) -> float | None:
    n = D.shape[0]
    if n < 2:
        return None
    iu = torch.triu_indices(n, n, 1)
    return float(D[iu[0], iu[1]].mean())


def _per_solution_diversity(D: torch.Tensor, feasible: torch.Tensor) -> list[float]:
    """Mean distance of each candidate to the feasible candidates other than itself (0 when there are none)."""
    W = feasible[None, :].to(D.dtype).expand_as(D).clone()
    W.fill_diagonal_(0)
    count = W.sum(1)
    return torch.where(count > 0, (D * W).sum(1) / count.clamp_min(1), torch.zeros_like(count)).tolist()


def _solution_stats(case: Case, images: torch.Tensor, tau: float, lpips_metric, *, points: bool = False) -> dict:
    """Statistics of a set of candidate solutions (images in [-1, 1]).

    ``mse``: measurement MSE of each image, recomputed here; ``feasible``: how many have MSE <= tau;
    ``diversity`` (``diversity_lpips``): mean pairwise distance of the feasible ones with the case's metric
    (real LPIPS); ``gt_mse``/``gt_mse_min``: mean/min pixel MSE of the feasible ones to the ground truth
    on the [0, 1] scale.
    With ``points``, ``_points`` holds (MSE, mean distance to the other images) per image, for the plot.
    """
    with torch.no_grad():
        mse = measurement_mse(case.forward, images, case.y).to(torch.float64) if images.shape[0] else \
            torch.zeros(0, dtype=torch.float64)
        feasible = mse <= tau
        keep = images[feasible]
        D = pairwise_distances(case.metric, keep) if keep.shape[0] else torch.zeros(0, 0)
        lp = None
        if lpips_metric is not None and keep.shape[0] > 1:
            lp = _mean_pairwise(pairwise_distances(lpips_metric, keep.float().cpu()))
        gt = None
        if case.clean is not None and keep.shape[0]:
            gt = ((keep - case.clean.to(keep)) / 2).pow(2).flatten(1).mean(1).to(torch.float64)
        out = {"mse": mse.tolist(), "feasible": int(feasible.sum()), "mse_max": float(mse.max()) if mse.numel() else None,
               "diversity": _mean_pairwise(D), "diversity_lpips": lp,
               "gt_mse": float(gt.mean()) if gt is not None else None, "gt_mse_min": float(gt.min()) if gt is not None else None}
        if points and images.shape[0]:
            out["_points"] = (mse.tolist(), _per_solution_diversity(pairwise_distances(case.metric, images), feasible))
    return out


# --------------------------------------------------------------------------------------------------
# the methods


def _pulse_sequential(case: Case, setup: GeneratorSetup, *, tau: float, seed: int, log) -> dict:
    """Sequential PULSE runs (each timed alone) until max(ns) are feasible, or the run or time budget ends."""
    target = max(setup.ns)
    seconds, feasible, images, mses, steps = [], [], [], [], []
    t_start = time.perf_counter()
    stop = "found"
    while sum(feasible) < target:
        if len(seconds) >= setup.pulse_max_runs:
            stop = f"run budget ({setup.pulse_max_runs} runs)"
            break
        if time.perf_counter() - t_start > setup.pulse_budget_s:
            stop = f"time budget ({setup.pulse_budget_s:g} s)"
            break
        run = pulse(case.generator, case.forward, case.y, 1, steps=setup.pulse_steps, eps=tau,
                    seed=seed_from("pulse", seed, case.name, len(seconds)), quiet=True)
        seconds.append(float(run.seconds_per_run[0]))
        feasible.append(bool(run.feasible[0]))
        images.append(run.images)
        mses.append(float(run.measurement_mse[0]))
        steps.append(int(run.steps_run[0]))
        if len(seconds) % 10 == 0 or len(seconds) <= 3:
            log(f"    pulse run {len(seconds)}: {sum(feasible)} feasible, {sum(seconds):.1f} s")
    return {"seconds": seconds, "feasible": feasible, "images": torch.cat(images) if images else None, "mse": mses,
            "steps": steps, "stop": stop}


def _pulse_rows(case: Case, setup: GeneratorSetup, seq: dict, *, tau: float, lpips_metric) -> list[dict]:
    """Rows of sequential PULSE: the prefix of the run sequence up to the N-th feasible run, else extrapolated."""
    runs = len(seq["seconds"])
    rate = sum(seq["feasible"]) / runs if runs else 0.0
    mean_run = statistics.fmean(seq["seconds"]) if runs else math.nan
    rows = []
    for n in setup.ns:
        hit = time_to_n_feasible(seq["seconds"], seq["feasible"], n)
        row = {"method": "pulse", "N": n, "runs_measured": runs, "mean_run_seconds": mean_run, "pulse_rate": rate}
        if hit is not None:
            t, used = hit
            stats = _solution_stats(case, seq["images"][:used], tau, lpips_metric, points=n == max(setup.ns))
            row.update(seconds=t, estimate=None, estimate_note=None, returned=used, runs=used)
        else:
            stats = _solution_stats(case, seq["images"], tau, lpips_metric, points=n == max(setup.ns)) if runs else \
                {"mse": [], "feasible": 0}
            if rate > 0:
                t, kind = extrapolated_time_to_n(n, mean_run, rate), "extrapolated"
                note = (f"{sum(seq['feasible'])} of {runs} runs feasible when the {seq['stop']} ended: "
                        f"N / rate x mean run time = {n} / {rate:.3g} x {mean_run:.3g} s")
            else:
                bound = rate_upper_bound(0, runs)
                t, kind = extrapolated_time_to_n(n, mean_run, bound), "lower-bound"
                note = (f"no feasible run in {runs}: N x mean run time / {bound:.3g}, the 95% upper confidence bound on the "
                        f"rate (Clopper-Pearson, 1 - 0.05^(1/{runs})), a lower bound on the time with 95% confidence; with "
                        f"the rate taken as 1 it would be {n * mean_run:.3g} s")
                row["seconds_rate_one"] = n * mean_run
            row.update(seconds=t, estimate=kind, estimate_note=note, returned=runs, runs=n / rate if rate else None)
        row.update(stats)
        row["seconds_run"] = row["seconds"]
        row["breakdown"] = {"runs": row["seconds"]}
        rows.append(row)
    return rows


def _pulse_batch_rows(case: Case, setup: GeneratorSetup, seq: dict | None, step_table: Mapping[int, float], *, tau: float,
                      seed: int, lpips_metric, log, max_rounds: int = 5) -> list[dict]:
    """Rows of batched PULSE: ceil(N / rate) rows in one batch, topped up until N are feasible, or extrapolated."""
    seq_rate = sum(seq["feasible"]) / len(seq["seconds"]) if seq is not None and seq["seconds"] else None
    # No feasible sequential run: size the batch with the rate's 95% upper confidence bound (a lower bound on the time).
    zero = bool(seq is not None and seq["seconds"] and not seq_rate)
    bound = rate_upper_bound(0, len(seq["seconds"])) if zero else None
    rows, runs = [], {}
    for n in setup.ns:
        first = math.ceil(n / (seq_rate or bound or 1.0))
        row = {"method": "pulse-batch", "N": n, "pulse_rate": seq_rate}
        if first > setup.pulse_batch_max_rows:
            # Rows follow the trajectories of sequential runs: same rate; only the time per step differs.
            t_step, interpolated = step_seconds_at(step_table, first)
            steps = setup.pulse_steps if seq is None or not seq_rate or seq_rate < 1 else max(seq["steps"])
            t = steps * t_step
            note = (f"one batch of ceil(N / rate) = {first} rows, above the {setup.pulse_batch_max_rows}-row limit of this run: "
                    f"{steps} steps x {t_step:.3g} s per Adam step at B = {first}"
                    + (" (interpolated from the measured batch sizes)" if interpolated else "")
                    + ("" if seq_rate else
                       f"; no feasible sequential run, so the rate is taken as its 95% upper confidence bound {bound:.3g}, a lower "
                       f"bound on the time with 95% confidence" if zero else "; the rate taken as 1 (a lower bound)"))
            row.update(seconds_run=t, estimate="extrapolated" if seq_rate else "lower-bound", estimate_note=note, returned=0,
                       rows=first, batches=[first], mse=[], feasible=0, breakdown={"runs": t})
            rows.append(row)
            continue
        images, seconds, batches, found, size = [], 0.0, [], 0, first
        for round_ in range(max_rounds):
            res = pulse(case.generator, case.forward, case.y, size, batch=size, steps=setup.pulse_steps, eps=tau,
                        seed=seed_from("pulse-batch", seed, case.name, n, round_), quiet=True)
            seconds += float(res.seconds_per_run.sum())
            batches.append(size)
            images.append(res.images)
            found += res.num_feasible
            if found >= n:
                break
            # Top up by the rate seen so far; after batches without a feasible row, repeat the last size.
            observed = found / sum(batches)
            size = math.ceil((n - found) / observed) if observed else size
        images = torch.cat(images)
        stats = _solution_stats(case, images, tau, None, points=n == max(setup.ns))
        # The N solutions are the first N feasible rows: diversity and ground truth are theirs.
        with torch.no_grad():
            ok = (measurement_mse(case.forward, images, case.y) <= tau).nonzero().flatten()[:n]
        chosen = _solution_stats(case, images[ok], tau, lpips_metric)
        stats.update({k: chosen[k] for k in ("diversity", "diversity_lpips", "gt_mse", "gt_mse_min")})
        row.update(seconds_run=seconds, estimate=None,
                   estimate_note=None if found >= n else f"only {found} of N feasible after {len(batches)} batches",
                   returned=sum(batches), rows=sum(batches), batches=batches, breakdown={"runs": seconds}, **stats)
        runs[n] = (seconds, found)
        rows.append(row)
        log(f"    pulse-batch N={n}: batches {batches}, {found} feasible, {seconds:.2f} s")
    best = monotone_times(runs)
    for row in rows:
        row["seconds"] = row["seconds_run"] if row["estimate"] else best[row["N"]]
    return rows


def _first_solution(case: Case, setup: GeneratorSetup, *, tau: float, seed: int) -> tuple[InversionResult, dict]:
    """The shared inversion, e-GLASS's own: no known latent is used, and a miss of tau is reported as such.

    Timed like the e-GLASS stages: the median of up to ``setup.repeats`` identical (seeded) runs, repeated
    only while one takes less than ``setup.repeat_under_s``; a single run of a 0.1 s inversion is as noisy
    as the rest of e-GLASS's time together.
    """
    def run() -> tuple[float, InversionResult]:
        inv = invert(case.generator, case.forward, case.y, tau=tau, seed=seed, quiet=True, **dict(setup.invert_options))
        return inv.seconds, inv

    seconds, inv, runs = median_repetition(run, repeats=setup.repeats, repeat_under_s=setup.repeat_under_s)
    inv = dataclasses.replace(inv, seconds=seconds)
    info = {"seconds": inv.seconds, "repeats": runs, "measurement_mse": inv.measurement_mse, "steps_run": inv.steps_run,
            "restarts": len(inv.restart_mses), "fine_tuned": inv.fine_tuned, "timings": dict(inv.timings),
            "feasible": inv.measurement_mse <= tau, "options": dict(setup.invert_options)}
    return inv, info


def _eglass_ns(setup: GeneratorSetup) -> tuple[int, ...]:
    """The N values at which the e-GLASS methods of ``setup`` run."""
    return tuple(n for n in setup.ns if setup.eglass_max_n is None or n <= setup.eglass_max_n)


def _eglass_rows(case: Case, setup: GeneratorSetup, inv: InversionResult, method: str, *, tau: float, seed: int, lpips_metric,
                 log) -> list[dict]:
    """Rows of one e-GLASS method: one :func:`explore` per N from the shared inversion, median of repeats."""
    mode = "generalized" if method == "generalized" else "eglass"
    solver = "auto" if method == "generalized" else method.removeprefix("eglass-")
    rows, runs = [], {}
    for n in _eglass_ns(setup):
        def run() -> tuple[float, ExplorationResult]:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                res = explore(case.generator, case.forward, case.y, metric=case.metric, num_solutions=n, mode=mode, solver=solver,
                              k_y=setup.k_y, tau=tau, inversion=inv, seed=seed, quiet=True)
            # explore adds a provided inversion's seconds to its total; the report figures come after delivery
            return res.timings["total"] - inv.seconds - report_seconds(res.timings), res

        post, res, reps = median_repetition(run, repeats=setup.repeats, repeat_under_s=setup.repeat_under_s)
        images = torch.stack([s.image for s in res.solutions]) if res.solutions else inv.image[:0]
        stats = _solution_stats(case, images, tau, lpips_metric, points=n == max(_eglass_ns(setup)))
        t = inv.seconds + post
        stages = {"inversion": inv.seconds, **{k: v for k, v in res.timings.items() if k not in ("total", "inversion")}}
        pencil_matvecs = res.pencil.matvecs if res.pencil is not None else 0
        row = {"method": method, "N": n, "seconds_run": t, "estimate": None,
               "estimate_note": None if stats["feasible"] >= n else f"only {stats['feasible']} of N feasible solutions returned",
               "returned": len(res.solutions), "repeats": reps, "breakdown": stages,
               "eigen_seconds": stages.get("eigen_y", 0.0) + stages.get("eigen_x", 0.0),
               "eigen": {"solver_y": res.eig_y.solver, "solver_x": res.eig_x.solver, "k_y": res.eig_y.k, "k_x": res.eig_x.k,
                         "matvecs": res.eig_y.matvecs + res.eig_x.matvecs + pencil_matvecs,
                         "converged": bool(res.eig_y.all_converged and res.eig_x.all_converged
                                           and (res.pencil is None or res.pencil.all_converged))},
               "rejected_directions": len(res.rejected), **stats}
        runs[n] = (t, stats["feasible"])
        rows.append(row)
        log(f"    {method} N={n}: {t:.2f} s ({post:.3f} s after the inversion, median of {len(reps)}), "
            f"{stats['feasible']} feasible")
    best = monotone_times(runs)
    for row in rows:
        row["seconds"] = best[row["N"]]
    return rows


def benchmark_case(case: Case, setup: GeneratorSetup, *, step_table: Mapping[int, float], tau: float = DEFAULT_TAU, seed: int = 0,
                   lpips_metric=None, log: Callable[[str], None] = lambda _: None) -> tuple[list[dict], dict, dict]:
    """Run every method of ``setup`` on one case.

    Row keys: ``generator``, ``problem``, ``case``, ``method``, ``N``; ``seconds`` (time to N feasible
    solutions: measured, or an estimate when ``estimate`` is ``"extrapolated"`` / ``"lower-bound"``,
    explained in ``estimate_note``; None when not reached), ``seconds_run`` (the run made for this N),
    ``returned`` (solutions or runs produced), ``mse`` (measurement MSE of each, recomputed from its
    image), ``feasible`` (how many have MSE <= tau), ``feasibility_rate`` (``feasible / len(mse)``),
    ``mse_max``, ``breakdown`` (seconds per stage), ``diversity`` (mean pairwise distance of the
    feasible solutions with the case's metric), ``diversity_lpips``, ``gt_mse`` (mean pixel MSE to the
    ground truth, [0, 1] scale) and ``gt_mse_min``; e-GLASS rows add ``eigen_seconds``, ``eigen`` and
    ``repeats``; PULSE rows add their run counts and rates.

    Args:
        case: The observation.
        setup: Methods, N values and budgets.
        step_table: Seconds of one PULSE Adam step per batch size (extrapolating batched PULSE).
        tau: Feasibility threshold.
        seed: Seeds every run.
        lpips_metric: Real LPIPS for a second diversity figure, or None.
        log: Progress lines.

    Returns:
        ``(rows, case_info, points)``: the rows, the case's inversion and notes, and per method the
        per-candidate (MSE list, mean distance to the feasible others list, N) at the method's largest N.
    """
    rows: list[dict] = []
    info: dict = {"generator": case.generator_name, "problem": case.problem, "case": case.name, "metric": case.metric_name,
                  "notes": list(case.notes), "ground_truth": case.clean is not None}
    eglass = [m for m in setup.methods if m.startswith("eglass-") or m == "generalized"]
    inv = None
    if eglass:
        inv, info["inversion"] = _first_solution(case, setup, tau=tau, seed=seed)
        log(f"  inversion: {inv.seconds:.2f} s, MSE {info['inversion']['measurement_mse']:.2e}"
            + ("" if info["inversion"]["feasible"] else " (misses tau: e-GLASS has no feasible start)"))
    if inv is not None and inv.fine_tuned:  # PULSE gets the generator e-GLASS explores with: IAGAN's copy
        case = dataclasses.replace(case, generator=inv.generator)
        info["notes"].append("IAGAN fine-tuned the generator; PULSE runs on the same fine-tuned copy")
    seq = None
    if "pulse" in setup.methods or "pulse-batch" in setup.methods:
        log("  pulse (sequential runs)")
        seq = _pulse_sequential(case, setup, tau=tau, seed=seed, log=log)
        info["pulse"] = {"runs": len(seq["seconds"]), "feasible": sum(seq["feasible"]), "stop": seq["stop"],
                         "mean_run_seconds": statistics.fmean(seq["seconds"]) if seq["seconds"] else None,
                         "steps_run": seq["steps"]}
    if "pulse" in setup.methods:
        rows += _pulse_rows(case, setup, seq, tau=tau, lpips_metric=lpips_metric)
    if "pulse-batch" in setup.methods:
        log("  pulse (batched)")
        rows += _pulse_batch_rows(case, setup, seq, step_table, tau=tau, seed=seed, lpips_metric=lpips_metric, log=log)
    if eglass:
        for method in eglass:
            rows += _eglass_rows(case, setup, inv, method, tau=tau, seed=seed, lpips_metric=lpips_metric, log=log)
    points = {}
    for row in rows:
        row.update(generator=case.generator_name, problem=case.problem, case=case.name)
        row["feasibility_rate"] = row["feasible"] / len(row["mse"]) if row["mse"] else None
        if "_points" in row:
            points[row["method"]] = (*row.pop("_points"), row["N"])
    return [_ordered(r) for r in rows], info, points


_KEY_ORDER = ("generator", "problem", "case", "method", "N", "seconds", "estimate", "estimate_note", "seconds_run", "returned",
              "feasible", "feasibility_rate", "mse_max", "diversity", "diversity_lpips", "gt_mse", "gt_mse_min", "eigen_seconds",
              "breakdown", "eigen")


def _ordered(row: dict) -> dict:
    return {**{k: row[k] for k in _KEY_ORDER if k in row}, **{k: v for k, v in row.items() if k not in _KEY_ORDER}}


# --------------------------------------------------------------------------------------------------
# ratios, summary, targets


def add_ratios(rows: list[dict], forward_seconds: Mapping[str, float]) -> None:
    """Fill ``vs_pulse``, ``vs_pulse_batch``, ``marginal_seconds`` and ``marginal_forwards`` in place.

    Ratios compare a row's time to N with PULSE's (sequential and batched) on the same case and N.
    The marginal cost is (T(b) - T(a)) / (b - a) over the two largest N of the method on the case, with
    T the time of the run made for each N (``seconds_run``), in seconds and in batch-1 forward passes of
    the case's generator (``forward_seconds[generator]``); it is stored on the row of the largest N.
    """
    index = {(r["generator"], r["problem"], r["case"], r["method"], r["N"]): r for r in rows}
    for r in rows:
        key = (r["generator"], r["problem"], r["case"])
        r["vs_pulse"] = _ratio(r["seconds"], index.get((*key, "pulse", r["N"]), {}).get("seconds"))
        r["vs_pulse_batch"] = _ratio(r["seconds"], index.get((*key, "pulse-batch", r["N"]), {}).get("seconds"))
        r["marginal_seconds"] = r["marginal_forwards"] = None
    groups: dict[tuple, dict[int, dict]] = {}
    for r in rows:
        groups.setdefault((r["generator"], r["problem"], r["case"], r["method"]), {})[r["N"]] = r
    for key, by_n in groups.items():
        # From the runs made for each N (not the monotone times, which can hide the difference behind noise).
        m = marginal_seconds({n: r.get("seconds_run", r["seconds"]) for n, r in by_n.items()})
        if m is None:
            continue
        seconds, a, b = m
        by_n[b]["marginal_seconds"] = seconds
        by_n[b]["marginal_between"] = [a, b]
        fwd = forward_seconds.get(key[0])
        by_n[b]["marginal_forwards"] = seconds / fwd if fwd else None


def summarise(rows: Sequence[dict]) -> list[dict]:
    """Medians over the cases of each (generator, problem, method, N)."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["generator"], r["problem"], r["method"], r["N"]), []).append(r)
    out = []
    for (gen, problem, method, n), rs in groups.items():
        out.append({"generator": gen, "problem": problem, "method": method, "N": n, "cases": len(rs),
                    "seconds": _median(r["seconds"] for r in rs),
                    "estimate": next((r["estimate"] for r in rs if r["estimate"]), None),
                    "found_min": min(r["feasible"] for r in rs),
                    "feasibility_rate": _median(r.get("feasibility_rate") for r in rs),
                    "vs_pulse": _median(r.get("vs_pulse") for r in rs),
                    "vs_pulse_batch": _median(r.get("vs_pulse_batch") for r in rs),
                    "eigen_seconds": _median(r.get("eigen_seconds") for r in rs),
                    "inversion_seconds": _median(r["breakdown"].get("inversion") for r in rs),
                    "marginal_seconds": _median(r.get("marginal_seconds") for r in rs),
                    "marginal_forwards": _median(r.get("marginal_forwards") for r in rs),
                    "pulse_rate": _median(r.get("pulse_rate") for r in rs),
                    "matvecs": _median(r["eigen"]["matvecs"] for r in rs if "eigen" in r),
                    "breakdown": {k: _median(r["breakdown"].get(k) for r in rs) for k in rs[0]["breakdown"]},
                    "diversity": _median(r.get("diversity") for r in rs),
                    "diversity_lpips": _median(r.get("diversity_lpips") for r in rs),
                    "gt_mse": _median(r.get("gt_mse") for r in rs),
                    "mse_max": max((r["mse_max"] for r in rs if r.get("mse_max") is not None), default=None)})
    return out


def _largest(summary: Sequence[dict], gen: str, problem: str, method: str) -> dict | None:
    return max((s for s in summary if (s["generator"], s["problem"], s["method"]) == (gen, problem, method)),
               key=lambda s: s["N"], default=None)


def evaluate_targets(summary: Sequence[dict]) -> tuple[list[dict], list[str]]:
    """Issue 5's targets against the summary, with a one-line explanation of each miss.

    Evaluated per (generator, problem) on :data:`HEADLINE`: time ratios against sequential and batched
    PULSE at N = 10 and 100, forward passes per extra solution, the eigen stage of each matrix-free
    solver against the full Hessians (bounded at n = 512, the default generator), feasibility of every
    e-GLASS method, and PULSE's feasibility rate (reported, no bound).

    Returns:
        ``(targets, notes)``: one record per target (``met`` None when there is no bound) and the notes.
    """
    at = {(s["generator"], s["problem"], s["method"], s["N"]): s for s in summary}
    targets, notes = [], []

    def add(gen, problem, name, value, bound, *, at_least=False, estimate=None, why=None):
        met = None if value is None or bound is None else (value >= bound if at_least else value <= bound)
        if value is not None and value < 0:  # a cost difference below zero is timing noise, not a measurement
            met = None
            notes.append(f"{gen}/{problem}: {name} = {value:.3g} < 0: the run for the smaller N was the slower one, so the "
                         "difference is below the timing noise (warm-up, a busy machine); not evaluated")
        kind = None if bound is None else "at least" if at_least else "at most"
        targets.append({"generator": gen, "problem": problem, "target": name, "value": value, "bound": bound, "kind": kind,
                        "met": met, "estimate": estimate})
        if met is False and why:
            notes.append(f"{gen}/{problem}: {name} = {value:.3g} misses the bound {bound:g}: {why}")

    for gen, problem in sorted({(s["generator"], s["problem"]) for s in summary}):
        for baseline, key in (("pulse", "vs_pulse"), ("pulse-batch", "vs_pulse_batch")):
            for n in (10, 100):
                s, b = at.get((gen, problem, HEADLINE, n)), at.get((gen, problem, baseline, n))
                if b is None:
                    continue
                if s is None:
                    add(gen, problem, f"{HEADLINE} / {baseline}, time to {n}", None, TARGETS.get((gen, f"{key}@{n}")),
                        estimate=b["estimate"])
                    continue
                why = None
                if s["seconds"] and b["seconds"] and s["inversion_seconds"] is not None:
                    why = (f"e-GLASS takes {s['seconds']:.3g} s, of which the inversion is {s['inversion_seconds']:.3g} s; "
                           f"{baseline} takes {b['seconds']:.3g} s, so the inversion alone puts the ratio at "
                           f"{s['inversion_seconds'] / b['seconds']:.3g} or more")
                add(gen, problem, f"{HEADLINE} / {baseline}, time to {n}", s[key], TARGETS.get((gen, f"{key}@{n}")),
                    estimate=b["estimate"], why=why)
        last = _largest(summary, gen, problem, HEADLINE)
        if last is not None and last["marginal_forwards"] is not None:
            add(gen, problem, f"{HEADLINE}, forward passes per extra solution", last["marginal_forwards"],
                MARGINAL_FORWARDS_TARGET,
                why="an extra solution beyond 2K costs one forward pass at its predicted step, a backtracking pass when the "
                    "prediction is infeasible, and its Algorithm 1 projection (the report figures after delivery are not "
                    "counted)")
        dense = _largest(summary, gen, problem, "eglass-dense")
        if dense is not None and dense["eigen_seconds"]:
            for solver in EGLASS_SOLVERS[1:]:
                s = at.get((gen, problem, f"eglass-{solver}", dense["N"]))
                if s is None or s["eigen_seconds"] is None:
                    continue
                add(gen, problem, f"eglass-{solver} / eglass-dense, eigen stage at N = {dense['N']}",
                    s["eigen_seconds"] / dense["eigen_seconds"], EIGEN_RATIO_TARGET if gen == "default" else None,
                    why=f"it used {fmt(s['matvecs'])} operator products against the full Hessians' {fmt(dense['matvecs'])} "
                        f"({fmt(s['eigen_seconds'])} s against {fmt(dense['eigen_seconds'])} s)")
        for method in (m for m in METHODS if m.startswith("eglass-") or m == "generalized"):
            s = _largest(summary, gen, problem, method)
            if s is not None and s["feasibility_rate"] is not None:
                add(gen, problem, f"{method}, feasible fraction of the solutions at N = {s['N']}", s["feasibility_rate"], 1.0,
                    at_least=True, why="some returned solutions exceed tau when their MSE is recomputed from the image")
        s = _largest(summary, gen, problem, "pulse")
        if s is not None:
            add(gen, problem, "pulse feasibility rate (reported)", s["pulse_rate"], None, estimate=s["estimate"])
    return targets, notes


# --------------------------------------------------------------------------------------------------
# the run


def _check_choice(values: Sequence[str], allowed: Sequence[str], name: str) -> tuple[str, ...]:
    values = tuple(values)
    bad = [v for v in values if v not in allowed]
    if bad:
        raise ValueError(f"unknown {name} {', '.join(map(repr, bad))}: expected some of {', '.join(allowed)}")
    if not values:
        raise ValueError(f"no {name} given: expected some of {', '.join(allowed)}")
    return tuple(dict.fromkeys(values))


def _check_ns(ns: Sequence[int], name: str = "ns") -> tuple[int, ...]:
    ns = tuple(ns)
    if not ns or any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in ns):
        raise ValueError(f"{name} must be positive integers (numbers of solutions), got {list(ns)}")
    return tuple(sorted(set(ns)))


def _check_positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def _regime(measured: Mapping[int, float], forward_s: float) -> dict:
    """How much batching saves: the cost of one Adam step for the largest batch against proportional cost."""
    step_table = step_envelope(measured)
    sizes = sorted(step_table)
    small, big = sizes[0], sizes[-1]
    growth = step_table[big] / step_table[small]
    efficiency = growth / (big / small) if big > small else None
    if efficiency is None:
        text = "one batch size measured: regime unknown"
    else:
        kind = ("overhead-bound: batching PULSE's restarts is cheap" if efficiency < 0.5
                else "compute-bound: batching PULSE's restarts saves little")
        text = (f"{kind} (one Adam step for {big} latents costs {growth:.3g}x one for {small}, "
                f"{efficiency:.2f} of proportional; forward pass of one latent {forward_s * 1e3:.3g} ms)")
    return {"forward_seconds": forward_s, "adam_step_seconds": {str(k): v for k, v in sorted(step_table.items())},
            "adam_step_seconds_measured": {str(k): float(v) for k, v in sorted(measured.items())},
            "batch_efficiency": efficiency, "regime": text}


def _notes(rows: Sequence[dict], infos: Sequence[dict], lpips_status: str) -> list[str]:
    notes = []
    for info in infos:
        label = f"{info['generator']}/{info['problem']}/{info['case']}"
        notes += [f"{label}: {n}" for n in info["notes"]]
        inv = info.get("inversion")
        if inv and not inv["feasible"]:
            notes.append(f"{label}: the inversion did not reach tau (MSE {inv['measurement_mse']:.3g}): "
                         "e-GLASS has no feasible start")
        pulse_info = info.get("pulse")
        if pulse_info and pulse_info["stop"] != "found":
            notes.append(f"{label}: sequential PULSE stopped at its {pulse_info['stop']} after {pulse_info['runs']} runs "
                         f"({pulse_info['feasible']} feasible); larger N are extrapolated")
    for r in rows:
        label = f"{r['generator']}/{r['problem']}/{r['case']} {r['method']} N={r['N']}"
        if r["estimate"]:
            notes.append(f"{label}: {r['estimate']}: {r['estimate_note']}")
        elif r["seconds"] is None:
            notes.append(f"{label}: not reached ({r['estimate_note']})")
    if lpips_status != "lpips-alex":
        notes.append(f"real LPIPS diversity {lpips_status}")
    notes.append("generalized directions run explore(mode='generalized'), which also solves H_X for min(N / 2, K) "
                 "eigenpairs (for the report's coupling map) that the pencil does not use; that time is in its eigen stage")
    return notes


def run_solutions_benchmark(*, generators: Sequence[str] = GENERATORS, problems: Sequence[str] = PROBLEMS,
                            ns: Sequence[int] = (1, 10, 100), samples: int = 3, test_images: int = 0,
                            methods: Sequence[str] = METHODS, repeats: int = 3, tau: float = DEFAULT_TAU, seed: int = 0,
                            pulse_max_runs: int | None = None, pulse_budget_s: float = 900.0, pulse_steps: int = 100,
                            biggan_ns: Sequence[int] = (1, 10, 100), biggan_methods: Sequence[str] = BIGGAN_METHODS,
                            biggan_samples: int = 1, biggan_pulse_runs: int = 20, biggan_invert_steps: int = 100,
                            biggan_k_y: int | None = 10, biggan_eglass_max_n: int | None = None, biggan_small: bool = False,
                            log: Callable[[str], None] = print) -> SolutionsBenchmark:
    """Run the solutions benchmark (see the module docstring) and return its measurements.

    Args:
        generators: ``"default"`` (the embedded DCGAN, 512-d latent) and/or ``"biggan"``.
        problems: ``"sr"`` (x4) and/or ``"inpaint"`` (box :data:`INPAINT_BOX`); BigGAN runs SR only.
        ns: Numbers of solutions N on the default generator.
        samples: Shipped samples used as ground truth (default generator).
        test_images: Further held-out Fashion-MNIST test images (default generator).
        methods: Methods on the default generator (see :data:`METHODS`).
        repeats: Repeats of the inversion and of the e-GLASS stages when one takes under 30 s (median kept); on
            the default generator only (BigGAN's run once).
        tau: Feasibility threshold on the measurement MSE.
        seed: Seeds every random draw.
        pulse_max_runs: Sequential PULSE run budget on the default generator (default 3 max(ns), at least 20).
        pulse_budget_s: Sequential PULSE time budget in seconds on the default generator.
        pulse_steps: Adam steps of a PULSE run (100 as in PULSE; fewer for smoke tests only).
        biggan_ns: Numbers of solutions on BigGAN.
        biggan_methods: Methods on BigGAN (default :data:`BIGGAN_METHODS`).
        biggan_samples: BigGAN samples (observations).
        biggan_pulse_runs: Sequential PULSE runs measured on BigGAN (larger N are extrapolated; with none feasible,
            20 runs bound its rate below 0.14 with 95% confidence, 3 runs only below 0.63).
        biggan_invert_steps: CSGM steps of BigGAN's inversion (one restart).
        biggan_k_y: H_Y eigenpairs of e-GLASS on BigGAN (None: :func:`~hvp_explore.exploration.default_k_y`, n / 16 = 16).
        biggan_eglass_max_n: Largest N of the e-GLASS methods on BigGAN (None: all of ``biggan_ns``); PULSE
            is reported (extrapolated) at every N.
        biggan_small: A 32 x 32 four-block BigGAN-deep instead of BigGAN-deep-128 (smoke tests only).
        log: Receives progress lines.

    Raises:
        ValueError: Unknown generator, problem or method; a count that is not a positive integer; no case.
    """
    start, load_at_start = time.perf_counter(), load_average()
    generators = _check_choice(generators, GENERATORS, "generator")
    problems = _check_choice(problems, PROBLEMS, "problem")
    methods = _check_choice(methods, METHODS, "method")
    biggan_methods = _check_choice(biggan_methods, METHODS, "BigGAN method")
    ns, biggan_ns = _check_ns(ns), _check_ns(biggan_ns, "biggan_ns")
    for name, value in (("repeats", repeats), ("pulse_steps", pulse_steps), ("biggan_samples", biggan_samples),
                        ("biggan_pulse_runs", biggan_pulse_runs), ("biggan_invert_steps", biggan_invert_steps)):
        _check_positive_int(name, value)
    if pulse_max_runs is not None:
        _check_positive_int("pulse_max_runs", pulse_max_runs)
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 0 or \
            isinstance(test_images, bool) or not isinstance(test_images, int) or test_images < 0:
        raise ValueError(f"samples and test_images must be integers >= 0, got {samples!r} and {test_images!r}")
    if not (isinstance(tau, (int, float)) and 0 < tau < math.inf):
        raise ValueError(f"tau must be a positive number, got {tau!r}")
    if not pulse_budget_s > 0:
        raise ValueError(f"pulse_budget_s must be positive, got {pulse_budget_s!r}")
    pulse_max_runs = pulse_max_runs or max(20, 3 * max(ns))

    lpips_metric, lpips_status = _real_lpips()
    plan: list[tuple[GeneratorSetup, Callable[[], list[Case]]]] = []
    if "default" in generators and samples + test_images > 0:
        plan.append((GeneratorSetup("default", ns=ns, methods=methods, repeats=repeats, pulse_steps=pulse_steps,
                                    pulse_max_runs=pulse_max_runs, pulse_budget_s=pulse_budget_s),
                     lambda: default_cases(problems, samples=samples, test_images=test_images)))
    if "biggan" in generators and "sr" in problems:
        # BigGAN-deep on a CPU costs seconds per forward and backward pass: a few measured runs, the rest extrapolated.
        plan.append((GeneratorSetup("biggan", ns=biggan_ns, methods=biggan_methods, repeats=1, pulse_steps=pulse_steps,
                                    pulse_max_runs=biggan_pulse_runs, pulse_budget_s=math.inf, pulse_batch_max_rows=0,
                                    step_batches=(1, 10), step_repeats=2, forward_repeats=3, k_y=biggan_k_y,
                                    eglass_max_n=biggan_eglass_max_n,
                                    # no IAGAN: fine-tuning every BigGAN-deep parameter for 300 steps is out of reach here
                                    invert_options={"restarts": 1, "steps": biggan_invert_steps, "iagan": False}),
                     lambda: biggan_cases(samples=biggan_samples, seed=seed, small=biggan_small)))
    if not plan:
        raise ValueError("nothing to run: no default-generator observation (samples + test_images = 0) and no BigGAN "
                         "super-resolution case (BigGAN runs --problems sr only)")

    rows, infos, regimes, forward_s, points, limits = [], [], {}, {}, {}, []
    for setup, make_cases in plan:
        log(f"[{setup.name}] building the cases")
        cases = make_cases()
        G = cases[0].generator
        forward_s[setup.name] = forward_pass_seconds(G, G.latent_dim, repeats=setup.forward_repeats)
        steps = adam_step_seconds(G, cases[0].forward, cases[0].y, setup.step_batches, repeats=setup.step_repeats, eps=tau,
                                  seed=seed)
        regimes[setup.name] = _regime(steps, forward_s[setup.name])
        log(f"[{setup.name}] forward pass {forward_s[setup.name] * 1e3:.3g} ms; PULSE Adam step "
            + ", ".join(f"B={b}: {s * 1e3:.3g} ms" for b, s in steps.items()))
        for case in cases:
            log(f"[{setup.name}] {case.problem} {case.name}")
            case_rows, info, case_points = benchmark_case(case, setup, step_table=steps, tau=tau, seed=seed,
                                                          lpips_metric=lpips_metric, log=log)
            rows += case_rows
            infos.append(info)
            if not points and case_points:  # the plot shows the first case
                points = {"generator": case.generator_name, "problem": case.problem, "case": case.name, "N": max(setup.ns),
                          "methods": {m: {"mse": v[0], "diversity": v[1], "N": v[2]} for m, v in case_points.items()}}
    for setup, _ in plan:
        if setup.eglass_max_n is not None and max(setup.ns) > setup.eglass_max_n and any(
                m.startswith("eglass-") or m == "generalized" for m in setup.methods):
            limits.append(f"{setup.name}: e-GLASS methods ran for N <= {setup.eglass_max_n} only (--biggan-eglass-max-n)")
    add_ratios(rows, forward_s)
    summary = summarise(rows)
    targets, target_notes = evaluate_targets(summary)
    machine = machine_with_load(load_at_start)
    busy = busy_warning(machine)
    notes = ([busy] if busy else []) + _notes(rows, infos, lpips_status) + limits + \
        [f"{g}: {r['regime']}" for g, r in regimes.items()] + target_notes
    settings = {"generators": list(generators), "problems": list(problems), "ns": list(ns), "samples": samples,
                "test_images": test_images, "methods": list(methods), "repeats": repeats, "tau": tau, "seed": seed,
                "pulse_max_runs": pulse_max_runs, "pulse_budget_s": pulse_budget_s, "pulse_steps": pulse_steps,
                "biggan_ns": list(biggan_ns), "biggan_methods": list(biggan_methods), "biggan_samples": biggan_samples,
                "biggan_pulse_runs": biggan_pulse_runs, "biggan_invert_steps": biggan_invert_steps, "biggan_k_y": biggan_k_y,
                "biggan_eglass_max_n": biggan_eglass_max_n, "biggan_small": biggan_small, "sr_factor": 4,
                "inpaint_box": INPAINT_BOX,
                "inversion": "hvp_explore.invert (its defaults on the default generator; one CSGM restart without IAGAN on "
                             "BigGAN), timed once "
                             "per observation and added to the time of every e-GLASS method"}
    return SolutionsBenchmark(rows=tuple(rows), summary=tuple(summary), targets=tuple(targets),
                              regimes=tuple({"generator": g, **r} for g, r in regimes.items()), cases=tuple(infos),
                              diversity_points=points, notes=tuple(notes), settings=settings, machine=machine,
                              lpips={"status": lpips_status, "available": lpips_metric is not None},
                              seconds=time.perf_counter() - start)


# --------------------------------------------------------------------------------------------------
# outputs


def _plots(result: SolutionsBenchmark, figures: Path) -> tuple[Path | None, Path | None]:
    from hvp_explore.io.figures import plot_diversity, plot_time_to_solutions

    summary = result.summary
    groups = list(dict.fromkeys((s["generator"], s["problem"]) for s in summary))
    time_path = div_path = None
    if groups:
        gen, problem = groups[0]
        curves = {}
        for method in METHODS:
            pts = sorted((s["N"], s["seconds"], s["estimate"]) for s in summary
                         if (s["generator"], s["problem"], s["method"]) == (gen, problem, method))
            if not pts:
                continue
            est = [n for n, _, e in pts if e]
            label = method + (f" (N = {', '.join(map(str, est))} extrapolated)" if est else "")
            curves[label] = ([n for n, _, _ in pts], [t if t is not None else math.nan for _, t, _ in pts])
        if curves:
            time_path = plot_time_to_solutions(curves, figures / "solutions-time.png",
                                               title=f"Time to N feasible solutions ({gen}, {problem}; median over observations)")
    points = result.diversity_points
    if points and points.get("methods"):
        shown = {(m if v["N"] == points["N"] else f"{m} (N = {v['N']})"): (v["mse"], v["diversity"])
                 for m, v in points["methods"].items() if m in PLOTTED_DIVERSITY and v["mse"]}
        if shown:
            div_path = plot_diversity(shown, figures / "solutions-diversity.png", tau=result.settings["tau"],
                                      distance_label="mean perceptual distance to the other solutions",
                                      title=f"Diversity and feasibility ({points['generator']}, {points['problem']}, "
                                            f"{points['case']}, N = {points['N']})")
    return time_path, div_path


def _markdown(result: SolutionsBenchmark, json_path: Path, doc: Path, figures: tuple[Path | None, Path | None]) -> str:
    m = result.machine
    rel = lambda p: os.path.relpath(p, doc.parent)  # noqa: E731
    lines = [f"Command: `{result.settings.get('command', 'python benchmarks/solutions.py')}`",
             "",
             f"Machine: {m['cores']} cores ({m['cpu']}), torch {m['torch']} with {m['torch_threads']} threads, "
             f"Python {m['python']}, {m['date']}; load average at start {m.get('load_average_at_start')}, "
             f"at the end {m.get('load_average_at_end') or '-'}. "
             f"Total {result.seconds:.0f} s. tau = {result.settings['tau']:g}. JSON: `{rel(json_path)}`.",
             "",
             *([f"**Warning: {busy_warning(m)}.**", ""] if busy_warning(m) else []),
             "Time to N feasible solutions (median over observations; e-GLASS times include the shared inversion and stop "
             "when the solutions are delivered, before the report figures; "
             "`est.` marks extrapolated or lower-bound PULSE times, explained in the notes). `x fwd` is the cost of one more "
             "solution in batch-1 forward passes of the generator, between the two largest N.",
             ""]
    columns = [("generator", "generator"), ("problem", "problem"), ("method", "method"), ("N", "N"), ("seconds", "time to N (s)"),
               ("estimate", "est."), ("found_min", "feasible"), ("feasibility_rate", "feasible frac."),
               ("vs_pulse", "/ PULSE"), ("vs_pulse_batch", "/ PULSE batch"), ("inversion_seconds", "inversion s"),
               ("eigen_seconds", "eigen s"), ("marginal_forwards", "x fwd"), ("diversity", "diversity"),
               ("diversity_lpips", "LPIPS div."), ("gt_mse", "MSE to truth"), ("mse_max", "max meas. MSE")]
    lines += [markdown_table(result.summary, columns), "", "Targets of issue 5:", "",
              markdown_table(result.targets, [("generator", "generator"), ("problem", "problem"), ("target", "target"),
                                               ("kind", ""), ("bound", "bound"), ("value", "measured"), ("met", "met"),
                                               ("estimate", "baseline est.")]),
              "", "Regimes (seconds of one PULSE Adam step at batch B):", "",
              markdown_table([{"generator": r["generator"], "fwd": r["forward_seconds"],
                                **{f"B{b}": s for b, s in r["adam_step_seconds"].items()}, "eff": r["batch_efficiency"],
                                "regime": r["regime"].split(" (")[0]} for r in result.regimes],
                              [("generator", "generator"), ("fwd", "forward s (B=1)"),
                               *[(f"B{b}", f"step s, B={b}") for b in sorted({int(b) for r in result.regimes
                                                                             for b in r["adam_step_seconds"]})],
                               ("eff", "cost / proportional"), ("regime", "regime")])]
    breakdown = [{"generator": s["generator"], "problem": s["problem"], "method": s["method"], "N": s["N"], **s["breakdown"]}
                 for s in result.summary if "eigen_y" in s["breakdown"]]
    if breakdown:
        stages = ("inversion", "linearize", "eigen_y", "eigen_x", "directions", "steps", "distances", "unobserved_share")
        lines += ["", "<details><summary>Breakdown of the e-GLASS times (s)</summary>", "",
                  markdown_table(breakdown, [("generator", "generator"), ("problem", "problem"), ("method", "method"),
                                              ("N", "N"), *[(s, s) for s in stages]]), "", "</details>"]
    time_fig, div_fig = figures
    if time_fig:
        lines += ["", f"![time to N solutions]({rel(time_fig)})"]
    if div_fig:
        lines += ["", f"![diversity against measurement error]({rel(div_fig)})"]
    lines += ["", "Notes:", "", *[f"- {n}" for n in result.notes]]
    return "\n".join(lines)


def write_outputs(result: SolutionsBenchmark, *, json_path: Path | str, doc_path: Path | str | None = None,
                  figures_dir: Path | str | None = None, section: str = "solutions") -> dict[str, Path]:
    """Write the JSON, the two plots and the ``solutions`` section of the benchmarks document.

    Args:
        result: The measurements.
        json_path: Where the JSON goes (parents created).
        doc_path: Markdown document whose marked section is replaced (None: no document).
        figures_dir: Folder of ``solutions-time.png`` and ``solutions-diversity.png`` (None: no plots).
        section: Name of the marked section.

    Returns:
        The paths written, by kind.
    """
    json_path = Path(json_path)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    out = {"json": write_json_atomic(json_path, result.to_json())}
    figures: tuple[Path | None, Path | None] = (None, None)
    if figures_dir is not None:
        Path(figures_dir).mkdir(parents=True, exist_ok=True)
        figures = _plots(result, Path(figures_dir))
        out.update({k: p for k, p in zip(("time_plot", "diversity_plot"), figures) if p is not None})
    if doc_path is not None:
        doc = Path(doc_path)
        doc.parent.mkdir(parents=True, exist_ok=True)
        update_doc_section(section, _markdown(result, json_path, doc, figures), doc=doc)
        out["doc"] = doc
    return out


# --------------------------------------------------------------------------------------------------
# entry points


def main_solutions(*, generators: Sequence[str] = GENERATORS, problems: Sequence[str] = PROBLEMS,
                   ns: Sequence[int] = (1, 10, 100), samples: int = 3, test_images: int = 0, methods: Sequence[str] = METHODS,
                   repeats: int = 3, tau: float = DEFAULT_TAU, seed: int = 0, pulse_max_runs: int | None = None,
                   pulse_budget_s: float = 900.0, pulse_steps: int = 100, biggan_ns: Sequence[int] = (1, 10, 100),
                   biggan_methods: Sequence[str] = BIGGAN_METHODS,
                   biggan_samples: int = 1, biggan_pulse_runs: int = 20, biggan_invert_steps: int = 100,
                   biggan_k_y: int | None = 10, biggan_eglass_max_n: int | None = None, biggan_small: bool = False,
                   threads: int | None = None,
                   json_path: Path | str = "benchmarks/results/solutions.json",
                   doc_path: Path | str | None = "docs/benchmarks.md",
                   figures_dir: Path | str | None = "docs/figures", command: str | None = None,
                   log: Callable[[str], None] = print) -> SolutionsBenchmark:
    """``python benchmarks/solutions.py``: run the benchmark and write its JSON, plots and markdown section.

    The keyword arguments are those of :func:`run_solutions_benchmark`, plus ``threads`` (torch's
    intra-op threads, set for the run and restored after), the output paths (relative paths are relative
    to the working directory; ``doc_path`` or ``figures_dir`` None skips them) and ``command``, the
    command line recorded in the outputs.
    """
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(_check_positive_int("threads", threads))
    try:
        result = run_solutions_benchmark(
            generators=generators, problems=problems, ns=ns, samples=samples, test_images=test_images, methods=methods,
            repeats=repeats, tau=tau, seed=seed, pulse_max_runs=pulse_max_runs, pulse_budget_s=pulse_budget_s,
            pulse_steps=pulse_steps, biggan_ns=biggan_ns, biggan_methods=biggan_methods, biggan_samples=biggan_samples,
            biggan_pulse_runs=biggan_pulse_runs, biggan_invert_steps=biggan_invert_steps, biggan_k_y=biggan_k_y,
            biggan_eglass_max_n=biggan_eglass_max_n, biggan_small=biggan_small, log=log)
    finally:
        torch.set_num_threads(previous)
    result = dataclasses.replace(result, settings={**result.settings, "command": command or "python benchmarks/solutions.py"})
    paths = write_outputs(result, json_path=json_path, doc_path=doc_path, figures_dir=figures_dir)
    for t in result.targets:
        if t["bound"] is not None or t["value"] is not None:
            verdict = {True: "met", False: "MISSED", None: "reported"}[t["met"]]
            bound = f" ({t['kind']} {t['bound']:g})" if t["bound"] is not None else ""
            log(f"{t['generator']}/{t['problem']}: {t['target']} = {fmt(t['value'])}{bound}: {verdict}")
    for kind, path in paths.items():
        log(f"wrote {kind}: {path}")
    return result


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="benchmarks/solutions.py",
                                description="Time to N feasible solutions: e-GLASS against PULSE.")
    p.add_argument("--generators", default="default,biggan", help="comma-separated: default, biggan")
    p.add_argument("--problems", default="sr,inpaint", help="comma-separated: sr, inpaint (BigGAN: sr only)")
    p.add_argument("--ns", default="1,10,100", help="numbers of solutions N (default generator)")
    p.add_argument("--samples", type=int, default=3, help="shipped samples as ground truth (default generator)")
    p.add_argument("--test-images", type=int, default=0, help="further held-out Fashion-MNIST test images")
    p.add_argument("--methods", default=",".join(METHODS), help="comma-separated methods on the default generator")
    p.add_argument("--repeats", type=int, default=3, help="repeats of the inversion and the cheap e-GLASS stages (median kept)")
    p.add_argument("--tau", type=float, default=DEFAULT_TAU)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--pulse-max-runs", type=int, default=None, help="sequential PULSE run budget (default 3 max(N), >= 20)")
    p.add_argument("--pulse-budget-s", type=float, default=900.0, help="sequential PULSE time budget (s)")
    p.add_argument("--pulse-steps", type=int, default=100, help="Adam steps per PULSE run (100 = PULSE; fewer: smoke tests)")
    p.add_argument("--biggan-ns", default="1,10,100", help="N on BigGAN (PULSE at every N, extrapolated)")
    p.add_argument("--biggan-methods", default=",".join(BIGGAN_METHODS))
    p.add_argument("--biggan-samples", type=int, default=1)
    p.add_argument("--biggan-pulse-runs", type=int, default=20, help="measured sequential PULSE runs on BigGAN")
    p.add_argument("--biggan-invert-steps", type=int, default=100, help="CSGM steps of BigGAN's inversion")
    p.add_argument("--biggan-k-y", type=int, default=10, help="H_Y eigenpairs on BigGAN (0: n / 16)")
    p.add_argument("--biggan-eglass-max-n", type=int, default=0, help="largest N of e-GLASS on BigGAN (0: all)")
    p.add_argument("--biggan-small", action="store_true", help="a 32x32 BigGAN-deep instead of BigGAN-deep-128 (smoke test)")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    p.add_argument("--json", default="benchmarks/results/solutions.json", help="JSON output")
    p.add_argument("--doc", default="docs/benchmarks.md", help="markdown document with the 'solutions' section ('' = none)")
    p.add_argument("--figures", default="docs/figures", help="folder of the two plots ('' = none)")
    return p


def main(argv: Sequence[str] | None = None, *, root: Path | str | None = None) -> SolutionsBenchmark:
    """Command-line entry of ``benchmarks/solutions.py``; relative output paths are resolved against ``root``."""
    args = _parser().parse_args(argv)
    base = Path(root) if root is not None else Path.cwd()
    resolve = lambda p: (base / p) if p else None  # noqa: E731
    ints = lambda text, name: tuple(_parse_list(text, name, int))  # noqa: E731
    command = "python benchmarks/solutions.py " + " ".join(sys.argv[1:] if argv is None else argv)
    try:
        return main_solutions(
            generators=_parse_list(args.generators, "--generators"), problems=_parse_list(args.problems, "--problems"),
            ns=ints(args.ns, "--ns"), samples=args.samples, test_images=args.test_images,
            methods=_parse_list(args.methods, "--methods"), repeats=args.repeats, tau=args.tau, seed=args.seed,
            pulse_max_runs=args.pulse_max_runs, pulse_budget_s=args.pulse_budget_s, pulse_steps=args.pulse_steps,
            biggan_ns=ints(args.biggan_ns, "--biggan-ns"), biggan_methods=_parse_list(args.biggan_methods, "--biggan-methods"),
            biggan_samples=args.biggan_samples, biggan_pulse_runs=args.biggan_pulse_runs,
            biggan_invert_steps=args.biggan_invert_steps, biggan_k_y=args.biggan_k_y or None,
            biggan_eglass_max_n=args.biggan_eglass_max_n or None, biggan_small=args.biggan_small,
            threads=args.threads, json_path=resolve(args.json), doc_path=resolve(args.doc), figures_dir=resolve(args.figures),
            command=command.strip())
    except ValueError as exc:
        raise SystemExit(f"error: {exc}") from None


def _parse_list(text: str | Sequence, name: str, cast: Callable = str) -> tuple:
    items = [s.strip() for s in text.split(",")] if isinstance(text, str) else list(text)
    try:
        values = tuple(cast(s) for s in items if s != "")
    except ValueError:
        kind = getattr(cast, "__name__", "value")
        raise ValueError(f"{name} must be a comma-separated list of {kind}s, got {text!r}") from None
    if not values:
        raise ValueError(f"{name} is empty: give at least one value")
    return values


if __name__ == "__main__":
    main(root=ROOT)

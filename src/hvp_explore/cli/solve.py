"""Commands that start from an observation: ``invert``, ``pulse``, ``explore``, ``demo``, ``batch``.

Each command checks its options, its inputs and its output folder before any long work (before torch
loads, for those checks that need no numerical library), runs an
:class:`~hvp_explore.exploration.Explorer` stage, writes its folder atomically and prints a summary.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import click

from hvp_explore.cli._common import (
    MAX_TABLE_ROWS,
    check_output,
    command_line,
    console,
    finish,
    json_requested,
    output_flags,
    output_options,
    print_json,
    print_solutions,
    print_table,
    result_line,
    say,
    settings_options,
    setup,
    stack,
    write_folder,
)
from hvp_explore.settings import (
    BatchSettings,
    DemoSettings,
    DirectionSettings,
    EigenSettings,
    InversionSettings,
    ProblemSettings,
    PulseSettings,
    ReportSettings,
    RunSettings,
    StepSettings,
    WalkSettings,
)

input_argument = click.argument("input_path", metavar="INPUT", type=click.Path(path_type=Path))
common_options = stack(settings_options(ProblemSettings), settings_options(RunSettings), output_options)
tau_option = settings_options(StepSettings, only=("tau",))
# every option of an exploration, shared by explore and batch
exploration_options = stack(common_options, settings_options(InversionSettings), settings_options(EigenSettings),
                            settings_options(DirectionSettings), settings_options(StepSettings), settings_options(WalkSettings),
                            settings_options(ReportSettings))


def _explorer(options: dict, *, metric: str | None = None, max_memory: str | int | None = None):
    from hvp_explore.exploration import Explorer

    return Explorer(options["generator"], metric, device=options["device"], max_memory=max_memory)


def _observe(explorer, input_path: Path, options: dict, quiet: bool):
    observation = explorer.observe(input_path, ProblemSettings.pick(options), seed=options["seed"])
    for notice in observation.notices:
        say(quiet, f"[yellow]notice:[/] {notice}")
    return observation


def _start(out: Path, overwrite: bool, quiet: bool, options: dict, input_path: Path | None = None) -> None:
    """Checks that need no numerical library, first (the input and mask files, the output folder), then the device."""
    from hvp_explore.io.files import check_input

    RunSettings.pick(options)  # --device and --seed, before anything else
    if input_path is not None:
        check_input(input_path)
    if options.get("mask") is not None:
        check_input(options["mask"], "mask")
    check_output(out, overwrite, [input_path, options.get("mask")])
    setup(quiet, options["seed"], options["device"])


def _explorer_budget(options: dict) -> int:
    """The default memory budget (half the device's free memory) for commands without --max-memory."""
    from hvp_explore.operators.memory import resolve_budget

    return resolve_budget("auto", options["device"])


def _check_solutions_memory(explorer, solutions: int, budget: int | None) -> None:
    """Refuse N solutions whose images and latents (kept to the end of the run) exceed the memory budget."""
    from hvp_explore.io.stages import solutions_bytes

    need = solutions_bytes(solutions, explorer.generator.image_shape, explorer.latent_dim)
    if budget is not None and need > budget:
        raise MemoryError(f"--solutions {solutions} needs about {need / 2**20:.0f} MiB for the solutions' "
                          f"images and latents, more than the memory budget of {budget / 2**20:.0f} MiB (--max-memory, by default half "
                          "the free memory): ask for fewer solutions or a larger budget")


def _solve(stage: str, settings, input_path: Path, options: dict, *, out: Path, overwrite: bool, quiet: bool, tau: float,
           metric: str | None = None):
    """The flow of ``invert`` and ``pulse``: checks, the generator (and ``metric``), the observation, then ``Explorer.<stage>``.

    Returns:
        ``(explorer, observation, result, problem)`` with the problem as stored in stage files.
    """
    StepSettings(tau=tau)  # checks --tau before any work
    ProblemSettings.pick(options)
    _start(out, overwrite, quiet, options, input_path)
    from hvp_explore.io.stages import problem_state

    explorer = _explorer(options, metric=metric)
    if stage == "pulse":  # the N runs' images and latents are kept to the end: refused before the first run, as explore's
        _check_solutions_memory(explorer, settings.solutions, _explorer_budget(options))
    observation = _observe(explorer, input_path, options, quiet)
    result = getattr(explorer, stage)(observation, settings, tau=tau, seed=options["seed"], quiet=quiet)
    return explorer, observation, result, problem_state(observation, ProblemSettings.pick(options), seed=options["seed"])


def observation_command(settings_cls):
    """A command on INPUT with the problem, run, output and tau options and those of ``settings_cls``."""
    return stack(click.command(), input_argument, common_options, tau_option, settings_options(settings_cls))


def _print_warnings(quiet: bool, report: dict) -> None:
    for warning in report.get("warnings", []):
        say(quiet, f"[yellow]warning:[/] {warning}")


@observation_command(InversionSettings)
def invert(input_path, out, overwrite, quiet, tau, **options):
    """Find a first solution of INPUT by GAN inversion (CSGM, optionally Gauss-Newton and IAGAN)."""
    _, observation, result, problem = _solve("invert", InversionSettings.pick(options), input_path, options, out=out,
                                             overwrite=overwrite, quiet=quiet, tau=tau)
    from hvp_explore.io.stages import state_from_inversion, write_inversion

    state = state_from_inversion(generator=options["generator"], observation=observation, problem=problem, inversion=result)
    report = write_folder(out, overwrite, lambda tmp: write_inversion(tmp, state, tau=tau, command=command_line(),
                                                                      face=observation.face))
    columns = ["measurement_mse", "lr_psnr", "feasible", "steps_run", "seconds"]
    finish(quiet, out, "inversion", [report], columns, report=report)
    _print_warnings(quiet, report)


@observation_command(PulseSettings)
@settings_options(EigenSettings, only=("metric",))
@settings_options(ReportSettings, only=("no_html",))
def pulse(input_path, out, overwrite, quiet, tau, metric, no_html, **options):
    """The PULSE baseline: N independent inversions from random latents on the sphere."""
    EigenSettings(metric=metric)  # checks it
    explorer, observation, result, problem = _solve("pulse", PulseSettings.pick(options), input_path, options, out=out,
                                                    overwrite=overwrite, quiet=quiet, tau=tau, metric=metric)
    from hvp_explore.io.stages import write_pulse

    report = write_folder(out, overwrite, lambda tmp: write_pulse(tmp, result, observation, generator=options["generator"],
                                                                  problem=problem, command=command_line(), metric=explorer.metric,
                                                                  metric_name=explorer.metric_name, html=not no_html))
    finish(quiet, out, "PULSE", [{**report, "seconds": result.seconds, "per_run": report["timings"]["per_run"],
                                  "min_pairwise": report["pairwise_perceptual_distance"]["min"]}],
           ["runs", "num_feasible", "feasibility_rate", "min_pairwise", "seconds", "per_run"], report=report)


class ExploreJob:
    """One exploration setup, run on one or many inputs: settings checked at once, generator and metric loaded once."""

    def __init__(self, options: dict):
        self.options = options
        self.run_settings = RunSettings.pick(options)
        self.problem = ProblemSettings.pick(options)
        self.inversion = InversionSettings.pick(options)
        self.eigen = EigenSettings.pick(options)
        self.directions = DirectionSettings.pick(options)
        self.steps = StepSettings.pick(options)
        self.walks = WalkSettings.pick(options)
        self.report = ReportSettings.pick(options)
        self.seed, self.quiet = options["seed"], options.get("quiet")
        self.explorer = None

    def load(self) -> ExploreJob:
        """Load the generator and the metric (and check the settings against them)."""
        self.explorer = _explorer(self.options, metric=self.eigen.metric, max_memory=self.eigen.max_memory)
        self.explorer.check(self.eigen)
        if str(self.eigen.max_memory).strip().lower() != "auto":  # a budget the user chose: one product must fit, before the inversion
            self.explorer.check_memory(seed=self.seed)
        _check_solutions_memory(self.explorer, self.directions.solutions, self.explorer.budget)
        return self

    def check_problem(self) -> None:
        """Build the forward operator once for the generator's images, so that an option that cannot fit them
        (a factor that does not divide the size, a box outside the image, a mask of another size) stops a
        batch before its first image. Compressed sensing without --measurements takes m from each file."""
        from hvp_explore.problems import make_problem

        p = self.problem
        if (p.problem == "cs" and p.m is None) or (p.mask is not None and p.resize):
            return
        make_problem(p.problem, tuple(self.explorer.generator.image_shape), factor=p.factor, kernel=p.kernel, box=p.box,
                     mask=p.mask if p.problem == "inpaint" else None, m=p.m, seed=self.seed)

    def run(self, input_path: Path, out: Path, *, overwrite: bool = False, quiet: bool | None = None) -> dict:
        from hvp_explore.eigen.solvers import ConvergenceWarning
        from hvp_explore.io.stages import write_exploration

        quiet = self.quiet if quiet is None else quiet
        observation = self.explorer.observe(input_path, self.problem, seed=self.seed)
        for notice in observation.notices:
            say(quiet, f"[yellow]notice:[/] {notice}")
        with warnings.catch_warnings():
            # the report lists every eigensolve that fell short of tol (printed at the end): not twice
            warnings.simplefilter("ignore", ConvergenceWarning)
            result = self.explorer.explore(observation, inversion=self.inversion, eigen=self.eigen, directions=self.directions,
                                           steps=self.steps, walks=self.walks, seed=self.seed, quiet=quiet)
        html = not self.report.no_html
        frames = self.explorer.exploration_frames(observation, result, frames=self.report.frames) if html else None
        return write_folder(out, overwrite, lambda tmp: write_exploration(
            tmp, result, observation, generator=self.explorer.generator_name, metric=self.explorer.metric_name,
            command=command_line(), quiet=quiet, html=html, frames=frames))


def _print_exploration(report: dict, out: Path, quiet: bool) -> None:
    """The results on stdout (the tables, or --json), the notices on stderr (unless --quiet)."""
    from hvp_explore.io.tables import summary_table

    if json_requested():
        print_json({"out": str(out), **report})
    elif not quiet:
        print_solutions(report["solutions"], "explored solutions")
        print_table(summary_table([{"stage": k, "seconds": v} for k, v in report["timings"].items()], ["stage", "seconds"],
                                  title="timings"))
    if report["rejected_directions"]:
        say(quiet, f"[yellow]{len(report['rejected_directions'])} signed direction(s) admitted no feasible step[/]")
    _print_warnings(quiet, report)
    if not quiet and not json_requested():
        result_line(f"outputs in [bold]{out}[/] (sheet.png, report.json, solutions/, solutions.npz)")


def explore_run(input_path: Path, *, out: Path, overwrite: bool, quiet: bool, **options) -> dict:
    """``explore`` on one input: check, run, write, print."""
    job = ExploreJob({**options, "quiet": quiet})  # checks the settings before anything else
    _start(out, overwrite, quiet, options, input_path)
    report = job.load().run(input_path, out, overwrite=overwrite)
    _print_exploration(report, out, quiet)
    return report


@click.command("explore")
@input_argument
@exploration_options
def explore_cmd(input_path, **options):
    """Find a first solution of INPUT, then explore N more along e-GLASS directions (the whole pipeline)."""
    explore_run(input_path, **options)


@click.command()
@settings_options(DemoSettings, exclude=("out",))
@settings_options(RunSettings, only=("device",))
@settings_options(DemoSettings, only=("out",))
@settings_options(ReportSettings)
@output_flags
def demo(generator, problem, sample, device, out, overwrite, quiet, no_html, frames):
    """The main job, offline: explore 10 solutions of a shipped face (or, with --generator default, a Fashion-MNIST sample)."""
    from hvp_explore.data import demo_sample

    settings = DemoSettings(generator=generator, problem=problem, sample=sample, out=out)
    path, band = demo_sample(settings.generator, settings.sample)
    box = band if problem == "inpaint" else None
    what = "super-resolution x4" if problem == "sr" else f"inpainting of the box {band}"
    say(quiet, f"demo: {what} of {path.name} with the {generator} generator (offline)")
    options = {**ProblemSettings(problem=problem, box=box, from_clean=True).kwargs(), **RunSettings(generator=generator, device=device).kwargs(),
               **InversionSettings().kwargs(), **EigenSettings().kwargs(), **DirectionSettings().kwargs(), **StepSettings().kwargs(),
               **WalkSettings().kwargs(), **ReportSettings(no_html=no_html, frames=frames).kwargs()}
    explore_run(path, out=Path(out), overwrite=overwrite, quiet=quiet, **options)


@click.command()
@click.argument("input_dir", metavar="INPUT_DIR", type=click.Path(path_type=Path))
@exploration_options
@settings_options(BatchSettings)
def batch(input_dir, out, overwrite, quiet, shard, **options):
    """Explore every observation in INPUT_DIR into one subfolder each; resumable, shardable (see docs/scaling.md).

    A rerun skips the images whose folder is complete (it resumes); with --overwrite it redoes them.
    """
    from hvp_explore.io.batch import batch_summary_table, check_batch_dir, discover_inputs, resolve_shard, run_batch
    from hvp_explore.io.files import check_input, check_path_text

    # every check that concerns all images comes before the first one (and before the manifest is written)
    job = ExploreJob({**options, "quiet": quiet})
    BatchSettings(shard=shard)
    shard_ = resolve_shard(shard)
    check_path_text(input_dir, "input folder")
    masks = [options["mask"]] if options.get("mask") is not None else []
    inputs = discover_inputs(input_dir, exclude=masks)  # a mask kept beside the observations is not one
    if masks:
        check_input(options["mask"], "mask")
        if len(inputs) < len(discover_inputs(input_dir)):
            say(quiet, f"notice: {options['mask']} is the --mask, not an observation: not explored")
    check_path_text(out, "output folder")
    check_batch_dir(out, overwrite=overwrite, inputs=[input_dir, *([options["mask"]] if options.get("mask") else [])])
    setup(quiet, options["seed"], options["device"])
    job.load().check_problem()

    def process(path: Path, target: Path) -> dict:
        report = job.run(path, target, overwrite=overwrite, quiet=True)
        return {"solutions": report["num_solutions"], "feasible": report["num_feasible"],
                "first_mse": report["first_solution"]["measurement_mse"],
                "min_pairwise": report["pairwise_perceptual_distance"]["min"], "seconds": report["timings"]["total"]}

    result = run_batch(inputs, out, process, shard=shard_, quiet=quiet, overwrite=overwrite, redo=overwrite)
    if not job.report.no_html:
        from hvp_explore.io.batch import read_manifests
        from hvp_explore.io.html import write_batch_index

        write_batch_index(out, read_manifests(out))  # every shard's images so far: the last shard to end lists them all
    if json_requested():
        print_json({"out": str(out), "shard": str(shard_), "manifest": str(result.manifest), "ok": result.ok,
                    "skipped": result.skipped, "errors": result.error, "images": result.records})
    elif not quiet:
        records = result.records if len(result.records) <= MAX_TABLE_ROWS else result.records[-MAX_TABLE_ROWS:]
        print_table(batch_summary_table(records, title=f"shard {shard_} ({len(result.records)} images)"))
        result_line(f"ok {result.ok}, skipped (already complete) {result.skipped}, errors {result.error}; "
                    f"manifest {result.manifest}")
    if result.error:
        # said even under --quiet: an exit status without a word is a puzzle in a job log
        console.print(f"{result.error} of {len(result.records)} image(s) failed; their messages are in {result.manifest}")
        raise click.exceptions.Exit(1)

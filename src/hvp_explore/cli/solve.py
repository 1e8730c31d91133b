"""Commands that start from an observation: ``invert``, ``pulse``, ``explore``, ``demo``, ``batch``.

Each command checks its options and its output folder before any long work, runs an
:class:`~hvp_explore.exploration.Explorer` stage, writes its folder atomically and prints a summary.
"""

from __future__ import annotations

from pathlib import Path

import click

from hvp_explore.cli._common import (
    command_line,
    console,
    finish,
    output_options,
    say,
    settings_options,
    setup,
    stack,
    write_folder,
)
from hvp_explore.settings import (
    DirectionSettings,
    EigenSettings,
    InversionSettings,
    ProblemSettings,
    PulseSettings,
    RunSettings,
    StepSettings,
)

input_argument = click.argument("input_path", metavar="INPUT", type=click.Path(path_type=Path))
common_options = stack(settings_options(ProblemSettings), settings_options(RunSettings), output_options)
tau_option = settings_options(StepSettings, only=("tau",))
# every option of an exploration, shared by explore and batch
exploration_options = stack(common_options, settings_options(InversionSettings), settings_options(EigenSettings),
                            settings_options(DirectionSettings), settings_options(StepSettings))


def _explorer(options: dict, *, metric: str | None = None, max_memory: str | int | None = None):
    from hvp_explore.exploration import Explorer

    return Explorer(options["generator"], metric, device=options["device"], max_memory=max_memory)


def _observe(explorer, input_path: Path, options: dict, quiet: bool):
    observation = explorer.observe(input_path, ProblemSettings.pick(options), seed=options["seed"])
    for notice in observation.notices:
        say(quiet, f"[yellow]notice:[/] {notice}")
    return observation


def _start(out: Path, overwrite: bool, quiet: bool, seed: int, input_path: Path | None = None) -> None:
    """Checks that need no numerical library, first: the input file and the output folder."""
    from hvp_explore.io.atomic import check_output_dir
    from hvp_explore.io.files import check_input

    if input_path is not None:
        check_input(input_path)
    check_output_dir(out, overwrite=overwrite)
    setup(quiet, seed)


def _solve(stage: str, settings, input_path: Path, options: dict, *, out: Path, overwrite: bool, quiet: bool, tau: float):
    """The flow of ``invert`` and ``pulse``: checks, the generator, the observation, then ``Explorer.<stage>``.

    Returns:
        ``(observation, result, problem)`` with the problem as stored in stage files.
    """
    from hvp_explore.io.stages import problem_state

    StepSettings(tau=tau)  # checks --tau before any work
    _start(out, overwrite, quiet, options["seed"], input_path)
    explorer = _explorer(options)
    observation = _observe(explorer, input_path, options, quiet)
    result = getattr(explorer, stage)(observation, settings, tau=tau, seed=options["seed"], quiet=quiet)
    return observation, result, problem_state(observation, ProblemSettings.pick(options), seed=options["seed"])


def observation_command(settings_cls):
    """A command on INPUT with the problem, run, output and tau options and those of ``settings_cls``."""
    return stack(click.command(), input_argument, common_options, tau_option, settings_options(settings_cls))


@observation_command(InversionSettings)
def invert(input_path, out, overwrite, quiet, tau, **options):
    """Find a first solution of INPUT by GAN inversion (CSGM, optionally Gauss-Newton and IAGAN)."""
    from hvp_explore.io.stages import state_from_inversion, write_inversion

    observation, result, problem = _solve("invert", InversionSettings.pick(options), input_path, options, out=out,
                                          overwrite=overwrite, quiet=quiet, tau=tau)
    state = state_from_inversion(generator=options["generator"], observation=observation, problem=problem, inversion=result)
    report = write_folder(out, overwrite, lambda tmp: write_inversion(tmp, state, tau=tau, command=command_line()))
    finish(quiet, out, "inversion", [{"measurement MSE": report["measurement_mse"], "LR-PSNR dB": report["lr_psnr"],
                                      "feasible": report["feasible"], "steps": report["steps_run"], "seconds": report["seconds"]}],
           ["measurement MSE", "LR-PSNR dB", "feasible", "steps", "seconds"])


@observation_command(PulseSettings)
def pulse(input_path, out, overwrite, quiet, tau, **options):
    """The PULSE baseline: N independent inversions from random latents on the sphere."""
    from hvp_explore.io.stages import write_pulse

    observation, result, problem = _solve("pulse", PulseSettings.pick(options), input_path, options, out=out, overwrite=overwrite,
                                          quiet=quiet, tau=tau)
    report = write_folder(out, overwrite, lambda tmp: write_pulse(tmp, result, observation, generator=options["generator"],
                                                                  problem=problem, command=command_line()))
    finish(quiet, out, "PULSE", [{"runs": result.runs, "feasible": report["num_feasible"], "rate": report["feasibility_rate"],
                                 "seconds": result.seconds, "s / run": report["timings"]["per_run"]}],
           ["runs", "feasible", "rate", "seconds", "s / run"])


class ExploreJob:
    """One exploration setup, run on one or many inputs: settings checked at once, generator and metric loaded once."""

    def __init__(self, options: dict):
        self.options = options
        self.problem = ProblemSettings.pick(options)
        self.inversion = InversionSettings.pick(options)
        self.eigen = EigenSettings.pick(options)
        self.directions = DirectionSettings.pick(options)
        self.steps = StepSettings.pick(options)
        self.seed, self.quiet = options["seed"], options.get("quiet")
        self.explorer = None

    def load(self) -> ExploreJob:
        """Load the generator and the metric (and check the settings against them)."""
        self.explorer = _explorer(self.options, metric=self.eigen.metric, max_memory=self.eigen.max_memory)
        self.explorer.check(self.eigen)
        return self

    def run(self, input_path: Path, out: Path, *, overwrite: bool = False, quiet: bool | None = None) -> dict:
        from hvp_explore.io.stages import write_exploration

        quiet = self.quiet if quiet is None else quiet
        observation = self.explorer.observe(input_path, self.problem, seed=self.seed)
        for notice in observation.notices:
            say(quiet, f"[yellow]notice:[/] {notice}")
        result = self.explorer.explore(observation, inversion=self.inversion, eigen=self.eigen, directions=self.directions,
                                       steps=self.steps, seed=self.seed, quiet=quiet)
        return write_folder(out, overwrite, lambda tmp: write_exploration(
            tmp, result, observation, generator=self.explorer.generator_name, metric=self.explorer.metric_name,
            command=command_line()))


def _print_exploration(report: dict, out: Path) -> None:
    from hvp_explore.io.tables import summary_table

    console.print(summary_table(report["solutions"], {"file": "file", "direction": "direction", "eta": "eta",
                                                      "measurement_mse": "MSE", "feasible": "feasible",
                                                      "perceptual_distance": "perceptual dist."}, title="explored solutions"))
    console.print(summary_table([{"stage": k, "seconds": v} for k, v in report["timings"].items()], ["stage", "seconds"],
                                title="timings"))
    if report["rejected_directions"]:
        console.print(f"[yellow]{len(report['rejected_directions'])} signed direction(s) admitted no feasible step[/]")
    for warning in report.get("warnings", []):
        console.print(f"[yellow]warning:[/] {warning}")
    console.print(f"outputs in [bold]{out}[/] (sheet.png, report.json, solutions/)")


def explore_run(input_path: Path, *, out: Path, overwrite: bool, quiet: bool, **options) -> dict:
    """``explore`` on one input: check, run, write, print."""
    job = ExploreJob({**options, "quiet": quiet})  # checks the settings before anything else
    _start(out, overwrite, quiet, options["seed"], input_path)
    report = job.load().run(input_path, out, overwrite=overwrite)
    if not quiet:
        _print_exploration(report, out)
    return report


@click.command("explore")
@input_argument
@exploration_options
def explore_cmd(input_path, **options):
    """Find a first solution of INPUT, then explore N more along e-GLASS directions (the whole pipeline)."""
    explore_run(input_path, **options)


#: The demo's observations: (sample kind, inpainting box) per demo generator. The faces' box is the eyes band.
DEMOS = {"faces": ("faces", "0,18,64,16"), "default": ("fashion-mnist", "8,8,16,16")}


@click.command()
@click.option("--generator", type=click.Choice(list(DEMOS)), default="faces", show_default=True,
              help="faces: a shipped face (generated from a fixed seed), x4 from 16x16; default: a Fashion-MNIST sample.")
@click.option("--problem", type=click.Choice(["sr", "inpaint"]), default="sr", show_default=True,
              help="Super-resolution x4, or inpainting of a band (the eyes of a face, the centre of a garment).")
@click.option("--sample", type=int, default=0, show_default=True, help="Which shipped sample (0-based).")
@settings_options(RunSettings, only=("device",))
@click.option("--out", "out", type=click.Path(path_type=Path), default=Path("hvp-explore-demo"), show_default=True,
              help="Output folder (written atomically).")
@click.option("--overwrite", is_flag=True, help="Replace an existing output folder.")
@click.option("--quiet", is_flag=True, help="No progress bars or messages.")
def demo(generator, problem, sample, device, out, overwrite, quiet):
    """The main job, offline: explore 10 solutions of a shipped face (or, with --generator default, a Fashion-MNIST sample)."""
    from hvp_explore.cli._common import UserError
    from hvp_explore.data import sample_paths

    kind, band = DEMOS[generator]
    paths = sample_paths(kind)
    if not 0 <= sample < len(paths):
        raise UserError(f"--sample must be between 0 and {len(paths) - 1}, got {sample}")
    box = band if problem == "inpaint" else None
    what = "super-resolution x4" if problem == "sr" else f"inpainting of the box {band}"
    say(quiet, f"demo: {what} of {paths[sample].name} with the {generator} generator (offline)")
    options = {**ProblemSettings(problem=problem, box=box, from_clean=True).kwargs(), **RunSettings(generator=generator, device=device).kwargs(),
               **InversionSettings().kwargs(), **EigenSettings().kwargs(), **DirectionSettings().kwargs(), **StepSettings().kwargs()}
    explore_run(paths[sample], out=out, overwrite=overwrite, quiet=quiet, **options)


@click.command()
@click.argument("input_dir", metavar="INPUT_DIR", type=click.Path(path_type=Path))
@exploration_options
@click.option("--shard", default=None, help="Process shard i of n (i/n); default from torchrun or a Slurm array, else all.")
def batch(input_dir, out, overwrite, quiet, shard, **options):
    """Explore every observation in INPUT_DIR into one subfolder each; resumable, shardable (see docs/scaling.md)."""
    from hvp_explore.io.batch import batch_summary_table, discover_inputs, resolve_shard, run_batch

    job = ExploreJob({**options, "quiet": quiet})
    setup(quiet, options["seed"])
    shard_ = resolve_shard(shard)
    inputs = discover_inputs(input_dir)
    job.load()

    def process(path: Path, target: Path) -> dict:
        report = job.run(path, target, quiet=True)
        return {"solutions": report["num_solutions"], "feasible": report["num_feasible"],
                "first_mse": report["first_solution"]["measurement_mse"],
                "min_pairwise": report["pairwise_perceptual_distance"]["min"], "seconds": report["timings"]["total"]}

    result = run_batch(inputs, out, process, shard=shard_, quiet=quiet, overwrite=overwrite)
    if not quiet:
        records = result.records if len(result.records) <= 50 else result.records[-50:]
        console.print(batch_summary_table(records, title=f"shard {shard_} ({len(result.records)} images)"))
        console.print(f"ok {result.ok}, skipped (already complete) {result.skipped}, errors {result.error}; "
                      f"manifest {result.manifest}")
    if result.error:
        raise click.exceptions.Exit(1)

"""The stage commands, composable through their folders: ``eig``, ``couple``, ``project``, ``render``.

``invert`` (in :mod:`hvp_explore.cli.solve`) writes the first stage folder; each command here reads
the folder of the one before (its ``state.pt``, checked against a schema) and writes its own. A
folder is data: the generator it names is loaded only if it is a registered name, or the user repeats
it with ``--generator`` (or passes ``--trust-generator``), since a file or a factory runs code.
"""

from __future__ import annotations

from pathlib import Path

import click

from hvp_explore.cli._common import (
    UserError,
    check_output,
    command_line,
    console,
    finish,
    output_options,
    print_solutions,
    settings_options,
    setup,
    stack,
    write_folder,
)
from hvp_explore.settings import DirectionSettings, EigenSettings, ProjectSettings, RenderSettings, RunSettings, StageSettings


def stage_command(metavar: str, settings_cls, *, only: tuple[str, ...] | None = None, run: tuple[str, ...] = ("device", "seed"),
                  generator: bool = True):
    """A command on the folder of an earlier stage (its parameter ``folder``), with the options of ``settings_cls``."""
    decorators = [click.command(), click.argument("folder", metavar=metavar, type=click.Path(path_type=Path)),
                  settings_options(settings_cls, only=only)]
    if run:
        decorators.append(settings_options(RunSettings, only=run))
    if generator:
        decorators.append(settings_options(StageSettings))
    return stack(*decorators, output_options)


def _open(folder: Path, out: Path, overwrite: bool, quiet: bool, seed: int = 0, device: str | None = None,
          stage: StageSettings | None = None):
    """The checks that need no numerical library (the folder's name, the output folder), then the earlier stage's state,
    checked against the schema, and whether its generator may be loaded (``stage``: what the command line says)."""
    from hvp_explore.io.files import check_stage_folder

    if device is not None:
        RunSettings(device=device, seed=seed)
    check_stage_folder(folder)
    check_output(out, overwrite, [folder])
    setup(quiet, seed, device)
    from hvp_explore.io.stages import generator_to_load, load_state

    state = load_state(folder)
    if stage is not None:
        generator_to_load(state, stage.generator, stage.trust_generator)
    return state


def _explorer(state, metric: str | None, device: str, generator: str | None, trust_generator: bool, **options):
    """The run's generator (fine-tuned weights included, checked) and a metric, loaded once; the generator only if allowed."""
    from hvp_explore.exploration import Explorer
    from hvp_explore.io.stages import check_run_generator, generator_to_load, load_run_state_into

    explorer = Explorer(generator_to_load(state, generator, trust_generator), metric, device=device, **options)
    check_run_generator(state, explorer.generator)
    load_run_state_into(state, explorer.generator)
    return explorer


@stage_command("RUN", EigenSettings)
def eig(folder, device, seed, generator, trust_generator, out, overwrite, quiet, **options):
    """Top eigenpairs of H_Y and H_X at the solution of RUN (an 'invert' folder)."""
    eigen = EigenSettings.pick(options)
    loading = StageSettings(generator=generator, trust_generator=trust_generator)
    state = _open(folder, out, overwrite, quiet, seed, device, loading)
    from hvp_explore.io._progress import progress_bar
    from hvp_explore.io.stages import with_eigen, write_eigen

    observation = state.observation()
    explorer = _explorer(state, eigen.metric, device, generator, trust_generator, max_memory=eigen.max_memory)
    explorer.check(eigen)
    with progress_bar("eigenpairs", 1, quiet=quiet) as bar:
        stage = explorer.eigenpairs(observation, state.latent, eigen, seed=seed)
        bar.advance(status="done")
    state = with_eigen(state, explorer.metric_name, stage.eig_y, stage.eig_x)
    report = write_folder(out, overwrite, lambda tmp: write_eigen(tmp, state, stage.eig_y, stage.eig_x, command=command_line(),
                                                                  timings=stage.timings))
    columns = ("k", "solver", "matvecs", "seconds", "max_relative_residual")
    finish(quiet, out, "eigenpairs", [{"operator": name, **{c: report["eigen"][name][c] for c in columns}} for name in ("H_Y", "H_X")],
           ["operator", *columns])


@stage_command("EIG", DirectionSettings, only=("threshold",), run=(), generator=False)
def couple(folder, threshold, out, overwrite, quiet):
    """Coupling matrix C = U^T V of the eigenvectors in EIG (an 'eig' folder): heat map and .npy."""
    DirectionSettings(threshold=threshold)  # checks it
    state = _open(folder, out, overwrite, quiet)
    from hvp_explore.io.stages import eigen_results, write_coupling

    eig_y, eig_x = eigen_results(state)
    report = write_folder(out, overwrite, lambda tmp: write_coupling(tmp, eig_y, eig_x, threshold=threshold, command=command_line()))
    finish(quiet, out, "coupling", [{k: report[k] for k in ("shape", "significant", "max_abs")}], ["shape", "significant", "max_abs"])


@stage_command("EIG", ProjectSettings)
def project(folder, device, seed, generator, trust_generator, out, overwrite, quiet, **options):
    """Exploration directions from EIG (an 'eig' folder): e-GLASS projections, generalized or raw."""
    settings = ProjectSettings.pick(options)
    loading = StageSettings(generator=generator, trust_generator=trust_generator)
    state = _open(folder, out, overwrite, quiet, seed, device, loading)
    from hvp_explore.io.stages import eigen_results, with_directions, write_directions

    eig_y, eig_x = eigen_results(state)
    observation = state.observation()
    metric = state.metric_name() if settings.mode == "generalized" else None
    explorer = _explorer(state, metric, device, generator, trust_generator)
    directions, _ = explorer.directions(observation, state.latent, eig_y, eig_x, settings, seed=seed)
    state = with_directions(state, directions)
    report = write_folder(out, overwrite, lambda tmp: write_directions(tmp, state, directions, eig_y, eig_x, threshold=settings.threshold,
                                                                       command=command_line()))
    finish(quiet, out, "directions", report["directions"], ["label", "mode", "max_cosine_before", "max_cosine_after"])


@stage_command("DIRECTIONS", RenderSettings)
def render(folder, device, seed, generator, trust_generator, out, overwrite, quiet, **options):
    """Solutions along the directions in DIRECTIONS (a 'project' folder), each with the largest feasible step."""
    settings = RenderSettings.pick(options)
    loading = StageSettings(generator=generator, trust_generator=trust_generator)
    state = _open(folder, out, overwrite, quiet, seed, device, loading)
    from hvp_explore.io.stages import directions_of, write_render

    directions = directions_of(state)
    if settings.solutions is not None and settings.solutions > 2 * len(directions):
        raise UserError(f"--solutions {settings.solutions} is more than the {2 * len(directions)} solutions the "
                        f"{len(directions)} directions in {folder} give (two each): run 'hvp-explore project' with "
                        f"--solutions {settings.solutions}")
    observation = state.observation()
    explorer = _explorer(state, state.metric_name(), device, generator, trust_generator)
    solutions, rejected, pairwise, timings = explorer.render(observation, state.latent, state.image, directions, settings, seed=seed)
    report = write_folder(out, overwrite, lambda tmp: write_render(tmp, state, observation, solutions, rejected, pairwise, timings,
                                                                   tau=settings.tau, command=command_line()))
    if not quiet:
        print_solutions(report["solutions"], "solutions")
        console.print(f"outputs in [bold]{out}[/] (sheet.png, report.json, solutions/, solutions.npz)")

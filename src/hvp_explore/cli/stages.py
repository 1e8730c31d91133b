"""The stage commands, composable through their folders: ``eig``, ``couple``, ``project``, ``render``.

``invert`` (in :mod:`hvp_explore.cli.solve`) writes the first stage folder; each command here reads
the folder of the one before (its ``state.pt``) and writes its own.
"""

from __future__ import annotations

from pathlib import Path

import click

from hvp_explore.cli._common import command_line, finish, output_options, settings_options, setup, stack, write_folder
from hvp_explore.settings import DirectionSettings, EigenSettings, ProjectSettings, RenderSettings, RunSettings


def stage_command(metavar: str, settings_cls, *, only: tuple[str, ...] | None = None, run: tuple[str, ...] = ("device", "seed")):
    """A command on the folder of an earlier stage (its parameter ``folder``), with the options of ``settings_cls``."""
    decorators = [click.command(), click.argument("folder", metavar=metavar, type=click.Path(path_type=Path)),
                  settings_options(settings_cls, only=only)]
    if run:
        decorators.append(settings_options(RunSettings, only=run))
    return stack(*decorators, output_options)


def _open(folder: Path, out: Path, overwrite: bool, quiet: bool, seed: int = 0):
    """The checks that need no numerical library, then the earlier stage's state."""
    from hvp_explore.io.atomic import check_output_dir
    from hvp_explore.io.stages import load_state

    check_output_dir(out, overwrite=overwrite)
    setup(quiet, seed)
    return load_state(folder)


def _explorer(state, metric: str | None, device: str, **options):
    """The run's generator (fine-tuned weights included) and a metric, loaded once."""
    from hvp_explore.exploration import Explorer

    return Explorer(state.generator, metric, device=device, generator_state=state.generator_state, **options)


@stage_command("RUN", EigenSettings)
def eig(folder, device, seed, out, overwrite, quiet, **options):
    """Top eigenpairs of H_Y and H_X at the solution of RUN (an 'invert' folder)."""
    from hvp_explore.io._progress import progress_bar
    from hvp_explore.io.stages import with_eigen, write_eigen

    eigen = EigenSettings.pick(options)
    state = _open(folder, out, overwrite, quiet, seed)
    explorer = _explorer(state, eigen.metric, device, max_memory=eigen.max_memory)
    explorer.check(eigen)
    with progress_bar("eigenpairs", 1, quiet=quiet) as bar:
        stage = explorer.eigenpairs(state.observation(), state.latent, eigen, seed=seed)
        bar.advance(status="done")
    state = with_eigen(state, explorer.metric_name, stage.eig_y, stage.eig_x)
    report = write_folder(out, overwrite, lambda tmp: write_eigen(tmp, state, stage.eig_y, stage.eig_x, command=command_line()))
    columns = ("k", "solver", "matvecs", "seconds", "max_relative_residual")
    finish(quiet, out, "eigenpairs", [{"operator": name, **{c: report["eigen"][name][c] for c in columns}} for name in ("H_Y", "H_X")],
           ["operator", *columns])


@stage_command("EIG", DirectionSettings, only=("threshold",), run=())
def couple(folder, threshold, out, overwrite, quiet):
    """Coupling matrix C = U^T V of the eigenvectors in EIG (an 'eig' folder): heat map and .npy."""
    from hvp_explore.io.stages import eigen_results, write_coupling

    DirectionSettings(threshold=threshold)  # checks it
    eig_y, eig_x = eigen_results(_open(folder, out, overwrite, quiet))
    report = write_folder(out, overwrite, lambda tmp: write_coupling(tmp, eig_y, eig_x, threshold=threshold, command=command_line()))
    finish(quiet, out, "coupling", [{k: report[k] for k in ("shape", "significant", "max_abs")}], ["shape", "significant", "max_abs"])


@stage_command("EIG", ProjectSettings)
def project(folder, device, seed, out, overwrite, quiet, **options):
    """Exploration directions from EIG (an 'eig' folder): e-GLASS projections, generalized or raw."""
    from hvp_explore.io.stages import eigen_results, with_directions, write_directions

    settings = ProjectSettings.pick(options)
    state = _open(folder, out, overwrite, quiet, seed)
    eig_y, eig_x = eigen_results(state)
    explorer = _explorer(state, state.metric_name() if settings.mode == "generalized" else None, device)
    directions, _ = explorer.directions(state.observation(), state.latent, eig_y, eig_x, settings, seed=seed)
    state = with_directions(state, directions)
    report = write_folder(out, overwrite, lambda tmp: write_directions(tmp, state, directions, eig_y, eig_x, threshold=settings.threshold,
                                                                       command=command_line()))
    finish(quiet, out, "directions", report["directions"], ["label", "mode", "max_cosine_before", "max_cosine_after"])


@stage_command("DIRECTIONS", RenderSettings, run=("device",))
def render(folder, device, out, overwrite, quiet, **options):
    """Solutions along the directions in DIRECTIONS (a 'project' folder), each with the largest feasible step."""
    from hvp_explore.io.stages import directions_of, write_render

    settings = RenderSettings.pick(options)
    state = _open(folder, out, overwrite, quiet)
    observation = state.observation()
    explorer = _explorer(state, state.metric_name(), device)
    solutions, rejected, pairwise, timings = explorer.render(observation, state.latent, state.image, directions_of(state), settings)
    report = write_folder(out, overwrite, lambda tmp: write_render(tmp, state, observation, solutions, rejected, pairwise, timings,
                                                                   tau=settings.tau, command=command_line()))
    finish(quiet, out, "solutions", report["solutions"], ["file", "direction", "eta", "measurement_mse", "feasible",
                                                          "perceptual_distance"])

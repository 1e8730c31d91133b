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
    finish,
    json_requested,
    output_options,
    print_json,
    print_solutions,
    result_line,
    settings_options,
    setup,
    stack,
    write_folder,
)
from hvp_explore.settings import (PENCIL_MODES, DirectionSettings, EigenSettings, ProjectSettings, RenderSettings, ReportSettings,
                                  RunSettings, StageSettings)


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


#: The stage whose folder each stage command reads (a later stage's folder also serves: its state.pt holds more).
READS = {"eig": "invert", "couple": "eig", "project": "eig", "render": "project"}


def _check_stage_folder(folder: Path) -> None:
    """The folder's ``state.pt`` (:func:`~hvp_explore.io.files.check_stage_folder`); a folder that another command wrote,
    which keeps no state.pt (explore, render, pulse, ...), is named with that command and the folder to pass instead."""
    from hvp_explore.io.files import check_stage_folder

    command = click.get_current_context().info_name
    try:
        check_stage_folder(folder)
    except ValueError:
        writer = _written_by(folder)
        if writer is None:
            raise
        wanted = READS[command]
        raise UserError(f"{folder} was written by 'hvp-explore {writer}', which keeps no state.pt for the stage commands: "
                        f"'{command}' reads the folder of 'hvp-explore {wanted}' (or of a later stage); run "
                        f"'hvp-explore {wanted}' with --out and pass that folder") from None


def _written_by(folder: Path) -> str | None:
    """The hvp-explore command that wrote ``folder``, from its marker file (None: not a finished hvp-explore folder)."""
    import json

    from hvp_explore.io.atomic import MARKER_NAME, is_complete

    if not Path(folder).is_dir() or not is_complete(folder):
        return None
    try:
        words = str(json.loads((Path(folder) / MARKER_NAME).read_text(encoding="utf-8")).get("command", "")).split()
    except (OSError, ValueError):
        return None
    # "hvp-explore explore in.png ..." (or a path to the script): the word after the program
    return words[1] if len(words) > 1 and not words[1].startswith("-") else None


def _open(folder: Path, out: Path, overwrite: bool, quiet: bool, seed: int = 0, device: str | None = None,
          stage: StageSettings | None = None):
    """The checks that need no numerical library (the folder's name, the output folder), then the earlier stage's state,
    checked against the schema, and whether its generator may be loaded (``stage``: what the command line says)."""
    if device is not None:
        RunSettings(device=device, seed=seed)
    _check_stage_folder(folder)
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
           ["operator", *columns], report=report)


@stage_command("EIG", DirectionSettings, only=("threshold",), run=(), generator=False)
def couple(folder, threshold, out, overwrite, quiet):
    """Coupling matrix C = U^T V of the eigenvectors in EIG (an 'eig' folder): heat map and .npy."""
    DirectionSettings(threshold=threshold)  # checks it
    state = _open(folder, out, overwrite, quiet)
    from hvp_explore.io.stages import eigen_results, write_coupling

    eig_y, eig_x = eigen_results(state)
    report = write_folder(out, overwrite, lambda tmp: write_coupling(tmp, eig_y, eig_x, threshold=threshold, command=command_line()))
    finish(quiet, out, "coupling", [{k: report[k] for k in ("shape", "significant", "max_abs")}], ["shape", "significant", "max_abs"],
           report=report)


@stage_command("EIG", ProjectSettings)
def project(folder, device, seed, generator, trust_generator, out, overwrite, quiet, **options):
    """Exploration directions from EIG (an 'eig' folder): e-GLASS projections, generalized or raw."""
    settings = ProjectSettings.pick(options)
    loading = StageSettings(generator=generator, trust_generator=trust_generator)
    state = _open(folder, out, overwrite, quiet, seed, device, loading)
    from hvp_explore.io.stages import eigen_results, with_directions, write_directions

    eig_y, eig_x = eigen_results(state)
    observation = state.observation()
    metric = state.metric_name() if settings.mode in PENCIL_MODES else None
    explorer = _explorer(state, metric, device, generator, trust_generator)
    directions, _ = explorer.directions(observation, state.latent, eig_y, eig_x, settings, seed=seed)
    state = with_directions(state, directions)
    report = write_folder(out, overwrite, lambda tmp: write_directions(tmp, state, directions, eig_y, eig_x, threshold=settings.threshold,
                                                                       command=command_line()))
    finish(quiet, out, "directions", report["directions"], ["label", "mode", "max_cosine_before", "max_cosine_after"], report=report)


@stage_command("DIRECTIONS", RenderSettings)
@settings_options(ReportSettings)
def render(folder, device, seed, generator, trust_generator, out, overwrite, quiet, no_html, frames, **options):
    """Solutions along the directions in DIRECTIONS (a 'project' folder), each with the largest feasible step."""
    settings = RenderSettings.pick(options)
    page = ReportSettings(no_html=no_html, frames=frames)  # checks --frames before any work
    loading = StageSettings(generator=generator, trust_generator=trust_generator)
    state = _open(folder, out, overwrite, quiet, seed, device, loading)
    from hvp_explore.io.stages import directions_of, write_render

    directions = directions_of(state)
    if settings.solutions is not None and settings.solutions > 2 * len(directions):
        raise UserError(f"--solutions {settings.solutions} is more than the {2 * len(directions)} solutions the "
                        f"{len(directions)} directions in {folder} give (two each): run 'hvp-explore project' with "
                        f"--solutions {settings.solutions}")
    observation = state.observation()
    if settings.noise_sigma is not None:  # tau from the noise level, floored at the first solution's own MSE
        from dataclasses import replace

        from hvp_explore.problems import resolve_tau

        tau = resolve_tau(settings.tau, settings.noise_sigma, observation.forward.num_measurements,
                          floor=state.inversion["measurement_mse"])
        settings = replace(settings, tau=tau, noise_sigma=None)
    explorer = _explorer(state, state.metric_name(), device, generator, trust_generator)
    solutions, rejected, pairwise, timings, caps = explorer.render(observation, state.latent, state.image, directions, settings,
                                                                   seed=seed, with_caps=True)
    strips = None if page.no_html else explorer.frames(observation, state.latent, state.image, directions, solutions, eta_max=caps,
                                                       tau=settings.tau, frames=page.frames)
    report = write_folder(out, overwrite, lambda tmp: write_render(tmp, state, observation, solutions, rejected, pairwise, timings,
                                                                   tau=settings.tau, command=command_line(), html=not page.no_html,
                                                                   frames=strips))
    if json_requested():
        print_json({"out": str(out), **report})
    elif not quiet:
        print_solutions(report["solutions"], "solutions")
        result_line(f"outputs in [bold]{out}[/] (sheet.png, report.json, solutions/, solutions.npz)")

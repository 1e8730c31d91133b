"""The ``hvp-explore`` command line: a thin Click layer over the library (no numerics here).

Every command validates its options, checks the output folder before any long work, runs the
library, writes its folder atomically and prints a summary table. Bad input ends with a one-line
``Error: ...`` and exit status 2, never a traceback.
"""

from __future__ import annotations

import logging
import math
import os
import shlex
import sys
import tempfile
from pathlib import Path

import click
import torch
from rich.console import Console

from hvp_explore._version import __version__
from hvp_explore.io.atomic import atomic_output_dir, check_output_dir
from hvp_explore.io._progress import progress_bar
from hvp_explore.io.figures import summary_table

console = Console(stderr=True, highlight=False)

# Errors a user can cause (bad files, bad options, numerical faults): one line, exit status 2.
USER_ERRORS = (ValueError, FileNotFoundError, IsADirectoryError, PermissionError, FloatingPointError, OSError)


class UserError(click.ClickException):
    exit_code = 2


class _Group(click.Group):
    """Turns library exceptions into one-line errors (exit 2) and Ctrl-C into a clean exit (130)."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except KeyboardInterrupt:
            console.print("interrupted: no partial output was written (finished images of a batch are kept; rerun to resume)")
            raise click.exceptions.Exit(130) from None
        except USER_ERRORS as exc:
            message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise UserError(message) from None


def _command_line() -> str:
    return "hvp-explore " + " ".join(shlex.quote(a) for a in sys.argv[1:])


def _setup(quiet: bool, seed: int) -> None:
    torch.manual_seed(seed)
    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO, format="%(message)s", stream=sys.stderr, force=True)
    for noisy in ("PIL", "matplotlib"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _say(quiet: bool, message: str) -> None:
    if not quiet:
        console.print(message)


# --- shared options ---------------------------------------------------------------------------------

def _options(*decorators):
    def apply(f):
        for d in reversed(decorators):
            f = d(f)
        return f
    return apply


device_option = click.option("--device", default="cpu", show_default=True, help="Torch device, e.g. cpu or cuda.")
seed_option = click.option("--seed", type=int, default=0, show_default=True,
                           help="Seeds every random choice (same seed, same outputs).")
output_options = _options(
    click.option("--out", "out", type=click.Path(path_type=Path), required=True, help="Output folder (written atomically)."),
    click.option("--overwrite", is_flag=True, help="Replace an existing folder that was not written by hvp-explore."),
    click.option("--quiet", is_flag=True, help="No progress bars or messages."),
)
common_options = _options(
    click.option("--generator", default="default", show_default=True,
                 help="Registered name (see 'hvp-explore generators'), a .pkl/.pt file, or package.module:function."),
    device_option, seed_option, output_options,
)
stage_options = _options(device_option, seed_option, output_options)

problem_options = _options(
    click.option("--problem", type=click.Choice(["sr", "inpaint", "cs"]), default="sr", show_default=True,
                 help="Super-resolution, inpainting or compressed sensing."),
    click.option("--factor", type=int, default=4, show_default=True, help="Super-resolution factor."),
    click.option("--kernel", type=click.Choice(["area", "bicubic"]), default="area", show_default=True,
                 help="Super-resolution downsampling kernel."),
    click.option("--mask", type=click.Path(path_type=Path), default=None, help="Inpainting mask PNG (white = missing)."),
    click.option("--box", default=None, help="Inpainting: missing rectangle x,y,w,h."),
    click.option("--measurements", "m", type=int, default=None, help="Compressed sensing: number of measurements m."),
    click.option("--from-clean", is_flag=True, help="INPUT is a clean image: synthesise the observation from it."),
    click.option("--noise", type=float, default=0.0, show_default=True, help="With --from-clean: noise std on the [0, 1] scale."),
    click.option("--resize", is_flag=True, help="Fit an INPUT (and a --mask) of another size: centre crop to the aspect ratio, then "
                                                "Lanczos to the size expected (stated in the output)."),
)

iagan_option = click.option(
    "--iagan", type=click.Choice(["auto", "on", "off"]), default="auto", show_default=True,
    help="Fine-tune the generator jointly with the latent after CSGM (IAGAN): 'auto' only when CSGM stays above --tau.")
IAGAN = {"auto": "auto", "on": True, "off": False}  # also the values of --gauss-newton

gauss_newton_option = click.option(
    "--gauss-newton", type=click.Choice(["auto", "on", "off"]), default="auto", show_default=True,
    help="Finish CSGM with Gauss-Newton steps from its first feasible iterate: 'auto' when there are no more measurements "
         "than latent dimensions (docs/inversion.md).")

tau_option = click.option("--tau", type=float, default=2e-3, show_default=True,
                          help="Feasibility threshold on the measurement MSE ([0, 1] pixel scale).")


def _positive(name: str, value, *, integer: bool = False):
    if value is None:
        return None
    if not value > 0 or (not integer and not math.isfinite(value)):
        raise UserError(f"{name} must be positive, got {value}")
    return value


def _load(generator: str, device: str):
    from hvp_explore.generators import load_generator

    return load_generator(generator, device=device)


def _observation(input_path: Path, G, *, problem, factor, kernel, mask, box, m, from_clean, noise, resize, seed, quiet):
    from hvp_explore.problems.observation import load_observation

    obs = load_observation(input_path, image_shape=tuple(G.image_shape), problem=problem, factor=factor, kernel=kernel, box=box,
                           mask=mask, m=m, from_clean=from_clean, noise=noise, seed=seed, resize=resize)
    for notice in obs.notices:
        _say(quiet, f"[yellow]notice:[/] {notice}")
    return obs


def _problem_state(obs, *, problem, factor, kernel, box, m, seed):
    from hvp_explore.io.stages import problem_spec

    mask_tensor = getattr(obs.forward, "missing", None) if problem == "inpaint" and box is None else None
    return problem_spec(problem, obs.forward.image_shape, factor=factor, kernel=kernel, box=box,
                           mask_tensor=None if mask_tensor is None else mask_tensor.detach().cpu().bool(), m=obs.forward.num_measurements
                           if problem == "cs" else None, seed=seed)


def _finish(quiet: bool, out: Path, title: str, rows: list[dict], columns) -> None:
    if not quiet:
        console.print(summary_table(rows, columns, title=title))
        console.print(f"outputs in [bold]{out}[/]")


# --- the group --------------------------------------------------------------------------------------

@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="hvp-explore")
def cli():
    """Explore the many solutions of an inverse problem with the latent geometry of a GAN (e-GLASS)."""


@cli.command("generators")
def generators_cmd():
    """List the registered generators and perceptual metrics."""
    from hvp_explore.generators import available_generators
    from hvp_explore.metrics import available_metrics

    rows = [{"name": k, "description": v} for k, v in available_generators().items()]
    console.print(summary_table(rows, {"name": "generator", "description": "description"}))
    console.print("metrics: " + ", ".join(available_metrics()))


@cli.command()
@click.argument("input_path", metavar="INPUT", type=click.Path(path_type=Path))
@problem_options
@common_options
@tau_option
@click.option("--restarts", type=int, default=None, help="CSGM restarts optimised together (default: the library's).")
@click.option("--steps", type=int, default=None, help="Largest number of CSGM Adam steps.")
@click.option("--lr", type=float, default=None, help="CSGM learning rate.")
@click.option("--prior", type=click.Choice(["normal", "truncated", "sphere"]), default="normal", show_default=True)
@gauss_newton_option
@iagan_option
@click.option("--back-projection", is_flag=True, help="Back-project the final image onto the measurements (IAGAN).")
def invert(input_path, problem, factor, kernel, mask, box, m, from_clean, noise, resize, generator, device, seed, out, overwrite, quiet,
           tau, restarts, steps, lr, prior, gauss_newton, iagan, back_projection):
    """Find a first solution of INPUT by GAN inversion (CSGM, optionally IAGAN)."""
    from hvp_explore.inversion import invert as run_invert
    from hvp_explore.io.stages import state_from_inversion, write_inversion

    _setup(quiet, seed)
    _positive("--tau", tau)
    check_output_dir(out, overwrite=overwrite)
    G = _load(generator, device)
    obs = _observation(input_path, G, problem=problem, factor=factor, kernel=kernel, mask=mask, box=box, m=m,
                       from_clean=from_clean, noise=noise, resize=resize, seed=seed, quiet=quiet)
    options = {k: v for k, v in {"restarts": restarts, "steps": steps, "lr": lr}.items() if v is not None}
    result = run_invert(G, obs.forward.to(device), obs.y.to(device), tau=tau, prior=prior, iagan=IAGAN[iagan],
                        gauss_newton=IAGAN[gauss_newton],
                        back_projection=back_projection, seed=seed, quiet=quiet, **options)
    state = state_from_inversion(generator=generator, observation=obs,
                                 problem=_problem_state(obs, problem=problem, factor=factor, kernel=kernel, box=box, m=m, seed=seed),
                                 inversion=result)
    with atomic_output_dir(out, overwrite=overwrite, marker={"command": _command_line()}) as tmp:
        report = write_inversion(tmp, state, tau=tau, command=_command_line())
    _finish(quiet, out, "inversion", [{"measurement MSE": report["measurement_mse"], "LR-PSNR dB": report["lr_psnr"],
                                       "feasible": report["feasible"], "steps": report["steps_run"], "seconds": report["seconds"]}],
            ["measurement MSE", "LR-PSNR dB", "feasible", "steps", "seconds"])


@cli.command()
@click.argument("input_path", metavar="INPUT", type=click.Path(path_type=Path))
@problem_options
@common_options
@tau_option
@click.option("--solutions", "num", type=int, default=10, show_default=True, help="Number of PULSE runs N.")
@click.option("--batch", type=int, default=1, show_default=True, help="Runs optimised together (1 = one after another, as PULSE).")
@click.option("--steps", type=int, default=100, show_default=True)
@click.option("--lr", type=float, default=0.4, show_default=True)
def pulse(input_path, problem, factor, kernel, mask, box, m, from_clean, noise, resize, generator, device, seed, out, overwrite, quiet, tau,
          num, batch, steps, lr):
    """The PULSE baseline: N independent inversions from random latents on the sphere."""
    from hvp_explore.io.stages import write_pulse
    from hvp_explore.inversion import pulse as run_pulse

    _setup(quiet, seed)
    _positive("--tau", tau)
    _positive("--solutions", num, integer=True)
    _positive("--batch", batch, integer=True)
    check_output_dir(out, overwrite=overwrite)
    G = _load(generator, device)
    obs = _observation(input_path, G, problem=problem, factor=factor, kernel=kernel, mask=mask, box=box, m=m,
                       from_clean=from_clean, noise=noise, resize=resize, seed=seed, quiet=quiet)
    result = run_pulse(G, obs.forward.to(device), obs.y.to(device), num, steps=steps, lr=lr, eps=tau, batch=batch, seed=seed,
                       quiet=quiet)
    problem_state = _problem_state(obs, problem=problem, factor=factor, kernel=kernel, box=box, m=m, seed=seed)
    with atomic_output_dir(out, overwrite=overwrite, marker={"command": _command_line()}) as tmp:
        report = write_pulse(tmp, result, obs, generator=generator, problem=problem_state, command=_command_line())
    _finish(quiet, out, "PULSE", [{"runs": result.runs, "feasible": report["num_feasible"], "rate": report["feasibility_rate"],
                                  "seconds": result.seconds, "s / run": report["timings"]["per_run"]}],
            ["runs", "feasible", "rate", "seconds", "s / run"])


def _check_k(name: str, k, n: int) -> None:
    if k is not None and not 1 <= k < n:
        raise UserError(f"{name} must be between 1 and n - 1 = {n - 1} (the latent dimension is {n}), got {k}")


eigen_options = _options(
    click.option("--metric", default="auto", show_default=True,
                 help="Perceptual metric (see 'hvp-explore generators'); auto = fmnist for the default generator, effnet otherwise."),
    click.option("--k", "k", type=int, default=None, help="H_X eigenpairs (e-GLASS starts at v^k; default 10; beyond 2k solutions the directions are combinations)."),
    click.option("--k-y", "k_y", type=int, default=None, help="H_Y eigenpairs (default: its whole range m when m < n, else n/16)."),
    click.option("--solver", type=click.Choice(["auto", "dense", "jacobian", "arpack", "lanczos", "lobpcg", "block-krylov"]),
                 default="auto", show_default=True, help="Eigensolver."),
    click.option("--tol", type=float, default=1e-3, show_default=True, help="Relative eigensolver tolerance."),
)

direction_options = _options(
    click.option("--mode", type=click.Choice(["eglass", "generalized", "raw"]), default="eglass", show_default=True,
                 help="e-GLASS projections, generalized (pencil) directions, or raw H_X eigenvectors."),
    click.option("--solutions", "num", type=int, default=10, show_default=True, help="Number of explored solutions N."),
    click.option("--threshold", type=float, default=0.05, show_default=True, help="e-GLASS cosine threshold."),
    click.option("--eps", type=float, default=1e-3, show_default=True, help="Pencil regularisation (relative to lambda_1(H_Y))."),
)

eta_option = click.option("--eta-max", type=float, default=None, help="Largest step along a direction (default sqrt(n)).")


@cli.command()
@click.argument("run_dir", metavar="RUN", type=click.Path(path_type=Path))
@eigen_options
@stage_options
def eig(run_dir, metric, k, k_y, solver, tol, device, seed, out, overwrite, quiet):
    """Top eigenpairs of H_Y and H_X at the solution of RUN (an 'invert' folder)."""
    from hvp_explore.operators.curvature import measurement_hessian, perceptual_hessian
    from hvp_explore.eigen.solvers import top_eigenpairs
    from hvp_explore.exploration import default_k_y
    from hvp_explore.settings import DEFAULT_K
    from hvp_explore.io.stages import load_state, with_eigen, write_eigen

    _setup(quiet, seed)
    _positive("--tol", tol)
    check_output_dir(out, overwrite=overwrite)
    state = load_state(run_dir)
    G, forward, z0 = state.load_generator(device=device), state.observation().forward.to(device), state.latent.to(device)
    n = z0.numel()
    _check_k("--k", k, n)
    _check_k("--k-y", k_y, n)
    metric, metric_fn = _metric(metric, device, generator=state.generator, image_shape=tuple(state.image.shape[-3:]))
    with progress_bar("eigenpairs", 2, quiet=quiet) as bar:
        bar.advance(0, status="H_Y")
        H_Y = measurement_hessian(G, forward, z0)
        eig_y = top_eigenpairs(H_Y, k_y or min(default_k_y(H_Y.residual_dim, n), n - 1), solver=solver, tol=tol, seed=seed)
        bar.advance(status="H_X")
        eig_x = top_eigenpairs(perceptual_hessian(G, metric_fn, z0), k or DEFAULT_K, solver=solver, tol=tol, seed=seed)
        bar.advance(status="done")
    state = with_eigen(state, metric, eig_y, eig_x)
    with atomic_output_dir(out, overwrite=overwrite, marker={"command": _command_line()}) as tmp:
        report = write_eigen(tmp, state, eig_y, eig_x, command=_command_line())
    _finish(quiet, out, "eigenpairs", [{"operator": name, **{c: report["eigen"][name][c] for c in
                                                            ("k", "solver", "matvecs", "seconds", "max_relative_residual")}}
                                       for name in ("H_Y", "H_X")],
            ["operator", "k", "solver", "matvecs", "seconds", "max_relative_residual"])


@cli.command()
@click.argument("eig_dir", metavar="EIG", type=click.Path(path_type=Path))
@click.option("--threshold", type=float, default=0.05, show_default=True, help="Mark cosines above this.")
@output_options
def couple(eig_dir, threshold, out, overwrite, quiet):
    """Coupling matrix C = U^T V of the eigenvectors in EIG (an 'eig' folder): heat map and .npy."""
    from hvp_explore.io.stages import eigen_results, load_state, write_coupling

    _setup(quiet, 0)
    check_output_dir(out, overwrite=overwrite)
    eig_y, eig_x = eigen_results(load_state(eig_dir))
    with atomic_output_dir(out, overwrite=overwrite, marker={"command": _command_line()}) as tmp:
        report = write_coupling(tmp, eig_y, eig_x, threshold=threshold, command=_command_line())
    _finish(quiet, out, "coupling", [{k: report[k] for k in ("shape", "significant", "max_abs")}], ["shape", "significant", "max_abs"])


@cli.command()
@click.argument("eig_dir", metavar="EIG", type=click.Path(path_type=Path))
@direction_options
@click.option("--k", "K", type=int, default=None, help="Start at v^K (default: the number of H_X eigenpairs in EIG).")
@stage_options
def project(eig_dir, mode, num, threshold, eps, K, device, seed, out, overwrite, quiet):
    """Exploration directions from EIG (an 'eig' folder): e-GLASS projections, generalized or raw."""
    from hvp_explore.operators.curvature import measurement_hessian, perceptual_hessian
    from hvp_explore.exploration import make_directions, num_directions
    from hvp_explore.io.stages import eigen_results, load_state, with_directions, write_directions

    _setup(quiet, seed)
    _positive("--solutions", num, integer=True)
    check_output_dir(out, overwrite=overwrite)
    state = load_state(eig_dir)
    eig_y, eig_x = eigen_results(state)
    H_X = H_Y = None
    if mode == "generalized":
        G, z0 = state.load_generator(device=device), state.latent.to(device)
        H_Y = measurement_hessian(G, state.observation().forward.to(device), z0)
        H_X = perceptual_hessian(G, state.load_metric(device=device), z0)
    directions, pencil = make_directions(mode, eig_y, eig_x, count=num_directions(num), K=K, threshold=threshold, H_X=H_X, H_Y=H_Y,
                                         eps=eps, seed=seed)
    state = with_directions(state, directions)
    with atomic_output_dir(out, overwrite=overwrite, marker={"command": _command_line()}) as tmp:
        report = write_directions(tmp, state, directions, eig_y, eig_x, threshold=threshold, command=_command_line())
    _finish(quiet, out, "directions", report["directions"], ["label", "mode", "max_cosine_before", "max_cosine_after"])


@cli.command()
@click.argument("proj_dir", metavar="DIRECTIONS", type=click.Path(path_type=Path))
@tau_option
@eta_option
@click.option("--solutions", "num", type=int, default=None, help="Number of solutions (default: two per direction).")
@device_option
@output_options
def render(proj_dir, tau, eta_max, num, device, out, overwrite, quiet):
    """Solutions along the directions in DIRECTIONS (a 'project' folder), each with the largest feasible step."""
    from hvp_explore.exploration import default_eta_max, render_solutions
    from hvp_explore.io.stages import directions_of, load_state, write_render

    _setup(quiet, 0)
    _positive("--tau", tau)
    _positive("--eta-max", eta_max)
    check_output_dir(out, overwrite=overwrite)
    state = load_state(proj_dir)
    directions = directions_of(state)
    num = num if num is not None else 2 * len(directions)
    _positive("--solutions", num, integer=True)
    G, obs = state.load_generator(device=device), state.observation()
    z0 = state.latent.to(device)
    solutions, rejected, pairwise, timings = render_solutions(
        G, obs.forward.to(device), obs.y.to(device), z0, state.image.to(device), directions, metric=state.load_metric(device=device),
        num_solutions=num, tau=tau, eta_max=eta_max if eta_max is not None else default_eta_max(z0.numel()))
    with atomic_output_dir(out, overwrite=overwrite, marker={"command": _command_line()}) as tmp:
        report = write_render(tmp, state, obs, solutions, rejected, pairwise, timings, tau=tau, command=_command_line())
    _finish(quiet, out, "solutions", report["solutions"], ["file", "direction", "eta", "measurement_mse", "feasible",
                                                           "perceptual_distance"])


class _ExploreJob:
    """One exploration setup (generator and metric loaded once), run on one or many inputs."""

    def __init__(self, *, problem, factor, kernel, mask, box, m, from_clean, noise, resize, generator, device, seed, quiet, tau, metric,
                 k, k_y, solver, tol, mode, num, threshold, eps, eta_max, iagan, max_memory, restarts=None, steps=None,
                 gauss_newton="auto"):
        for name, value in (("--tau", tau), ("--tol", tol), ("--eta-max", eta_max), ("--eps", eps)):
            _positive(name, value)
        _positive("--solutions", num, integer=True)
        self.G = _load(generator, device)
        n = self.G.latent_dim
        _check_k("--k", k, n)
        _check_k("--k-y", k_y, n)
        self.metric, self.metric_fn = _metric(metric, device, generator=generator, image_shape=tuple(self.G.image_shape))
        self.budget = _memory_budget(max_memory, device)
        self.invert_options = {"iagan": IAGAN[iagan], "gauss_newton": IAGAN[gauss_newton],
                               **{k_: v for k_, v in (("restarts", restarts), ("steps", steps)) if v is not None}}
        self.o = dict(problem=problem, factor=factor, kernel=kernel, mask=mask, box=box, m=m, from_clean=from_clean, noise=noise, resize=resize,
                      generator=generator, device=device, seed=seed, quiet=quiet, tau=tau, metric=metric, k=k, k_y=k_y, solver=solver,
                      tol=tol, mode=mode, num=num, threshold=threshold, eps=eps, eta_max=eta_max, iagan=iagan)

    def run(self, input_path: Path, out: Path, *, overwrite: bool = False, quiet: bool | None = None) -> dict:
        from hvp_explore.exploration import explore
        from hvp_explore.io.stages import write_exploration

        o = self.o
        quiet = o["quiet"] if quiet is None else quiet
        obs = _observation(input_path, self.G, problem=o["problem"], factor=o["factor"], kernel=o["kernel"], mask=o["mask"], box=o["box"],
                           m=o["m"], from_clean=o["from_clean"], noise=o["noise"], resize=o["resize"], seed=o["seed"], quiet=quiet)
        result = explore(self.G, obs.forward.to(o["device"]), obs.y.to(o["device"]), metric=self.metric_fn, num_solutions=o["num"],
                         mode=o["mode"], k_y=o["k_y"], K=o["k"], threshold=o["threshold"],
                         eps=o["eps"], tau=o["tau"], eta_max=o["eta_max"], solver=o["solver"], tol=o["tol"],
                         invert_options=self.invert_options, max_memory=self.budget, seed=o["seed"], quiet=quiet)
        with atomic_output_dir(out, overwrite=overwrite, marker={"command": _command_line()}) as tmp:
            return write_exploration(tmp, result, obs, generator=o["generator"], metric=self.metric, command=_command_line())


def _memory_budget(max_memory: str, device: str) -> int | None:
    from hvp_explore.operators.memory import default_budget, parse_size

    if max_memory.lower() == "none":
        return None
    return default_budget(device) if max_memory.lower() == "auto" else parse_size(max_memory)


def _print_exploration(report: dict, out: Path) -> None:
    console.print(summary_table(report["solutions"], {"file": "file", "direction": "direction", "eta": "eta",
                                                      "measurement_mse": "MSE", "feasible": "feasible",
                                                      "perceptual_distance": "perceptual dist."}, title="explored solutions"))
    console.print(summary_table([{"stage": k_, "seconds": v} for k_, v in report["timings"].items()], ["stage", "seconds"],
                                title="timings"))
    if report["rejected_directions"]:
        console.print(f"[yellow]{len(report['rejected_directions'])} signed direction(s) admitted no feasible step[/]")
    for warning in report.get("warnings", []):
        console.print(f"[yellow]warning:[/] {warning}")
    console.print(f"outputs in [bold]{out}[/] (sheet.png, report.json, solutions/)")


def _explore_run(input_path, *, out, overwrite, quiet, seed, **options):
    _setup(quiet, seed)
    check_output_dir(out, overwrite=overwrite)
    job = _ExploreJob(quiet=quiet, seed=seed, **options)
    report = job.run(input_path, out, overwrite=overwrite)
    if not quiet:
        _print_exploration(report, out)
    return report


inversion_options = _options(
    click.option("--restarts", type=int, default=None, help="CSGM restarts optimised together (default: the library's)."),
    click.option("--steps", type=int, default=None, help="Largest number of CSGM Adam steps (default: the library's)."),
    gauss_newton_option,
)

memory_option = click.option("--max-memory", default="auto", show_default=True,
                             help="Memory budget of one batched product, e.g. 2GB; 'auto' = half the device's free memory; "
                                  "'none' = no limit (see docs/reliability.md).")


# every option of an exploration, shared by explore and batch
exploration_options = _options(problem_options, common_options, tau_option, eigen_options, direction_options, eta_option,
                               memory_option, inversion_options, iagan_option)


@cli.command("explore")
@click.argument("input_path", metavar="INPUT", type=click.Path(path_type=Path))
@exploration_options
def explore_cmd(input_path, **options):
    """Find a first solution of INPUT, then explore N more along e-GLASS directions (the whole pipeline)."""
    _explore_run(input_path, **options)


#: The demo's observations: (sample kind, inpainting box) per demo generator. The faces' box is the eyes band.
_DEMOS = {"faces": ("faces", "0,18,64,16"), "default": ("fashion-mnist", "8,8,16,16")}


@cli.command()
@click.option("--generator", type=click.Choice(list(_DEMOS)), default="faces", show_default=True,
              help="faces: a shipped face (generated from a fixed seed), x4 from 16x16; default: a Fashion-MNIST sample.")
@click.option("--problem", type=click.Choice(["sr", "inpaint"]), default="sr", show_default=True,
              help="Super-resolution x4, or inpainting of a band (the eyes of a face, the centre of a garment).")
@click.option("--sample", type=int, default=0, show_default=True, help="Which shipped sample (0-based).")
@click.option("--out", "out", type=click.Path(path_type=Path), default=Path("hvp-explore-demo"), show_default=True,
              help="Output folder (written atomically).")
@click.option("--overwrite", is_flag=True, help="Replace an existing output folder.")
@click.option("--quiet", is_flag=True, help="No progress bars or messages.")
def demo(generator, problem, sample, out, overwrite, quiet):
    """The main job, offline: explore 10 solutions of a shipped face (or, with --generator default, a Fashion-MNIST sample)."""
    from hvp_explore.data import sample_paths
    from hvp_explore.settings import DEFAULT_TOL

    kind, band = _DEMOS[generator]
    paths = sample_paths(kind)
    if not 0 <= sample < len(paths):
        raise UserError(f"--sample must be between 0 and {len(paths) - 1}, got {sample}")
    box = band if problem == "inpaint" else None
    what = "super-resolution x4" if problem == "sr" else f"inpainting of the box {band}"
    _say(quiet, f"demo: {what} of {paths[sample].name} with the {generator} generator (offline)")
    _explore_run(paths[sample], problem=problem, factor=4, kernel="area", mask=None, box=box, m=None, from_clean=True, noise=0.0,
                 resize=False, generator=generator, device="cpu", seed=0, out=out, overwrite=overwrite, quiet=quiet, tau=2e-3,
                 metric="auto", k=None, k_y=None, solver="auto", tol=DEFAULT_TOL, mode="eglass", num=10, threshold=0.05, eps=1e-3,
                 eta_max=None, iagan="auto", max_memory="auto")


@cli.command()
@click.argument("input_dir", metavar="INPUT_DIR", type=click.Path(path_type=Path))
@exploration_options
@click.option("--shard", default=None, help="Process shard i of n (i/n); default from torchrun or a Slurm array, else all.")
def batch(input_dir, out, overwrite, quiet, seed, shard, **options):
    """Explore every observation in INPUT_DIR into one subfolder each; resumable, shardable (see docs/scaling.md)."""
    from hvp_explore.io.batch import batch_summary_table, discover_inputs, resolve_shard, run_batch

    _setup(quiet, seed)
    shard_ = resolve_shard(shard)
    inputs = discover_inputs(input_dir)
    job = _ExploreJob(quiet=quiet, seed=seed, **options)

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


@cli.group()
def bench():
    """Benchmarks (results under benchmarks/results/ and docs/benchmarks.md)."""


@bench.command("solutions", context_settings={"ignore_unknown_options": True, "help_option_names": []})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def bench_solutions(args):
    """Time to N feasible solutions: e-GLASS against PULSE (options: hvp-explore bench solutions --help)."""
    from hvp_explore.bench import main as bench_main

    bench_main(list(args), root=Path.cwd())


def _metric(name: str, device: str, *, generator: str, image_shape: tuple[int, int, int]):
    """(resolved name, metric): ``auto`` is the generator's default; a metric that cannot take its images stops here."""
    from hvp_explore.metrics import default_metric, load_metric

    name = default_metric(generator) if name == "auto" else name
    metric = load_metric(name, device=device)
    metric.check_image_shape(image_shape)
    return name, metric


@cli.command()
@click.argument("kind", type=click.Choice(["gan", "classifier"]))
@click.option("--epochs", type=int, default=None, help="Training epochs (default: 15 for the GAN, 4 for the classifier).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", "out", type=click.Path(path_type=Path), required=True, help="Weights file to write (.pt).")
@click.option("--quiet", is_flag=True)
def train(kind, epochs, seed, out, quiet):
    """Train the embedded default: the Fashion-MNIST DCGAN or the perceptual-trunk classifier."""
    from hvp_explore.io.atomic import write_json_atomic
    from hvp_explore.training import save_weights, train_classifier, train_gan

    _setup(quiet, seed)
    if out.suffix != ".pt":
        raise UserError(f"--out must be a .pt weights file, got {out}")
    epochs = epochs if epochs is not None else (15 if kind == "gan" else 4)
    _positive("--epochs", epochs, integer=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    result = (train_gan if kind == "gan" else train_classifier)(epochs=epochs, seed=seed, quiet=quiet)
    # torch.save names its zip archive after the file: save under the final name in a temporary
    # folder beside it, so the bytes (and the sha256) match a direct save, then move it into place.
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".train-") as tmp:
        sha = save_weights(result.model, Path(tmp) / out.name)
        os.replace(Path(tmp) / out.name, out)
    write_json_atomic(out.with_suffix(".json"), {"command": _command_line(), "kind": kind, "epochs": epochs, "seed": seed,
                                                "sha256": sha, "seconds": result.seconds, "history": list(result.history)})
    _finish(quiet, out.parent, f"training ({kind})", [{"epochs": epochs, "seconds": result.seconds, "sha256": sha[:16]}],
            ["epochs", "seconds", "sha256"])


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="hvp-explore")


if __name__ == "__main__":
    main()

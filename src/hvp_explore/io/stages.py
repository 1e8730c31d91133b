"""Files that pass a run between the command-line stages, and the writers of every output folder.

Each stage writes a folder; ``state.pt`` in it carries what later stages need (the problem, the
observation, the generator's name and, when fine-tuned, its weights, the first solution, and the
eigenpairs or directions once computed), saved with tensors and plain Python values only so it loads
with ``torch.load(weights_only=True)``. Human- and NumPy-friendly copies sit beside it
(``eigenpairs.npz``, ``directions.npz``, PNGs, ``report.json``).
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hvp_explore._version import __version__
from hvp_explore.io.atomic import save_tensors, write_json_atomic
from hvp_explore.eigen.solvers import EigenResult
from hvp_explore.exploration import Direction, ExplorationResult, Solution, coupling_matrix
from hvp_explore.generators import is_registered, load_generator
from hvp_explore.io._progress import progress_bar
from hvp_explore.io.files import STATE_FILE, check_stage_folder, display_path
from hvp_explore.io.images import quantize, save_image
from hvp_explore.io.schema import check_state, check_state_archive
from hvp_explore.inversion import InversionResult
from hvp_explore.metrics import load_metric
from hvp_explore.problems.observation import Observation
from hvp_explore.problems import describe_tau, lr_psnr, make_problem, measurement_mse
from hvp_explore.settings import H_Y_RANK_RTOL, PENCIL_MODES, ProblemSettings
from hvp_explore.inversion import PulseResult
from hvp_explore.io.figures import contact_sheet, plot_correlation, plot_coupling, plot_spectra, spread_image
from hvp_explore.io.html import write_report_html
from hvp_explore.exploration.frames import Frames

__all__ = ["RunState", "save_state", "load_state", "problem_state", "state_from_inversion", "write_inversion", "write_pulse", "write_eigen",
           "write_exploration", "exploration_report", "generator_to_load", "load_run_state_into", "check_run_generator",
           "solutions_bytes", "write_geometry"]

#: The latents (and steps) of a folder's solutions: ``G(latents[i])`` is ``solutions/<i+1>.png``.
SOLUTIONS_FILE = "solutions.npz"
#: Fine-tuned generator weights (IAGAN), beside the latents that need them.
GENERATOR_STATE_FILE = "generator_state.pt"
#: The contact sheet shows at most this many solutions (every one is in solutions/).
SHEET_SOLUTIONS = 30
#: Copies of each solution's image and latent held while a run renders and writes it (float64 at most),
#: for :func:`solutions_bytes`.
_SOLUTION_COPIES = 4


@dataclass(frozen=True)
class RunState:
    """Everything a later stage needs to continue a run.

    Attributes:
        generator: Name or path given to :func:`~hvp_explore.generators.load_generator`.
        generator_state: Fine-tuned weights (IAGAN), else ``None``.
        problem: Options of :func:`~hvp_explore.problems.make_problem` (mask as a bool tensor).
        y, display, clean, source: The observation (see :class:`~hvp_explore.problems.observation.Observation`).
        latent: The first solution z0, (n,).
        image: Its image (1, C, H, W).
        inversion: The inversion's report entries (measurement MSE, timings, ...).
        metric: Perceptual metric name (set by ``eig``).
        eigen: Eigenpairs (``values_y``, ``vectors_y``, ``residuals_y``, same for ``x``), once computed.
        directions: ``{"vectors": (n, q), "labels": [...], "mode": ...}``, once computed.
    """

    generator: str
    generator_state: dict | None
    problem: dict
    y: torch.Tensor
    display: torch.Tensor
    clean: torch.Tensor | None
    source: str
    latent: torch.Tensor
    image: torch.Tensor
    inversion: dict
    metric: str | None = None
    eigen: dict = field(default_factory=dict)
    directions: dict = field(default_factory=dict)

    def observation(self) -> Observation:
        """Rebuild the observation (forward operator included).

        Raises:
            ValueError: The stored problem cannot be rebuilt, or the stored measurements do not fit it.
        """
        forward = make_problem(self.problem["kind"], tuple(self.problem["image_shape"]),
                               **{k: v for k, v in self.problem.items() if k not in ("kind", "image_shape")})
        if tuple(self.y.shape) != (1, *forward.measurement_shape):
            raise ValueError(f"the measurements in {STATE_FILE} have shape {tuple(self.y.shape)}, but its problem makes "
                             f"{(1, *forward.measurement_shape)}: rerun the stage that wrote it")
        return Observation(forward, self.y, self.display, self.clean, self.source)

    def load_generator(self, *, device: str = "cpu", generator: str | None = None, trust: bool = False) -> torch.nn.Module:
        """The generator of this run (with the fine-tuned weights when IAGAN ran).

        A generator recorded as a file or a factory runs code when loaded: it is loaded only when
        ``generator`` repeats it or ``trust`` is set (:func:`generator_to_load`).
        """
        G = load_generator(generator_to_load(self, generator, trust), device=device)
        check_run_generator(self, G)
        return load_run_state_into(self, G)

    def metric_name(self) -> str:
        """The perceptual metric the ``eig`` stage used.

        Raises:
            ValueError: No ``eig`` stage has run on this folder yet.
        """
        if self.metric is None:
            raise ValueError("this run has no perceptual metric yet: run 'hvp-explore eig' on it first")
        return self.metric

    def load_metric(self, *, device: str = "cpu"):
        return load_metric(self.metric_name(), device=device)


def problem_spec(kind: str, image_shape, *, factor: int, kernel: str, box: str | None, mask_tensor: torch.Tensor | None,
                    m: int | None, seed: int) -> dict:
    """The options that rebuild a forward operator, as stored in ``state.pt``."""
    options: dict[str, Any] = {"kind": kind, "image_shape": list(image_shape)}
    if kind == "sr":
        options.update(factor=factor, kernel=kernel)
    elif kind == "inpaint":
        options.update(box=box) if box is not None else options.update(mask=mask_tensor)
    else:
        options.update(m=m, seed=seed)
    return options


def problem_state(observation: Observation, settings: ProblemSettings, *, seed: int) -> dict:
    """The problem of ``observation`` as stored in ``state.pt`` (a mask is kept as the tensor the operator used)."""
    forward = observation.forward
    mask = getattr(forward, "missing", None) if settings.problem == "inpaint" and settings.box is None else None
    return problem_spec(settings.problem, forward.image_shape, factor=settings.factor, kernel=settings.kernel, box=settings.box,
                        mask_tensor=None if mask is None else mask.detach().cpu().bool(),
                        m=forward.num_measurements if settings.problem == "cs" else None, seed=seed)


def state_from_inversion(*, generator: str, observation: Observation, problem: dict, inversion: InversionResult) -> RunState:
    """The state after ``invert``."""
    fine_tuned = {k: v.detach().cpu() for k, v in inversion.generator.state_dict().items()} if inversion.fine_tuned else None
    return RunState(generator=generator, generator_state=fine_tuned, problem=problem, y=observation.y.detach().cpu(),
                    display=observation.display.detach().cpu(), clean=None if observation.clean is None else observation.clean.cpu(),
                    source=observation.source, latent=inversion.latent.detach().cpu(), image=inversion.image.detach().cpu(),
                    inversion=inversion_report(inversion))


def save_state(folder: Path, state: RunState) -> Path:
    path = Path(folder) / STATE_FILE
    save_tensors({"version": __version__, **{f: getattr(state, f) for f in state.__dataclass_fields__}}, path)
    return path


def load_state(folder: Path | str) -> RunState:
    """Read ``state.pt`` from a stage's output folder.

    Raises:
        ValueError: The folder is not an output folder of an earlier stage (one line).
    """
    path = check_stage_folder(folder)
    check_state_archive(path)  # before torch reads it: a compressed record can hide gigabytes in a small file
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means a damaged file
        raise ValueError(f"{path} cannot be read ({type(exc).__name__}); rerun the stage that wrote it") from None
    data = dict(check_state(data, path))
    data.pop("version", None)
    return RunState(**data)


def generator_to_load(state: RunState, given: str | None = None, trust: bool = False) -> str:
    """The generator of ``state`` if it may be loaded: stage folders are data, never code.

    A registered name loads only this package's code. A file (a pickle, a TorchScript archive) or a
    factory ``package.module:function`` runs code when loaded, so a folder naming one (it may come from
    someone else, or have been edited) is loaded only when the user repeats it (``--generator``) or says
    they trust the folder (``--trust-generator``).

    Raises:
        ValueError: ``given`` differs from the recorded generator, or the recorded one is a file or a
            factory and neither ``given`` nor ``trust`` allows it (one line saying what to pass).
    """
    recorded = state.generator
    if given is not None and given != recorded:
        raise ValueError(f"--generator {display_path(given)} is not the generator this run was made with "
                         f"({display_path(recorded)}): pass --generator {shlex.quote(display_path(recorded))}")
    if is_registered(recorded) or given == recorded or trust:
        return recorded
    raise ValueError(f"this run's {STATE_FILE} names the generator {display_path(recorded)}, a file or factory that runs code "
                     f"when loaded: to load it, pass --generator {shlex.quote(display_path(recorded))} (or --trust-generator)")


def check_run_generator(state: RunState, generator: torch.nn.Module) -> None:
    """Refuse a generator whose latent size or image shape is not those of the run (a tampered or mixed-up folder)."""
    n, shape = state.latent.numel(), tuple(state.problem["image_shape"])
    if int(generator.latent_dim) != n:
        raise ValueError(f"the latent in {STATE_FILE} has {n} values but generator {display_path(state.generator)} takes "
                         f"latents of {int(generator.latent_dim)}: rerun the stage that wrote it")
    if tuple(generator.image_shape) != shape:
        raise ValueError(f"the problem in {STATE_FILE} is for images {shape} but generator {display_path(state.generator)} "
                         f"makes {tuple(generator.image_shape)}: rerun the stage that wrote it")


def load_run_state_into(state: RunState, generator: torch.nn.Module) -> torch.nn.Module:
    """Load the run's fine-tuned weights (if any) into ``generator``, checked name by name and shape by shape.

    Raises:
        ValueError: The weights in state.pt do not fit the generator (one line).
    """
    if state.generator_state is not None:
        own = generator.state_dict()
        if set(own) != set(state.generator_state):
            raise ValueError(f"the fine-tuned weights in {STATE_FILE} are not those of generator {display_path(state.generator)} "
                             "(other parameter names): rerun the stage that wrote it")
        for name, value in state.generator_state.items():
            if value.shape != own[name].shape or value.dtype != own[name].dtype:
                raise ValueError(f"the fine-tuned weight {name!r} in {STATE_FILE} has shape {tuple(value.shape)} "
                                 f"({value.dtype}), the generator's {tuple(own[name].shape)} ({own[name].dtype}): "
                                 "rerun the stage that wrote it")
        generator.load_state_dict(state.generator_state)
    return generator.eval()


def solutions_bytes(num_solutions: int, image_shape: Sequence[int], latent_dim: int) -> int:
    """An upper estimate of the memory ``num_solutions`` solutions take while a run renders and writes them."""
    return int(num_solutions) * (int(np.prod(image_shape)) + int(latent_dim)) * 8 * _SOLUTION_COPIES


# --- reports ------------------------------------------------------------------------------------------


def inversion_report(inversion: InversionResult) -> dict:
    return {"measurement_mse": inversion.measurement_mse, "lr_psnr": lr_psnr(max(inversion.measurement_mse, 1e-300)),
            "seconds": inversion.seconds, "timings": dict(inversion.timings), "steps_run": inversion.steps_run,
            "stopped_early": inversion.stopped_early, "gauss_newton_steps": inversion.gauss_newton_steps,
            "fine_tuned": inversion.fine_tuned, "fine_tune_reason": inversion.fine_tune_reason,
            "back_projected": inversion.back_projected, "restart_mses": list(inversion.restart_mses)}


def _fine_tune_warnings(inversion: dict) -> list[str]:
    """The warning that IAGAN fine-tuned the generator, with its reason (from :func:`inversion_report`'s entry)."""
    if not inversion.get("fine_tuned"):
        return []
    reason = inversion.get("fine_tune_reason") or "asked for"
    return [f"IAGAN fine-tuned a copy of the generator ({reason}): the solutions are images of the fine-tuned copy "
            "(its weights are saved with the run), not of the generator as shipped"]


def _eigen_warnings(name: str, eig: EigenResult | None) -> list[str]:
    """What an eigensolve's report says of pairs that are not all there: those dropped beyond H_Y's numerical rank
    (:func:`~hvp_explore.exploration.explorer.numerical_rank_part`; a fact of the operator, not a fault), those the
    solver did not find, and those kept that did not reach tol (used as computed)."""
    if eig is None:
        return []
    out = []
    dropped = int(eig.info.get("dropped", 0))
    if dropped:
        rank = int(eig.info.get("numerical_rank", eig.k))
        out.append(f"{name}: {dropped} of the {eig.requested} eigenpairs asked for lie beyond its numerical rank {rank} (eigenvalues "
                   f"below {H_Y_RANK_RTOL:g} of the largest: directions that leave the measurements unchanged) and are dropped; the {eig.k} kept "
                   "are removed from the directions")
    missing = eig.requested - eig.k - dropped
    if missing > 0:
        out.append(f"{name}: the solver {eig.solver} returned {eig.requested - missing} of the {eig.requested} eigenpairs asked for")
    bad = int((~eig.converged).sum())
    if bad:
        out.append(f"{name}: {bad} of the {eig.k} eigenpairs kept did not reach tol={eig.tol:g} with {eig.solver} (largest relative "
                   f"residual {eig.max_relative_residual:.2e}); they are used as computed")
    return out


def _eigen_summary(result: EigenResult, seconds: float | None = None) -> dict:
    """An eigensolve's report entry. ``seconds`` is the whole stage (building the operator, fitting its blocks to the
    memory budget, solving), as in ``timings``; ``solver_seconds`` the eigensolver's share."""
    return {"k": result.k, "solver": result.solver, "matvecs": result.matvecs, "check_matvecs": result.check_matvecs,
            "seconds": result.seconds if seconds is None else seconds, "solver_seconds": result.seconds,
            "max_residual": float(result.residuals.max()) if result.k else None,
            "max_relative_residual": result.max_relative_residual, "all_converged": result.all_converged,
            "residuals": result.residuals.tolist(), "values": result.values.tolist()}


def write_inversion(folder: Path, state: RunState, *, tau: float, command: str, face: dict | None = None) -> dict:
    """``invert``'s folder: observation.png, solution.png, state.pt, report.json (``face``: where ``--face`` cropped INPUT)."""
    save_image(state.display, folder / "observation.png")
    save_image(state.image[0], folder / "solution.png")
    if state.clean is not None:
        save_image(state.clean, folder / "ground_truth.png")
    save_state(folder, state)
    mse = state.inversion["measurement_mse"]
    report = {"command": command, "generator": state.generator,
              "problem": {**_problem_json(state.problem), **({"face": face} if face is not None else {})}, "tau": tau,
              **state.inversion, "feasible": mse <= tau,
              "timings": {**state.inversion["timings"], "total": state.inversion["seconds"]},
              "warnings": _fine_tune_warnings(state.inversion) + ([] if mse <= tau else [_not_feasible(mse, tau)])}
    write_json_atomic(folder / "report.json", report)
    return report


def _not_feasible(mse: float, tau: float) -> str:
    return (f"the first solution did not reach tau: its measurement MSE {mse:.2e} exceeds tau = {tau:g}, so no step from it "
            "can be feasible (the generator may not approach this observation; try more --restarts or --steps, or --iagan on)")


def _save_latents(folder: Path, latents: torch.Tensor, files: list[str], labels: list[str], etas, mses,
                  generator_state: dict | None = None) -> dict:
    """solutions.npz (and generator_state.pt for a fine-tuned generator): what regenerates every solution.

    Returns:
        The report entry that says where they are.
    """
    np.savez(folder / SOLUTIONS_FILE, latents=latents.detach().cpu().numpy(), files=np.array(files, dtype=str),
             directions=np.array(labels, dtype=str), eta=np.array([np.nan if e is None else e for e in etas], dtype=np.float64),
             measurement_mse=np.array(mses, dtype=np.float64))
    if generator_state is not None:
        save_tensors({k: v.detach().cpu() for k, v in generator_state.items()}, folder / GENERATOR_STATE_FILE)
    return {"file": SOLUTIONS_FILE, "generator_state": GENERATOR_STATE_FILE if generator_state is not None else None,
            "regenerate": "G(latents[i]) is files[i], G the run's generator (with the weights of generator_state when set)"}


def _problem_json(problem: dict) -> dict:
    return {k: (f"mask with {int(v.sum())} missing pixels" if isinstance(v, torch.Tensor) else v) for k, v in problem.items()}


def _truth_mse(images: torch.Tensor, clean: torch.Tensor) -> list[float]:
    """Pixel MSE of each image (N, C, H, W) to the ground truth on the [0, 1] scale (images in [-1, 1]), as report.json's
    ``ground_truth_mse``."""
    clean = clean.to(images.device, images.dtype).reshape(1, *images.shape[1:])
    return ((images - clean) / 2).pow(2).flatten(1).mean(1).tolist()


def pulse_measures(result: PulseResult, observation: Observation, *, metric=None) -> dict:
    """The numbers of ``pulse``'s report.json, from the 8-bit images its PNGs hold, as an exploration's are.

    Returns:
        ``images`` (the quantized images, N x C x H x W), ``measurement_mse`` and ``feasible`` (of the PNGs, the
        measurement MSE on the [0, 1] scale against tau), ``first`` (the run that plays the first solution: the first
        feasible one, else run 1), ``perceptual_distance`` (of each run to it; None without a ``metric``),
        ``pairwise`` (min, mean, max of the perceptual distances between the feasible runs: the solutions found),
        ``ground_truth_mse`` (``{"first_solution", "solutions"}`` on the [0, 1] scale, None without a truth).
    """
    from hvp_explore.exploration.distances import PAIRWISE_MATRIX_MAX, distances_to, pairwise_distances, pairwise_summary

    with torch.no_grad():
        images = quantize(result.images.detach())  # what solutions/*.png hold
        forward = observation.forward.to(images.device)
        mse = measurement_mse(forward, images, observation.y.to(images.device, images.dtype)).to(torch.float64).cpu()
    feasible = mse <= result.eps
    found = torch.nonzero(feasible).flatten().tolist()
    first = found[0] if found else 0
    to_first, pairwise = None, {"min": None, "mean": None, "max": None}
    if metric is not None:  # on the generator's device, where the Explorer put the metric too
        to_first = distances_to(metric, images, images[first : first + 1]).cpu()
        if len(found) <= PAIRWISE_MATRIX_MAX:  # the (N, N) matrix of the solutions found, as explore forms it
            pairwise = _pairwise_summary(pairwise_distances(metric, images[found]).cpu())
        else:
            pairwise = pairwise_summary(metric, images[found])
    truth = None
    if observation.clean is not None:
        values = _truth_mse(images, observation.clean)
        truth = {"first_solution": values[first], "solutions": values}
    return {"images": images, "measurement_mse": mse, "feasible": feasible, "first": first,
            "perceptual_distance": None if to_first is None else to_first.tolist(), "pairwise": pairwise,
            "ground_truth_mse": truth}


def write_pulse(folder: Path, result: PulseResult, observation: Observation, *, generator: str, problem: dict, command: str,
                html: bool = False, metric=None, metric_name: str | None = None) -> dict:
    """``pulse``'s folder: solutions/*.png, sheet.png, report.json (the exploration's ``solutions`` schema), and with
    ``html`` report.html (the same gallery as an exploration's, to compare side by side).

    The report's figures are those of an exploration's report, on the same scales (:func:`pulse_measures`): the
    measurement MSE of each saved PNG (the run's own float figure is ``run_measurement_mse``), feasibility and its
    rate from it, and, with a ``metric``, each solution's ``perceptual_distance`` to the first solution and the
    ``pairwise_perceptual_distance`` summary; ``ground_truth_mse`` when the truth is known (``--from-clean``).
    """
    measures = pulse_measures(result, observation, metric=metric)
    images_q, mse, is_feasible, first = measures["images"], measures["measurement_mse"], measures["feasible"], measures["first"]
    distances = measures["perceptual_distance"]
    solutions = []
    for i in range(result.runs):
        name = f"solutions/{i + 1:03d}.png"
        save_image(images_q[i], folder / name)
        solutions.append({"file": name, "direction": f"run{i + 1}", "eta": None, "measurement_mse": float(mse[i]),
                          "lr_psnr": lr_psnr(max(float(mse[i]), 1e-300)), "feasible": bool(is_feasible[i]),
                          "perceptual_distance": None if distances is None else distances[i], "step_status": None,
                          "run_measurement_mse": float(result.measurement_mse[i]), "seconds": float(result.seconds_per_run[i]),
                          "steps": int(result.steps_run[i])})
    feasible = [i for i in range(result.runs) if is_feasible[i]]
    images, labels = [observation.display], ["observation"]
    if observation.clean is not None:
        images.append(observation.clean)
        labels.append("ground truth")
    if len(feasible) >= 2:
        tile, largest = spread_image([images_q[i] for i in feasible])
        images.append(tile)
        labels.append(f"spread (std)\nmax {largest:.2f}")
    shown = min(result.runs, SHEET_SOLUTIONS)
    images += [images_q[i] for i in range(shown)]
    labels += [f"run {i + 1}{'' if is_feasible[i] else ' (infeasible)'}\nMSE {float(mse[i]):.1e}" for i in range(shown)]
    title = (f"PULSE: {result.runs} independent inversions of {_problem_name(observation)}, generator {generator}\n"
             f"{len(feasible)} of {result.runs} with measurement MSE <= tau = {result.eps:g}" + _face_line(observation))
    if result.runs > SHEET_SOLUTIONS:
        title += f"\nthe first {SHEET_SOLUTIONS} of {result.runs} runs (all in solutions/)"
    contact_sheet(images, labels, folder / "sheet.png", title=title)
    latents = _save_latents(folder, result.latents, [s_["file"] for s_ in solutions], [s_["direction"] for s_ in solutions],
                            [None] * result.runs, [s_["measurement_mse"] for s_ in solutions])
    extra = {"metric": metric_name, "first_solution": {"file": solutions[first]["file"], "direction": solutions[first]["direction"],
                                                       "measurement_mse": solutions[first]["measurement_mse"],
                                                       "why": "the first run that met tau (run 1 when none did)"},
             "num_solutions": result.runs, "pairwise_perceptual_distance": measures["pairwise"]}
    if measures["ground_truth_mse"] is not None:
        extra["ground_truth_mse"] = measures["ground_truth_mse"]
    report = {"command": command, "method": "pulse", "generator": generator,
              "problem": {**_problem_json(problem), **({"face": observation.face} if observation.face is not None else {})},
              "tau": result.eps,
              "runs": result.runs, "batch": result.batch, "feasibility_rate": len(feasible) / result.runs,
              "num_feasible": len(feasible), "timings": {"runs": result.seconds, "total": result.seconds,
                                                         "per_run": float(result.seconds_per_run.mean())},
              **extra, "solutions": solutions, "latents": latents}
    write_json_atomic(folder / "report.json", report)
    if html:
        write_report_html(folder, report, title=f"PULSE: {result.runs} independent inversions, generator {generator}\n"
                          f"{len(feasible)} of {result.runs} with measurement MSE <= tau = {result.eps:g}", first_file=None,
                          observation=observation.display, ground_truth=observation.clean, kind="pulse")
    return report


def eigen_state(eig_y: EigenResult, eig_x: EigenResult) -> dict:
    return {f"{key}_{name}": getattr(res, attr).detach().cpu() for name, res in (("y", eig_y), ("x", eig_x))
            for key, attr in (("values", "values"), ("vectors", "vectors"), ("residuals", "residuals"), ("converged", "converged"))}


def write_eigen(folder: Path, state: RunState, eig_y: EigenResult, eig_x: EigenResult, *, command: str,
                timings: dict | None = None) -> dict:
    """``eig``'s folder: eigenpairs.npz, spectra.png, coupling.png, state.pt, report.json.

    ``timings`` are the stage's seconds (``eigen_y``, ``eigen_x``), reported as each operator's ``seconds``.
    """
    timings = dict(timings or {})
    np.savez(folder / "eigenpairs.npz", **{k: v.numpy() for k, v in state.eigen.items()})
    plot_spectra(eig_y.values, eig_x.values, folder / "spectra.png")
    plot_coupling(coupling_matrix(eig_y.vectors, eig_x.vectors), folder / "coupling.png")
    save_state(folder, state)
    report = {"command": command, "generator": state.generator, "metric": state.metric,
              "eigen": {"H_Y": _eigen_summary(eig_y, timings.get("eigen_y")),
                        "H_X": _eigen_summary(eig_x, timings.get("eigen_x"))},
              "timings": {**timings, "total": sum(timings.values())} if timings else {}}
    write_json_atomic(folder / "report.json", report)
    return report


def _solution_entries(solutions: tuple[Solution, ...] | list[Solution]) -> list[dict]:
    return [{"file": f"solutions/{i + 1:03d}.png", "direction": s.direction, "eta": s.eta, "measurement_mse": s.measurement_mse,
             "lr_psnr": lr_psnr(max(s.measurement_mse, 1e-300)), "feasible": s.feasible,
             "perceptual_distance": s.perceptual_distance, "step_status": s.status} for i, s in enumerate(solutions)]


def _pairwise_summary(pairwise: torch.Tensor | dict) -> dict:
    """min, mean and max of the distances between distinct solutions: from the (N, N) matrix, or as already summarised."""
    if isinstance(pairwise, dict):
        return {key: pairwise.get(key) for key in ("min", "mean", "max")}
    N = pairwise.shape[0]
    if N < 2:
        return {"min": None, "mean": None, "max": None}
    iu = torch.triu_indices(N, N, 1)
    vals = pairwise[iu[0], iu[1]]
    return {"min": float(vals.min()), "mean": float(vals.mean()), "max": float(vals.max())}


def exploration_report(result: ExplorationResult, observation: Observation, *, generator: str, metric: str, command: str) -> dict:
    """The ``report.json`` of ``explore`` (SPEC section 6 schema, plus diagnostics)."""
    s = result.settings
    report = {
        "command": command,
        "version": __version__,
        "tau": s["tau"],
        "problem": observation.describe(),
        "generator": generator,
        "metric": metric,
        "mode": s["mode"],
        "settings": s,
        "timings": result.timings,
        # the first solution's numbers are those of first_solution.png (8-bit); the inversion's own float image is kept too
        "first_solution": {"file": "first_solution.png", **inversion_report(result.inversion),
                           "inversion_measurement_mse": result.inversion.measurement_mse, "measurement_mse": result.first_mse,
                           "lr_psnr": lr_psnr(max(result.first_mse, 1e-300))},
        "eigen": {"H_Y": _eigen_summary(result.eig_y, result.timings.get("eigen_y")),
                  "H_X": _eigen_summary(result.eig_x, result.timings.get("eigen_x")),
                  **({"pencil": _eigen_summary(result.pencil)} if result.pencil is not None else {})},
        "directions": [_direction_entry(d) for d in result.directions],
        "solutions": _solution_entries(result.solutions),
        "rejected_directions": list(result.rejected),
        "num_solutions": len(result.solutions),
        "num_feasible": sum(s_.feasible for s_ in result.solutions),
        "pairwise_perceptual_distance": _pairwise_summary(result.pairwise),
        # where the diversity lives: the share of the change that the measurements cannot see (hole / null space of A)
        "unobserved": result.unobserved,
    }
    if result.walk is not None:
        report["walks"] = _walk_summary(result)
    report["warnings"] = _warnings(result)
    if observation.clean is not None:
        clean = observation.clean.to(result.first_image.dtype)
        report["ground_truth_mse"] = {"first_solution": float(((result.first_image - clean) / 2).pow(2).mean()),
                                      "solutions": [float(((s_.image - clean) / 2).pow(2).mean()) for s_ in result.solutions]}
    return report


def _warnings(result: ExplorationResult) -> list[str]:
    """Numerical faults that did not stop the run (unconverged eigenpairs, directions without a feasible step), and IAGAN."""
    out = _fine_tune_warnings(inversion_report(result.inversion))
    tau = result.settings["tau"]
    if result.inversion.measurement_mse > tau:
        out.append(f"the first solution's measurement MSE {result.inversion.measurement_mse:.2e} exceeds tau = {tau:g}: no step from "
                   "it can be feasible (try more --restarts or --steps)")
    for name, eig in (("H_Y", result.eig_y), ("H_X", result.eig_x), ("pencil", result.pencil)):
        out += _eigen_warnings(name, eig)
    if result.rejected:
        out.append(f"{len(result.rejected)} signed direction(s) admitted no feasible step: "
                   + ", ".join(r["direction"] for r in result.rejected))
    if len(result.solutions) < result.settings["num_solutions"]:
        out.append(f"only {len(result.solutions)} of the {result.settings['num_solutions']} requested solutions were found")
    return out


def _direction_entry(d: Direction) -> dict:
    entry: dict[str, Any] = {"label": d.label, "mode": d.mode, "index": d.index}
    if d.combination is not None:
        entry["combination"] = list(d.combination)
    if d.projection is not None:
        entry.update(removed=list(d.projection.removed), max_cosine_before=float(d.projection.cosines_before.abs().max()),
                     max_cosine_after=float(d.projection.cosines_after.abs().max()), passes=d.projection.passes)
    return entry


def write_exploration(folder: Path, result: ExplorationResult, observation: Observation, *, generator: str, metric: str,
                      command: str, quiet: bool | None = None, html: bool = False, frames: Frames | None = None) -> dict:
    """``explore``'s folder: solutions/*.png, first_solution.png, observation.png, sheet.png, spectra.png,
    coupling.png, correlation.png, walks.png (with feasible walks), eigenpairs.npz, directions.npz,
    solutions.npz (the latents, and generator_state.pt when IAGAN fine-tuned the generator), report.json, and with
    ``html`` report.html (its sliders from ``frames``, whose cost joins report.json's timings)."""
    folder = Path(folder)
    _solution_images(folder, observation, result.first_image, result.first_mse, result.solutions,
                     title=_sheet_title(result.settings, observation, generator, result.unobserved), quiet=quiet)
    inversion = result.inversion
    latents = _solution_latents(folder, result.solutions, inversion.generator.state_dict() if inversion.fine_tuned else None)
    plot_spectra(result.eig_y.values, result.eig_x.values, folder / "spectra.png")
    C = result.coupling
    plot_coupling(C, folder / "coupling.png", threshold=result.settings["threshold"])
    _correlation_figure(folder / "correlation.png", result.directions[0], result.eig_y, result.eig_x,
                        threshold=result.settings["threshold"])
    np.savez(folder / "eigenpairs.npz", **{k: v.numpy() for k, v in eigen_state(result.eig_y, result.eig_x).items()})
    np.savez(folder / "directions.npz", vectors=torch.stack([d_.vector for d_ in result.directions], 1).numpy(),
             labels=np.array([d_.label for d_ in result.directions]), coupling=C.numpy())
    report = exploration_report(result, observation, generator=generator, metric=metric, command=command)
    report["latents"] = latents
    if result.walk is not None:
        _walk_figure(folder / "walks.png", result.walk, result.first_image)
        report["walks"]["figure"] = "walks.png"
    _with_frames(report, frames)
    write_json_atomic(folder / "report.json", report)
    if html:
        write_report_html(folder, report, title=_sheet_title(result.settings, observation, generator, result.unobserved), frames=frames,
                          ground_truth=observation.clean)
    return report


def _with_frames(report: dict, frames: Frames | None) -> None:
    """report.json's ``frames`` entry, and their seconds in ``timings`` (``total`` included): the page's extra cost."""
    if frames is None:
        return
    report["frames"] = frames.summary()
    timings = dict(report.get("timings") or {})
    timings["frames"] = frames.seconds
    if "total" in timings:
        timings["total"] = timings.pop("total") + frames.seconds  # kept last, as the other stages print it
    report["timings"] = timings


def _walk_figure(path: Path, walk, first_image: torch.Tensor) -> None:
    """One row per walker: the first solution, the walker's start (an e-GLASS solution), then its point after each step."""
    W, T = walk.images.shape[:2]
    images, labels = [], []
    for w in range(W):
        images.append(first_image)
        labels.append("first solution" if w == 0 else "")
        for t in range(T):
            still = t > 0 and bool(torch.equal(walk.paths[w, t], walk.paths[w, t - 1]))
            images.append(walk.images[w, t])
            labels.append(f"walker {w + 1} start" if t == 0 else f"step {t}" + (" (stuck)" if still else ""))
    contact_sheet(images, labels, path, columns=T + 1,
                  title=f"feasible walks: {W} walkers x {T - 1} steps, every point a solution (8-bit PNG meets tau)")


def _walk_summary(result: ExplorationResult) -> dict | None:
    """report.json's ``walks``: what the walks did and how many of the N solutions came from them."""
    walk = result.walk
    if walk is None:
        return None
    return {"walkers": int(walk.paths.shape[0]), "steps": int(walk.paths.shape[1]) - 1, "points": len(walk.points),
            "stuck_steps": walk.stuck, "products": walk.products, "seconds": walk.seconds,
            "selected": sum(s_.status == "walk" for s_ in result.solutions),
            "all_points_feasible": all(p.feasible for p in walk.points)}


def _solution_latents(folder: Path, solutions: Sequence[Solution], generator_state: dict | None) -> dict:
    latents = torch.stack([s_.latent.detach().cpu() for s_ in solutions]) if solutions else torch.zeros(0, 0)
    return _save_latents(folder, latents, [f"solutions/{i + 1:03d}.png" for i in range(len(solutions))],
                         [s_.direction for s_ in solutions], [s_.eta for s_ in solutions],
                         [s_.measurement_mse for s_ in solutions], generator_state)


def with_eigen(state: RunState, metric: str, eig_y: EigenResult, eig_x: EigenResult) -> RunState:
    return replace(state, metric=metric, eigen=eigen_state(eig_y, eig_x))


def eigen_results(state: RunState) -> tuple[EigenResult, EigenResult]:
    """Rebuild the two :class:`EigenResult` of ``state.eigen`` (timings not kept)."""
    if not state.eigen:
        raise ValueError("this run has no eigenpairs yet: run 'hvp-explore eig' on it first")
    out = []
    for name in ("y", "x"):
        e = state.eigen
        out.append(EigenResult(values=e[f"values_{name}"], vectors=e[f"vectors_{name}"], residuals=e[f"residuals_{name}"],
                               converged=e[f"converged_{name}"], matvecs=0, check_matvecs=0, seconds=0.0, solver="loaded",
                               tol=float("nan"), requested=int(e[f"values_{name}"].numel())))
    return out[0], out[1]


def write_coupling(folder: Path, eig_y: EigenResult, eig_x: EigenResult, *, threshold: float, command: str) -> dict:
    """``couple``'s folder: coupling.png (|C| heat map), coupling.npy, report.json."""
    C = coupling_matrix(eig_y.vectors, eig_x.vectors)
    np.save(folder / "coupling.npy", C.numpy())
    plot_coupling(C, folder / "coupling.png", threshold=threshold)
    report = {"command": command, "shape": list(C.shape), "threshold": threshold,
              "significant": int((C.abs() > threshold).sum()), "max_abs": float(C.abs().max()),
              "max_abs_per_H_X_vector": C.abs().max(0).values.tolist()}
    write_json_atomic(folder / "report.json", report)
    return report


def with_directions(state: RunState, directions: list[Direction]) -> RunState:
    return replace(state, directions={"vectors": torch.stack([d.vector for d in directions], 1).cpu(),
                                      "labels": [d.label for d in directions], "indices": [d.index for d in directions],
                                      "combinations": [d.combination for d in directions], "mode": directions[0].mode})


def directions_of(state: RunState) -> list[Direction]:
    """The directions stored by ``project``."""
    if not state.directions:
        raise ValueError("this run has no directions yet: run 'hvp-explore project' on it first")
    d = state.directions
    combinations = d.get("combinations") or [None] * len(d["labels"])
    return [Direction(d["vectors"][:, i], d["mode"], label, index, combination=c)
            for i, (label, index, c) in enumerate(zip(d["labels"], d["indices"], combinations))]


def write_directions(folder: Path, state: RunState, directions: list[Direction], eig_y: EigenResult, eig_x: EigenResult, *,
                     threshold: float, command: str) -> dict:
    """``project``'s folder: directions.npz, correlation.png, state.pt, report.json."""
    np.savez(folder / "directions.npz", vectors=state.directions["vectors"].numpy(), labels=np.array(state.directions["labels"]))
    _correlation_figure(folder / "correlation.png", directions[0], eig_y, eig_x, threshold=threshold)
    save_state(folder, state)
    report = {"command": command, "directions": [_direction_entry(d) for d in directions]}
    write_json_atomic(folder / "report.json", report)
    return report


def _correlation_figure(path: Path, first: Direction, eig_y: EigenResult, eig_x: EigenResult, *, threshold: float) -> None:
    """The paper's Fig. 1: cosines of the starting eigenvector and of the final direction with both eigenbases."""
    U, V = eig_y.vectors, eig_x.vectors
    index = first.index if first.mode not in PENCIL_MODES else 1
    start, d = V[:, index - 1], first.vector.to(V.dtype)
    plot_correlation((U.T @ start).abs(), (U.T @ d).abs(), (V.T @ start).abs(), (V.T @ d).abs(), path, start_label=f"$v^{{{index}}}$",
                     final_label=f"$d$ ({first.label})", threshold=threshold if first.mode == "eglass" else None)


def write_render(folder: Path, state: RunState, observation: Observation, solutions: list[Solution], rejected: list[dict],
                 pairwise: torch.Tensor, timings: dict, *, tau: float, command: str, html: bool = False,
                 frames: Frames | None = None) -> dict:
    """``render``'s folder: solutions/*.png, sheet.png, solutions.npz (and generator_state.pt), report.json, and with
    ``html`` report.html (its sliders from ``frames``)."""
    title = _sheet_title({"mode": state.directions.get("mode"), "num_solutions": len(solutions), "tau": tau}, observation, state.generator)
    _solution_images(folder, observation, state.image, state.inversion["measurement_mse"], solutions, title=title)
    report = {"command": command, "tau": tau, "generator": state.generator, "metric": state.metric, "timings": timings,
              "solutions": _solution_entries(solutions), "rejected_directions": rejected,
              "pairwise_perceptual_distance": _pairwise_summary(pairwise),
              "latents": _solution_latents(folder, solutions, state.generator_state)}
    _with_frames(report, frames)
    write_json_atomic(folder / "report.json", report)
    if html:
        write_report_html(folder, report, title=f"{len(solutions)} solutions along the directions of a 'project' stage, "
                          f"generator {state.generator}\nevery one with measurement MSE <= tau = {tau:g}", frames=frames,
                          ground_truth=observation.clean, kind="render")
    return report


_PROBLEM_NAMES = {"sr": "super-resolution x{factor}", "inpaint": "inpainting", "cs": "compressed sensing (m = {m})"}


def _problem_name(observation: Observation) -> str:
    """The problem in words, for sheet titles: ``super-resolution x4``, ``inpainting``, ``compressed sensing (m = 200)``."""
    forward = observation.forward
    return _PROBLEM_NAMES.get(forward.kind, forward.kind).format(factor=getattr(forward, "factor", ""), m=forward.num_measurements)
_MODE_NAMES = {"eglass": "e-GLASS", "generalized": "generalized directions", "unobserved": "unobserved-part directions",
               "raw": "raw H_X eigenvectors"}


def _sheet_title(settings: dict, observation: Observation, generator: str, unobserved: dict | None = None) -> str:
    forward = observation.forward
    problem = _PROBLEM_NAMES.get(forward.kind, forward.kind).format(factor=getattr(forward, "factor", ""), m=forward.num_measurements)
    return (f"{_MODE_NAMES.get(settings['mode'], settings['mode'])}: {settings['num_solutions']} solutions of {problem}, "
            f"generator {generator}\n"
            f"every one with measurement MSE <= tau = {settings['tau']:g} ({describe_tau(settings['tau'])})"
            + _unobserved_line(unobserved, forward)
            + _face_line(observation))


def _unobserved_line(unobserved: dict | None, forward) -> str:
    """The sheet's line on where the diversity lives: the change's share in what the measurements cannot see."""
    if not unobserved or unobserved.get("pairwise") is None:
        return ""
    part = "the hole" if forward.kind == "inpaint" else "the null space of A"
    return (f"\n{100 * unobserved['pairwise']:.0f}% of the differences between solutions lie in {part} "
            f"({100 * unobserved['dimension_share']:.0f}% of the image)")


def _face_line(observation: Observation) -> str:
    """The sheet's line for ``--face``: where in the photograph the face was cropped."""
    face = observation.face
    if face is None:
        return ""
    return ("\n{}: face crop x,y,w,h = {},{},{},{} of {}x{} (--face)".format(Path(observation.source).name, *face["crop_box"],
                                                                       *face["image_size"]))


def _solution_images(folder: Path, observation: Observation, first_image: torch.Tensor, first_mse: float,
                     solutions: list[Solution] | tuple[Solution, ...], *, title: str | None = None,
                     quiet: bool | None = None) -> None:
    """observation.png, first_solution.png, solutions/*.png (each at the generator's resolution) and the contact sheet.

    The sheet shows observation | ground truth (when known) | first solution | spread (per-pixel
    standard deviation over all the solutions, :func:`~hvp_explore.io.figures.spread_image`) | the
    first :data:`SHEET_SOLUTIONS` solutions. The PNGs are written one by one, with a progress bar.
    """
    first_image = first_image.reshape(first_image.shape[-3:])
    save_image(observation.display, folder / "observation.png")
    save_image(first_image, folder / "first_solution.png")
    with progress_bar("writing solutions", len(solutions), quiet=quiet) as bar:
        for i, s in enumerate(solutions):
            save_image(s.image, folder / f"solutions/{i + 1:03d}.png")
            bar.advance()
    images, labels = [observation.display], ["observation"]
    if observation.clean is not None:
        images.append(observation.clean)
        labels.append("ground truth")
    images.append(first_image)
    labels.append(f"first solution\nMSE {first_mse:.1e}")
    if len(solutions) >= 2:
        tile, largest = spread_image([s.image for s in solutions])
        images.append(tile)
        labels.append(f"spread (std)\nmax {largest:.2f}")
    for s in solutions[:SHEET_SOLUTIONS]:
        images.append(s.image)
        labels.append(f"{s.direction}  eta {s.eta:+.1f}\nMSE {s.measurement_mse:.1e}")
    if len(solutions) > SHEET_SOLUTIONS:
        title = (title + "\n" if title else "") + f"the first {SHEET_SOLUTIONS} of {len(solutions)} solutions (all in solutions/)"
    contact_sheet(images, labels, folder / "sheet.png", title=title)


def write_geometry(folder: Path, result, *, generator: str, metric: str, command: str, seed: int) -> dict:
    """``geometry``'s folder: spectra.png, overlaps.png, axes.png (image strips), geometry.npz, report.json.

    ``result`` is a :class:`~hvp_explore.geometry.LatentGeometry`. The npz holds plain arrays only (the latents,
    eigenpairs, overlaps, the average metric's eigenpairs, the strips' steps): ``np.load`` reads it without pickle.
    """
    from hvp_explore.io.figures import plot_latent_spectra, plot_overlaps

    arrays = {"latents": result.latents, "values": result.values, "vectors": result.vectors, "overlaps": result.overlaps,
              "average_values": result.average_values, "average_vectors": result.average_vectors,
              "alignment": result.alignment, "strip_steps": result.strip_steps}
    if result.spectra is not None:
        arrays["spectra"] = result.spectra
    np.savez(folder / "geometry.npz", **{k: v.detach().cpu().numpy() for k, v in arrays.items()})
    plot_latent_spectra(result.values, result.average_values, folder / "spectra.png")
    plot_overlaps(result.overlaps, folder / "overlaps.png", baseline=result.random_overlap)
    axes, starts, steps = result.strips.shape[:3]
    if axes:
        images, labels = [], []
        for a in range(axes):
            for s in range(starts):
                for t in range(steps):
                    images.append(result.strips[a, s, t])
                    head = f"axis {a + 1}, z{s + 1}\n" if t == 0 else "\n"
                    labels.append(f"{head}t = {float(result.strip_steps[a, t]):+.2f}")
        contact_sheet(images, labels, folder / "axes.png", columns=steps,
                      title=f"Top {axes} axes of the average metric ({generator}, {metric}), from {starts} latents")
    report = {"command": command, "generator": generator, "metric": metric, "seed": seed, **result.summary(),
              "timings": result.seconds, "solvers": result.info["solvers"], "tol": result.info["tol"],
              "average_converged": result.info["average_converged"],
              "strips": {"axes": axes, "latents": starts, "steps": result.strip_steps.tolist(), "span": result.info["span"],
                         "perceptual_budget": result.info["perceptual_budget"]},
              "per_latent": {"values": result.values.tolist(), "converged": result.converged.tolist(),
                             "ratio": result.anisotropy["ratio"].tolist(), "top_share": result.anisotropy["top_share"].tolist(),
                             "effective_dim": result.anisotropy["effective_dim"].tolist(), "alignment": result.alignment.tolist()},
              "average_values": result.average_values.tolist(), "overlaps": result.overlaps.tolist()}
    write_json_atomic(folder / "report.json", report)
    return report

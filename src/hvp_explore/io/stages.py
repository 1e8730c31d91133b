"""Files that pass a run between the command-line stages, and the writers of every output folder.

Each stage writes a folder; ``state.pt`` in it carries what later stages need (the problem, the
observation, the generator's name and, when fine-tuned, its weights, the first solution, and the
eigenpairs or directions once computed), saved with tensors and plain Python values only so it loads
with ``torch.load(weights_only=True)``. Human- and NumPy-friendly copies sit beside it
(``eigenpairs.npz``, ``directions.npz``, PNGs, ``report.json``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hvp_explore._version import __version__
from hvp_explore.io.atomic import write_json_atomic
from hvp_explore.eigen.solvers import EigenResult
from hvp_explore.exploration import Direction, ExplorationResult, Solution, coupling_matrix
from hvp_explore.generators import load_generator
from hvp_explore.io.images import save_image
from hvp_explore.inversion import InversionResult
from hvp_explore.metrics import load_metric
from hvp_explore.problems.observation import Observation
from hvp_explore.problems import lr_psnr, make_problem
from hvp_explore.settings import ProblemSettings
from hvp_explore.inversion import PulseResult
from hvp_explore.io.figures import contact_sheet, plot_correlation, plot_coupling, plot_spectra, spread_image

__all__ = ["RunState", "save_state", "load_state", "problem_state", "state_from_inversion", "write_inversion", "write_pulse", "write_eigen",
           "write_exploration", "exploration_report"]

STATE_FILE = "state.pt"


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
        """Rebuild the observation (forward operator included)."""
        forward = make_problem(self.problem["kind"], tuple(self.problem["image_shape"]),
                               **{k: v for k, v in self.problem.items() if k not in ("kind", "image_shape")})
        return Observation(forward, self.y, self.display, self.clean, self.source)

    def load_generator(self, *, device: str = "cpu") -> torch.nn.Module:
        """The generator of this run (with the fine-tuned weights when IAGAN ran)."""
        G = load_generator(self.generator, device=device)
        if self.generator_state is not None:
            G.load_state_dict(self.generator_state)
        return G.eval()

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
    torch.save({"version": __version__, **{f: getattr(state, f) for f in state.__dataclass_fields__}}, path)
    return path


def load_state(folder: Path | str) -> RunState:
    """Read ``state.pt`` from a stage's output folder.

    Raises:
        ValueError: The folder is not an output folder of an earlier stage (one line).
    """
    folder = Path(folder)
    path = folder / STATE_FILE if folder.is_dir() else folder
    if not path.is_file():
        raise ValueError(f"{folder} holds no {STATE_FILE}: give the output folder of 'hvp-explore invert' (or a later stage)")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means a damaged file
        raise ValueError(f"{path} cannot be read ({type(exc).__name__}); rerun the stage that wrote it") from None
    data.pop("version", None)
    return RunState(**data)


# --- reports ------------------------------------------------------------------------------------------


def inversion_report(inversion: InversionResult) -> dict:
    return {"measurement_mse": inversion.measurement_mse, "lr_psnr": lr_psnr(max(inversion.measurement_mse, 1e-300)),
            "seconds": inversion.seconds, "timings": dict(inversion.timings), "steps_run": inversion.steps_run,
            "stopped_early": inversion.stopped_early, "gauss_newton_steps": inversion.gauss_newton_steps,
            "fine_tuned": inversion.fine_tuned,
            "back_projected": inversion.back_projected, "restart_mses": list(inversion.restart_mses)}


def _eigen_summary(result: EigenResult) -> dict:
    return {"k": result.k, "solver": result.solver, "matvecs": result.matvecs, "check_matvecs": result.check_matvecs,
            "seconds": result.seconds, "max_residual": float(result.residuals.max()) if result.k else None,
            "max_relative_residual": result.max_relative_residual, "all_converged": result.all_converged,
            "residuals": result.residuals.tolist(), "values": result.values.tolist()}


def write_inversion(folder: Path, state: RunState, *, tau: float, command: str) -> dict:
    """``invert``'s folder: observation.png, solution.png, state.pt, report.json."""
    save_image(state.display, folder / "observation.png")
    save_image(state.image[0], folder / "solution.png")
    if state.clean is not None:
        save_image(state.clean, folder / "ground_truth.png")
    save_state(folder, state)
    report = {"command": command, "generator": state.generator, "problem": _problem_json(state.problem), "tau": tau,
              **state.inversion, "feasible": state.inversion["measurement_mse"] <= tau,
              "timings": {**state.inversion["timings"], "total": state.inversion["seconds"]}}
    write_json_atomic(folder / "report.json", report)
    return report


def _problem_json(problem: dict) -> dict:
    return {k: (f"mask with {int(v.sum())} missing pixels" if isinstance(v, torch.Tensor) else v) for k, v in problem.items()}


def write_pulse(folder: Path, result: PulseResult, observation: Observation, *, generator: str, problem: dict, command: str) -> dict:
    """``pulse``'s folder: solutions/*.png, sheet.png, report.json (the exploration's ``solutions`` schema)."""
    solutions = []
    for i in range(result.runs):
        name = f"solutions/{i + 1:03d}.png"
        save_image(result.images[i], folder / name)
        solutions.append({"file": name, "direction": f"run{i + 1}", "eta": None, "measurement_mse": float(result.measurement_mse[i]),
                          "feasible": bool(result.feasible[i]), "seconds": float(result.seconds_per_run[i]),
                          "steps": int(result.steps_run[i])})
    feasible = [i for i in range(result.runs) if result.feasible[i]]
    images = [observation.display] + [result.images[i] for i in range(result.runs)]
    labels = ["observation"] + [f"run {i + 1}{'' if result.feasible[i] else ' (infeasible)'}\nMSE {float(result.measurement_mse[i]):.1e}"
                                for i in range(result.runs)]
    contact_sheet(images, labels, folder / "sheet.png")
    report = {"command": command, "method": "pulse", "generator": generator, "problem": _problem_json(problem), "tau": result.eps,
              "runs": result.runs, "batch": result.batch, "feasibility_rate": result.feasibility_rate,
              "num_feasible": len(feasible), "timings": {"runs": result.seconds, "total": result.seconds,
                                                         "per_run": float(result.seconds_per_run.mean())},
              "solutions": solutions}
    write_json_atomic(folder / "report.json", report)
    return report


def eigen_state(eig_y: EigenResult, eig_x: EigenResult) -> dict:
    return {f"{key}_{name}": getattr(res, attr).detach().cpu() for name, res in (("y", eig_y), ("x", eig_x))
            for key, attr in (("values", "values"), ("vectors", "vectors"), ("residuals", "residuals"), ("converged", "converged"))}


def write_eigen(folder: Path, state: RunState, eig_y: EigenResult, eig_x: EigenResult, *, command: str) -> dict:
    """``eig``'s folder: eigenpairs.npz, spectra.png, coupling.png, state.pt, report.json."""
    np.savez(folder / "eigenpairs.npz", **{k: v.numpy() for k, v in state.eigen.items()})
    plot_spectra(eig_y.values, eig_x.values, folder / "spectra.png")
    plot_coupling(coupling_matrix(eig_y.vectors, eig_x.vectors), folder / "coupling.png")
    save_state(folder, state)
    report = {"command": command, "generator": state.generator, "metric": state.metric,
              "eigen": {"H_Y": _eigen_summary(eig_y), "H_X": _eigen_summary(eig_x)}}
    write_json_atomic(folder / "report.json", report)
    return report


def _solution_entries(solutions: tuple[Solution, ...] | list[Solution]) -> list[dict]:
    return [{"file": f"solutions/{i + 1:03d}.png", "direction": s.direction, "eta": s.eta, "measurement_mse": s.measurement_mse,
             "lr_psnr": lr_psnr(max(s.measurement_mse, 1e-300)), "feasible": s.feasible,
             "perceptual_distance": s.perceptual_distance, "step_status": s.status} for i, s in enumerate(solutions)]


def _pairwise_summary(pairwise: torch.Tensor) -> dict:
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
        "eigen": {"H_Y": _eigen_summary(result.eig_y), "H_X": _eigen_summary(result.eig_x),
                  **({"pencil": _eigen_summary(result.pencil)} if result.pencil is not None else {})},
        "directions": [_direction_entry(d) for d in result.directions],
        "solutions": _solution_entries(result.solutions),
        "rejected_directions": list(result.rejected),
        "num_solutions": len(result.solutions),
        "num_feasible": sum(s_.feasible for s_ in result.solutions),
        "pairwise_perceptual_distance": _pairwise_summary(result.pairwise),
    }
    report["warnings"] = _warnings(result)
    if observation.clean is not None:
        clean = observation.clean.to(result.first_image.dtype)
        report["ground_truth_mse"] = {"first_solution": float(((result.first_image - clean) / 2).pow(2).mean()),
                                      "solutions": [float(((s_.image - clean) / 2).pow(2).mean()) for s_ in result.solutions]}
    return report


def _warnings(result: ExplorationResult) -> list[str]:
    """Numerical faults that did not stop the run: unconverged eigenpairs, directions without a feasible step."""
    out = []
    tau = result.settings["tau"]
    if result.inversion.measurement_mse > tau:
        out.append(f"the first solution's measurement MSE {result.inversion.measurement_mse:.2e} exceeds tau = {tau:g}: no step from "
                   "it can be feasible (try more --restarts or --steps)")
    for name, eig in (("H_Y", result.eig_y), ("H_X", result.eig_x), ("pencil", result.pencil)):
        if eig is not None and not eig.all_converged:
            bad = int((~eig.converged).sum()) + eig.requested - eig.k
            out.append(f"{name}: {bad} of {eig.requested} eigenpairs did not reach tol={eig.tol:g} with {eig.solver} "
                       f"(largest relative residual {eig.max_relative_residual:.2e}); they are used as computed")
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
                      command: str) -> dict:
    """``explore``'s folder: solutions/*.png, first_solution.png, observation.png, sheet.png, spectra.png,
    coupling.png, correlation.png, eigenpairs.npz, directions.npz, report.json."""
    folder = Path(folder)
    _solution_images(folder, observation, result.first_image, result.first_mse, result.solutions,
                     title=_sheet_title(result.settings, observation, generator))
    plot_spectra(result.eig_y.values, result.eig_x.values, folder / "spectra.png")
    C = result.coupling
    plot_coupling(C, folder / "coupling.png", threshold=result.settings["threshold"])
    _correlation_figure(folder / "correlation.png", result.directions[0], result.eig_y, result.eig_x,
                        threshold=result.settings["threshold"])
    np.savez(folder / "eigenpairs.npz", **{k: v.numpy() for k, v in eigen_state(result.eig_y, result.eig_x).items()})
    np.savez(folder / "directions.npz", vectors=torch.stack([d_.vector for d_ in result.directions], 1).numpy(),
             labels=np.array([d_.label for d_ in result.directions]), coupling=C.numpy())
    report = exploration_report(result, observation, generator=generator, metric=metric, command=command)
    write_json_atomic(folder / "report.json", report)
    return report


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
    index = first.index if first.mode != "generalized" else 1
    start, d = V[:, index - 1], first.vector.to(V.dtype)
    plot_correlation((U.T @ start).abs(), (U.T @ d).abs(), (V.T @ start).abs(), (V.T @ d).abs(), path, start_label=f"$v^{{{index}}}$",
                     final_label=f"$d$ ({first.label})", threshold=threshold if first.mode == "eglass" else None)


def write_render(folder: Path, state: RunState, observation: Observation, solutions: list[Solution], rejected: list[dict],
                 pairwise: torch.Tensor, timings: dict, *, tau: float, command: str) -> dict:
    """``render``'s folder: solutions/*.png, sheet.png, report.json."""
    _solution_images(folder, observation, state.image, state.inversion["measurement_mse"], solutions)
    report = {"command": command, "tau": tau, "generator": state.generator, "metric": state.metric, "timings": timings,
              "solutions": _solution_entries(solutions), "rejected_directions": rejected,
              "pairwise_perceptual_distance": _pairwise_summary(pairwise)}
    write_json_atomic(folder / "report.json", report)
    return report


_PROBLEM_NAMES = {"sr": "super-resolution x{factor}", "inpaint": "inpainting", "cs": "compressed sensing (m = {m})"}
_MODE_NAMES = {"eglass": "e-GLASS", "generalized": "generalized directions", "raw": "raw H_X eigenvectors"}


def _sheet_title(settings: dict, observation: Observation, generator: str) -> str:
    forward = observation.forward
    problem = _PROBLEM_NAMES.get(forward.kind, forward.kind).format(factor=getattr(forward, "factor", ""), m=forward.num_measurements)
    return (f"{_MODE_NAMES.get(settings['mode'], settings['mode'])}: {settings['num_solutions']} solutions of {problem}, "
            f"generator {generator}\n"
            f"every one with measurement MSE <= tau = {settings['tau']:g}")


def _solution_images(folder: Path, observation: Observation, first_image: torch.Tensor, first_mse: float,
                     solutions: list[Solution] | tuple[Solution, ...], *, title: str | None = None) -> None:
    """observation.png, first_solution.png, solutions/*.png (each at its own resolution) and the contact sheet.

    The sheet shows observation | ground truth (when known) | first solution | spread (per-pixel
    standard deviation over the solutions, :func:`~hvp_explore.io.figures.spread_image`) | solutions.
    """
    first_image = first_image.reshape(first_image.shape[-3:])
    save_image(observation.display, folder / "observation.png")
    save_image(first_image, folder / "first_solution.png")
    for i, s in enumerate(solutions):
        save_image(s.image, folder / f"solutions/{i + 1:03d}.png")
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
    for s in solutions:
        images.append(s.image)
        labels.append(f"{s.direction}  eta {s.eta:+.1f}\nMSE {s.measurement_mse:.1e}")
    contact_sheet(images, labels, folder / "sheet.png", title=title)

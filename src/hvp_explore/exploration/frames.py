r"""Frames along the explored directions and the walkers' paths: what ``report.html``'s sliders show.

For each explored direction :math:`d` with step cap :math:`\eta_{max}(d)`, the frames are the images
:math:`G(z_0 + \eta d)` for :math:`\eta` on an even grid from :math:`-\eta_{max}` to :math:`+\eta_{max}`,
with :math:`\eta = 0` (the first solution) and the delivered steps of both signs inserted, so that the
slider passes through every solution the run returned. The grid's frames are rendered in batched
forward passes of the generator (all directions together); the delivered steps and the first solution
reuse the images already computed, so they cost nothing and *are* the saved solutions.

Every frame is rounded to 8 bits, as the PNGs a run delivers are, and its measurement MSE is computed
from those 8-bit values: the slider's readout is the number a reader of the frame's PNG recomputes,
and "under tau" on the page means what it means for ``solutions/*.png``.

A feasible walk (``--walk-steps``) gets one strip per walker, along its path: its images are those of
the walk (8-bit already), so only their measurements are computed (no generator pass).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from hvp_explore.exploration.directions import Direction
from hvp_explore.io.images import quantize
from hvp_explore.operators.base import as_latent
from hvp_explore.operators.memory import batch_limit
from hvp_explore.problems import measurement_mse
from hvp_explore.settings import DEFAULT_FRAMES, DEFAULT_TAU, FRAME_DIRECTIONS_MAX

__all__ = ["FrameStrip", "Frames", "exploration_frames"]


@dataclass(frozen=True)
class FrameStrip:
    """The frames of one slider.

    Attributes:
        label: The direction's label (``"v10"``, ``"c3"``) or the walker's (``"walker 1"``).
        kind: ``"direction"`` or ``"walk"``.
        etas: (F,) float64 positions, ascending: signed steps along the direction, or step numbers of a walk.
        images: (F, C, H, W) the frames as 8-bit PNGs hold them, in [-1, 1].
        measurement_mse: (F,) float64 measurement MSE of each 8-bit frame ([0, 1] scale).
        marks: ``(frame index, solution label)`` of the frames that are delivered solutions.
        start: Index of the frame the slider starts at (the first solution, or the walker's start).
        eta_max: The direction's step cap (None for a walk).
    """

    label: str
    kind: str
    etas: torch.Tensor
    images: torch.Tensor
    measurement_mse: torch.Tensor
    marks: tuple[tuple[int, str], ...]
    start: int
    eta_max: float | None


@dataclass(frozen=True)
class Frames:
    """Every slider of a run (see :func:`exploration_frames`).

    Attributes:
        strips: One per explored direction (at most ``max_directions``), then one per walker.
        tau: The feasibility threshold the readouts compare with.
        per_direction: Frames on each direction's grid (before the delivered steps are inserted).
        forward_passes: Images the generator rendered for the frames (the extra cost of the page).
        omitted: Explored directions left without a slider (beyond ``max_directions``).
        seconds: Wall time.
    """

    strips: tuple[FrameStrip, ...]
    tau: float
    per_direction: int
    forward_passes: int
    omitted: int
    seconds: float

    def summary(self) -> dict:
        """``report.json``'s ``frames`` entry (the seconds go to its ``timings``, so that equal seeds give equal entries)."""
        return {"per_direction": self.per_direction, "directions": sum(s.kind == "direction" for s in self.strips),
                "walkers": sum(s.kind == "walk" for s in self.strips), "omitted_directions": self.omitted,
                "frames": sum(int(s.etas.numel()) for s in self.strips), "forward_passes": self.forward_passes}


def _grid(cap: float, special: torch.Tensor, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The even grid on [-cap, cap] merged with the special positions; grid points that coincide with one are dropped.

    Returns:
        ``(etas, is_special)``, ascending.
    """
    grid = torch.linspace(-cap, cap, count, dtype=torch.float64)
    near = (grid[:, None] - special[None, :]).abs().min(1).values <= 1e-9 * max(cap, 1e-300)
    etas = torch.cat([grid[~near], special])
    flags = torch.cat([torch.zeros(int((~near).sum()), dtype=torch.bool), torch.ones(special.numel(), dtype=torch.bool)])
    order = torch.argsort(etas, stable=True)
    return etas[order], flags[order]


def exploration_frames(generator: Callable, forward: Callable, y: torch.Tensor, z0: torch.Tensor, first_image: torch.Tensor,
                       directions: Sequence[Direction], solutions: Sequence, *, eta_max: Sequence[float] | torch.Tensor,
                       tau: float = DEFAULT_TAU, frames: int = DEFAULT_FRAMES, max_directions: int = FRAME_DIRECTIONS_MAX,
                       walk=None, chunk: int | None = None) -> Frames:
    """The frames of every slider of a run's report (see the module docstring).

    Args:
        generator: Latents (B, n) -> images (B, C, H, W) in [-1, 1] (the run's, fine-tuned when IAGAN ran).
        forward: The linear forward operator.
        y: The observation's measurements.
        z0: The first solution's latent (n,).
        first_image: The first solution's image (C, H, W) or (1, C, H, W); rounded to 8 bits here.
        directions: The run's directions, in order (``eta_max[i]`` is the cap of ``directions[i]``).
        solutions: The run's solutions (:class:`~hvp_explore.exploration.Solution`): a direction gets a slider
            when a solution was delivered along it (in the order of the solutions), and its steps are marked.
        eta_max: The step cap of each direction (the frames span ``[-eta_max, +eta_max]``).
        tau: Feasibility threshold of the readouts.
        frames: Frames on each direction's even grid (at least 2).
        max_directions: Directions with a slider, at most (the first ones, in the order of the solutions).
        walk: A :class:`~hvp_explore.exploration.walks.WalkResult`: one slider per walker along its path.
        chunk: Largest batch of one forward pass (default :func:`~hvp_explore.operators.memory.batch_limit`, else 256).

    Raises:
        ValueError: ``frames`` below 2, ``max_directions`` below 0, or caps that do not match the directions.
    """
    if isinstance(frames, bool) or not isinstance(frames, int) or frames < 2:
        raise ValueError(f"frames per direction must be an integer of at least 2, got {frames!r}")
    if isinstance(max_directions, bool) or not isinstance(max_directions, int) or max_directions < 0:
        raise ValueError(f"max_directions must be a non-negative integer, got {max_directions!r}")
    caps = torch.as_tensor(eta_max, dtype=torch.float64).reshape(-1).cpu()
    if caps.numel() != len(directions):
        raise ValueError(f"got {caps.numel()} step caps for {len(directions)} directions")
    t0 = time.perf_counter()
    z0 = as_latent(z0)
    first = quantize(first_image.reshape(1, *first_image.shape[-3:]))
    with torch.no_grad():
        first_mse = float(measurement_mse(forward, first, y)[0])
    by_label = {d.label: i for i, d in enumerate(directions)}
    # the directions with a delivered solution, in the order of the solutions; their steps and images
    delivered: dict[int, list] = {}
    for s in solutions:
        i = by_label.get(s.direction.lstrip("+-"))
        if s.status != "walk" and i is not None:
            delivered.setdefault(i, []).append(s)
    shown = list(delivered)[:max_directions]
    plans, latents = [], []
    for i in shown:
        special = torch.tensor([0.0] + [s.eta for s in delivered[i]], dtype=torch.float64)
        special = special.unique()  # sorted; a step delivered twice is one frame
        etas, flags = _grid(float(caps[i]), special, frames)
        d = directions[i].vector.to(device=z0.device, dtype=z0.dtype)
        rendered = etas[~flags]
        latents.append(z0[None] + rendered.to(device=z0.device, dtype=z0.dtype)[:, None] * d[None])
        plans.append((i, etas, flags))
    Z = torch.cat(latents) if latents else z0[:0].reshape(0, z0.numel())
    chunk = chunk or batch_limit(first) or 256
    images, mses = [], []
    with torch.no_grad():
        for start in range(0, Z.shape[0], chunk):
            x = quantize(generator(Z[start:start + chunk]))  # rounded as a PNG of it would be
            images.append(x)
            mses.append(measurement_mse(forward, x, y).to(torch.float64))
    rendered_images = torch.cat(images).cpu() if images else first[:0].cpu()
    rendered_mses = torch.cat(mses).cpu() if mses else torch.zeros(0, dtype=torch.float64)
    strips, offset = [], 0
    for i, etas, flags in plans:
        label = directions[i].label
        F = etas.numel()
        strip_images = torch.empty((F, *first.shape[1:]), dtype=rendered_images.dtype)
        strip_mses = torch.empty(F, dtype=torch.float64)
        count = int((~flags).sum())
        strip_images[~flags] = rendered_images[offset:offset + count]
        strip_mses[~flags] = rendered_mses[offset:offset + count]
        offset += count
        marks = []
        for j in torch.nonzero(flags).flatten().tolist():
            match = [s for s in delivered[i] if s.eta == float(etas[j])]
            if match:  # a delivered solution: its own image and MSE, those of its PNG
                strip_images[j] = match[0].image.detach().cpu().to(strip_images.dtype)
                strip_mses[j] = match[0].measurement_mse
                marks.append((j, match[0].direction))
            else:  # eta = 0: the first solution
                strip_images[j] = first[0].cpu().to(strip_images.dtype)
                strip_mses[j] = first_mse
        start = int(torch.nonzero(etas == 0).flatten()[0])
        strips.append(FrameStrip(label=label, kind="direction", etas=etas, images=strip_images, measurement_mse=strip_mses,
                                 marks=tuple(marks), start=start, eta_max=float(caps[i])))
    if walk is not None:
        strips.extend(_walk_strips(forward, y, walk, solutions))
    return Frames(strips=tuple(strips), tau=float(tau), per_direction=frames, forward_passes=int(Z.shape[0]),
                  omitted=len(delivered) - len(shown), seconds=time.perf_counter() - t0)


def _walk_strips(forward: Callable, y: torch.Tensor, walk, solutions: Sequence) -> list[FrameStrip]:
    """One strip per walker along its path: the walk's own 8-bit images, their measurements computed once."""
    W, T = walk.images.shape[:2]
    selected = {s.direction for s in solutions if s.status == "walk"}
    with torch.no_grad():
        flat = walk.images.reshape(W * T, *walk.images.shape[2:]).to(y.device)
        mses = measurement_mse(forward, flat.to(y.dtype), y).to(torch.float64).cpu().reshape(W, T)
    strips = []
    for w in range(W):
        marks = tuple((t, f"w{w + 1}.{t}") for t in range(1, T) if f"w{w + 1}.{t}" in selected)
        strips.append(FrameStrip(label=f"walker {w + 1}", kind="walk", etas=torch.arange(T, dtype=torch.float64),
                                 images=walk.images[w].detach().cpu(), measurement_mse=mses[w], marks=marks, start=0,
                                 eta_max=None))
    return strips

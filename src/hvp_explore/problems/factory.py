"""Noise, synthetic observations, and the factory of forward operators used by the command line."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hvp_explore.problems._checks import batched, check_image_shape, is_int
from hvp_explore.problems.base import ForwardOperator
from hvp_explore.problems.compressed_sensing import CompressedSensing
from hvp_explore.problems.inpainting import Inpainting
from hvp_explore.problems.super_resolution import SuperResolution
from hvp_explore.settings import DEFAULT_FACTOR, DEFAULT_KERNEL, PROBLEM_KINDS

__all__ = ["add_noise", "observe", "make_problem"]


def add_noise(y: torch.Tensor, sigma: float, seed: int = 0) -> torch.Tensor:
    """Additive white Gaussian noise with standard deviation ``sigma`` on the [0, 1] pixel scale.

    Measurements are of images in [-1, 1], twice the [0, 1] scale, so the noise added is
    ``2 sigma n`` with ``n ~ N(0, I)`` drawn on the CPU from ``torch.Generator().manual_seed(seed)``
    (identical on every device).
    """
    if not isinstance(sigma, (int, float)) or isinstance(sigma, bool) or not math.isfinite(sigma) or sigma < 0:
        raise ValueError(f"the noise level sigma must be a finite number >= 0 (on the [0, 1] pixel scale), got {sigma!r}")
    if sigma == 0:
        return y.clone()
    gen = torch.Generator().manual_seed(int(seed))
    noise = torch.randn(y.shape, generator=gen, dtype=torch.float64)
    return y + (2.0 * sigma * noise).to(device=y.device, dtype=y.dtype)


def observe(problem: ForwardOperator, x_clean: torch.Tensor, *, noise_sigma: float = 0.0, seed: int = 0) -> torch.Tensor:
    """Synthesise an observation ``y = A x + 2 sigma n`` from a clean image (``--from-clean``).

    Args:
        problem: The forward operator.
        x_clean: (C, H, W) or (B, C, H, W) in [-1, 1].
        noise_sigma: Noise standard deviation on the [0, 1] scale (see :func:`add_noise`).
        seed: Seed of the noise.

    Returns:
        Measurements (*measurement_shape) for an unbatched image, else (B, *measurement_shape).
    """
    x, squeezed = batched(x_clean, 3)
    if x.dim() != 4 or tuple(x.shape[1:]) != problem.image_shape:
        c, h, w = problem.image_shape
        raise ValueError(f"the clean image has shape {tuple(x_clean.shape)}, but the problem expects images of {h}x{w} with {c} channel(s)")
    with torch.no_grad():
        y = add_noise(problem(x), noise_sigma, seed)
    return y[0] if squeezed else y


def _parse_box(box: Any) -> tuple[int, int, int, int]:
    if isinstance(box, str):
        parts = box.split(",")
        try:
            values = tuple(int(p) for p in parts)
        except ValueError:
            values = ()
        if len(values) != 4:
            raise ValueError(f"a box is four integers 'x,y,w,h' (top-left corner, width, height), got {box!r}")
        return values  # type: ignore[return-value]
    values = tuple(box)
    if len(values) != 4 or not all(is_int(v) for v in values):
        raise ValueError(f"a box is four integers (x, y, w, h) (top-left corner, width, height), got {box!r}")
    return tuple(int(v) for v in values)  # type: ignore[return-value]


def make_problem(
    kind: str,
    image_shape: Sequence[int],
    *,
    factor: int = DEFAULT_FACTOR,
    kernel: str = DEFAULT_KERNEL,
    box: str | Sequence[int] | None = None,
    mask: Path | str | torch.Tensor | np.ndarray | None = None,
    m: int | None = None,
    seed: int = 0,
) -> ForwardOperator:
    """Build the forward operator of a problem kind (used by the command line).

    Args:
        kind: ``"sr"`` (uses ``factor``, ``kernel``), ``"inpaint"`` (exactly one of ``box`` or
            ``mask``), or ``"cs"`` (uses ``m``, ``seed``).
        image_shape: (C, H, W) of the generator's images.
        factor: Super-resolution factor, a positive integer dividing H and W.
        kernel: Super-resolution kernel, ``"area"`` or ``"bicubic"``.
        box: Missing rectangle ``(x, y, w, h)`` or the string ``"x,y,w,h"``.
        mask: Path of a mask PNG (white = missing) or a bool array (H, W), True = missing.
        m: Number of compressed-sensing measurements, 1..C*H*W.
        seed: Seed of the compressed-sensing matrix.

    Raises:
        ValueError: One line saying which option is wrong and what is expected.
    """
    if kind not in PROBLEM_KINDS:
        raise ValueError(f"unknown problem {kind!r}: expected one of {', '.join(PROBLEM_KINDS)}")
    check_image_shape(image_shape)
    if kind != "inpaint" and (box is not None or mask is not None):
        raise ValueError(f"a box or a mask applies to the inpainting problem only, not to {kind!r}")
    if kind != "cs" and m is not None:
        raise ValueError(f"the number of measurements m applies to compressed sensing ('cs') only, not to {kind!r}")
    if kind == "sr":
        return SuperResolution(image_shape, factor, kernel)
    if kind == "inpaint":
        if (box is None) == (mask is None):
            raise ValueError("inpainting needs exactly one of a mask (PNG, white = missing) or a box 'x,y,w,h'")
        if box is not None:
            return Inpainting.from_box(image_shape, *_parse_box(box))
        if isinstance(mask, (str, Path)):
            return Inpainting.from_mask_png(image_shape, mask)
        return Inpainting(image_shape, torch.as_tensor(mask))
    if m is None:
        raise ValueError(f"compressed sensing needs the number of measurements m (1..{math.prod(tuple(image_shape))})")
    return CompressedSensing(image_shape, m, seed)

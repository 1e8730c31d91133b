"""Argument checks shared by the forward operators (private plumbing)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch


def is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def check_image_shape(image_shape: Sequence[int]) -> tuple[int, int, int]:
    shape = tuple(image_shape)
    if len(shape) != 3 or not all(is_int(s) and s >= 1 for s in shape):
        raise ValueError(f"image_shape must be three positive integers (C, H, W), got {image_shape!r}")
    return tuple(int(s) for s in shape)  # type: ignore[return-value]


def batched(t: torch.Tensor, item_dims: int) -> tuple[torch.Tensor, bool]:
    """Add a batch dimension to an unbatched item; report whether one was added."""
    if t.dim() == item_dims:
        return t.unsqueeze(0), True
    return t, False

"""Inpainting: the measurements are the kept pixels of every channel (a mask PNG, or a box)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hvp_explore.io.images import load_mask
from hvp_explore.problems._checks import batched, check_image_shape, is_int
from hvp_explore.problems.base import ForwardOperator

__all__ = ["Inpainting"]


class Inpainting(ForwardOperator):
    """Masking: the measurements are the kept (not missing) pixels of every channel.

    With ``K`` the number of kept pixel positions, ``A`` selects ``C K`` entries of the image,
    ordered channel by channel and row-major within a channel. Its rows are distinct unit vectors,
    so ``A A^T = I``, ``A^T`` places the values back and puts zeros at the missing pixels, and
    ``A^+ = A^T``.

    Args:
        image_shape: (C, H, W).
        missing: Bool tensor (H, W), True at the MISSING pixels (the white region of a mask PNG).

    Measurements have shape (C * K,).
    """

    kind = "inpaint"

    def __init__(self, image_shape: Sequence[int], missing: torch.Tensor | np.ndarray):
        channels, height, width = check_image_shape(image_shape)
        missing = torch.as_tensor(missing)
        if missing.dtype != torch.bool:
            raise ValueError(f"missing must be a bool tensor (True = missing pixel), got dtype {missing.dtype}")
        if tuple(missing.shape) != (height, width):
            got = "x".join(map(str, missing.shape))
            raise ValueError(f"the mask is {got} (HxW) but the image is {height}x{width}: the mask must have the image's size")
        n_missing = int(missing.sum())
        if n_missing == height * width:
            raise ValueError("the mask marks every pixel as missing: nothing is observed, keep some pixels")
        if n_missing == 0:
            raise ValueError("the mask marks no pixel as missing: there is nothing to inpaint")
        kept = (~missing).flatten().nonzero().squeeze(1)
        super().__init__(image_shape, (channels * kept.numel(),))
        self.box: tuple[int, int, int, int] | None = None
        self.register_buffer("missing", missing.clone(), persistent=False)
        self.register_buffer("kept_index", kept, persistent=False)
        # Position of each pixel in the kept list, or K for a missing pixel (it then reads an
        # appended zero): the adjoint becomes a gather, which vmap and jvp handle well.
        slot = torch.full((height * width,), kept.numel(), dtype=torch.long)
        slot[kept] = torch.arange(kept.numel())
        self.register_buffer("slot_index", slot, persistent=False)

    @classmethod
    def from_box(cls, image_shape: Sequence[int], x: int, y: int, w: int, h: int) -> Inpainting:
        """A missing rectangle: columns ``x .. x + w - 1`` and rows ``y .. y + h - 1`` (0-based, from the top left)."""
        _, height, width = check_image_shape(image_shape)
        if not all(is_int(v) for v in (x, y, w, h)):
            raise ValueError(f"a box needs four integers x,y,w,h, got {(x, y, w, h)!r}")
        if w < 1 or h < 1 or x < 0 or y < 0 or x + w > width or y + h > height:
            raise ValueError(
                f"box x={x},y={y},w={w},h={h} does not lie inside the {height}x{width} image: "
                f"expected w, h >= 1, 0 <= x, x + w <= {width}, 0 <= y, y + h <= {height}"
            )
        missing = torch.zeros(height, width, dtype=torch.bool)
        missing[y : y + h, x : x + w] = True
        op = cls(image_shape, missing)
        op.box = (int(x), int(y), int(w), int(h))
        return op

    @classmethod
    def from_mask_png(cls, image_shape: Sequence[int], path: Path | str) -> Inpainting:
        """A mask PNG of the image's size; white (>= 128 in gray) marks the missing pixels."""
        _, height, width = check_image_shape(image_shape)
        missing = load_mask(path)
        if tuple(missing.shape) != (height, width):
            raise ValueError(
                f"mask {path} is {missing.shape[0]}x{missing.shape[1]} (HxW) but the image is {height}x{width}: "
                "the mask must have the image's size"
            )
        return cls(image_shape, missing)

    @property
    def num_kept(self) -> int:
        """K, the number of kept pixel positions."""
        return self.kept_index.numel()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_images(x)
        return x.flatten(2).index_select(2, self.kept_index).flatten(1)

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        self._check_measurements(y)
        channels, height, width = self.image_shape
        values = y.reshape(y.shape[0], channels, self.num_kept)
        padded = torch.cat([values, values.new_zeros(y.shape[0], channels, 1)], dim=2)
        return padded.index_select(2, self.slot_index).reshape(y.shape[0], channels, height, width)

    def pinv(self, y: torch.Tensor) -> torch.Tensor:
        return self.adjoint(y)

    def observation_image(self, y: torch.Tensor) -> torch.Tensor:
        """The kept pixels in place and the missing region mid-gray (0 in [-1, 1])."""
        return self.adjoint(y).clamp(-1.0, 1.0)

    def measurements_from_image(self, img: torch.Tensor) -> torch.Tensor:
        """The kept pixels of a masked observation image of the full size (the missing region is ignored)."""
        batch, squeezed = batched(img, 3)
        if batch.dim() != 4 or tuple(batch.shape[1:]) != self.image_shape:
            c, h, w = self.image_shape
            got = tuple(img.shape[-3:]) if img.dim() >= 3 else tuple(img.shape)
            raise ValueError(f"the masked observation has shape {got} (C, H, W), but inpainting expects {h}x{w} with {c} channel(s)")
        y = self(batch)
        return y[0] if squeezed else y

    def describe(self) -> dict[str, Any]:
        info = {**super().describe(), "missing_pixels": int(self.missing.sum())}
        if self.box is not None:
            info["box"] = list(self.box)
        return info

"""Compressed sensing: m seeded Gaussian projections of the image with unit-norm columns."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from hvp_explore.problems._checks import check_image_shape, is_int
from hvp_explore.problems.base import ForwardOperator

__all__ = ["CompressedSensing"]


class CompressedSensing(ForwardOperator):
    """A seeded Gaussian matrix ``A`` (m, N) with unit-norm columns, N = C H W: ``y = A vec(x)``.

    ``A^T y`` is reshaped to an image. For ``m <= N`` the rows are independent with probability 1,
    so ``A^+ = A^T (A A^T)^{-1}``; it is applied through the QR factorisation ``A^T = Q R``
    (``A A^T = R^T R``), computed once in float64, with two triangular solves.

    The matrix is drawn on the CPU from ``torch.Generator().manual_seed(seed)`` in float64, so it is
    the same on every device. It takes ``8 m N`` bytes.

    Args:
        image_shape: (C, H, W).
        m: Number of measurements, 1 <= m <= N.
        seed: Seed of the matrix.
    """

    kind = "cs"

    def __init__(self, image_shape: Sequence[int], m: int, seed: int = 0):
        shape = check_image_shape(image_shape)
        n = math.prod(shape)
        if not is_int(m) or not 1 <= m <= n:
            raise ValueError(f"the number of measurements m must be an integer in 1..{n} (C*H*W of {shape}), got {m!r}")
        if not is_int(seed):
            raise ValueError(f"seed must be an integer, got {seed!r}")
        super().__init__(shape, (int(m),))
        self.seed = int(seed)
        gen = torch.Generator().manual_seed(self.seed)
        a = torch.randn(int(m), n, generator=gen, dtype=torch.float64)
        a = a / a.norm(dim=0, keepdim=True)
        _, r = torch.linalg.qr(a.T)
        self.register_buffer("matrix", a, persistent=False)
        self.register_buffer("r_factor", r, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_images(x)
        return x.flatten(1) @ self.matrix.to(x.dtype).T

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        self._check_measurements(y)
        return (y @ self.matrix.to(y.dtype)).reshape(y.shape[0], *self.image_shape)

    def pinv(self, y: torch.Tensor) -> torch.Tensor:
        self._check_measurements(y)
        # Solve in float64 (or better): R^T R w = y, then x = A^T w.
        dtype = torch.promote_types(y.dtype, self.r_factor.dtype)
        r = self.r_factor.to(dtype)
        w = torch.linalg.solve_triangular(r.T, y.to(dtype).T, upper=False)
        w = torch.linalg.solve_triangular(r, w, upper=True)
        x = (w.T @ self.matrix.to(dtype)).to(y.dtype)
        return x.reshape(y.shape[0], *self.image_shape)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "m": self.num_measurements, "seed": self.seed}

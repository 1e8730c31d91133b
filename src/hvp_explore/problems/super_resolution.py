"""Super-resolution: downsampling by an integer factor (area or PULSE's bicubic kernel), per channel."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from hvp_explore.problems._checks import batched, check_image_shape, is_int
from hvp_explore.problems.base import ForwardOperator
from hvp_explore.settings import DEFAULT_KERNEL, SR_KERNELS

__all__ = ["SuperResolution", "keys_cubic"]


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def _area_matrix(n_out: int, factor: int) -> torch.Tensor:
    """(n_out, n_out * factor) matrix averaging consecutive blocks of ``factor`` samples."""
    return torch.kron(torch.eye(n_out, dtype=torch.float64), torch.full((1, factor), 1.0 / factor, dtype=torch.float64))


def keys_cubic(t: torch.Tensor, a: float = -0.5) -> torch.Tensor:
    """Keys' cubic convolution kernel (a = -0.5 is Catmull-Rom, PULSE's choice).

    ``W(t) = (a+2)|t|^3 - (a+3)|t|^2 + 1`` for ``|t| <= 1``, ``a|t|^3 - 5a|t|^2 + 8a|t| - 4a`` for
    ``1 < |t| < 2``, and 0 otherwise.
    """
    s = t.abs()
    inner = (a + 2) * s**3 - (a + 3) * s**2 + 1
    outer = a * s**3 - 5 * a * s**2 + 8 * a * s - 4 * a
    return torch.where(s <= 1, inner, torch.where(s < 2, outer, torch.zeros_like(s)))


def _reflect_index(i: int, n: int) -> int:
    """Index of padded position ``i`` under mirror padding without edge repeat (torch's "reflect")."""
    if n == 1:
        return 0
    period = 2 * (n - 1)
    i = abs(i) % period
    return period - i if i > n - 1 else i


def _pulse_bicubic_matrix(n_in: int, factor: int) -> torch.Tensor:
    """The 1-D matrix (n_in // factor, n_in) of PULSE's ``BicubicDownSample`` along one axis.

    PULSE convolves with ``4 * factor`` taps ``k_i = W((i - 2 factor + 0.5) / factor)`` (Keys kernel
    stretched by the factor for antialiasing, normalised to sum 1), stride ``factor``, after reflect
    padding by ``floor(3 factor / 2)`` before and ``ceil(3 factor / 2)`` after. Output sample j is
    ``sum_i k_i x[reflect(j factor + i - floor(3 factor / 2))]``. Mirroring is folded periodically, so
    images smaller than the padding also work (torch's reflect pad would refuse them).
    """
    size = 4 * factor
    taps = keys_cubic((torch.arange(size, dtype=torch.float64) - 2 * factor + 0.5) / factor)
    taps = taps / taps.sum()
    pad_before = (size - factor) // 2
    n_out = n_in // factor
    mat = torch.zeros(n_out, n_in, dtype=torch.float64)
    for j in range(n_out):
        for i in range(size):
            mat[j, _reflect_index(j * factor + i - pad_before, n_in)] += taps[i]
    return mat


def _check_factor(factor: Any, height: int, width: int) -> int:
    if not is_int(factor) or factor < 1:
        raise ValueError(f"the super-resolution factor must be a positive integer, got {factor!r}")
    if height % factor or width % factor:
        valid = ", ".join(map(str, _divisors(math.gcd(height, width))))
        raise ValueError(f"factor {factor} does not divide the image size {height}x{width} (HxW): expected one of {valid}")
    return int(factor)


class SuperResolution(ForwardOperator):
    """Downsampling by an integer factor, per channel: ``Y = A_h X A_w^T``.

    The operator is separable, ``A = A_h kron A_w`` on each channel (row-major vectorisation), so
    ``A^T y = A_h^T Y A_w`` and ``A^+ = A_h^+ kron A_w^+``, i.e. ``A^+ y = A_h^+ Y (A_w^+)^T``.

    Kernels:
        ``"area"``: the mean over each ``factor x factor`` block. ``A_h A_h^T = I / factor``, so
        ``A_h^+ = factor A_h^T`` and ``A^+`` is nearest-neighbour upsampling (exact, closed form).
        ``"bicubic"``: PULSE's ``BicubicDownSample`` (Keys kernel, a = -0.5, stretched by the factor,
        reflect padding). ``A_h^+`` is computed once in float64 by ``torch.linalg.pinv``. As in
        PULSE, for odd factors the kernel centre sits half a pixel after the block centre.

    Args:
        image_shape: (C, H, W) of the high-resolution images.
        factor: Positive integer dividing H and W.
        kernel: ``"area"`` or ``"bicubic"``.

    Measurements have shape (C, H / factor, W / factor): the low-resolution image.
    """

    kind = "sr"

    def __init__(self, image_shape: Sequence[int], factor: int, kernel: str = DEFAULT_KERNEL):
        channels, height, width = check_image_shape(image_shape)
        factor = _check_factor(factor, height, width)
        if kernel not in SR_KERNELS:
            raise ValueError(f"kernel must be one of {', '.join(map(repr, SR_KERNELS))}, got {kernel!r}")
        super().__init__(image_shape, (channels, height // factor, width // factor))
        self.factor = factor
        self.kernel = kernel
        if kernel == "area":
            a_h, a_w = _area_matrix(height // factor, factor), _area_matrix(width // factor, factor)
            p_h, p_w = factor * a_h.T, factor * a_w.T
        else:
            a_h, a_w = _pulse_bicubic_matrix(height, factor), _pulse_bicubic_matrix(width, factor)
            p_h, p_w = torch.linalg.pinv(a_h), torch.linalg.pinv(a_w)
        self.register_buffer("a_h", a_h, persistent=False)
        self.register_buffer("a_w", a_w, persistent=False)
        self.register_buffer("p_h", p_h, persistent=False)
        self.register_buffer("p_w", p_w, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_images(x)
        return self.a_h.to(x.dtype) @ x @ self.a_w.to(x.dtype).T

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        self._check_measurements(y)
        return self.a_h.to(y.dtype).T @ y @ self.a_w.to(y.dtype)

    def pinv(self, y: torch.Tensor) -> torch.Tensor:
        self._check_measurements(y)
        return self.p_h.to(y.dtype) @ y @ self.p_w.to(y.dtype).T

    def observation_image(self, y: torch.Tensor) -> torch.Tensor:
        """The low-resolution image itself, clamped to [-1, 1]."""
        self._check_measurements(y)
        return y.clamp(-1.0, 1.0)

    def measurements_from_image(self, img: torch.Tensor) -> torch.Tensor:
        """The low-resolution observation image is the measurement; its shape is checked."""
        batch, squeezed = batched(img, 3)
        if batch.dim() != 4 or tuple(batch.shape[1:]) != self.measurement_shape:
            c, h, w = self.measurement_shape
            _, big_h, big_w = self.image_shape
            got = tuple(img.shape[-3:]) if img.dim() >= 3 else tuple(img.shape)
            raise ValueError(
                f"the low-resolution observation has shape {got} (C, H, W), but super-resolution x{self.factor} "
                f"of {big_h}x{big_w} images expects {h}x{w} with {c} channel(s)"
            )
        return batch[0] if squeezed else batch

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "factor": self.factor, "kernel": self.kernel}

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, factor={self.factor}, kernel={self.kernel!r}"

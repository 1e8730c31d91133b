"""Linear forward operators of inverse problems (y = A x + n) and measurement feasibility.

An operator maps a batch of images ``x`` of shape (B, C, H, W) with values in [-1, 1] to measurements
of shape (B, *measurement_shape). Every operator here is linear and exposes, besides ``forward``
(``A x``), its exact adjoint ``A^T y``, its Moore-Penrose pseudo-inverse ``A^+ y`` (the minimum-norm
least-squares solution, used for IAGAN's back-projection ``x + A^+ (y - A x)``), and an image that
shows the observation. The operators are ``torch.nn.Module`` s: their matrices are (non-persistent)
float64 buffers, so ``.to(device)`` moves them, and they are cast to the input's dtype on the fly.

Feasibility of a candidate image is judged by the measurement MSE on the [0, 1] pixel scale,
``mean(((A x - y) / 2)^2)``, against ``DEFAULT_TAU = 2e-3`` (PULSE's epsilon); LR-PSNR is
``-10 log10(MSE)``. See ``docs/problems.md`` for the maths of each operator.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .images import load_mask

DEFAULT_TAU = 2e-3
"""Default feasibility threshold on the measurement MSE ([0, 1] pixel scale), PULSE's epsilon."""

PROBLEM_KINDS = ("sr", "inpaint", "cs")
SR_KERNELS = ("area", "bicubic")


def measurement_mse(forward, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-item mean squared measurement error on the [0, 1] pixel scale (SPEC section 2).

    Images live in [-1, 1] inside the models, so a difference of measurements of images in
    [-1, 1] is twice the difference on the [0, 1] scale (A is linear):
    ``MSE = mean(((A x - y) / 2) ** 2)``.

    Args:
        forward: Linear forward operator, images (B, C, H, W) -> measurements (B, ...).
        x: Images (B, C, H, W) in [-1, 1].
        y: Measurements of shape (B, ...) or (...) (broadcast over the batch).

    Returns:
        Tensor of shape (B,).
    """
    diff = (forward(x) - y) / 2
    return diff.pow(2).flatten(1).mean(1)


def lr_psnr(mse: torch.Tensor | float) -> torch.Tensor | float:
    """LR-PSNR in dB of a measurement MSE on the [0, 1] scale: ``-10 log10(MSE)``."""
    if isinstance(mse, torch.Tensor):
        return -10 * torch.log10(mse)
    return -10 * math.log10(mse)


# --------------------------------------------------------------------------------------------------
# validation helpers


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _check_image_shape(image_shape: Sequence[int]) -> tuple[int, int, int]:
    shape = tuple(image_shape)
    if len(shape) != 3 or not all(_is_int(s) and s >= 1 for s in shape):
        raise ValueError(f"image_shape must be three positive integers (C, H, W), got {image_shape!r}")
    return tuple(int(s) for s in shape)  # type: ignore[return-value]


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


# --------------------------------------------------------------------------------------------------
# base class


class ForwardOperator(nn.Module, abc.ABC):
    """A linear, batched forward operator ``A``: images (B, C, H, W) -> measurements (B, *measurement_shape).

    Subclasses implement :meth:`forward` (``A x``), :meth:`adjoint` (``A^T y``, exact, so that
    ``<A x, y> = <x, A^T y>``) and :meth:`pinv` (``A^+ y``, the Moore-Penrose pseudo-inverse).

    Attributes:
        kind: Short name of the problem (``"sr"``, ``"inpaint"``, ``"cs"``, ``"callable"``).
        image_shape: (C, H, W) of the images.
        measurement_shape: Shape of one measurement item.
    """

    kind: str = "linear"

    def __init__(self, image_shape: Sequence[int], measurement_shape: Sequence[int]):
        super().__init__()
        self.image_shape: tuple[int, int, int] = _check_image_shape(image_shape)
        self.measurement_shape: tuple[int, ...] = tuple(int(s) for s in measurement_shape)

    @property
    def num_measurements(self) -> int:
        """m, the number of scalar measurements per image."""
        return math.prod(self.measurement_shape)

    @property
    def num_pixels(self) -> int:
        """N = C * H * W, the number of unknowns per image."""
        return math.prod(self.image_shape)

    @abc.abstractmethod
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``A x`` for images (B, C, H, W); returns (B, *measurement_shape) in the dtype of ``x``."""

    @abc.abstractmethod
    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        """``A^T y`` for measurements (B, *measurement_shape); returns images (B, C, H, W)."""

    @abc.abstractmethod
    def pinv(self, y: torch.Tensor) -> torch.Tensor:
        """``A^+ y``, the minimum-norm least-squares solution of ``A x = y``; returns (B, C, H, W)."""

    def back_project(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """IAGAN's back-projection ``x + A^+ (y - A x)``.

        For ``y`` in the range of ``A`` this is the point of ``{x' : A x' = y}`` closest to ``x``
        (``A^+ A`` is the orthogonal projector onto the row space of ``A``).

        ``y`` may be (B, *measurement_shape) or unbatched (broadcast over the batch).
        """
        residual = y - self(x)
        return x + self.pinv(residual)

    def observation_image(self, y: torch.Tensor) -> torch.Tensor:
        """An image in [-1, 1] that shows the observation ``y`` (by default the clamped ``A^+ y``)."""
        return self.pinv(y).clamp(-1.0, 1.0)

    def measurements_from_image(self, img: torch.Tensor) -> torch.Tensor:
        """Measurements of an observation given as an image file (the inverse of :meth:`observation_image`).

        Args:
            img: (C, h, w) or (B, C, h, w).

        Returns:
            Measurements, batched as ``img``.
        """
        raise ValueError(
            f"{self.kind} observations are measurement vectors of shape {self.measurement_shape}: "
            "give a .npy file, or a clean image with --from-clean"
        )

    def describe(self) -> dict[str, Any]:
        """JSON-ready description of the problem (for ``report.json``)."""
        return {
            "kind": self.kind,
            "image_shape": list(self.image_shape),
            "measurement_shape": list(self.measurement_shape),
            "num_measurements": self.num_measurements,
        }

    def extra_repr(self) -> str:
        return f"image_shape={self.image_shape}, measurement_shape={self.measurement_shape}"

    # shape checks shared by subclasses ------------------------------------------------------------

    def _check_images(self, x: torch.Tensor) -> None:
        if x.dim() != 4 or tuple(x.shape[1:]) != self.image_shape:
            raise ValueError(f"expected images of shape (B, {', '.join(map(str, self.image_shape))}), got {tuple(x.shape)}")

    def _check_measurements(self, y: torch.Tensor) -> None:
        if y.dim() != 1 + len(self.measurement_shape) or tuple(y.shape[1:]) != self.measurement_shape:
            expected = ", ".join(map(str, ("B", *self.measurement_shape)))
            raise ValueError(f"expected measurements of shape ({expected}), got {tuple(y.shape)}")


def _batched(t: torch.Tensor, item_dims: int) -> tuple[torch.Tensor, bool]:
    """Add a batch dimension to an unbatched item; report whether one was added."""
    if t.dim() == item_dims:
        return t.unsqueeze(0), True
    return t, False


# --------------------------------------------------------------------------------------------------
# super-resolution


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
    if not _is_int(factor) or factor < 1:
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

    def __init__(self, image_shape: Sequence[int], factor: int, kernel: str = "area"):
        channels, height, width = _check_image_shape(image_shape)
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
        batch, squeezed = _batched(img, 3)
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


# --------------------------------------------------------------------------------------------------
# inpainting


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
        channels, height, width = _check_image_shape(image_shape)
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
        _, height, width = _check_image_shape(image_shape)
        if not all(_is_int(v) for v in (x, y, w, h)):
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
        _, height, width = _check_image_shape(image_shape)
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
        batch, squeezed = _batched(img, 3)
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


# --------------------------------------------------------------------------------------------------
# compressed sensing


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
        shape = _check_image_shape(image_shape)
        n = math.prod(shape)
        if not _is_int(m) or not 1 <= m <= n:
            raise ValueError(f"the number of measurements m must be an integer in 1..{n} (C*H*W of {shape}), got {m!r}")
        if not _is_int(seed):
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


# --------------------------------------------------------------------------------------------------
# user callables


class LinearCallable(ForwardOperator):
    """Any user callable ``fn`` that is linear in the images, as a forward operator.

    ``A^T y`` is the vector-Jacobian product of ``fn`` (``torch.func.vjp`` at 0, exact for a linear
    map). ``A^+ y`` uses ``pinv`` when given; otherwise the dense matrix of ``fn`` is formed once
    (``fn`` applied to the N basis images, in the dtype and on the device of the first ``y``) and
    its pseudo-inverse computed in float64, singular values below ``max(m, N) eps`` (eps of the
    dtype ``A`` was formed in) times the largest being treated as zero. That needs
    ``N = C H W <= max_dense_size``.

    If ``fn`` is an ``nn.Module`` it becomes a submodule, so ``.to(device)`` moves it too.

    Args:
        fn: Linear callable, images (B, C, H, W) -> measurements (B, ...).
        image_shape: (C, H, W).
        measurement_shape: Shape of one measurement; probed by applying ``fn`` to a zero image when None.
        pinv: Optional callable computing ``A^+ y`` for measurements (B, ...).
        check: Verify linearity on two seeded random images at construction.
        dtype: dtype of the probe and check images (default: the module's parameters' dtype, else
            ``torch.get_default_dtype()``, or float64 if ``fn`` fails on that).
        device: Device of the probe and check images (default: the module's, else CPU).
        max_dense_size: Largest N for the dense pseudo-inverse.

    Raises:
        ValueError: ``fn`` fails on a zero image, does not keep the batch dimension, or is not linear.
    """

    kind = "callable"

    def __init__(
        self,
        fn: Callable[[torch.Tensor], torch.Tensor],
        image_shape: Sequence[int],
        *,
        measurement_shape: Sequence[int] | None = None,
        pinv: Callable[[torch.Tensor], torch.Tensor] | None = None,
        check: bool = True,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
        max_dense_size: int = 4096,
    ):
        shape = _check_image_shape(image_shape)
        if not callable(fn):
            raise ValueError(f"the forward operator must be callable, got {type(fn).__name__}")
        ref = next(iter(fn.parameters()), None) if isinstance(fn, nn.Module) else None
        if ref is None and isinstance(fn, nn.Module):
            ref = next(iter(fn.buffers()), None)
        if dtype is not None:
            candidates = [dtype]
        elif ref is not None and ref.is_floating_point():
            candidates = [ref.dtype]
        else:
            # A plain function may hold float32 or float64 constants: try the default dtype, then float64.
            candidates = list(dict.fromkeys([torch.get_default_dtype(), torch.float64]))
        device = torch.device(device) if device is not None else (ref.device if ref is not None else torch.device("cpu"))
        if measurement_shape is None or check:
            for i, dtype in enumerate(candidates):
                try:
                    probe = self._call_checked(fn, torch.zeros(1, *shape, dtype=dtype, device=device), shape)
                    break
                except ValueError:
                    if i == len(candidates) - 1:
                        raise
            if measurement_shape is None:
                measurement_shape = tuple(probe.shape[1:])
        dtype = dtype if dtype is not None else candidates[0]
        super().__init__(shape, measurement_shape)
        self.fn = fn
        self.user_pinv = pinv
        self.max_dense_size = int(max_dense_size)
        self.probe_dtype, self.probe_device = dtype, device
        self._dense_pinv: tuple[tuple[torch.device, torch.dtype], torch.Tensor] | None = None
        if check:
            self._check_linear(probe, dtype, device)

    @staticmethod
    def _call_checked(fn: Callable, x: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
        try:
            with torch.no_grad():
                y = fn(x)
        except Exception as exc:  # noqa: BLE001 - any failure of user code is reported the same way
            msg = " ".join(str(exc).split())
            raise ValueError(
                f"the forward callable failed on images of shape {tuple(x.shape)} and dtype {x.dtype}: {msg} "
                "(pass dtype= and device= matching the callable)"
            ) from None
        if not isinstance(y, torch.Tensor) or y.dim() < 1 or y.shape[0] != x.shape[0]:
            got = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
            raise ValueError(f"the forward callable must map images (B, {', '.join(map(str, shape))}) to (B, ...), got {got}")
        return y

    def _check_linear(self, at_zero: torch.Tensor, dtype: torch.dtype, device: torch.device) -> None:
        gen = torch.Generator().manual_seed(0)
        x1, x2 = (torch.randn(1, *self.image_shape, generator=gen, dtype=torch.float64).to(device, dtype) for _ in range(2))
        a, b = 0.7, -1.3
        with torch.no_grad():
            y1, y2 = self.fn(x1), self.fn(x2)
            y12 = self.fn(a * x1 + b * x2)
        scale = float((a * y1).norm() + (b * y2).norm())
        if scale == 0.0:
            return  # the zero map: linear
        # Rounding in a linear map of random data stays far below sqrt(eps); nonlinearities and
        # offsets on unit-variance inputs give errors of order one.
        tol = 10 * math.sqrt(torch.finfo(dtype).eps)
        offset = float(at_zero.norm()) / scale
        if offset > tol:
            raise ValueError(f"the forward callable is not linear: it maps the zero image to a nonzero output (relative size {offset:.1e})")
        err = float((y12 - a * y1 - b * y2).norm()) / scale
        if err > tol:
            raise ValueError(f"the forward callable is not linear: A(a x + b x') differs from a A x + b A x' by relative error {err:.1e}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_images(x)
        return self.fn(x)

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        self._check_measurements(y)
        zero = torch.zeros(y.shape[0], *self.image_shape, dtype=y.dtype, device=y.device)
        _, vjp_fn = torch.func.vjp(self.fn, zero)
        return vjp_fn(y)[0]

    def pinv(self, y: torch.Tensor) -> torch.Tensor:
        self._check_measurements(y)
        if self.user_pinv is not None:
            return self.user_pinv(y)
        n, m = self.num_pixels, self.num_measurements
        if n > self.max_dense_size:
            raise ValueError(
                f"the pseudo-inverse of a LinearCallable is computed densely and needs N = C*H*W <= {self.max_dense_size}, "
                f"got N = {n}: pass pinv= (a callable computing A^+ y) or raise max_dense_size"
            )
        key = (y.device, y.dtype)
        if self._dense_pinv is None or self._dense_pinv[0] != key:
            dense = self._dense_matrix(y.dtype, y.device).to(torch.float64)
            # Entries of A carry rounding of the dtype they were computed in: cut singular values there.
            self._dense_pinv = (key, torch.linalg.pinv(dense, rtol=max(m, n) * torch.finfo(y.dtype).eps))
        p = self._dense_pinv[1]
        return (y.reshape(y.shape[0], m).to(p.dtype) @ p.T).to(y.dtype).reshape(y.shape[0], *self.image_shape)

    def _dense_matrix(self, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        n, m = self.num_pixels, self.num_measurements
        rows = []
        with torch.no_grad():
            for start in range(0, n, 256):  # chunks of basis images bound the memory of one call
                stop = min(start + 256, n)
                basis = torch.zeros(stop - start, n, dtype=dtype, device=device)
                basis[torch.arange(stop - start), torch.arange(start, stop)] = 1.0
                rows.append(self.fn(basis.reshape(-1, *self.image_shape)).reshape(stop - start, m))
        return torch.cat(rows).T  # (m, N): row i of A^T is A e_i

    def dense(self) -> torch.Tensor:
        """The matrix of ``fn`` (m, N) as float64 on the CPU, formed in the probe dtype and device (small N only)."""
        n = self.num_pixels
        if n > self.max_dense_size:
            raise ValueError(f"dense() needs N = C*H*W <= {self.max_dense_size}, got N = {n}")
        return self._dense_matrix(self.probe_dtype, self.probe_device).to("cpu", torch.float64)


# --------------------------------------------------------------------------------------------------
# noise, observations and the factory


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
    x, squeezed = _batched(x_clean, 3)
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
    if len(values) != 4 or not all(_is_int(v) for v in values):
        raise ValueError(f"a box is four integers (x, y, w, h) (top-left corner, width, height), got {box!r}")
    return tuple(int(v) for v in values)  # type: ignore[return-value]


def make_problem(
    kind: str,
    image_shape: Sequence[int],
    *,
    factor: int = 4,
    kernel: str = "area",
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
    _check_image_shape(image_shape)
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

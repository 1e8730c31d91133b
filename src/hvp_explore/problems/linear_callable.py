"""Any user callable that is linear in the images, as a forward operator (adjoint by vjp, pinv dense)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import nn

from hvp_explore.problems._checks import check_image_shape
from hvp_explore.problems.base import ForwardOperator

__all__ = ["LinearCallable"]


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
        shape = check_image_shape(image_shape)
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

"""The shared interface of curvature operators (private plumbing; the public classes subclass it).

A :class:`CurvatureOperator` is a symmetric ``n x n`` matrix known only through products. It follows
scipy's ``LinearOperator`` protocol (``shape``, ``dtype``, ``matvec``, ``matmat``) on torch tensors,
and bridges to scipy with :meth:`CurvatureOperator.to_scipy`. Subclasses implement one method,
``_matmat(V)`` for a block ``V`` of shape (n, b) on the operator's device and dtype.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator

import numpy as np
import torch
from scipy.sparse.linalg import LinearOperator

__all__ = ["CurvatureOperator", "NonFiniteError", "as_latent", "frozen_modules", "module_dtype_device"]


class NonFiniteError(FloatingPointError):
    """A product or a loss produced NaN or inf; the message names the stage."""


def as_latent(z0: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Return a latent point as a detached 1-D tensor, accepting shape (n,) or a batch of one (1, n)."""
    z0 = torch.as_tensor(z0)
    if z0.ndim == 2 and z0.shape[0] == 1:
        z0 = z0[0]
    if z0.ndim != 1:
        raise ValueError(f"a latent point must have shape (n,) or (1, n), got {tuple(z0.shape)}")
    if not torch.is_floating_point(z0):
        raise ValueError(f"a latent point must be a floating-point tensor, got {z0.dtype}")
    if not torch.isfinite(z0).all():
        raise NonFiniteError("the latent point z0 contains NaN or inf")
    return z0.detach()


def module_dtype_device(fn: object) -> tuple[torch.dtype, torch.device] | None:
    """Floating dtype and device of the first floating tensor of the module behind ``fn`` (``None`` for plain callables)."""
    for module in _modules_of(fn):
        for t in (*module.parameters(), *module.buffers()):
            if t.is_floating_point():
                return t.dtype, t.device
    return None


def _modules_of(fn: object) -> list[torch.nn.Module]:
    """The ``nn.Module`` objects a callable is made of (itself, or a bound method's owner)."""
    owner = getattr(fn, "__self__", fn)
    return [owner] if isinstance(owner, torch.nn.Module) else []


@contextlib.contextmanager
def frozen_modules(*callables: object) -> Iterator[None]:
    """Put the modules behind ``callables`` in eval mode without parameter gradients, then restore.

    Curvature is taken with respect to the latent only: parameters must not take part in the
    graph (that would waste memory and time), and batch norm / dropout must act deterministically.
    """
    modules = [m for fn in callables for m in _modules_of(fn)]
    saved_modes = [(sub, sub.training) for m in modules for sub in m.modules()]
    saved_grads = [(p, p.requires_grad) for m in modules for p in m.parameters()]
    try:
        for m in modules:
            m.eval()
        for p, _ in saved_grads:
            p.requires_grad_(False)
        yield
    finally:
        for sub, mode in saved_modes:
            sub.train(mode)
        for p, flag in saved_grads:
            p.requires_grad_(flag)


class CurvatureOperator(ABC):
    """A symmetric positive semi-definite ``n x n`` operator defined by its products.

    Attributes:
        num_matvecs: Number of vector products applied so far (a block of ``b`` columns counts ``b``).
        num_calls: Number of batched calls of ``_matmat`` (blocks) so far.
        name: Short label used in error messages (which stage produced a fault).
    """

    name = "operator"

    def __init__(self, n: int, *, dtype: torch.dtype, device: torch.device, block_size: int | None = None,
                 modules: tuple[object, ...] = ()):
        if block_size is not None and block_size < 1:
            raise ValueError(f"block_size must be a positive integer, got {block_size}")
        self._n = int(n)
        self._dtype = dtype
        self._device = torch.device(device)
        self.block_size = block_size
        self._modules = modules
        self.num_matvecs = 0
        self.num_calls = 0

    # --- the scipy LinearOperator protocol -------------------------------------------------------
    @property
    def shape(self) -> tuple[int, int]:
        return (self._n, self._n)

    @property
    def dtype(self) -> torch.dtype:
        return self._dtype

    @property
    def device(self) -> torch.device:
        return self._device

    @abstractmethod
    def _matmat(self, V: torch.Tensor) -> torch.Tensor:
        """Apply the operator to a block ``V`` of shape (n, b) (operator's dtype and device)."""

    def matvec(self, v: torch.Tensor | np.ndarray) -> torch.Tensor | np.ndarray:
        """Product with one vector of shape (n,); NumPy in gives NumPy out."""
        if tuple(v.shape) != (self._n,):
            raise ValueError(f"matvec expects a vector of shape ({self._n},), got {tuple(v.shape)}")
        return self.matmat(v.reshape(-1, 1)).reshape(-1)

    def matmat(self, V: torch.Tensor | np.ndarray) -> torch.Tensor | np.ndarray:
        """Product with a block of shape (n, b), split into chunks of at most ``block_size`` columns."""
        if V.ndim != 2 or V.shape[0] != self._n:
            raise ValueError(f"matmat expects a block of shape ({self._n}, b), got {tuple(V.shape)}")
        as_numpy = isinstance(V, np.ndarray)
        Vt = torch.as_tensor(V).to(device=self._device, dtype=self._dtype)
        b = Vt.shape[1]
        step = self.block_size or max(b, 1)
        blocks = []
        with frozen_modules(*self._modules):
            for start in range(0, b, step):
                chunk = Vt[:, start : start + step]
                out = self._matmat(chunk).detach()
                self.num_matvecs += chunk.shape[1]
                self.num_calls += 1
                blocks.append(out)
        out = torch.cat(blocks, dim=1) if blocks else Vt.new_zeros(self._n, 0)
        if not torch.isfinite(out).all():
            raise NonFiniteError(f"{self.name}: a product produced NaN or inf")
        if as_numpy:
            return out.cpu().numpy().astype(V.dtype, copy=False)
        return out

    def __matmul__(self, other: torch.Tensor | np.ndarray) -> torch.Tensor | np.ndarray:
        return self.matvec(other) if other.ndim == 1 else self.matmat(other)

    # --- references and bridges ------------------------------------------------------------------
    def dense(self) -> torch.Tensor:
        """The full ``n x n`` matrix by products with the identity (a reference for tests)."""
        eye = torch.eye(self._n, dtype=self._dtype, device=self._device)
        return self.matmat(eye)

    def to_scipy(self) -> LinearOperator:
        """A float64 ``scipy.sparse.linalg.LinearOperator`` with matvec and matmat."""

        def _apply(X: np.ndarray) -> np.ndarray:
            X = np.asarray(X, dtype=np.float64)
            squeeze = X.ndim == 1
            out = self.matmat(torch.from_numpy(X.reshape(self._n, -1).copy()))
            out = out.detach().to("cpu", torch.float64).numpy()
            return out.reshape(-1) if squeeze else out

        return LinearOperator(self.shape, matvec=_apply, matmat=_apply, rmatvec=_apply, rmatmat=_apply, dtype=np.float64)

    def check_deterministic(self, *, num_vectors: int = 2, seed: int = 0, rtol: float = 0.0) -> float:
        """Apply the same block twice and return the largest relative difference.

        Raises:
            RuntimeError: When the two products differ by more than ``rtol`` (a non-deterministic
                generator, e.g. one left in train mode with dropout, or non-deterministic kernels).
        """
        g = torch.Generator(device="cpu").manual_seed(seed)
        V = torch.randn(self._n, num_vectors, generator=g, dtype=torch.float64).to(self._device, self._dtype)
        a, b = self.matmat(V), self.matmat(V)
        diff = float((a - b).norm() / a.norm().clamp_min(torch.finfo(a.dtype).tiny))
        if diff > rtol:
            raise RuntimeError(f"{self.name}: two identical products differ (relative difference {diff:.3g} > {rtol:g})")
        return diff

    def reset_counters(self) -> None:
        """Set ``num_matvecs`` and ``num_calls`` back to zero."""
        self.num_matvecs = 0
        self.num_calls = 0

    def __repr__(self) -> str:
        return f"{type(self).__name__}(n={self._n}, dtype={self._dtype}, device={self._device}, matvecs={self.num_matvecs})"


def _vectorised(fn: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[torch.Tensor], torch.Tensor]:
    """Map a per-vector function over the columns of a block with ``torch.func.vmap``."""
    batched = torch.func.vmap(fn)

    def apply(V: torch.Tensor) -> torch.Tensor:
        return batched(V.T).T

    return apply

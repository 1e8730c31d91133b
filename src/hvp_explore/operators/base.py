r"""The shared interface of curvature operators (private plumbing; the public classes subclass it).

A :class:`CurvatureOperator` is a symmetric ``n x n`` matrix known only through products. It follows
scipy's ``LinearOperator`` protocol (``shape``, ``dtype``, ``matvec``, ``matmat``) on torch tensors,
and bridges to scipy with :meth:`CurvatureOperator.to_scipy`. Subclasses implement one method,
``_matmat(V)`` for a block ``V`` of shape (n, b) on the operator's device and dtype.

Operators combine linearly: ``A + B``, ``A - B``, ``c * A``, ``-A``, ``A.shifted(s)``
(:math:`A + s I`), ``sum(ops)`` and :func:`mean_operator` are a :class:`LinearCombination`
:math:`\sum_i c_i A_i + s I`, still matrix-free. :meth:`CurvatureOperator.to_linear_operator` bridges to
gpytorch's ``linear_operator`` (its CG, Lanczos, root decomposition and log-determinant).
"""

from __future__ import annotations

import contextlib
import math
import numbers
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator

import numpy as np
import torch
from scipy.sparse.linalg import LinearOperator

__all__ = ["CurvatureOperator", "LinearCombination", "NonFiniteError", "as_latent", "frozen_modules", "mean_operator",
           "module_dtype_device", "modules_of", "seconds_since"]

#: NumPy dtypes :meth:`CurvatureOperator.to_scipy` can bridge to.
_SCIPY_DTYPES = (np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64))


class NonFiniteError(FloatingPointError):
    """A product or a loss produced NaN or inf; the message names the stage."""


def all_finite(t: torch.Tensor | np.ndarray) -> bool:
    """Whether every entry of a tensor or an array is finite: one reduction in its own dtype, the full check only when
    that is not.

    NaN and inf survive a sum (or a sum of squares), and one of finite entries is finite unless it overflows (then the
    full check decides). Every product is guarded; on a cheap operator (a product of 0.3 ms) ``isfinite(t).all()`` costs a
    tenth of it, a float64 sum in torch 3%.
    """
    if isinstance(t, np.ndarray):  # a BLAS dot: a third of a NumPy sum's time (it overflows sooner, and then falls back)
        return math.isfinite(float(np.vdot(t, t))) or bool(np.isfinite(t).all())
    return math.isfinite(float(t.sum())) or bool(torch.isfinite(t).all())


def seconds_since(t0: float, device: torch.device) -> float:
    """``time.perf_counter()`` seconds since ``t0``, once the device's queued work is done (CUDA kernels run
    asynchronously: without the wait a build would be timed by its kernel launches)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - t0


def _numpy_dtype(dtype: torch.dtype) -> np.dtype | None:
    """NumPy's equivalent of a torch floating dtype, or ``None`` (bfloat16 has none)."""
    try:
        return torch.empty(0, dtype=dtype).numpy().dtype
    except TypeError:
        return None


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
    for module in modules_of(fn):
        for t in (*module.parameters(), *module.buffers()):
            if t.is_floating_point():
                return t.dtype, t.device
    return None


def modules_of(fn: object) -> list[torch.nn.Module]:
    """The ``nn.Module`` objects a callable is made of (itself, or a bound method's owner)."""
    owner = getattr(fn, "__self__", fn)
    return [owner] if isinstance(owner, torch.nn.Module) else []


@contextlib.contextmanager
def frozen_modules(*callables: object) -> Iterator[None]:
    """Put the modules behind ``callables`` in eval mode without parameter gradients, then restore.

    Curvature is taken with respect to the latent only: parameters must not take part in the
    graph (that would waste memory and time), and batch norm / dropout must act deterministically.
    """
    modules = [m for fn in callables for m in modules_of(fn)]
    # Only what is not frozen yet is changed and restored: an operator enters this for every product
    # (a single-vector Krylov solve: dozens of times), and walking every submodule twice costs ~1 ms.
    training = [sub for m in modules for sub in m.modules() if sub.training]
    grads = [p for m in modules for p in m.parameters() if p.requires_grad]
    try:
        for sub in training:
            sub.training = False
        for p in grads:
            p.requires_grad_(False)
        yield
    finally:
        for sub in training:
            sub.training = True
        for p in grads:
            p.requires_grad_(True)


#: What :meth:`CurvatureOperator._products` computes, as a fault names it.
_KINDS = {"product": "a product", "quadratic": "a quadratic form", "projection": "a projection"}


class CurvatureOperator(ABC):
    r"""A symmetric ``n x n`` operator defined by its products (positive semi-definite for curvature).

    Operators form a vector space: ``A + B``, ``A - B``, ``c * A``, ``A * c``, ``-A`` and
    ``A.shifted(s)`` (:math:`A + s I`) build a :class:`LinearCombination`, applied product by product
    (nothing is formed densely). A difference or a negative multiple is symmetric but may be indefinite.

    Attributes:
        num_matvecs: Number of vector products applied so far (a block of ``b`` columns counts ``b``).
        num_calls: Number of batched calls of ``_matmat`` (blocks) so far.
        name: Short label used in error messages (which stage produced a fault).
        self_adjoint: Whether the operator equals its adjoint, :math:`A^T = A` (every curvature operator
            is); :meth:`to_scipy` then serves ``rmatvec``/``rmatmat`` with the products (none otherwise).
        build_seconds: Seconds the operator took to build what its products reuse (the first-order graph or
            the linearisation at :math:`z_0`, one pass of the function); ``None`` when it builds nothing.
            ``top_eigenpairs(solver="auto")`` reads it to recognise a cheap operator without a probe.
    """

    name = "operator"
    self_adjoint = True
    build_seconds: float | None = None
    # NumPy scalars and arrays defer to the operator's own arithmetic (``np.float64(2) * A`` is scaling).
    __array_ufunc__ = None

    def __init__(self, n: int, *, dtype: torch.dtype, device: torch.device, block_size: int | None = None,
                 modules: tuple[object, ...] = ()):
        if block_size is not None and block_size < 1:
            raise ValueError(f"block_size must be a positive integer, got {block_size}")
        self._n = int(n)
        self._dtype = dtype
        self._device = torch.device(device)
        self.block_size = block_size
        self._modules = modules
        # whether products must freeze modules (none for a plain function: a cheap operator then skips the context)
        self._freezes = any(modules_of(fn) for fn in modules)
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

    def _matvec(self, v: torch.Tensor) -> torch.Tensor:
        """Apply the operator to one vector ``v`` of shape (n,) (operator's dtype and device).

        By default a block of one column; operators whose single product has a route of its own override it, so
        that a single-vector Krylov solve (hundreds of products) pays no reshapes and slices around each one.
        """
        return self._matmat(v.reshape(-1, 1)).reshape(-1)

    def matvec(self, v: torch.Tensor | np.ndarray) -> torch.Tensor | np.ndarray:
        """Product with one vector of shape (n,); NumPy in gives NumPy out."""
        if tuple(v.shape) != (self._n,):
            raise ValueError(f"matvec expects a vector of shape ({self._n},), got {tuple(v.shape)}")
        return self._numpy_in_numpy_out(v)

    def matmat(self, V: torch.Tensor | np.ndarray) -> torch.Tensor | np.ndarray:
        """Product with a block of shape (n, b), split into chunks of at most ``block_size`` columns."""
        if V.ndim != 2 or V.shape[0] != self._n:
            raise ValueError(f"matmat expects a block of shape ({self._n}, b), got {tuple(V.shape)}")
        return self._numpy_in_numpy_out(V)

    def _numpy_in_numpy_out(self, V: torch.Tensor | np.ndarray, *, kind: str = "product") -> torch.Tensor | np.ndarray:
        """:meth:`_products` of a tensor, or of an array returned as an array of its dtype (``matvec``, ``matmat``,
        ``quadratic_forms``, ``projected``)."""
        if isinstance(V, np.ndarray):
            return self._products(torch.as_tensor(V), kind=kind).cpu().numpy().astype(V.dtype, copy=False)
        return self._products(V, kind=kind)

    def _products(self, V: torch.Tensor, *, kind: str = "product", check: bool = True) -> torch.Tensor:
        """The counted products of a block (n, b) or of one vector (n,), or a block's quadratic forms (``kind="quadratic"``)
        or projection :math:`V^T A V` (``kind="projection"``): cast to the operator's dtype and device, modules frozen,
        guarded against NaN and inf (``check=False``: the caller guards them, as the scipy bridge does on its NumPy copy).

        What ``matvec``, ``matmat``, ``quadratic_forms``, ``projected`` and the scipy bridge share; each step is skipped
        when it has nothing to do, since a single-vector Krylov solve of a cheap operator (a product of 0.15 ms) calls
        this hundreds of times.
        """
        if V.dtype != self._dtype or V.device != self._device:
            V = V.to(device=self._device, dtype=self._dtype)
        with frozen_modules(*self._modules) if self._freezes else contextlib.nullcontext():
            if kind == "projection":
                out = self._projected(V)
            else:
                out = self._single(V) if V.ndim == 1 else self._blockwise(V, quadratic=kind == "quadratic")
        if check:
            self._guard(out, _KINDS[kind])
        return out

    def _guard(self, out: torch.Tensor | np.ndarray, what: str = "a product") -> None:
        if not all_finite(out):
            raise NonFiniteError(f"{self.name}: {what} produced NaN or inf")

    def quadratic_forms(self, V: torch.Tensor | np.ndarray) -> torch.Tensor | np.ndarray:
        r"""The quadratic forms :math:`v_i^T A v_i` of the columns of a block ``V`` (n, b): a (b,) vector.

        What a trace estimate needs of each probe. By default :math:`\sum (V \odot A V)` over rows; operators
        that compute a form more cheaply than a product override ``_quadratic`` (a Gauss-Newton operator:
        :math:`\|J v\|^2`, one forward-mode pass instead of a forward and a reverse one). Counted as products.
        """
        if V.ndim != 2 or V.shape[0] != self._n:
            raise ValueError(f"quadratic_forms expects a block of shape ({self._n}, b), got {tuple(V.shape)}")
        return self._numpy_in_numpy_out(V, kind="quadratic")

    def _quadratic(self, V: torch.Tensor) -> torch.Tensor:
        """The (b,) forms :math:`v_i^T A v_i` of a block (operator's dtype and device); default: from the products."""
        return (V * self._matmat(V)).sum(dim=0)

    def projected(self, Q: torch.Tensor | np.ndarray) -> torch.Tensor | np.ndarray:
        r"""The (b, b) matrix :math:`Q^T A Q` of a block ``Q`` (n, b): the operator on span(Q) when Q is orthonormal.

        What Rayleigh-Ritz on a given subspace needs, and every quadratic form inside it at once:
        :math:`(Q c)^T A (Q c) = c^T (Q^T A Q) c`. By default from the products; operators with a cheaper route
        override ``_projected`` (a Gauss-Newton operator: the Gram matrix :math:`(J Q)^T (J Q)` of its forward-mode
        half, as for :meth:`quadratic_forms`). Symmetric by construction; counted as b products. NumPy in gives NumPy out.
        """
        if Q.ndim != 2 or Q.shape[0] != self._n:
            raise ValueError(f"projected expects a block of shape ({self._n}, b), got {tuple(Q.shape)}")
        return self._numpy_in_numpy_out(Q, kind="projection")

    def _projected(self, Q: torch.Tensor) -> torch.Tensor:
        """:math:`Q^T A Q` (b, b) of a block, its products counted; default: from the products, symmetrised (rounding)."""
        out = Q.T @ self._blockwise(Q)
        return (out + out.T) / 2

    def _single(self, v: torch.Tensor) -> torch.Tensor:
        """``_matvec`` of one vector (n,), counted, output detached (the caller has converted ``v`` and frozen the modules)."""
        out = self._matvec(v)
        self.num_matvecs += 1
        self.num_calls += 1
        return out.detach() if out.requires_grad else out

    def _blockwise(self, V: torch.Tensor, *, quadratic: bool = False,
                   apply: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
        """``_matmat`` (or ``_quadratic``, or ``apply``: a block (n, c) to (..., c)) on chunks of at most ``block_size``
        columns of ``V``, counted as products, outputs detached and joined along their last dimension.

        The caller has converted ``V`` and frozen the modules; a :class:`LinearCombination` calls this on
        its terms, so each term keeps its own memory budget and product counters.
        """
        b = V.shape[1]
        apply = apply or (self._quadratic if quadratic else self._matmat)
        # a single vector needs no memory estimate (which may cost a forward pass the first time)
        step = 1 if b == 1 else self.block_size or self.memory_block() or max(b, 1)
        if 0 < b <= step:  # one call: no slicing, no copy (a single-vector Krylov solve calls this hundreds of times)
            out = apply(V)
            self.num_matvecs += b
            self.num_calls += 1
            return out.detach() if out.requires_grad else out
        blocks = []
        for start in range(0, b, step):
            chunk = V[:, start : start + step]
            blocks.append(apply(chunk).detach())
            self.num_matvecs += chunk.shape[1]
            self.num_calls += 1
        if not blocks:
            return V.new_zeros(0) if quadratic else V.new_zeros(self._n, 0)
        return torch.cat(blocks, dim=-1)

    def memory_block(self) -> int | None:
        """Largest batch the memory budget allows when ``block_size`` is unset (``None``: no limit is known).

        Operators that differentiate a network estimate it from the activations one evaluation saves.
        """
        return None

    def __matmul__(self, other: torch.Tensor | np.ndarray) -> torch.Tensor | np.ndarray:
        """``A @ v`` (a vector) or ``A @ V`` (a block).

        Raises:
            TypeError: ``other`` is an operator: the product of two symmetric operators is not symmetric
                in general, so it is no curvature operator; apply them in turn, ``A @ (B @ V)``.
        """
        if isinstance(other, CurvatureOperator):
            raise TypeError(f"{self.name} @ {other.name}: the product of two operators is not a curvature operator "
                            "(not symmetric in general); apply them in turn, A @ (B @ V)")
        if not isinstance(other, (torch.Tensor, np.ndarray)):
            raise TypeError(f"{self.name} @ x needs a tensor or an array, got {type(other).__name__}")
        return self.matvec(other) if other.ndim == 1 else self.matmat(other)

    def __rmatmul__(self, other: object):
        if isinstance(other, CurvatureOperator):  # reached only when other's own __matmul__ gave way
            return other.__matmul__(self)
        raise TypeError(f"x @ {self.name} is not defined: the operator is symmetric, write {self.name} @ x")

    # --- the algebra: linear combinations, matrix-free --------------------------------------------
    def __add__(self, other: object) -> LinearCombination:
        """:math:`A + B` for an operator ``B`` of the same size, dtype and device.

        Raises:
            ValueError: ``B`` differs in size, dtype or device.
            TypeError: ``B`` is a number or an array (a multiple of the identity is ``A.shifted(s)``).
        """
        return self._combine(other, 1.0)

    def __radd__(self, other: object) -> LinearCombination:
        """``0 + A`` is ``A`` (so ``sum(ops)`` works); any other number is refused as in :meth:`__add__`."""
        if isinstance(other, numbers.Number) and not isinstance(other, bool) and other == 0:
            return LinearCombination(((1.0, self),))
        return self._combine(other, 1.0)

    def __sub__(self, other: object) -> LinearCombination:
        """:math:`A - B` (symmetric, indefinite in general)."""
        return self._combine(other, -1.0)

    def __mul__(self, c: object) -> LinearCombination:
        """:math:`c A` for a real scalar ``c`` (``A * c`` and ``c * A`` alike; a 0-d array or tensor counts).

        Raises:
            ValueError: ``c`` is an array with dimensions (a product with vectors is ``A @ V``) or not finite.
            TypeError: ``c`` is not a number (another operator, a string, a bool).
        """
        return LinearCombination(((c, self),))

    __rmul__ = __mul__

    def __neg__(self) -> LinearCombination:
        """:math:`-A`."""
        return LinearCombination(((-1.0, self),))

    def shifted(self, shift: float) -> LinearCombination:
        r""":math:`A + s I`, e.g. the regularised metric :math:`H_Y + \epsilon I` of the pencil.

        Args:
            shift: The real scalar :math:`s` (the identity costs no product).
        """
        return LinearCombination(((1.0, self),), shift=shift)

    def _combine(self, other: object, sign: float) -> LinearCombination:
        if isinstance(other, CurvatureOperator):
            # A sum of unshifted combinations stays one flat combination: sum() of many operators is not a
            # nest as deep as the list (each product would recurse through every level).
            return LinearCombination((*_flat_terms(self, 1.0), *_flat_terms(other, sign)))
        if isinstance(other, (numbers.Number, torch.Tensor, np.ndarray)):
            raise TypeError(f"only an operator can be added to {self.name}, got {type(other).__name__}; "
                            "use A.shifted(s) for A + s I")
        return NotImplemented

    # --- references and bridges ------------------------------------------------------------------
    def dense(self) -> torch.Tensor:
        """The full ``n x n`` matrix by products with the identity (a reference for tests)."""
        eye = torch.eye(self._n, dtype=self._dtype, device=self._device)
        return self.matmat(eye)

    def to_scipy(self, dtype: np.dtype | type = np.float64) -> LinearOperator:
        """A ``scipy.sparse.linalg.LinearOperator`` with matvec and matmat (and their adjoints when self-adjoint).

        Args:
            dtype: NumPy dtype of the bridge (float16, float32 or float64): inputs are cast to it,
                products run in the operator's own dtype and come back cast to it.
        """
        dtype = np.dtype(dtype)
        if dtype not in _SCIPY_DTYPES:
            raise ValueError(f"to_scipy needs a float16, float32 or float64 dtype, got {dtype}")

        # Cast in NumPy to the operator's own dtype (when NumPy has it) and skip matmat's checks: a cheap operator's
        # single-vector solve (ARPACK) spends a fifth of each product in torch's casts and copies otherwise.
        own = _numpy_dtype(self._dtype) or dtype

        def _apply(X: np.ndarray) -> np.ndarray:
            # scipy's matvec passes a vector (n,) or (n, 1), its matmat a block (n, b); a vector takes the operator's
            # single-vector route (``_matvec``), no block of one column around it (a tenth of a cheap product)
            squeeze = X.ndim == 1 or X.shape[1] == 1
            # no copy when the dtypes agree: the product is taken before the caller can reuse X's memory
            V = np.ascontiguousarray(np.asarray(X, dtype=dtype).reshape((self._n,) if squeeze else (self._n, -1)), dtype=own)
            out = self._products(torch.from_numpy(V), check=False)
            out = (out if out.device.type == "cpu" else out.cpu()).numpy()
            self._guard(out)  # in NumPy, in the operator's dtype: a third of the cost in torch
            out = out.astype(dtype, copy=False)
            return out if X.ndim == 1 else out.reshape(self._n, -1)

        adjoint = _apply if self.self_adjoint else None
        return LinearOperator(self.shape, matvec=_apply, matmat=_apply, rmatvec=adjoint, rmatmat=adjoint, dtype=dtype)

    def to_linear_operator(self):
        """This operator as a gpytorch ``linear_operator.LinearOperator`` (same dtype and device, products by ``matmat``).

        It enters linear_operator's routines: ``solve`` (conjugate gradients above its Cholesky size),
        ``root_decomposition`` (Lanczos), ``logdet`` and ``inv_quad_logdet`` (stochastic Lanczos quadrature),
        ``diagonal()`` (exact, by n products in blocks). See
        :class:`~hvp_explore.operators._linear_operator.CurvatureLinearOperator`.
        """
        from hvp_explore.operators._linear_operator import CurvatureLinearOperator

        return CurvatureLinearOperator(self)

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


def mean_operator(operators, weights=None) -> LinearCombination:
    r"""The (weighted) mean :math:`\sum_i w_i A_i / \sum_i w_i` of operators of one size, dtype and device.

    E.g. the average perceptual metric over many latents (Wang & Ponce's "average Hessian"), or a
    curvature averaged over several data sets. Matrix-free: one product of every operator per product.

    Args:
        operators: The operators, at least one.
        weights: Non-negative weights, one per operator, not all zero (default: equal weights).

    Raises:
        ValueError: No operator, a weight count that differs, or negative / non-finite weights or all zero.
    """
    operators = list(operators)
    if not operators:
        raise ValueError("mean_operator needs at least one operator")
    weights = [1.0] * len(operators) if weights is None else [_real_scalar(w, "a weight") for w in weights]
    if len(weights) != len(operators):
        raise ValueError(f"mean_operator got {len(operators)} operators and {len(weights)} weights")
    total = math.fsum(weights)
    if any(w < 0 for w in weights) or not total > 0:
        raise ValueError("mean_operator's weights must be non-negative and not all zero")
    return LinearCombination(tuple((w / total, op) for w, op in zip(weights, operators)))


def _flat_terms(op: CurvatureOperator, c: float) -> tuple[tuple[float, CurvatureOperator], ...]:
    """``c * op`` as combination terms: the terms of an unshifted combination (scaled by c), else ``((c, op),)``."""
    if isinstance(op, LinearCombination) and op.shift == 0.0:
        return tuple((c * ci, opi) for ci, opi in op.terms)
    return ((c, op),)


def _real_scalar(c: object, what: str) -> float:
    """``c`` as a float when it is a finite real scalar (a Python or NumPy number, a 0-d array or tensor).

    Raises:
        ValueError: An array or tensor with dimensions, or NaN / inf.
        TypeError: Anything else that is not a real number (bools included).
    """
    if isinstance(c, (torch.Tensor, np.ndarray)):
        if c.ndim != 0:
            raise ValueError(f"{what} must be a real scalar, got an array of shape {tuple(c.shape)} (products are A @ V)")
        c = c.item()
    if isinstance(c, bool) or not isinstance(c, numbers.Real):
        raise TypeError(f"{what} must be a real scalar, got {type(c).__name__}")
    if not math.isfinite(c):
        raise ValueError(f"{what} must be finite, got {c}")
    return float(c)


class LinearCombination(CurvatureOperator):
    r"""The operator :math:`C = \sum_i c_i A_i + s I` of operators of one size, dtype and device.

    Built by the algebra of :class:`CurvatureOperator` (``A + B``, ``A - B``, ``c * A``, ``-A``,
    ``A.shifted(s)``) rather than directly. A product :math:`C V = \sum_i c_i (A_i V) + s V` applies
    every term to the block (each splits it by its own ``block_size``: its memory budget holds) while
    the modules of all terms are frozen (eval mode, no parameter gradients), as for a single operator.

    Product counters: ``num_matvecs`` and ``num_calls`` of the combination count its own products and
    calls, and each term's counters count the products it applied (one per product of the combination
    and occurrence of the term), so the costs of the underlying operators stay visible to their holders.

    Args:
        terms: The ``(c_i, A_i)`` pairs, at least one; the coefficients are real scalars.
        shift: The multiple :math:`s` of the identity.

    Raises:
        ValueError: Operators of different sizes, dtypes or devices; an array coefficient or shift (not
            0-d), or a non-finite one.
        TypeError: A term that is not a :class:`CurvatureOperator`, or a coefficient or shift that is
            not a real number (a string, a bool, an operator).
    """

    def __init__(self, terms: tuple[tuple[float, CurvatureOperator], ...], *, shift: float = 0.0):
        terms = tuple(terms)
        if not terms:
            raise ValueError("a linear combination needs at least one operator")
        first = terms[0][1]
        for _, op in terms:
            if not isinstance(op, CurvatureOperator):
                raise TypeError(f"a linear combination combines CurvatureOperators, got {type(op).__name__}")
            if (op.shape, op.dtype, op.device) != (first.shape, first.dtype, first.device):
                raise ValueError(f"cannot combine {first.name} ({first.shape}, {first.dtype}, {first.device}) with "
                                 f"{op.name} ({op.shape}, {op.dtype}, {op.device}): size, dtype and device must agree")
        super().__init__(first.shape[0], dtype=first.dtype, device=first.device,
                         modules=tuple(m for _, op in terms for m in op._modules))
        self._terms = tuple((_real_scalar(c, "a coefficient"), op) for c, op in terms)
        self._shift = _real_scalar(shift, "the shift")
        self.self_adjoint = all(op.self_adjoint for _, op in terms)
        self.name = _combination_name(self._terms, self._shift)

    @property
    def terms(self) -> tuple[tuple[float, CurvatureOperator], ...]:
        """The ``(c_i, A_i)`` pairs."""
        return self._terms

    @property
    def shift(self) -> float:
        """The multiple :math:`s` of the identity."""
        return self._shift

    def _matmat(self, V: torch.Tensor) -> torch.Tensor:
        out = None
        for c, op in self._terms:
            product = op._blockwise(V)
            product = product if c == 1.0 else c * product
            out = product if out is None else out + product
        return out + self._shift * V if self._shift else out

    def _quadratic(self, V: torch.Tensor) -> torch.Tensor:
        # each term's own (possibly cheaper) forms: v^T C v = sum_i c_i v^T A_i v + s ||v||^2
        out = sum(c * op._blockwise(V, quadratic=True) for c, op in self._terms)
        return out + self._shift * V.pow(2).sum(dim=0) if self._shift else out

    def _projected(self, Q: torch.Tensor) -> torch.Tensor:
        # each term's own (possibly cheaper) projection: Q^T C Q = sum_i c_i Q^T A_i Q + s Q^T Q
        out = sum(c * op._projected(Q) for c, op in self._terms)
        self.num_matvecs += Q.shape[1]
        self.num_calls += 1
        return out + self._shift * (Q.T @ Q) if self._shift else out


def _combination_name(terms: tuple[tuple[float, CurvatureOperator], ...], shift: float) -> str:
    """A readable label such as ``H_X - 0.5 * (H_Y + 0.001 I)`` (error messages name the combination)."""
    parts = [(c, f"({op.name})" if _compound(op) else op.name, " * ") for c, op in terms]
    if shift:
        parts.append((shift, "I", " "))
    label = ""
    for i, (c, name, times) in enumerate(parts):
        sign = ("-" if c < 0 else "") if i == 0 else (" - " if c < 0 else " + ")
        magnitude = "" if abs(c) == 1.0 and name != "I" else f"{abs(c):g}{times}"
        label += f"{sign}{magnitude}{name}"
    return label


def _compound(op: CurvatureOperator) -> bool:
    """Whether the label of ``op`` needs parentheses inside another combination's."""
    return isinstance(op, LinearCombination) and (len(op.terms) > 1 or op.shift != 0.0 or op.terms[0][0] < 0)

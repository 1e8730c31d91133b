"""Hessian-vector products of a scalar function by double backpropagation."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch

from hvp_explore.operators._autograd import retained_vjp
from hvp_explore.operators.base import CurvatureOperator, NonFiniteError, as_latent, frozen_modules, modules_of, seconds_since
from hvp_explore.operators.memory import default_budget, saved_tensor_bytes

__all__ = ["HessianOperator", "hessian_operator"]


class HessianOperator(CurvatureOperator):
    r"""The Hessian :math:`\nabla^2 f(z_0)` of a scalar function, applied by double backprop.

    The first-order graph :math:`g(z) = \nabla f(z)` is built once (with ``create_graph=True``) and
    kept; each product :math:`H v = \nabla_z \langle g(z), v \rangle` is one more backward pass
    through it, and a block of vectors is one batched backward (``is_grads_batched``, which uses
    ``vmap`` internally) instead of a Python loop. Each product's own graph is freed after use.

    Unlike the Gauss-Newton operator this is valid at any point, not only where a residual
    vanishes, and for any twice-differentiable ``f``.
    """

    name = "Hessian (double backprop)"

    def __init__(self, f: Callable[[torch.Tensor], torch.Tensor], z0: torch.Tensor, *, block_size: int | None = None,
                 modules: tuple[object, ...] = ()):
        z0 = as_latent(z0)
        super().__init__(z0.numel(), dtype=z0.dtype, device=z0.device, block_size=block_size, modules=(f, *modules))
        self._f = f
        self._z = z0.clone().requires_grad_(True)
        t0 = time.perf_counter()
        value, self._grad = self._first_order(self._z)
        self.build_seconds = seconds_since(t0, self._device)
        self.value = float(value.detach())
        self._saved_bytes: int | None = None
        #: Bytes a batch may use when ``block_size`` is unset; ``None`` = half the device's free memory (read once).
        self.memory_budget: int | None = None
        self._auto_budget: int | None = None

    def _first_order(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``f(z)`` and its gradient with the graph kept (``create_graph``), the modules frozen.

        Raises:
            ValueError: ``f`` is not scalar.
            NonFiniteError: ``f(z)`` is NaN or inf.
        """
        with frozen_modules(*self._modules), torch.enable_grad():
            value = self._f(z)
            if value.numel() != 1:
                raise ValueError(f"hessian_operator needs a scalar function, got an output of shape {tuple(value.shape)}")
            if not torch.isfinite(value).all():
                raise NonFiniteError(f"{self.name}: the function value at z0 is NaN or inf")
            # a 0-d value as is: a reshape would add a node that every product backpropagates through again
            (grad,) = torch.autograd.grad(value.reshape(()) if value.dim() else value, z, create_graph=True)
        return value, grad

    @property
    def saved_bytes(self) -> int:
        """Activations the first-order graph saves (forward and backward), weights excluded.

        Measured on a second build of that graph, discarded: the kept graph carries no saved-tensor hooks,
        whose Python unpack would run on every saved tensor of every product (a sixth of a product's time on a
        cheap function).
        """
        if self._saved_bytes is None:
            modules = tuple(m for fn in self._modules for m in modules_of(fn))
            with saved_tensor_bytes(modules) as saved:
                self._first_order(self._z.detach().clone().requires_grad_(True))
            self._saved_bytes = saved.total
        return self._saved_bytes

    def memory_block(self) -> int:
        """Largest batch the memory budget allows: a batched double backward holds about two tangents of
        every saved activation per vector."""
        if self.memory_budget is None and self._auto_budget is None:
            self._auto_budget = default_budget(self._device)  # read once: /proc/meminfo costs 0.2 ms a product
        budget = self.memory_budget if self.memory_budget is not None else self._auto_budget
        return max(1, budget // (2 * self.saved_bytes + 2 * self._n * self._z.element_size()))

    def _matvec(self, v: torch.Tensor) -> torch.Tensor:
        hv = retained_vjp(self._grad, self._z, v) if self._grad.requires_grad else None
        return torch.zeros_like(v) if hv is None else hv  # None: f is affine in z, its Hessian vanishes

    def _matmat(self, V: torch.Tensor) -> torch.Tensor:
        if V.shape[1] == 1:
            return self._matvec(V[:, 0]).reshape(-1, 1)
        if not self._grad.requires_grad:  # f is affine in z: its Hessian vanishes
            return torch.zeros_like(V)
        (hv,) = torch.autograd.grad(self._grad, self._z, V.T.contiguous(), retain_graph=True, is_grads_batched=True)
        return hv.T


def hessian_operator(f: Callable[[torch.Tensor], torch.Tensor], z0: torch.Tensor | np.ndarray, *,
                     block_size: int | None = None, modules: tuple[object, ...] = ()) -> HessianOperator:
    r"""Hessian of a scalar function ``f`` at ``z0``, as a matrix-free operator.

    Args:
        f: Scalar function of a latent of shape (n,).
        z0: The point, shape (n,) or (1, n).
        block_size: Largest number of vectors per batched product (memory budget); ``None`` = all.
        modules: Extra ``nn.Module`` objects ``f`` uses, put in eval mode without parameter
            gradients while the operator works (``f`` itself is included when it is a module).

    Returns:
        A :class:`HessianOperator` with ``matvec``, ``matmat``, ``dense()`` and ``to_scipy()``.

    Example:
        >>> A = torch.tensor([[2.0, 1.0], [1.0, 3.0]], dtype=torch.float64)
        >>> H = hessian_operator(lambda z: 0.5 * z @ A @ z, torch.zeros(2, dtype=torch.float64))
        >>> torch.allclose(H.dense(), A)
        True
    """
    return HessianOperator(f, z0, block_size=block_size, modules=modules)

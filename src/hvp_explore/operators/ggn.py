"""Gauss-Newton products :math:`J^T J v` of a vector residual, by one jvp and one vjp."""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np
import torch
from torch.func import jvp, vjp, vmap

from hvp_explore.operators.base import CurvatureOperator, NonFiniteError, as_latent, frozen_modules

__all__ = ["GaussNewtonOperator", "gauss_newton_operator"]

# torch loads its forward-mode decompositions on the first jvp, through the deprecated
# torch.jit.script; load them here once, quietly, so users do not see torch's own FutureWarning.
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.*", category=FutureWarning)
    try:
        from torch._decomp import decompositions_for_jvp  # noqa: F401
    except ImportError:  # a future torch without it: nothing to silence
        pass


class GaussNewtonOperator(CurvatureOperator):
    r"""The Gauss-Newton matrix :math:`G = J_r(z_0)^T J_r(z_0)` of a residual :math:`r: R^n \to R^m`.

    For :math:`f(z) = \tfrac12 \|r(z)\|^2`,
    :math:`\nabla^2 f = J^T J + \sum_i r_i \nabla^2 r_i`; where the residual vanishes (``r(z0) = 0``,
    as for a distance to the image at ``z0``) the second term drops and ``G`` *is* the Hessian.

    A product needs one forward-mode product :math:`u = J v` (``torch.func.jvp``) and one
    reverse-mode product :math:`J^T u`; the reverse pass is linearised once at construction
    (``torch.func.vjp``) and reused, and blocks are batched with ``torch.func.vmap``: no double
    backprop anywhere, and a block of b products costs far less than b single ones.

    Attributes:
        residual_dim: m, the length of the residual (the rank of ``G`` is at most ``min(m, n)``).
        residual_norm: :math:`\|r(z_0)\|`, zero when ``G`` equals the Hessian of ``f``.
    """

    name = "Gauss-Newton (jvp + vjp)"

    def __init__(self, residual: Callable[[torch.Tensor], torch.Tensor], z0: torch.Tensor, *, block_size: int | None = None,
                 modules: tuple[object, ...] = ()):
        z0 = as_latent(z0)
        super().__init__(z0.numel(), dtype=z0.dtype, device=z0.device, block_size=block_size, modules=(residual, *modules))
        self._z0 = z0
        self._residual = lambda z: residual(z).reshape(-1)
        with frozen_modules(*self._modules):
            r0, self._vjp_fn = vjp(self._residual, z0)
        if not torch.isfinite(r0).all():
            raise NonFiniteError(f"{self.name}: the residual at z0 contains NaN or inf")
        self.residual_dim = r0.numel()
        self.residual_norm = float(r0.detach().norm())
        self._batched_jvp = vmap(self._jvp)
        self._batched_vjp = vmap(self._vjp)

    def _jvp(self, v: torch.Tensor) -> torch.Tensor:
        return jvp(self._residual, (self._z0,), (v,))[1]

    def _vjp(self, u: torch.Tensor) -> torch.Tensor:
        return self._vjp_fn(u)[0]

    def _matmat(self, V: torch.Tensor) -> torch.Tensor:
        if V.shape[1] == 1:
            return self._vjp(self._jvp(V[:, 0])).reshape(-1, 1)
        return self._batched_vjp(self._batched_jvp(V.T.contiguous())).T

    def jacobian(self, *, block_size: int | None = None) -> torch.Tensor:
        r"""The full Jacobian :math:`J_r(z_0)` (m, n), by whichever of its sides is shorter.

        When the residual is short (super-resolution x4 of a 32x32 image: m = 64) its m rows are
        m batched vector-Jacobian products; when the latent is shorter (the 100-d face generator
        under a 768-number observation) its n columns are n batched Jacobian-vector products.
        Either way this is the cheapest exact route to the whole spectrum: :math:`G = J^T J`, whose
        eigenpairs are the squared singular values and right singular vectors of ``J``. Counts
        ``min(m, n)`` toward ``num_matvecs`` (a vjp or a jvp is half a Gauss-Newton product).
        """
        m, n = self.residual_dim, self.shape[0]
        size = min(m, n)
        step = block_size or self.block_size or size
        by_rows = m <= n
        parts = []
        with frozen_modules(*self._modules):
            for start in range(0, size, step):
                eye = torch.zeros(min(step, size - start), size, dtype=self._dtype, device=self._device)
                eye[:, start : start + eye.shape[0]].fill_diagonal_(1.0)
                parts.append((self._batched_vjp(eye) if by_rows else self._batched_jvp(eye)).detach())
                self.num_calls += 1
        self.num_matvecs += size
        J = torch.cat(parts, dim=0) if by_rows else torch.cat(parts, dim=0).T
        if not torch.isfinite(J).all():
            raise NonFiniteError(f"{self.name}: the Jacobian contains NaN or inf")
        return J


def gauss_newton_operator(residual: Callable[[torch.Tensor], torch.Tensor], z0: torch.Tensor | np.ndarray, *,
                          block_size: int | None = None, modules: tuple[object, ...] = ()) -> GaussNewtonOperator:
    r"""Gauss-Newton matrix :math:`J^T J` of ``residual`` at ``z0``, as a matrix-free operator.

    Args:
        residual: Function of a latent of shape (n,) returning a tensor of any shape (flattened to m).
            It must be composable with ``torch.func`` (no in-place updates of captured tensors).
        z0: The point, shape (n,) or (1, n).
        block_size: Largest number of vectors per batched product (memory budget); ``None`` = all.
        modules: Extra ``nn.Module`` objects the residual uses, put in eval mode without parameter
            gradients while the operator works.

    Example:
        >>> J = torch.tensor([[1.0, 2.0], [0.0, 1.0], [1.0, 0.0]], dtype=torch.float64)
        >>> G = gauss_newton_operator(lambda z: J @ z, torch.zeros(2, dtype=torch.float64))
        >>> torch.allclose(G.dense(), J.T @ J)
        True
    """
    return GaussNewtonOperator(residual, z0, block_size=block_size, modules=modules)

r"""The first-order model of a generator at a point: one Jacobian that both metrics of e-GLASS share.

:math:`G_\ell(z) = G(z_0) + J_G (z - z_0)`, with :math:`J_G = \partial G / \partial z\,(z_0)` (P x n, P the entries of an
image). Both metrics are Gauss-Newton forms through the generator,

.. math:: H_Y = J_G^T A^T A J_G, \qquad H_X = J_G^T J_r^T J_r J_G

(:math:`r` the metric's residual at :math:`x_0 = G(z_0)`), so they depend on the generator only through :math:`J_G`:
the operators built on :math:`G_\ell` are the same matrices, and each of their products passes a matrix product with
:math:`J_G` instead of the generator's forward-mode and reverse passes. :math:`J_G` costs n Jacobian-vector products
in memory-sized batches, once; it pays where the two eigensolves would pass more vectors than that through the
generator (:func:`~hvp_explore.eigen.solvers.static_half_products`): the face generator's n = 100 latents, not the
embedded default's 512 (docs/exploration.md).

The Hessian of a function of the image, :math:`\nabla^2_z f(G(z))`, also has the generator's second-order terms
:math:`\sum_i \partial f / \partial x_i \, \nabla^2 G_i`, which :math:`G_\ell` does not have; they vanish where
:math:`\nabla_x f = 0` (a distance to :math:`x_0` at :math:`z_0`), not in general.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch

from hvp_explore.operators._folding import folded_callable
from hvp_explore.operators.base import as_latent, frozen_modules, seconds_since
from hvp_explore.operators.ggn import gauss_newton_operator
from hvp_explore.operators.memory import fit_block_size

__all__ = ["LinearizedGenerator"]


class LinearizedGenerator:
    r""":math:`G_\ell(z) = G(z_0) + J_G (z - z_0)`: a generator's first-order model at ``z0``, a callable like the generator.

    Args:
        generator: Callable mapping latents (B, n) to images (B, C, H, W).
        z0: The point, shape (n,) or (1, n); its dtype and device are the model's.
        block_size: Largest number of Jacobian-vector products per batch (default: what memory allows).
        max_memory: Memory budget in bytes of one batch (batches are fitted to it, at most ``block_size``); None = no budget.

    Attributes:
        jacobian: :math:`J_G` (P, n), P = C * H * W, in ``z0``'s dtype.
        image0: :math:`G(z_0)`, shape (1, C, H, W).
        z0: The point (n,).
        latent_dim, image_shape: As the generator's.
        seconds: Time to take the Jacobian.
        num_matvecs: Products taken: the Jacobian's n, and those of the memory probe that fits the batches to
            ``max_memory`` when one is given (:func:`~hvp_explore.operators.memory.fit_block_size`).

    Example:
        >>> W = torch.randn(12, 3, dtype=torch.float64)
        >>> G = lambda z: torch.tanh(z @ W.T).reshape(-1, 3, 2, 2)
        >>> lin = LinearizedGenerator(G, torch.zeros(3, dtype=torch.float64))
        >>> torch.allclose(lin(torch.zeros(1, 3, dtype=torch.float64)), G(torch.zeros(1, 3, dtype=torch.float64)))
        True
    """

    def __init__(self, generator: Callable[[torch.Tensor], torch.Tensor], z0: torch.Tensor | np.ndarray, *,
                 block_size: int | None = None, max_memory: int | None = None):
        t0 = time.perf_counter()
        self.z0 = as_latent(z0)
        with frozen_modules(generator), torch.no_grad():
            self.image0 = generator(self.z0.unsqueeze(0)).detach()
        fast = folded_callable(generator)  # the operators' own folded copy: batch norms in their layers
        op = gauss_newton_operator(lambda z: fast(z.unsqueeze(0)).reshape(-1), self.z0, modules=(generator,), block_size=block_size)
        if max_memory is not None:
            fit_block_size(op, max_memory, largest=block_size or 1024)
        self.jacobian = op.jacobian()  # n batched Jacobian-vector products: P > n for any image generator
        self.num_matvecs = op.num_matvecs
        self.latent_dim = self.z0.numel()
        self.image_shape = tuple(self.image0.shape[1:])
        self.seconds = seconds_since(t0, self.z0.device)

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        """:math:`G(z_0) + J_G (z - z_0)` of latents (B, n): images (B, C, H, W)."""
        return self.image0 + ((z - self.z0) @ self.jacobian.T).reshape(-1, *self.image_shape)

    def __repr__(self) -> str:
        return f"LinearizedGenerator(n={self.latent_dim}, image_shape={self.image_shape})"

r"""The two latent metrics of e-GLASS at a solution ``z0``.

- Measurement metric :math:`H_Y = \tfrac12 \nabla^2_z \|A G(z) - A G(z_0)\|^2 = J_\phi^T J_\phi`
  with :math:`\phi = A \circ G`.
- Perceptual metric :math:`H_X = \tfrac12 \nabla^2_z d_X(G(z), G(z_0))`; when
  :math:`d_X = \|r\|^2` for a residual vanishing at :math:`z_0` (LPIPS and the other metrics in
  :mod:`hvp_explore.metrics.base`), :math:`H_X = J_r^T J_r` exactly.

``method="ggn"`` builds a :class:`~hvp_explore.operators.ggn.GaussNewtonOperator` (one jvp and one vjp per
product, batched); ``method="double-backprop"`` builds a :class:`~hessian.HessianOperator` of the
scalar distance, the generic path for distances without a residual form. At ``z0`` the two agree.

Both differentiate the operators' own copy of the generator and of the metric in which eval-mode
batch norm is the affine map it is (:mod:`~hvp_explore.operators._folding`): forward-mode AD and double
backprop through ``batch_norm`` are slow in torch. The user's modules are never modified.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from hvp_explore.operators._folding import folded_callable
from hvp_explore.operators.base import CurvatureOperator, as_latent, frozen_modules
from hvp_explore.operators.ggn import gauss_newton_operator
from hvp_explore.operators.hessian import hessian_operator

__all__ = ["measurement_hessian", "perceptual_hessian", "unobserved_hessian"]

_METHODS = ("ggn", "double-backprop")


def _check_method(method: str | None, *, has_residual: bool) -> str:
    if method is None:
        return "ggn" if has_residual else "double-backprop"
    if method not in _METHODS:
        raise ValueError(f"method must be one of {', '.join(_METHODS)}, got {method!r}")
    if method == "ggn" and not has_residual:
        raise ValueError("method='ggn' needs a metric with a residual(x, x0) form; use method='double-backprop'")
    return method


def _image(generator: Callable, z: torch.Tensor) -> torch.Tensor:
    return generator(z.unsqueeze(0))


def measurement_hessian(generator: Callable, forward: Callable, z0: torch.Tensor | np.ndarray, *, method: str = "ggn",
                        block_size: int | None = None) -> CurvatureOperator:
    r"""The measurement metric :math:`H_Y(z_0) = J_\phi^T J_\phi`, :math:`\phi = A \circ G`.

    Args:
        generator: Callable mapping latents (B, n) to images (B, C, H, W).
        forward: Linear forward operator mapping images to measurements (B, ...).
        z0: The solution, shape (n,) or (1, n); its dtype and device set the operator's.
        method: ``"ggn"`` (jvp + vjp; the default) or ``"double-backprop"`` (Hessian of
            :math:`\tfrac12\|A G(z) - A G(z_0)\|^2`).
        block_size: Largest number of vectors per batched product.

    Returns:
        An operator with ``matvec``, ``matmat``, ``dense()``, ``to_scipy()``; the GGN form also has
        ``jacobian()`` and ``residual_dim`` (m, the number of measurements).
    """
    method = _check_method(method, has_residual=True)
    z0 = as_latent(z0)
    modules = (generator, forward)
    with frozen_modules(*modules), torch.no_grad():
        y0 = forward(_image(generator, z0)).detach()

    fast_generator = folded_callable(generator)

    def fast_residual(z: torch.Tensor) -> torch.Tensor:
        return forward(_image(fast_generator, z)) - y0

    if method == "ggn":
        op = gauss_newton_operator(fast_residual, z0, block_size=block_size, modules=modules)
    else:
        op = hessian_operator(lambda z: 0.5 * fast_residual(z).pow(2).sum(), z0, block_size=block_size, modules=modules)
    op.name = f"H_Y ({op.name})"
    return op


def perceptual_hessian(generator: Callable, metric: Callable, z0: torch.Tensor | np.ndarray, *, method: str | None = None,
                       block_size: int | None = None) -> CurvatureOperator:
    r"""The perceptual metric :math:`H_X(z_0) = \tfrac12 \nabla^2_z d(G(z), G(z_0))`.

    Args:
        generator: Callable mapping latents (B, n) to images (B, C, H, W).
        metric: A callable ``d(x, x0) -> (B,)``, or a metric that also exposes
            ``residual(x, x0) -> (B, M)`` with ``d = ||residual||^2`` (then the GGN path applies).
        z0: The solution, shape (n,) or (1, n).
        method: ``"ggn"`` (default when the metric has a residual form) or ``"double-backprop"``
            (the default otherwise).
        block_size: Largest number of vectors per batched product.
    """
    op = _perceptual(generator, metric, z0, method=method, block_size=block_size)
    op.name = f"H_X ({op.name})"
    return op


def unobserved_hessian(generator: Callable, forward, metric: Callable, z0: torch.Tensor | np.ndarray, *, method: str | None = None,
                       block_size: int | None = None) -> CurvatureOperator:
    r"""The perceptual metric of the part of the image the measurements do not see, :math:`H_U(z_0)`.

    :math:`H_U = \tfrac12 \nabla^2_z d\big(x_0 + P(G(z) - x_0),\, x_0\big)` with :math:`x_0 = G(z_0)` and
    :math:`P = I - A^+ A` the projector onto the null space of A (:meth:`ForwardOperator.unobserved`): the
    image keeps its observed part fixed at :math:`x_0`'s and only its unobserved part follows :math:`z`. For
    inpainting this is the metric of the hole; for super-resolution, of the detail the downsampling removes.
    Against :math:`H_Y` in the pencil :math:`H_U d = \mu (H_Y + \epsilon I) d` its top eigenvectors change
    what was not observed most per unit of measurement change (``mode="unobserved"``).

    Args:
        generator, metric, z0, method, block_size: As in :func:`perceptual_hessian`.
        forward: The linear forward operator A (with ``unobserved``).
    """
    op = _perceptual(generator, metric, z0, method=method, block_size=block_size, project=forward.unobserved, extra=(forward,))
    op.name = f"H_U ({op.name})"
    return op


def _perceptual(generator: Callable, metric: Callable, z0, *, method: str | None, block_size: int | None,
                project: Callable | None = None, extra: tuple = ()) -> CurvatureOperator:
    r""":math:`\tfrac12 \nabla^2 d(x(z), x_0)` with :math:`x(z) = x_0 + \mathrm{project}(G(z) - x_0)` (``G(z)`` without one)."""
    method = _check_method(method, has_residual=callable(getattr(metric, "residual", None)))
    z0 = as_latent(z0)
    modules = (generator, metric, *extra)
    with frozen_modules(*modules), torch.no_grad():
        x0 = _image(generator, z0).detach()

    fast_generator = folded_callable(generator)

    def image(z: torch.Tensor) -> torch.Tensor:
        x = _image(fast_generator, z)
        return x if project is None else x0 + project(x - x0)

    if method == "ggn":
        # x0's features once, not in every product (a whole pass of the metric's network per batched call)
        at = getattr(metric, "residual_at", None)
        fast_residual = folded_callable(at)(x0) if callable(at) else (lambda x, r=folded_callable(metric.residual): r(x, x0))
        return gauss_newton_operator(lambda z: fast_residual(image(z)), z0, block_size=block_size, modules=modules)
    fast_metric = folded_callable(metric)
    return hessian_operator(lambda z: 0.5 * fast_metric(image(z), x0).sum(), z0, block_size=block_size, modules=modules)

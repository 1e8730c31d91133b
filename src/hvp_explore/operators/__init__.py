r"""Curvature operators: symmetric n x n matrices of the latent space known only through products.

:class:`CurvatureOperator` is the contract (scipy's LinearOperator protocol on torch tensors, a
``_matmat`` to implement, ``to_scipy()`` as the bridge, and an algebra: ``A + B``, ``A - B``, ``c * A``,
``A.shifted(eps)``, each a :class:`LinearCombination`); :mod:`~hvp_explore.operators.hessian`
multiplies by double backprop, :mod:`~hvp_explore.operators.ggn` by one jvp and one vjp (Gauss-Newton),
:mod:`~hvp_explore.operators.curvature` builds the two metrics of an exploration, H_Y and H_X (on the generator, or on its
first-order model at z0 that both share, :mod:`~hvp_explore.operators.linearized`), and
:mod:`~hvp_explore.operators.loss` the curvature of a data set's loss in a model's parameters.
See ``docs/operators.md``.
"""

from hvp_explore.operators.base import CurvatureOperator, LinearCombination, NonFiniteError, mean_operator
from hvp_explore.operators.curvature import measurement_hessian, perceptual_hessian, unobserved_hessian
from hvp_explore.operators.ggn import GaussNewtonOperator, gauss_newton_operator
from hvp_explore.operators.hessian import HessianOperator, hessian_operator
from hvp_explore.operators.linearized import LinearizedGenerator
from hvp_explore.operators.loss import LossGGNOperator, LossHessianOperator, loss_ggn, loss_hessian

__all__ = ["CurvatureOperator", "LinearCombination", "NonFiniteError", "mean_operator", "HessianOperator", "hessian_operator",
           "GaussNewtonOperator", "gauss_newton_operator", "measurement_hessian", "perceptual_hessian", "unobserved_hessian", "LinearizedGenerator",
           "LossHessianOperator", "LossGGNOperator", "loss_hessian", "loss_ggn"]

r"""The bridge to gpytorch's ``linear_operator``: a curvature operator as a ``linear_operator.LinearOperator``.

``linear_operator`` (the linear algebra behind gpytorch) runs its solvers on any subclass that implements
``_matmul``, ``_size`` and ``_transpose_nonbatch``. :class:`CurvatureLinearOperator` implements them with
the curvature operator's batched ``matmat``, so these work matrix-free:

- ``L.solve(b)`` / ``linear_operator.utils.linear_cg``: conjugate gradients (above
  ``linear_operator.settings.max_cholesky_size``, 800 by default; below it linear_operator forms the dense
  matrix by products and factorises it);
- ``L.root_decomposition()``: a low-rank root :math:`R R^T \approx A` by Lanczos;
- ``L.logdet()``, ``L.inv_quad_logdet(...)``: stochastic Lanczos quadrature with CG (positive definite
  operators, e.g. ``H.shifted(eps)``);
- ``L.diagonal()``: the exact diagonal, from products with the identity in blocks (n products).

linear_operator rebuilds an operator from its tensor arguments inside its autograd functions, so the
curvature operator travels as a keyword argument and the only positional argument is an empty anchor
tensor carrying dtype and device. Gradients with respect to the operator are not defined (its entries are
no parameters): the bridge is for solves, decompositions and estimates.
"""

from __future__ import annotations

import warnings

import torch

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.*", category=FutureWarning)
    from linear_operator.operators import LinearOperator

__all__ = ["CurvatureLinearOperator"]

#: Columns of the identity per batched call when ``diagonal()`` is computed exactly.
_DIAGONAL_BLOCK = 64


class CurvatureLinearOperator(LinearOperator):
    """A :class:`~hvp_explore.operators.base.CurvatureOperator` as a symmetric ``linear_operator.LinearOperator``.

    Args:
        anchor_or_operator: The curvature operator (or, when linear_operator rebuilds this object, the anchor tensor).
        operator: The curvature operator (keyword form used by the rebuild).
    """

    def __init__(self, anchor_or_operator, *, operator=None):
        if operator is None:
            operator, anchor = anchor_or_operator, torch.empty(0, dtype=anchor_or_operator.dtype,
                                                               device=anchor_or_operator.device)
        else:
            anchor = anchor_or_operator
        super().__init__(anchor, operator=operator)
        self.operator = operator

    def _matmul(self, rhs: torch.Tensor) -> torch.Tensor:
        if rhs.ndim == 1:
            return self.operator.matvec(rhs)
        if rhs.ndim == 2:
            return self.operator.matmat(rhs)
        # batched right-hand sides (..., n, c): one block of all their columns
        n, cols = rhs.shape[-2], rhs.shape[-1]
        flat = rhs.movedim(-2, 0).reshape(n, -1)
        return self.operator.matmat(flat).reshape(n, *rhs.shape[:-2], cols).movedim(0, -2)

    def _size(self) -> torch.Size:
        return torch.Size(self.operator.shape)

    def _transpose_nonbatch(self) -> CurvatureLinearOperator:
        return self  # symmetric

    def _diagonal(self) -> torch.Tensor:
        n = self.operator.shape[0]
        parts = []
        for start in range(0, n, _DIAGONAL_BLOCK):
            stop = min(n, start + _DIAGONAL_BLOCK)
            E = torch.zeros(n, stop - start, dtype=self.operator.dtype, device=self.operator.device)
            E[start:stop].fill_diagonal_(1.0)
            parts.append(self.operator.matmat(E)[start:stop].diagonal())
        return torch.cat(parts)

    @property
    def dtype(self) -> torch.dtype:
        return self.operator.dtype

    @property
    def device(self) -> torch.device:
        return self.operator.device

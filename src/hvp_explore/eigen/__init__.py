"""Top-k eigenpairs of curvature operators (:func:`top_eigenpairs`) and of the pencil H_X d = mu (H_Y + eps I) d.

:mod:`~hvp_explore.eigen.solvers` holds the entry point, the result type and the registry of solvers;
:mod:`~hvp_explore.eigen._methods` the solvers themselves; :mod:`~hvp_explore.eigen.generalized` the
pencil. See ``docs/operators.md`` for how to pick a solver.
"""

from hvp_explore.eigen.generalized import top_generalized_eigenpairs
from hvp_explore.eigen.solvers import SOLVERS, ConvergenceWarning, EigenResult, choose_solver, subspace_cosines, top_eigenpairs

__all__ = ["EigenResult", "ConvergenceWarning", "SOLVERS", "top_eigenpairs", "choose_solver", "subspace_cosines",
           "top_generalized_eigenpairs"]

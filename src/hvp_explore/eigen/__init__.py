"""Spectra of curvature operators: eigenpairs from either end (:func:`top_eigenpairs`), the pencil
H_X d = mu (H_Y + eps I) d, the trace and diagonal (:func:`estimate_trace`) and the spectral density
(:func:`spectral_density`).

:mod:`~hvp_explore.eigen.solvers` holds the entry point, the result type and the registry of solvers;
:mod:`~hvp_explore.eigen._methods` the solvers themselves; :mod:`~hvp_explore.eigen.generalized` the
pencil; :mod:`~hvp_explore.eigen.trace` Hutchinson and Hutch++; :mod:`~hvp_explore.eigen.density` stochastic
Lanczos quadrature. See ``docs/operators.md`` for how to pick a solver.
"""

from hvp_explore.eigen.density import SpectralDensity, spectral_density
from hvp_explore.eigen.generalized import top_generalized_eigenpairs
from hvp_explore.eigen.solvers import SOLVERS, WHICH, ConvergenceWarning, EigenResult, choose_solver, subspace_cosines, top_eigenpairs
from hvp_explore.eigen.trace import TraceEstimate, estimate_diagonal, estimate_trace

__all__ = ["EigenResult", "ConvergenceWarning", "SOLVERS", "WHICH", "top_eigenpairs", "choose_solver", "subspace_cosines",
           "top_generalized_eigenpairs", "TraceEstimate", "estimate_trace", "estimate_diagonal", "SpectralDensity",
           "spectral_density"]

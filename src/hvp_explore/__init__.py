"""hvp-explore: matrix-free curvature operators for generator latent spaces, and e-GLASS exploration.

The subpackages follow the data path, top to bottom::

    problems     forward operators y = A x + n, observations on disk, feasibility
    generators   the registry and loaders of generators
    metrics      perceptual distances in residual form
    inversion    the first solution (CSGM, Gauss-Newton, IAGAN) and the PULSE baseline
    operators    curvature operators: Hessian and Gauss-Newton products, H_Y and H_X
    eigen        top-k eigensolvers and the generalized (pencil) problem
    exploration  directions, feasible steps, solutions: explore() and the Explorer
    io           images, atomic output folders, stage files, figures, batch runs
    cli          the hvp-explore command line (a thin layer over the above)

Every public name is importable from here (``from hvp_explore import explore, load_generator``). They
load on first use, so ``import hvp_explore`` itself is cheap and never imports lpips or torchvision.
"""

from __future__ import annotations

import importlib

from hvp_explore._version import __version__

#: Public name -> the module that defines it.
_EXPORTS = {
    # settings: every default and choice list
    **dict.fromkeys(("DEFAULT_TAU", "DEFAULT_K", "DEFAULT_TOL", "MODES", "PROBLEM_KINDS", "SOLVERS", "ProblemSettings",
                     "InversionSettings", "EigenSettings", "DirectionSettings", "StepSettings", "PulseSettings", "RunSettings"),
                    "hvp_explore.settings"),
    # problems
    **dict.fromkeys(("ForwardOperator", "SuperResolution", "Inpainting", "CompressedSensing", "LinearCallable", "make_problem",
                     "observe", "add_noise", "measurement_mse", "lr_psnr", "tau_from_noise", "resolve_tau", "describe_tau", "Observation", "load_observation"), "hvp_explore.problems"),
    # generators
    **dict.fromkeys(("load_generator", "available_generators", "GeneratorError"), "hvp_explore.generators"),
    # metrics
    **dict.fromkeys(("PerceptualMetric", "FeatureDistance", "EfficientNetMetric", "ClassifierMetric", "LPIPSMetric", "PixelMetric",
                     "MetricError", "load_metric", "available_metrics", "default_metric"), "hvp_explore.metrics"),
    # inversion
    **dict.fromkeys(("invert", "InversionResult", "pulse", "PulseResult"), "hvp_explore.inversion"),
    # operators
    **dict.fromkeys(("CurvatureOperator", "LinearCombination", "NonFiniteError", "mean_operator", "HessianOperator",
                     "hessian_operator", "GaussNewtonOperator", "gauss_newton_operator", "measurement_hessian",
                     "perceptual_hessian", "unobserved_hessian", "LinearizedGenerator", "LossHessianOperator", "LossGGNOperator", "loss_hessian", "loss_ggn"),
                    "hvp_explore.operators"),
    # eigen
    **dict.fromkeys(("EigenResult", "ConvergenceWarning", "top_eigenpairs", "choose_solver", "subspace_cosines",
                     "top_generalized_eigenpairs", "TraceEstimate", "estimate_trace", "estimate_diagonal", "SpectralDensity",
                     "spectral_density"), "hvp_explore.eigen"),
    # exploration
    **dict.fromkeys(("explore", "ExplorationResult", "Solution", "Direction", "Projection", "Step", "coupling_matrix",
                     "significant_couplings", "eglass_projection", "make_directions", "combine_directions", "feasible_steps",
                     "ellipsoid_steps", "predicted_steps", "deliver", "render_solutions", "pairwise_distances", "unobserved_share", "Explorer"),
                    "hvp_explore.exploration"),
    # the latent geometry of a generator
    **dict.fromkeys(("latent_geometry", "LatentGeometry"), "hvp_explore.geometry"),
    # io
    **dict.fromkeys(("ImageError", "load_image", "save_image", "load_measurements"), "hvp_explore.io.images"),
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    """Load a public name from its module on first use (PEP 562), then keep it here."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'hvp_explore' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)

"""hvp-explore: matrix-free curvature operators for generator latent spaces, and e-GLASS exploration.

The data path reads top to bottom: problem (forward operator) -> generator -> inversion ->
operators -> eigensolver -> exploration -> report.
"""

from ._base import CurvatureOperator, NonFiniteError
from .curvature import measurement_hessian, perceptual_hessian
from .eigen import SOLVERS, ConvergenceWarning, EigenResult, choose_solver, subspace_cosines, top_eigenpairs
from .generalized import top_generalized_eigenpairs
from .ggn import GaussNewtonOperator, gauss_newton_operator
from .hessian import HessianOperator, hessian_operator
from .images import ImageError, load_image, load_measurements, save_image
from .metrics import ClassifierMetric, LPIPSMetric, MetricError, PerceptualMetric, PixelMetric, available_metrics, load_metric
from .problems import (
    DEFAULT_TAU,
    CompressedSensing,
    ForwardOperator,
    Inpainting,
    LinearCallable,
    SuperResolution,
    add_noise,
    lr_psnr,
    make_problem,
    measurement_mse,
    observe,
)

__version__ = "0.1.0"

__all__ = [
    "CurvatureOperator", "NonFiniteError", "HessianOperator", "hessian_operator", "GaussNewtonOperator",
    "gauss_newton_operator", "measurement_hessian", "perceptual_hessian",
    "SOLVERS", "EigenResult", "ConvergenceWarning", "top_eigenpairs", "choose_solver", "subspace_cosines",
    "top_generalized_eigenpairs",
    "ForwardOperator", "SuperResolution", "Inpainting", "CompressedSensing", "LinearCallable", "make_problem", "observe",
    "add_noise", "measurement_mse", "lr_psnr", "DEFAULT_TAU",
    "ImageError", "load_image", "save_image", "load_measurements",
    "PerceptualMetric", "LPIPSMetric", "ClassifierMetric", "PixelMetric", "MetricError", "load_metric", "available_metrics",
]

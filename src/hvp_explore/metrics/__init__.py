r"""Perceptual distances in residual form, so that the perceptual Hessian is an exact Gauss-Newton product.

A metric is a squared distance :math:`d(x, x_0) = \lVert r(x, x_0) \rVert^2` with :math:`r(x_0, x_0) = 0`
(:class:`PerceptualMetric`); the LPIPS form over a trunk's unit-normalised features is one
(:class:`FeatureDistance`). One module per metric: ``effnet`` (ImageNet EfficientNet-Lite0, the default of
RGB generators), ``fmnist`` (the shipped Fashion-MNIST classifier, the default of ``default``), ``lpips``
(the ``lpips`` package, loaded only when asked for) and ``pixel``; :func:`load_metric` builds them by
name. See ``docs/metrics.md``.
"""

from hvp_explore.metrics.base import FeatureDistance, MetricError, PerceptualMetric
from hvp_explore.metrics.effnet import EFFNET_WEIGHTS, EfficientNetMetric, load_efficientnet_lite0
from hvp_explore.metrics.fmnist import FMNIST_CLASSIFIER_SHA256, ClassifierMetric, load_fmnist_classifier
from hvp_explore.metrics.lpips import LPIPSMetric, backbone_weights_path
from hvp_explore.metrics.pixel import PixelMetric
from hvp_explore.metrics.registry import available_metrics, default_metric, load_metric

__all__ = ["PerceptualMetric", "FeatureDistance", "MetricError", "EfficientNetMetric", "ClassifierMetric", "LPIPSMetric",
           "PixelMetric", "load_metric", "available_metrics", "default_metric", "load_efficientnet_lite0", "load_fmnist_classifier",
           "backbone_weights_path", "EFFNET_WEIGHTS", "FMNIST_CLASSIFIER_SHA256"]

"""Metrics by name: the registry behind ``--metric`` and :func:`load_metric`."""

from __future__ import annotations

import torch

from hvp_explore.metrics.base import MetricError, PerceptualMetric
from hvp_explore.metrics.effnet import EfficientNetMetric
from hvp_explore.metrics.fmnist import ClassifierMetric
from hvp_explore.metrics.lpips import LPIPSMetric
from hvp_explore.metrics.pixel import PixelMetric

__all__ = ["available_metrics", "default_metric", "load_metric"]


_REGISTRY = {
    "default": lambda: ClassifierMetric(),
    "fmnist": lambda: ClassifierMetric(),
    "effnet": lambda: EfficientNetMetric(),
    "lpips-alex": lambda: LPIPSMetric("alex"),
    "lpips-vgg": lambda: LPIPSMetric("vgg"),
    "lpips-squeeze": lambda: LPIPSMetric("squeeze"),
    "pixel": lambda: PixelMetric(),
}


def default_metric(generator: str) -> str:
    """The metric used when none is named: ``fmnist`` for the embedded ``default`` generator, ``effnet`` for any other.

    The Fashion-MNIST trunk knows only 32x32 grayscale clothing; ImageNet features suit RGB images,
    photographs and unknown generators (gray images are repeated to 3 channels).
    """
    return "fmnist" if str(generator) == "default" else "effnet"


def available_metrics() -> tuple[str, ...]:
    """Names accepted by :func:`load_metric` (``"default"`` is ``"fmnist"``)."""
    return tuple(_REGISTRY)


def load_metric(name: str, *, device: str | torch.device = "cpu") -> PerceptualMetric:
    """Build a registered metric, in eval mode, with frozen parameters, on ``device``.

    Args:
        name: One of :func:`available_metrics`: ``"default"`` (= ``"fmnist"``), ``"fmnist"``,
            ``"lpips-alex"``, ``"lpips-vgg"``, ``"lpips-squeeze"``, ``"pixel"``.
        device: Where the metric's weights go.

    Raises:
        MetricError: Unknown name, or the metric's weights are missing (the message says which file
            and where it belongs).
    """
    if name not in _REGISTRY:
        raise MetricError(f"unknown metric {name!r}; expected one of {', '.join(_REGISTRY)}")
    return _REGISTRY[name]().to(device)

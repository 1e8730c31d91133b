"""The offline default metric: the LPIPS form over the shipped Fashion-MNIST classifier's ReLU stages."""

from __future__ import annotations

from pathlib import Path

import torch

from hvp_explore.generators.dcgan import FashionClassifier
from hvp_explore.io.weights import asset_path, load_checked_state_dict, load_state_into
from hvp_explore.metrics.base import FeatureDistance, MetricError, check_resize, owned_trunk

__all__ = ["ClassifierMetric", "load_fmnist_classifier", "FMNIST_CLASSIFIER_FILE", "FMNIST_CLASSIFIER_SHA256"]

#: Smallest image side: the classifier's two 2x2 pools.
MIN_SIDE = 4


FMNIST_CLASSIFIER_FILE = "fmnist-classifier.pt"
"""File name of the shipped Fashion-MNIST classifier under ``hvp_explore/assets/weights``."""


FMNIST_CLASSIFIER_SHA256: str | None = "08e773a23ddaf2f9f3946e05bc9cc8bf66cb54f81ea70bd766393d3885839ce7"
"""sha256 of the shipped ``fmnist-classifier.pt``; loading the shipped file is refused while it is None."""


def load_fmnist_classifier(path: str | Path | None = None, *, sha256: str | None = None) -> FashionClassifier:
    """Load a :class:`FashionClassifier` state dict, in eval mode.

    Args:
        path: Weights file; None loads the shipped ``fmnist-classifier.pt``, always checked
            against :data:`FMNIST_CLASSIFIER_SHA256`.
        sha256: Expected sha256 of a user file (None: not checked). Ignored for the shipped file.

    Raises:
        MetricError: The file is missing, the shipped file has no recorded checksum, or the file
            does not hold a FashionClassifier state dict.
        ChecksumError: The file's sha256 differs from the expected one.
    """
    if path is None:
        path = asset_path(FMNIST_CLASSIFIER_FILE)
        sha256 = FMNIST_CLASSIFIER_SHA256
        if path.is_file() and sha256 is None:
            raise MetricError(
                f"no sha256 is recorded for the shipped {path.name}; set hvp_explore.metrics.base.FMNIST_CLASSIFIER_SHA256"
            )
    path = Path(path)
    if not path.is_file():
        raise MetricError(
            f"the fmnist metric needs the classifier weights {path.name} in {path.parent}, which is missing "
            "(rebuild it with the training command in docs/model-card.md, or choose another --metric)"
        )
    return load_state_into(FashionClassifier(), load_checked_state_dict(path, sha256), source=str(path), error=MetricError)


class ClassifierMetric(FeatureDistance):
    r"""The LPIPS form over the ReLU stages of :class:`FashionClassifier` (the offline default).

    The three stages (32 x 32 x 32, 64 x 16 x 16, 128 x 8 x 8 for a 32 x 32 image) are
    unit-normalised over channels and weighted uniformly, :math:`w_{l,c} = 1 / C_l`: there are no
    human judgements here to learn LPIPS's linear weights from. Each layer then contributes the
    mean over channels and positions of the squared difference of normalised features.

    Images are grayscale (B, 1, H, W) in [-1, 1]; those with a shorter side below ``resize_to``
    (default 32, the classifier's training size) are upsampled bilinearly.

    Args:
        classifier: A classifier (copied), or None to load the shipped weights
            (see :func:`load_fmnist_classifier`).
        resize_to: Minimum image side fed to the classifier; None feeds images unchanged.
    """

    name = "fmnist"

    def __init__(self, classifier: FashionClassifier | None = None, *, resize_to: int | None = 32):
        super().__init__()
        self.classifier = owned_trunk(classifier, FashionClassifier, load_fmnist_classifier, "ClassifierMetric")
        self._min_side = MIN_SIDE
        self._channels = (1,)
        self.resize_to = check_resize(resize_to, MIN_SIDE, "fmnist")
        self._set_uniform_weights(list(FashionClassifier.stage_channels), next(self.classifier.parameters()).dtype)

    def _features(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.classifier.features(x)

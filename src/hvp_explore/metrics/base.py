r"""Perceptual distances between images, with the residual form that makes Gauss-Newton exact.

A perceptual metric here is a squared distance written as a sum of squares,

.. math::

    d(x, x_0) = \lVert r(x, x_0) \rVert^2, \qquad r(x_0, x_0) = 0,

so that at :math:`x = x_0` the second-order term of the Hessian vanishes and

.. math::

    \tfrac12 \nabla^2_x d(x, x_0) \big|_{x = x_0} = J_r^\top J_r

exactly. The curvature operators use this to multiply by the perceptual Hessian with one ``jvp``
and one ``vjp`` (no double backprop), batched with ``torch.func.vmap``.

The LPIPS form (Zhang et al., CVPR 2018) is such a distance. With :math:`f_l` the activations of
layer :math:`l` of a trunk (:math:`C_l` channels, :math:`H_l \times W_l` positions),
:math:`\hat f_l = f_l / (\lVert f_l \rVert_{\text{channels}} + \epsilon)` its unit-normalised
features and :math:`w_l \ge 0` per-channel weights,

.. math::

    d(x, x_0) = \sum_l \frac{1}{H_l W_l} \sum_{h, w} \sum_c w_{l,c}
        \big(\hat f_{l,chw}(x) - \hat f_{l,chw}(x_0)\big)^2,
    \qquad
    r_l = \sqrt{\frac{w_l}{H_l W_l}} \odot \big(\hat f_l(x) - \hat f_l(x_0)\big).

Metrics take images (B, C, H, W) in [-1, 1]; ``x0`` may have batch 1 (broadcast) or B.
"""

from __future__ import annotations

import abc
import copy
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["MetricError", "PerceptualMetric", "FeatureDistance", "unit_normalize", "upsample_min_side", "check_resize", "owned_trunk"]


# LPIPS's normalize_tensor adds this to the channel norm.
_LPIPS_EPS = 1e-10


class MetricError(ValueError):
    """A metric cannot be built or applied (unknown name, missing weights, wrong image shape)."""


# The Scalar overloads of the elementwise operations. In Python ``x + 1.0`` passes the number as a 0-d tensor, a
# constant whose zero tangent costs forward mode (torch.func.jvp, vmapped or not) a Python meta computation of
# 0.3-0.5 ms a call (see hvp_explore.operators._folding); the Scalar overloads take the number as it is. Same
# kernels, same values, bit for bit.
_add, _mul, _sub, _div = (torch.ops.aten.add.Scalar, torch.ops.aten.mul.Scalar, torch.ops.aten.sub.Scalar,
                          torch.ops.aten.div.Scalar)


def unit_normalize(f: torch.Tensor) -> torch.Tensor:
    r"""LPIPS's normalisation over channels, :math:`f / (\lVert f \rVert + \epsilon)`, smooth at f = 0.

    ``lpips.normalize_tensor`` takes ``sqrt(sum(f**2))``, whose derivative is infinite where a whole
    channel vector is zero (a dead ReLU location); the chain rule then gives ``inf * 0 = nan``. A
    floor of :math:`\epsilon^2` under the square root keeps every derivative finite and changes the
    norm by at most :math:`\epsilon^2 / (2 \lVert f \rVert)` (below :math:`\epsilon` in all cases),
    invisible next to the :math:`\epsilon` that LPIPS itself adds.
    """
    norm = torch.sqrt(_add(f.pow(2).sum(dim=1, keepdim=True), _LPIPS_EPS**2))
    return f / _add(norm, _LPIPS_EPS)


def upsample_min_side(x: torch.Tensor, size: int | None) -> torch.Tensor:
    """Bilinearly upsample so that the shorter side is ``size`` (aspect kept); larger images pass as they are."""
    h, w = x.shape[-2:]
    short = min(h, w)
    if size is None or short >= size:
        return x
    new = (max(size, round(h * size / short)), max(size, round(w * size / short)))
    return F.interpolate(x, size=new, mode="bilinear", align_corners=False)


def check_resize(resize_to: int | None, minimum: int, trunk: str) -> int | None:
    """``resize_to`` when it is None or an integer of at least ``minimum`` (the trunk's smallest image side)."""
    if resize_to is None:
        return None
    if isinstance(resize_to, bool) or not isinstance(resize_to, int) or resize_to < minimum:
        raise MetricError(f"resize_to must be None or an integer >= {minimum} for the {trunk} trunk, got {resize_to!r}")
    return resize_to


class PerceptualMetric(nn.Module, abc.ABC):
    r"""A squared distance with a residual form: ``forward(x, x0) == residual(x, x0).pow(2).sum(1)``.

    Subclasses implement :meth:`residual`; ``forward`` is defined from it and is never overridden,
    so the Gauss-Newton identity :math:`\tfrac12 \nabla^2 d = J_r^\top J_r` holds at ``x = x0``.
    The residual is free of in-place updates on its inputs and of control flow on tensor values, so
    it composes with ``torch.func.vmap``, ``jvp`` and ``vjp``.

    Attributes:
        name: Registry name of the metric (as accepted by :func:`load_metric`).
    """

    name: str = "custom"

    @abc.abstractmethod
    def residual(self, x: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        """Residual vectors of shape (B, M) with ``r(x0, x0) = 0``.

        Args:
            x: Images (B, C, H, W) in [-1, 1].
            x0: Reference images (1, C, H, W) or (B, C, H, W) (broadcast).
        """

    def residual_at(self, x0: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
        """``x -> residual(x, x0)`` for a fixed reference, with whatever depends on ``x0`` alone computed once.

        A curvature operator evaluates the residual against the same ``x0`` in every product; metrics whose
        residual compares features override this so that ``x0``'s features are not recomputed each time.
        """
        return lambda x: self.residual(x, x0)

    def forward(self, x: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        """Distances of shape (B,): the sum of squares of :meth:`residual`."""
        return self.residual(x, x0).pow(2).sum(1)

    #: Channel counts the metric accepts (None: any).
    _channels: tuple[int, ...] | None = None

    def check_image_shape(self, image_shape) -> None:
        """Refuse, before any work, images (C, H, W) the metric cannot compare (a one-line :class:`MetricError`).

        Used when a generator and a metric are paired, so that a mismatch (the grayscale ``fmnist``
        metric with an RGB generator) is reported at once rather than after an inversion.
        """
        channels = int(tuple(image_shape)[0])
        if self._channels is not None and channels not in self._channels:
            expected = " or ".join(str(c) for c in self._channels)
            hint = " (for RGB images use --metric effnet)" if channels == 3 else ""
            raise MetricError(f"the {self.name} metric takes images with {expected} channel(s), but the generator makes "
                              f"{channels}-channel images{hint}")

    def _check_image_tensor(self, t: torch.Tensor, label: str) -> None:
        if not isinstance(t, torch.Tensor) or t.dim() != 4:
            shape = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
            raise MetricError(f"{self.name} metric: {label} must be a 4-d image tensor (B, C, H, W), got {shape}")

    def _check_pair(self, x: torch.Tensor, x0: torch.Tensor, channels: tuple[int, ...] | None = None) -> None:
        for label, t in (("x", x), ("x0", x0)):
            self._check_image_tensor(t, label)
        if x.shape[1:] != x0.shape[1:] or (x.shape[0] != x0.shape[0] and 1 not in (x.shape[0], x0.shape[0])):
            raise MetricError(
                f"{self.name} metric: images {tuple(x.shape)} and {tuple(x0.shape)} differ; "
                "expected the same (C, H, W) and batch sizes that are equal or 1"
            )
        if channels is not None and x.shape[1] not in channels:
            expected = " or ".join(str(c) for c in channels)
            raise MetricError(f"{self.name} metric takes images with {expected} channel(s), got {x.shape[1]}")


class FeatureDistance(PerceptualMetric):
    """LPIPS-form distance over a list of feature maps with per-channel weights ``w_l >= 0``.

    Subclasses set ``_min_side``, ``_channels`` and ``resize_to``, register the weights with
    :meth:`_set_weights`, and implement :meth:`_features` (images -> list of (B, C_l, H_l, W_l)).
    """

    _min_side: int
    resize_to: int | None

    def _set_weights(self, weights: list[torch.Tensor]) -> None:
        self.num_layers = len(weights)
        for i, w in enumerate(weights):
            w = w.detach().reshape(-1).clone()
            if (w < 0).any():
                raise MetricError(f"{self.name} metric: layer {i} has negative channel weights; the residual form needs w >= 0")
            # w itself is stored (not its square root) so that a dtype conversion keeps it exact.
            self.register_buffer(f"weight{i}", w)

    def _set_uniform_weights(self, channels: list[int], dtype: torch.dtype) -> None:
        """Weights ``w_{l,c} = 1 / C_l`` (each layer: the mean over its channels), then eval mode, frozen, in ``dtype``."""
        self._set_weights([torch.full((c,), 1.0 / c) for c in channels])
        self.to(dtype)
        self.eval()
        self.requires_grad_(False)

    @property
    def channel_weights(self) -> tuple[torch.Tensor, ...]:
        """The per-channel weights ``w_l`` of each layer, shape (C_l,)."""
        return tuple(getattr(self, f"weight{i}") for i in range(self.num_layers))

    @abc.abstractmethod
    def _features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Feature maps of images that have already passed the checks and the resizing."""

    def residual(self, x: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        self._check_pair(x, x0, self._channels)
        return self._residual(x, self._reference(x0))

    def residual_at(self, x0: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
        """``x -> residual(x, x0)`` with ``x0``'s normalised features computed once, as constants (no graph kept).

        Each batched product of a Gauss-Newton operator evaluates the residual against the same ``x0``; without
        this it would run the feature network on ``x0`` again in every call.
        """
        self._check_image_tensor(x0, "x0")
        with torch.no_grad():
            reference = self._reference(x0)

        def residual(x: torch.Tensor) -> torch.Tensor:
            self._check_pair(x, x0, self._channels)
            return self._residual(x, reference)

        return residual

    def _reference(self, x0: torch.Tensor) -> torch.Tensor:
        """The unit-normalised feature maps of the reference images, flattened and concatenated (B, M)."""
        self._check_image(x0)
        return torch.cat([unit_normalize(f0).flatten(1) for f0 in self._features(self._resized(x0))], dim=1)

    def _residual(self, x: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        r"""The stacked :math:`\sqrt{w_{l,c} / (H_l W_l)}\,(\hat f_l(x) - \hat f_l(x_0))`.

        One subtraction of all the reference features, then each layer's weights, as a Python number where they
        are uniform (every shipped metric): in forward mode an operation with a constant tensor costs a Python
        meta computation each call, one with a number none (:func:`unit_normalize`'s note); per layer that was
        three such operations, a quarter of a batched Jacobian-vector product of the default's ``H_X``. The
        values are those of ``(f - f0) * scale`` layer by layer, bit for bit.
        """
        self._check_image(x)
        features = [unit_normalize(f) for f in self._features(self._resized(x))]
        diff = torch.cat([f.flatten(1) for f in features], dim=1) - reference
        parts = []
        for i, (f, part) in enumerate(zip(features, diff.split([f[0].numel() for f in features], dim=1))):
            c, h, w = f.shape[-3:]
            # sqrt(w / (H W)): the spatial mean of LPIPS becomes a plain sum of squares.
            scale = (getattr(self, f"weight{i}") / (h * w)).sqrt()
            if bool((scale == scale[0]).all()):
                parts.append(_mul(part, scale[0].item()))
            else:
                parts.append((part.unflatten(1, (c, h * w)) * scale.reshape(-1, 1)).flatten(1))
        return torch.cat(parts, dim=1)

    def _check_image(self, t: torch.Tensor) -> None:
        dtype = self.weight0.dtype
        if isinstance(t, torch.Tensor) and t.dtype != dtype:
            raise MetricError(
                f"{self.name} metric holds {dtype} weights but got {t.dtype} images; "
                f"convert one of them, e.g. metric.to({t.dtype})"
            )

    def _resized(self, x: torch.Tensor) -> torch.Tensor:
        x = upsample_min_side(x, self.resize_to)
        if min(x.shape[-2:]) < self._min_side:
            raise MetricError(
                f"{self.name} metric needs images of at least {self._min_side} pixels a side, got {tuple(x.shape[-2:])}; "
                f"set resize_to >= {self._min_side}"
            )
        return x


def owned_trunk(trunk: nn.Module | None, kind: type, load, what: str) -> nn.Module:
    """A metric's own copy of ``trunk`` (so later changes to the caller's module do not leak in), or ``load()`` when None."""
    if trunk is None:
        return load()
    if not isinstance(trunk, kind):
        raise MetricError(f"{what} takes a {kind.__name__}, got {type(trunk).__name__}")
    return copy.deepcopy(trunk)

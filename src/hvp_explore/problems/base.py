"""The forward-operator contract (y = A x + n) and the feasibility measure of every solution.

An operator maps a batch of images ``x`` of shape (B, C, H, W) with values in [-1, 1] to measurements
of shape (B, *measurement_shape). Every operator here is linear and exposes, besides ``forward``
(``A x``), its exact adjoint ``A^T y``, its Moore-Penrose pseudo-inverse ``A^+ y`` (the minimum-norm
least-squares solution, used for IAGAN's back-projection ``x + A^+ (y - A x)``), and an image that
shows the observation. The operators are ``torch.nn.Module`` s: their matrices are (non-persistent)
float64 buffers, so ``.to(device)`` moves them, and they are cast to the input's dtype on the fly.

Feasibility of a candidate image is judged by the measurement MSE on the [0, 1] pixel scale,
``mean(((A x - y) / 2)^2)``, against ``DEFAULT_TAU = 2e-3`` (PULSE's epsilon); LR-PSNR is
``-10 log10(MSE)``. See ``docs/problems.md`` for the maths of each operator.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from hvp_explore.problems._checks import check_image_shape

__all__ = ["ForwardOperator", "measurement_mse", "lr_psnr", "tau_from_noise", "resolve_tau", "describe_tau"]


def measurement_mse(forward, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-item mean squared measurement error on the [0, 1] pixel scale (SPEC section 2).

    Images live in [-1, 1] inside the models, so a difference of measurements of images in
    [-1, 1] is twice the difference on the [0, 1] scale (A is linear):
    ``MSE = mean(((A x - y) / 2) ** 2)``.

    Args:
        forward: Linear forward operator, images (B, C, H, W) -> measurements (B, ...).
        x: Images (B, C, H, W) in [-1, 1].
        y: Measurements of shape (B, ...) or (...) (broadcast over the batch).

    Returns:
        Tensor of shape (B,).
    """
    diff = (forward(x) - y) / 2
    return diff.pow(2).flatten(1).mean(1)


def tau_from_noise(sigma: float, num_measurements: int) -> float:
    r"""The feasibility threshold for measurements with Gaussian noise of standard deviation ``sigma`` ([0, 1] scale).

    The truth's own measurement MSE is :math:`\sigma^2 \chi^2_m / m`: mean :math:`\sigma^2`, standard deviation
    :math:`\sigma^2 \sqrt{2/m}`. ``tau`` two standard deviations above the mean,
    :math:`\sigma^2 (1 + 2\sqrt{2/m})`, accepts the truth about 98% of the time, and with it every image that explains
    the observation as well as the truth does.

    Raises:
        ValueError: ``sigma`` not positive or ``num_measurements`` below 1.
    """
    if isinstance(sigma, bool) or not isinstance(sigma, (int, float)) or not sigma > 0 or not math.isfinite(sigma):
        raise ValueError(f"the noise standard deviation must be a positive number on the [0, 1] scale, got {sigma!r}")
    if num_measurements < 1:
        raise ValueError(f"the number of measurements must be positive, got {num_measurements}")
    return float(sigma) ** 2 * (1 + 2 * math.sqrt(2 / num_measurements))


def resolve_tau(tau: float, noise_sigma: float | None, num_measurements: int, *, floor: float | None = None) -> float:
    """``tau`` itself, or with a known noise level :func:`tau_from_noise` raised to ``floor`` (the first solution's own
    measurement MSE: below it no step from the first solution could be feasible)."""
    if noise_sigma is None:
        return tau
    value = tau_from_noise(noise_sigma, num_measurements)
    return value if floor is None else max(value, float(floor))


def describe_tau(tau: float) -> str:
    """What ``tau`` allows, in words: an RMS error per measurement on the [0, 1] scale and in 8-bit grey levels."""
    rms = math.sqrt(tau)
    return f"RMS error <= {rms:.3g} per measurement on [0, 1], about {255 * rms:.0f} grey levels"


def lr_psnr(mse: torch.Tensor | float) -> torch.Tensor | float:
    """LR-PSNR in dB of a measurement MSE on the [0, 1] scale: ``-10 log10(MSE)``."""
    if isinstance(mse, torch.Tensor):
        return -10 * torch.log10(mse)
    return -10 * math.log10(mse)


class ForwardOperator(nn.Module, abc.ABC):
    """A linear, batched forward operator ``A``: images (B, C, H, W) -> measurements (B, *measurement_shape).

    Subclasses implement :meth:`forward` (``A x``), :meth:`adjoint` (``A^T y``, exact, so that
    ``<A x, y> = <x, A^T y>``) and :meth:`pinv` (``A^+ y``, the Moore-Penrose pseudo-inverse).

    Attributes:
        kind: Short name of the problem (``"sr"``, ``"inpaint"``, ``"cs"``, ``"callable"``).
        image_shape: (C, H, W) of the images.
        measurement_shape: Shape of one measurement item.
    """

    kind: str = "linear"

    def __init__(self, image_shape: Sequence[int], measurement_shape: Sequence[int]):
        super().__init__()
        self.image_shape: tuple[int, int, int] = check_image_shape(image_shape)
        self.measurement_shape: tuple[int, ...] = tuple(int(s) for s in measurement_shape)

    @property
    def num_measurements(self) -> int:
        """m, the number of scalar measurements per image."""
        return math.prod(self.measurement_shape)

    @property
    def num_pixels(self) -> int:
        """N = C * H * W, the number of unknowns per image."""
        return math.prod(self.image_shape)

    @abc.abstractmethod
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``A x`` for images (B, C, H, W); returns (B, *measurement_shape) in the dtype of ``x``."""

    @abc.abstractmethod
    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        """``A^T y`` for measurements (B, *measurement_shape); returns images (B, C, H, W)."""

    @abc.abstractmethod
    def pinv(self, y: torch.Tensor) -> torch.Tensor:
        """``A^+ y``, the minimum-norm least-squares solution of ``A x = y``; returns (B, C, H, W)."""

    def back_project(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """IAGAN's back-projection ``x + A^+ (y - A x)``.

        For ``y`` in the range of ``A`` this is the point of ``{x' : A x' = y}`` closest to ``x``
        (``A^+ A`` is the orthogonal projector onto the row space of ``A``).

        ``y`` may be (B, *measurement_shape) or unbatched (broadcast over the batch).
        """
        residual = y - self(x)
        return x + self.pinv(residual)

    def unobserved(self, x: torch.Tensor) -> torch.Tensor:
        r"""The part of ``x`` the measurements do not see: :math:`(I - A^+ A) x`, its projection onto the null space of A.

        ``A^+ A`` is the orthogonal projector onto the row space of A, so this is exact and matrix-free: for
        inpainting the missing pixels (the kept ones zero), for super-resolution the detail an area or bicubic
        downsampling removes, for compressed sensing ``x`` minus its projection onto the rows of the sensing
        matrix. Linear in ``x`` and composable with ``torch.func`` (a metric on it has a Hessian).
        """
        return x - self.pinv(self(x))

    @property
    def unobserved_dim(self) -> int:
        """N - rank(A): the dimension of the null space (the missing pixels for inpainting; N - m for a full-rank A)."""
        return self.num_pixels - min(self.num_measurements, self.num_pixels)

    def observation_image(self, y: torch.Tensor) -> torch.Tensor:
        """An image in [-1, 1] that shows the observation ``y`` (by default the clamped ``A^+ y``)."""
        return self.pinv(y).clamp(-1.0, 1.0)

    def measurements_from_image(self, img: torch.Tensor) -> torch.Tensor:
        """Measurements of an observation given as an image file (the inverse of :meth:`observation_image`).

        Args:
            img: (C, h, w) or (B, C, h, w).

        Returns:
            Measurements, batched as ``img``.
        """
        raise ValueError(
            f"{self.kind} observations are measurement vectors of shape {self.measurement_shape}: "
            "give a .npy file, or a clean image with --from-clean"
        )

    def describe(self) -> dict[str, Any]:
        """JSON-ready description of the problem (for ``report.json``)."""
        return {
            "kind": self.kind,
            "image_shape": list(self.image_shape),
            "measurement_shape": list(self.measurement_shape),
            "num_measurements": self.num_measurements,
        }

    def extra_repr(self) -> str:
        return f"image_shape={self.image_shape}, measurement_shape={self.measurement_shape}"

    # shape checks shared by subclasses ------------------------------------------------------------

    def _check_images(self, x: torch.Tensor) -> None:
        if x.dim() != 4 or tuple(x.shape[1:]) != self.image_shape:
            raise ValueError(f"expected images of shape (B, {', '.join(map(str, self.image_shape))}), got {tuple(x.shape)}")

    def _check_measurements(self, y: torch.Tensor) -> None:
        if y.dim() != 1 + len(self.measurement_shape) or tuple(y.shape[1:]) != self.measurement_shape:
            expected = ", ".join(map(str, ("B", *self.measurement_shape)))
            raise ValueError(f"expected measurements of shape ({expected}), got {tuple(y.shape)}")

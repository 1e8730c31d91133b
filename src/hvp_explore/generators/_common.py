"""Plumbing shared by the generator loaders: the error type, option checks, shape probing."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import nn


class GeneratorError(ValueError):
    """A generator cannot be loaded; the message is one line that says what is wrong and what is expected."""


def check_options(what: str, options: Mapping[str, object], accepted: Iterable[str]) -> None:
    """Reject options a loader does not understand, listing the ones it does."""
    accepted = tuple(accepted)
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        listing = ", ".join(accepted) if accepted else "none"
        raise GeneratorError(f"option(s) {', '.join(unknown)} not accepted by {what}; accepted options: {listing}")


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type name when empty), for one-line errors."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def positive_int(value: object, *, name: str) -> int:
    """``value`` as a positive ``int`` (bools and non-integral numbers are refused)."""
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise GeneratorError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def unit_interval(value: object, *, name: str) -> float:
    """``value`` as a float in (0, 1]."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < float(value) <= 1.0:
        raise GeneratorError(f"{name} must be a number in (0, 1], got {value!r}")
    return float(value)


def as_device(device: torch.device | str) -> torch.device:
    """A ``torch.device`` from a string such as ``"cpu"`` or ``"cuda:0"``."""
    try:
        return torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise GeneratorError(f"invalid device {device!r}: {exc}") from None


def first_parameter_dtype(module: nn.Module) -> torch.dtype:
    """The floating dtype a probe latent should have: that of the first floating parameter or buffer."""
    for tensor in (*module.parameters(), *module.buffers()):
        if tensor.is_floating_point():
            return tensor.dtype
    return torch.get_default_dtype()


def first_parameter_device(module: nn.Module) -> torch.device:
    for tensor in (*module.parameters(), *module.buffers()):
        return tensor.device
    return torch.device("cpu")


@torch.no_grad()
def probe_image_shape(module: nn.Module, latent_dim: int, *, what: str) -> tuple[int, int, int]:
    """Image shape (C, H, W) found by one forward pass of a zero latent of shape (1, latent_dim)."""
    z = torch.zeros(1, latent_dim, dtype=first_parameter_dtype(module), device=first_parameter_device(module))
    try:
        x = module(z)
    except Exception as exc:  # noqa: BLE001 - any failure of a user's model is reported as a load error
        raise GeneratorError(f"{what} fails on a latent of shape (1, {latent_dim}): {first_line(exc)}") from exc
    if not isinstance(x, torch.Tensor) or x.ndim != 4 or x.shape[0] != 1:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise GeneratorError(f"{what} must map latents (B, {latent_dim}) to images (B, C, H, W); got {shape} for B = 1")
    return tuple(int(s) for s in x.shape[1:])

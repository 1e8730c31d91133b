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


def check_device_available(device: torch.device | str) -> torch.device:
    """``device`` as a ``torch.device`` if this machine has it, else a one-line :class:`GeneratorError`.

    hvp-explore runs on the CPU, CUDA GPUs and Apple's Metal (``mps``); any other kind (``meta``, ...)
    is refused. The check is cheap and comes before any work, so a missing GPU is reported at once.
    """
    device = as_device(device)
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            build = "a CPU-only build of torch" if torch.version.cuda is None else "no CUDA GPU or driver was found"
            raise GeneratorError(f"device {device} is not available here ({build}): use --device cpu")
        if device.index is not None and device.index >= count:
            raise GeneratorError(f"device {device} is not available: this machine has {count} CUDA GPU(s), "
                                 f"cuda:0 to cuda:{count - 1}")
    elif device.type == "mps":
        if not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
            raise GeneratorError(f"device {device} is not available here (no Apple Metal GPU): use --device cpu")
    elif device.type != "cpu":
        raise GeneratorError(f"device {device} is not supported: use cpu, cuda, cuda:N or mps")
    return device


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
    """Image shape (C, H, W) found by forward passes of zero latents of shapes (1, latent_dim) and (2, latent_dim).

    The batch of two catches a model that works on one latent only (every stage passes batches).
    """
    shapes = []
    for batch in (1, 2):
        z = torch.zeros(batch, latent_dim, dtype=first_parameter_dtype(module), device=first_parameter_device(module))
        try:
            x = module(z)
        except (Exception, SystemExit) as exc:  # noqa: BLE001 - a user's model may raise anything (sys.exit too): one line
            raise GeneratorError(f"{what} fails on a latent of shape ({batch}, {latent_dim}): "
                                 f"{type(exc).__name__}: {first_line(exc)}") from None
        if not isinstance(x, torch.Tensor) or x.ndim != 4 or x.shape[0] != batch:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise GeneratorError(f"{what} must map latents (B, {latent_dim}) to images (B, C, H, W); got {shape} for B = {batch}")
        shapes.append(tuple(int(s) for s in x.shape[1:]))
    if shapes[0] != shapes[1]:
        raise GeneratorError(f"{what} gives images of shape {shapes[0]} for one latent but {shapes[1]} in a batch of two")
    return shapes[0]

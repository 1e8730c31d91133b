"""Argument checks and problem preparation shared by inversion and PULSE (private plumbing)."""

from __future__ import annotations

import torch

from hvp_explore.operators.base import frozen_modules, module_dtype_device

__all__ = ["latent_dim_of", "compute_dtype_device", "prepare_problem", "positive_int", "positive_float"]


def latent_dim_of(generator, latent_dim: int | None) -> int:
    n = latent_dim if latent_dim is not None else getattr(generator, "latent_dim", None)
    if not (isinstance(n, int) and n >= 1):
        raise ValueError("the generator has no integer 'latent_dim' attribute: pass latent_dim=<size of its latent>")
    return n


def compute_dtype_device(generator, y: torch.Tensor) -> tuple[torch.dtype, torch.device]:
    """Compute in the generator's floating dtype and on its device (the observation's for plain callables)."""
    found = module_dtype_device(generator)
    if found is not None:
        return found
    dtype = y.dtype if y.is_floating_point() else torch.get_default_dtype()
    return dtype, y.device


def prepare_problem(generator, forward, y, latent_dim: int | None) -> tuple[int, torch.Tensor, torch.Tensor]:
    """Validate the problem and return (n, y as a (1, ...) tensor, a probe latent of the right dtype/device).

    The measurement shape of one image is found by a forward pass of G(0), so that ``y`` may be given
    with or without its batch dimension.
    """
    if not callable(generator) or not callable(forward):
        raise ValueError("generator and forward must be callables (images = generator(latents), y = forward(images))")
    y = torch.as_tensor(y)
    n = latent_dim_of(generator, latent_dim)
    dtype, device = compute_dtype_device(generator, y)
    z = torch.zeros(1, n, dtype=dtype, device=device)
    with torch.no_grad(), frozen_modules(generator):
        x = generator(z)
        if x.dim() != 4 or x.shape[0] != 1:
            raise ValueError(
                f"the generator must map latents (B, n) to images (B, C, H, W); a (1, {n}) latent gave {tuple(x.shape)}"
            )
        meas_shape = tuple(forward(x).shape)
    y = y.to(dtype=dtype, device=device)
    if tuple(y.shape) == meas_shape[1:]:
        y = y.unsqueeze(0)
    if tuple(y.shape) != meas_shape:
        raise ValueError(
            f"observation y has shape {tuple(y.shape)} but the forward operator maps one generated image to "
            f"measurements of shape {meas_shape} (or {meas_shape[1:]} without the batch dimension)"
        )
    return n, y, z


def positive_int(name: str, value, *, minimum: int = 1) -> int:
    if not (isinstance(value, int) and not isinstance(value, bool) and value >= minimum):
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def positive_float(name: str, value) -> float:
    if not (isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0 and value != float("inf")):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return float(value)

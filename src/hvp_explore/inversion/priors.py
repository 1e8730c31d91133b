"""Latent priors of generators: where inversion starts and, for constrained priors, where it may go.

Three priors over latents z in R^n:

- ``"normal"``: z ~ N(0, I_n), the training distribution of most GANs. No constraint.
- ``"truncated"``: each z_i ~ N(0, 1) conditioned on |z_i| <= t (the "truncation trick" of BigGAN;
  t = ``truncation``). Sampled by resampling the offending entries until all are inside. The
  constraint set is the box [-t, t]^n; its projection is a clamp.
- ``"sphere"``: z uniform on the sphere of radius sqrt(n), where a high-dimensional N(0, I_n) puts
  nearly all of its mass (PULSE, Menon et al. 2020). Sampled as g sqrt(n) / ||g|| with g ~ N(0, I_n);
  the projection renormalises each row to norm sqrt(n).

Samples are drawn in float64 on the ``torch.Generator``'s device and then cast, so a seed gives the
same latents (up to rounding) for float32 and float64 models.
"""

from __future__ import annotations

import math

import torch

from hvp_explore.settings import DEFAULT_TRUNCATION, PRIORS

__all__ = ["PRIORS", "DEFAULT_TRUNCATION", "check_prior", "check_truncation", "sample_latents", "project_latents"]


def check_prior(prior: str) -> str:
    """Return ``prior`` if it names a known prior, else raise a one-line ``ValueError``."""
    if prior not in PRIORS:
        raise ValueError(f"unknown latent prior {prior!r}: expected one of {', '.join(map(repr, PRIORS))}")
    return prior


def check_truncation(truncation: float) -> float:
    if not (isinstance(truncation, (int, float)) and math.isfinite(truncation) and truncation > 0):
        raise ValueError(f"truncation must be a positive finite number, got {truncation!r}")
    return float(truncation)


def sample_latents(
    prior: str,
    num: int,
    n: int,
    *,
    generator: torch.Generator,
    truncation: float = DEFAULT_TRUNCATION,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Draw ``num`` latents of dimension ``n`` from a prior.

    Args:
        prior: ``"normal"``, ``"truncated"`` or ``"sphere"`` (see the module docstring).
        num: Number of latents (rows).
        n: Latent dimension.
        generator: Source of randomness (its device is where the draws happen); the only one used.
        truncation: Threshold t of the ``"truncated"`` prior, |z_i| <= t. Ignored by the others.
        dtype: Floating dtype of the result.
        device: Device of the result (default: the ``generator``'s device).

    Returns:
        Tensor of shape (num, n).
    """
    check_prior(prior)
    if not (isinstance(num, int) and num >= 1) or not (isinstance(n, int) and n >= 1):
        raise ValueError(f"num and n must be positive integers, got num={num!r}, n={n!r}")
    gen_device = generator.device
    z = torch.randn(num, n, generator=generator, dtype=torch.float64, device=gen_device)
    if prior == "truncated":
        t = check_truncation(truncation)
        # Resample only the rejected entries; each round keeps the accepted ones, so the result is
        # exactly N(0, 1) conditioned on |z_i| <= t (rejection sampling entry by entry).
        bad = z.abs() > t
        while bool(bad.any()):
            z[bad] = torch.randn(int(bad.sum()), generator=generator, dtype=torch.float64, device=gen_device)
            bad = z.abs() > t
    elif prior == "sphere":
        z = z * (math.sqrt(n) / z.norm(dim=1, keepdim=True))
    return z.to(dtype=dtype, device=gen_device if device is None else device)


def project_latents(prior: str, z: torch.Tensor, *, truncation: float = DEFAULT_TRUNCATION) -> torch.Tensor:
    """Euclidean projection of latents onto the support of a prior (a new tensor; no grad tracking needed).

    - ``"normal"``: identity (the support is all of R^n).
    - ``"truncated"``: clamp each entry to [-t, t].
    - ``"sphere"``: rescale each row to norm sqrt(n), z sqrt(n) / ||z|| (rows of norm 0 stay 0).

    Args:
        prior: Prior name.
        z: Latents of shape (n,) or (B, n).
        truncation: Threshold t of the ``"truncated"`` prior.

    Returns:
        Tensor of the shape of ``z``.
    """
    check_prior(prior)
    if prior == "normal":
        return z.clone()
    if prior == "truncated":
        t = check_truncation(truncation)
        return z.clamp(-t, t)
    norms = z.norm(dim=-1, keepdim=True)
    return z * (math.sqrt(z.shape[-1]) / norms.clamp_min(torch.finfo(z.dtype).tiny))

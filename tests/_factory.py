"""Importable helpers for tests/test_generators.py: generator factories and a StyleGAN2-ADA stand-in.

Pickled and scripted objects must be importable by module path, hence a module rather than test-local
classes. ``load_generator("_factory:make_generator")`` works because pytest puts tests/ on sys.path.
"""

from __future__ import annotations

import torch
from torch import nn


class TinyGenerator(nn.Module):
    """Latents (B, n) -> images (B, 1, 4, 4) in [-1, 1], with a ``latent_dim`` attribute."""

    def __init__(self, latent_dim: int = 6, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.latent_dim = latent_dim
        self.fc = nn.Linear(latent_dim, 16)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.fc(z)).view(-1, 1, 4, 4)


def make_generator(latent_dim: int = 6, seed: int = 0) -> TinyGenerator:
    return TinyGenerator(latent_dim, seed)


def make_plain_generator() -> nn.Module:
    """A generator without ``latent_dim``/``image_shape`` attributes (latent size 5, images 2x2x2)."""
    torch.manual_seed(1)
    return nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Unflatten(1, (2, 2, 2)))


def make_not_a_module() -> str:
    return "not a module"


def make_failing(checkpoint: str = "missing.pt") -> nn.Module:
    raise FileNotFoundError(f"no checkpoint {checkpoint}\nsecond line")


class _Mapping(nn.Module):
    """StyleGAN2-ADA mapping interface: (z, c) -> ws (B, num_ws, w_dim), truncated towards ``w_avg``."""

    def __init__(self, z_dim: int, c_dim: int, w_dim: int, num_ws: int):
        super().__init__()
        self.c_dim = c_dim
        self.num_ws = num_ws
        self.fc = nn.Linear(z_dim + c_dim, w_dim)
        self.register_buffer("w_avg", 0.1 * torch.randn(w_dim))

    def forward(self, z, c, truncation_psi=1, truncation_cutoff=None):
        x = torch.cat([z, c], dim=1) if self.c_dim else z
        w = nn.functional.leaky_relu(self.fc(x), 0.2)
        w = self.w_avg.lerp(w, truncation_psi)
        return w.unsqueeze(1).repeat(1, self.num_ws, 1)


class _Synthesis(nn.Module):
    """StyleGAN2-ADA synthesis interface: ws (B, num_ws, w_dim) -> images, one affine map per layer.

    ``noise_mode="random"`` adds fresh noise, as the real network's per-pixel noise does, so a
    loader that forgets ``noise_mode="const"`` gives a non-deterministic generator.
    """

    def __init__(self, w_dim: int, num_ws: int, channels: int, resolution: int):
        super().__init__()
        self.num_ws = num_ws
        self.w_dim = w_dim
        self.shape = (channels, resolution, resolution)
        self.layers = nn.ModuleList(nn.Linear(w_dim, channels * resolution * resolution) for _ in range(num_ws))
        self.force_fp32_seen = None

    def forward(self, ws, noise_mode="random", force_fp32=False):
        assert ws.shape[1:] == (self.num_ws, self.w_dim)
        self.force_fp32_seen = force_fp32
        x = sum(layer(ws[:, i]) for i, layer in enumerate(self.layers))
        if noise_mode == "random":
            x = x + torch.randn_like(x)
        return torch.tanh(x).view(-1, *self.shape)


class TinyStyleGAN(nn.Module):
    """A module with the attributes and call signatures of a StyleGAN2-ADA ``Generator``."""

    def __init__(self, z_dim=6, w_dim=5, c_dim=0, num_ws=3, channels=3, resolution=4, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.z_dim, self.w_dim, self.c_dim, self.num_ws = z_dim, w_dim, c_dim, num_ws
        self.img_channels, self.img_resolution = channels, resolution
        self.mapping = _Mapping(z_dim, c_dim, w_dim, num_ws)
        self.synthesis = _Synthesis(w_dim, num_ws, channels, resolution)

    def forward(self, z, c, truncation_psi=1, truncation_cutoff=None, **synthesis_kwargs):
        ws = self.mapping(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff)
        return self.synthesis(ws, **synthesis_kwargs)

"""StyleGAN2-ADA (and StyleGAN3) network pickles, explored in Z or in W.

The pickles of NVlabs' ``stylegan2-ada-pytorch`` hold a dict whose ``"G_ema"`` entry is the
generator, pickled through the repository's ``torch_utils.persistence``; unpickling therefore needs
the repository's ``dnnlib`` and ``torch_utils`` packages importable (for example with the checkout
on ``PYTHONPATH``). Unpickling runs code from the file: load only pickles you trust.

Two latent spaces:

* ``latent="z"``: ``G(z) = G(z, c, truncation_psi, noise_mode="const")``, latent size ``z_dim``;
* ``latent="w"``: ``G(w) = G.synthesis([w] * num_ws, noise_mode="const")``, the same ``w`` for every
  layer, latent size ``w_dim``.

``noise_mode="const"`` fixes the per-pixel noise, so ``G`` is a deterministic function of the latent,
and ``force_fp32=True`` keeps every block in float32 (half precision would swamp curvature
products in rounding error).
"""

from __future__ import annotations

import pickle
from importlib.util import find_spec
from pathlib import Path

import torch
from torch import nn

from hvp_explore.generators._common import GeneratorError, check_options, first_line

_REQUIRED = ("z_dim", "w_dim", "c_dim", "num_ws", "img_channels", "img_resolution", "mapping", "synthesis")


class StyleGANGenerator(nn.Module):
    """A StyleGAN2-ADA generator as a map from Z or W latents (B, n) to images (B, C, R, R).

    The output is the synthesis network's image, not clamped (clamping would zero the derivatives
    of saturated pixels): it lies in [-1, 1] up to small excursions, which StyleGAN's own scripts
    clamp before saving.

    Attributes:
        G: The wrapped generator (``G_ema`` of the pickle).
        latent: ``"z"`` or ``"w"``.
        truncation_psi: Truncation towards the average ``w`` applied by the mapping (Z only).
        class_idx: Class for conditional models (``c_dim > 0``), else ``None``.
        latent_dim: ``z_dim`` or ``w_dim``.
        image_shape: ``(img_channels, img_resolution, img_resolution)``.
    """

    def __init__(self, G: nn.Module, *, latent: str = "z", truncation_psi: float = 1.0, class_idx: int | None = None):
        super().__init__()
        missing = [a for a in _REQUIRED if not hasattr(G, a)]
        if missing:
            raise GeneratorError(f"the pickled generator lacks the StyleGAN2-ADA attribute(s) {', '.join(missing)}")
        if latent not in ("z", "w"):
            raise GeneratorError(f"StyleGAN latent must be 'z' or 'w', got {latent!r}")
        if isinstance(truncation_psi, bool) or not isinstance(truncation_psi, (int, float)):
            raise GeneratorError(f"StyleGAN truncation_psi must be a number, got {truncation_psi!r}")
        c_dim = int(G.c_dim)
        if c_dim > 0:
            if class_idx is None:
                raise GeneratorError(
                    f"this StyleGAN is class-conditional ({c_dim} classes): pass class_idx= an integer in [0, {c_dim - 1}]"
                )
            if isinstance(class_idx, bool) or not isinstance(class_idx, int) or not 0 <= class_idx < c_dim:
                raise GeneratorError(f"StyleGAN class_idx must be an integer in [0, {c_dim - 1}], got {class_idx!r}")
        elif class_idx is not None:
            raise GeneratorError(f"this StyleGAN is unconditional (c_dim = 0): class_idx={class_idx!r} does not apply")
        self.G = G
        self.latent = latent
        self.truncation_psi = float(truncation_psi)
        self.class_idx = class_idx
        self.latent_dim = int(G.z_dim if latent == "z" else G.w_dim)
        self.image_shape = (int(G.img_channels), int(G.img_resolution), int(G.img_resolution))

    def _labels(self, batch: int, like: torch.Tensor) -> torch.Tensor:
        c = torch.zeros(batch, int(self.G.c_dim), dtype=like.dtype, device=like.device)
        if self.class_idx is not None:
            c[:, self.class_idx] = 1
        return c

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        if self.latent == "z":
            c = self._labels(latent.shape[0], latent)
            return self.G(latent, c, truncation_psi=self.truncation_psi, noise_mode="const", force_fp32=True)
        ws = latent.unsqueeze(1).expand(-1, int(self.G.num_ws), -1)
        return self.G.synthesis(ws, noise_mode="const", force_fp32=True)

    @torch.no_grad()
    def sample_latent(self, batch: int, *, seed: int = 0) -> torch.Tensor:
        """Latents (batch, n) from the model's prior: ``z ~ N(0, I)``, or ``w = mapping(z)`` (with truncation)."""
        reference = next(iter(self.G.parameters()), torch.zeros(()))
        z = torch.randn(batch, int(self.G.z_dim), generator=torch.Generator().manual_seed(seed))
        z = z.to(dtype=reference.dtype, device=reference.device)
        if self.latent == "z":
            return z
        return self.G.mapping(z, self._labels(batch, z), truncation_psi=self.truncation_psi)[:, 0]


def load_stylegan_pickle(path: Path, *, device: torch.device, **options) -> StyleGANGenerator:
    """The ``G_ema`` generator of a StyleGAN2-ADA pickle.

    Options:
        latent: ``"z"`` (default) or ``"w"``.
        truncation_psi: Default 1 (no truncation), as the repository's ``generate.py``.
        class_idx: Class index, required for class-conditional models.
    """
    check_options(f"StyleGAN pickle {path.name}", options, ("latent", "truncation_psi", "class_idx"))
    if not path.is_file():
        raise GeneratorError(f"StyleGAN pickle {path.name} not found in {path.parent.resolve()}")
    missing = [name for name in ("dnnlib", "torch_utils") if find_spec(name) is None]
    if missing:
        raise GeneratorError(
            f"StyleGAN2-ADA pickles need the packages {' and '.join(missing)} "
            "of the stylegan2-ada-pytorch repository importable: "
            "clone https://github.com/NVlabs/stylegan2-ada-pytorch and add it to PYTHONPATH"
        )
    try:
        with open(path, "rb") as f:
            data = pickle.load(f)  # noqa: S301 - network pickles are pickles by design (see module docstring)
    except (Exception, SystemExit) as exc:  # noqa: BLE001 - any unpickling failure (sys.exit too) means an unusable file
        raise GeneratorError(
            f"cannot unpickle {path}: {first_line(exc)} "
            "(TensorFlow StyleGAN pickles must first be converted with the repository's legacy.py)"
        ) from None
    G = data.get("G_ema") if isinstance(data, dict) else data
    if not isinstance(G, nn.Module):
        raise GeneratorError(f"{path} holds no StyleGAN generator (expected a dict with a 'G_ema' module, or the module itself)")
    generator = StyleGANGenerator(
        G,
        latent=options.get("latent", "z"),
        truncation_psi=options.get("truncation_psi", 1.0),
        class_idx=options.get("class_idx"),
    )
    return generator.to(device).eval()

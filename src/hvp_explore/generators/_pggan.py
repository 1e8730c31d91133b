"""Progressive GAN (CelebA-HQ) from the torch.hub repository ``facebookresearch/pytorch_GAN_zoo``.

Only the local torch.hub cache is used: the repository checkout
``<torch.hub.get_dir()>/facebookresearch_pytorch_GAN_zoo_hub`` (what
``torch.hub.load('facebookresearch/pytorch_GAN_zoo:hub', ...)`` clones) and the checkpoint under
``<torch.hub.get_dir()>/checkpoints``. Both are checked before the repository's ``hubconf.py``
runs, so its ``load_url`` finds the checkpoint cached and never downloads.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from hvp_explore.generators._common import GeneratorError, check_options, first_line, probe_image_shape

_HUB_REPO = "facebookresearch/pytorch_GAN_zoo:hub"
_HUB_FOLDER = "facebookresearch_pytorch_GAN_zoo_hub"

#: Registry name -> (hubconf ``model_name``, checkpoint URL in the repository's hubconf.py).
_ZOO = "https://dl.fbaipublicfiles.com/gan_zoo/PGAN/"
PGGAN_MODELS = {
    "pggan-celebahq-256": ("celebAHQ-256", _ZOO + "celebaHQ_s6_i80000-6196db68.pth"),
    "pggan-celebahq-512": ("celebAHQ-512", _ZOO + "celebaHQ16_december_s7_i96000-9c72988c.pth"),
}


class PGGANGenerator(nn.Module):
    """The moving-average PGAN generator: latents (B, 512) to images (B, 3, R, R).

    The output is the network's last convolution, not clamped (clamping would zero the
    derivatives of saturated pixels): it lies in [-1, 1] up to small excursions, which is what
    the GAN zoo's own examples clamp before display.
    """

    def __init__(self, net: nn.Module, *, latent_dim: int):
        super().__init__()
        self.net = net
        self.latent_dim = latent_dim
        self.image_shape = probe_image_shape(net, latent_dim, what="the PGGAN generator")

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


def pggan_hub_paths(name: str) -> tuple[Path, Path]:
    """(repository folder, checkpoint file) that ``name`` needs in the torch.hub cache."""
    _, url = PGGAN_MODELS[name]
    hub = Path(torch.hub.get_dir())
    return hub / _HUB_FOLDER, hub / "checkpoints" / url.rsplit("/", 1)[1]


def load_pggan(name: str, *, device: torch.device, **options) -> PGGANGenerator:
    """PGGAN ``name`` from the torch.hub cache, never downloading."""
    check_options(f"generator {name!r}", options, ())
    model_name, _ = PGGAN_MODELS[name]
    repo_dir, checkpoint = pggan_hub_paths(name)
    fetch = f"torch.hub.load('{_HUB_REPO}', 'PGAN', model_name='{model_name}', pretrained=True) once with internet"
    if not (repo_dir / "hubconf.py").is_file():
        raise GeneratorError(
            f"PGGAN needs the torch.hub repository {_HUB_REPO} at {repo_dir} (with its hubconf.py); "
            f"run {fetch}, or copy that folder there"
        )
    if not checkpoint.is_file():
        raise GeneratorError(
            f"PGGAN checkpoint {checkpoint.name} not found in {checkpoint.parent}; run {fetch}, or copy the file there"
        )
    try:
        gan = torch.hub.load(str(repo_dir), "PGAN", source="local", model_name=model_name, pretrained=True, useGPU=False)
    except Exception as exc:  # noqa: BLE001 - third-party code; report its failure in one line
        raise GeneratorError(f"PGGAN {model_name} failed to load from {repo_dir} and {checkpoint}: {first_line(exc)}") from exc
    # The averaged generator is the one the GAN zoo recommends for sampling (``test(getAvG=True)``).
    net = gan.getOriginalAvgG()
    latent_dim = int(getattr(getattr(gan, "config", None), "latentVectorDim", 512))
    return PGGANGenerator(net.to(device), latent_dim=latent_dim).eval()

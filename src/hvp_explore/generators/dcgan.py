"""The embedded default generator: a DCGAN for 32x32 grayscale images with a 512-d latent.

Architecture (about 1.45M parameters, 5.8 MB in float32)::

    z (512) -> Linear -> 128 x 4 x 4 -> BN, ReLU
            -> ConvT 128->128, 4x4, stride 2 -> 8 x 8   -> BN, ReLU
            -> ConvT 128->64                 -> 16 x 16 -> BN, ReLU
            -> ConvT 64->1                   -> 32 x 32 -> tanh  (images in [-1, 1])

The discriminator uses spectral normalisation, which keeps a few CPU epochs of training stable.
"""

from __future__ import annotations

import torch
from torch import nn

LATENT_DIM = 512
IMAGE_SHAPE = (1, 32, 32)


class DCGANGenerator(nn.Module):
    """DCGAN generator mapping latents (B, n) to images (B, 1, 32, 32) in [-1, 1]."""

    #: The first batch norm reads only the linear layer's output, viewed as (width, 4, 4) maps: the operators' copy
    #: folds it into that layer (:mod:`hvp_explore.operators._folding`).
    batch_norm_follows = {"net.0": "fc"}

    def __init__(self, latent_dim: int = LATENT_DIM, width: int = 128):
        super().__init__()
        self.latent_dim = latent_dim
        self.image_shape = IMAGE_SHAPE
        self.width = width
        self.fc = nn.Linear(latent_dim, width * 4 * 4)
        self.net = nn.Sequential(
            nn.BatchNorm2d(width),
            nn.ReLU(),
            nn.ConvTranspose2d(width, width, 4, 2, 1),
            nn.BatchNorm2d(width),
            nn.ReLU(),
            nn.ConvTranspose2d(width, width // 2, 4, 2, 1),
            nn.BatchNorm2d(width // 2),
            nn.ReLU(),
            nn.ConvTranspose2d(width // 2, 1, 4, 2, 1),
            nn.Tanh(),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.fc(z).view(z.shape[0], self.width, 4, 4)
        return self.net(h)


class DCGANDiscriminator(nn.Module):
    """Spectrally normalised DCGAN discriminator for 32x32 grayscale images (logits out)."""

    def __init__(self, width: int = 64):
        super().__init__()
        sn = nn.utils.parametrizations.spectral_norm
        self.net = nn.Sequential(
            sn(nn.Conv2d(1, width, 4, 2, 1)),
            nn.LeakyReLU(0.2),
            sn(nn.Conv2d(width, width * 2, 4, 2, 1)),
            nn.LeakyReLU(0.2),
            sn(nn.Conv2d(width * 2, width * 4, 4, 2, 1)),
            nn.LeakyReLU(0.2),
            nn.Flatten(),
            sn(nn.Linear(width * 4 * 4 * 4, 1)),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(1)


class FashionClassifier(nn.Module):
    """Small VGG-style Fashion-MNIST classifier; its ReLU stages are the default perceptual trunk.

    Stages (after each ReLU, as LPIPS taps its backbones): 32 x 32 x 32, 64 x 16 x 16, 128 x 8 x 8.
    Inputs are images in [-1, 1], shape (B, 1, 32, 32).
    """

    stage_channels = (32, 64, 128)

    def __init__(self):
        super().__init__()
        c1, c2, c3 = self.stage_channels
        self.stages = nn.ModuleList(
            [
                nn.Sequential(nn.Conv2d(1, c1, 3, padding=1), nn.ReLU(), nn.Conv2d(c1, c1, 3, padding=1), nn.ReLU()),
                nn.Sequential(nn.MaxPool2d(2), nn.Conv2d(c1, c2, 3, padding=1), nn.ReLU(), nn.Conv2d(c2, c2, 3, padding=1), nn.ReLU()),
                nn.Sequential(nn.MaxPool2d(2), nn.Conv2d(c2, c3, 3, padding=1), nn.ReLU()),
            ]
        )
        self.head = nn.Sequential(nn.MaxPool2d(2), nn.Flatten(), nn.Dropout(0.3), nn.Linear(c3 * 4 * 4, 10))

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The activations after each stage, for perceptual distances."""
        feats = []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        return feats

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x)[-1])

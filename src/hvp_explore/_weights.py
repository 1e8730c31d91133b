"""Loading of shipped or user weight files with a sha256 check."""

from __future__ import annotations

import hashlib
from importlib import resources
from pathlib import Path

import torch


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

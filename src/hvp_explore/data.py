"""Fashion-MNIST from Debian's ``dataset-fashion-mnist`` package, and the shipped sample images."""

from __future__ import annotations

import gzip
from importlib import resources
from pathlib import Path

import numpy as np
import torch

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")


def _read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load_fashion_mnist(split: str = "train", root: Path | str = FASHION_MNIST_DIR) -> tuple[torch.Tensor, torch.Tensor]:
    """Load a Fashion-MNIST split as images in [-1, 1], padded from 28x28 to 32x32.

    Args:
        split: ``"train"`` (60,000 images) or ``"test"`` (10,000 images).
        root: Folder holding the four ``*-idx?-ubyte.gz`` files.

    Returns:
        ``(images, labels)`` with shapes (N, 1, 32, 32) float32 and (N,) int64.

    Raises:
        FileNotFoundError: When the files are missing, with the command that installs them.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    prefix = "train" if split == "train" else "t10k"
    root = Path(root)
    img_path, lbl_path = root / f"{prefix}-images-idx3-ubyte.gz", root / f"{prefix}-labels-idx1-ubyte.gz"
    for p in (img_path, lbl_path):
        if not p.is_file():
            raise FileNotFoundError(f"{p} not found: install it with 'apt-get install dataset-fashion-mnist'")
    images = torch.from_numpy(_read_idx(img_path).copy()).float().div_(127.5).sub_(1.0)
    images = torch.nn.functional.pad(images.unsqueeze(1), (2, 2, 2, 2), value=-1.0)
    labels = torch.from_numpy(_read_idx(lbl_path).astype(np.int64))
    return images, labels


def sample_paths() -> list[Path]:
    """The shipped Fashion-MNIST test-split samples (PNG, 32x32 grayscale), sorted by name."""
    folder = resources.files("hvp_explore") / "assets" / "samples"
    return sorted(Path(str(p)) for p in folder.iterdir() if p.name.endswith(".png"))

"""Fashion-MNIST from Debian's ``dataset-fashion-mnist`` package, the shipped sample images, and a test photograph.

NumPy and torch load only when Fashion-MNIST itself is read: the demo finds its sample (and refuses a
bad ``--sample``) before any numerical library loads.
"""

from __future__ import annotations

import gzip
from importlib import resources
from pathlib import Path

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")


def _read_idx(path: Path):
    import numpy as np

    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load_fashion_mnist(split: str = "train", root: Path | str = FASHION_MNIST_DIR):
    """Load a Fashion-MNIST split as images in [-1, 1], padded from 28x28 to 32x32.

    Args:
        split: ``"train"`` (60,000 images) or ``"test"`` (10,000 images).
        root: Folder holding the four ``*-idx?-ubyte.gz`` files.

    Returns:
        ``(images, labels)`` with shapes (N, 1, 32, 32) float32 and (N,) int64.

    Raises:
        FileNotFoundError: When the files are missing, with the command that installs them.
    """
    import numpy as np
    import torch

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


def sample_paths(kind: str = "fashion-mnist") -> list[Path]:
    """The shipped samples (PNG), sorted by name.

    Args:
        kind: ``"fashion-mnist"``: 10 Fashion-MNIST test-split images (32x32 grayscale);
            ``"faces"``: faces (64x64 RGB) *generated* by the ``faces`` generator from fixed seeds
            (in its range by construction; see docs/model-card.md for how they were made).
    """
    folders = {"fashion-mnist": "samples", "faces": "faces"}
    if kind not in folders:
        raise ValueError(f"kind must be one of {', '.join(folders)}, got {kind!r}")
    folder = resources.files("hvp_explore") / "assets" / folders[kind]
    return sorted(Path(str(p)) for p in folder.iterdir() if p.name.endswith(".png"))


#: The demo's observation for each of its generators: the kind of shipped sample, and the inpainting box
#: (the eyes band of a face, the centre of a garment).
DEMO_SAMPLES = {"faces": ("faces", "0,18,64,16"), "default": ("fashion-mnist", "8,8,16,16")}


def demo_sample(generator: str, sample: int) -> tuple[Path, str]:
    """The demo's input for ``generator`` (a key of :data:`DEMO_SAMPLES`): the shipped image number ``sample``, and its box.

    Raises:
        ValueError: ``sample`` is not the number of a shipped sample (one line naming --sample).
    """
    kind, box = DEMO_SAMPLES[generator]
    paths = sample_paths(kind)
    if isinstance(sample, bool) or not isinstance(sample, int) or not 0 <= sample < len(paths):
        raise ValueError(f"--sample must be between 0 and {len(paths) - 1}, got {sample!r}")
    return paths[sample], box


def photo_path() -> Path:
    """A real photograph of a face: ``grace_hopper.jpg`` (512x600 RGB), shipped with matplotlib's sample data.

    The official US Navy portrait of Rear Admiral Grace M. Hopper (public domain). It is out of the
    face generator's distribution (a photograph, not a rendered face) and is the classic test image
    of ImageNet classifiers ("military uniform").
    """
    import matplotlib

    path = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: matplotlib's sample data is missing (reinstall matplotlib)")
    return path

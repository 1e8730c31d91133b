"""The generator registry: names and paths to modules mapping latents (B, n) to images (B, C, H, W).

``load_generator`` accepts

* a registered name (:func:`available_generators`): ``default``, ``faces``,
  ``biggan-deep-128/256/512``, ``pggan-celebahq-256/512``;
* a path to a StyleGAN2-ADA network pickle (``*.pkl``);
* a path to a TorchScript file (``*.pt`` or ``*.ts``, saved with ``torch.jit.save``);
* ``package.module:function``, a Python factory returning a ``torch.nn.Module``.

Every generator returned is in eval mode, on the requested device, has the attributes
``latent_dim`` (n) and ``image_shape`` (C, H, W), and produces images in [-1, 1]: exactly for the
tanh-terminated networks (default, BigGAN), up to small excursions for PGGAN and StyleGAN, whose
last layer is linear and which are not clamped because clamping would zero the derivatives of the
saturated pixels. Nothing here downloads: missing weights raise :class:`GeneratorError`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
from torch import nn

from hvp_explore.generators._biggan import BIGGAN_NAMES, load_biggan
from hvp_explore.generators._common import GeneratorError, check_device_available, check_options
from hvp_explore.generators._custom import FACTORY_PATTERN, load_factory, load_torchscript
from hvp_explore.generators._default import load_default
from hvp_explore.generators._pggan import PGGAN_MODELS, load_pggan
from hvp_explore.generators._stylegan import load_stylegan_pickle
from hvp_explore.generators.faces import FACES_WEIGHTS, load_faces


@dataclass(frozen=True)
class _Entry:
    description: str
    load: Callable[..., nn.Module]  # load(*, device, **options)


def _load_default(*, device: torch.device, **options) -> nn.Module:
    check_options("generator 'default'", options, ())
    return load_default(device=device)


_BIGGAN = "BigGAN-deep ImageNet {r}: latent 256 (noise + class embedding), images 3x{r}x{r}; pytorch-pretrained-biggan cache"
_PGGAN = "Progressive GAN CelebA-HQ {r}: latent 512, images 3x{r}x{r}; torch.hub cache (facebookresearch/pytorch_GAN_zoo)"

_REGISTRY: dict[str, _Entry] = {
    "default": _Entry("Fashion-MNIST DCGAN shipped with hvp-explore: latent 512, images 1x32x32 (offline)", _load_default),
    "faces": _Entry("DCGAN trained on DigiFace1M faces: latent 100, images 3x64x64 (offline; weights from "
                    f"'{FACES_WEIGHTS.install_command}')", load_faces),
    **{name: _Entry(_BIGGAN.format(r=name.rsplit("-", 1)[1]), partial(load_biggan, name)) for name in BIGGAN_NAMES},
    **{name: _Entry(_PGGAN.format(r=name.rsplit("-", 1)[1]), partial(load_pggan, name)) for name in PGGAN_MODELS},
}

#: The forms of ``name_or_path`` other than registered names, with one-line descriptions (for help texts).
GENERATOR_FORMS = {
    "PATH.pkl": "StyleGAN2-ADA network pickle (needs the repo's dnnlib, torch_utils); options latent, truncation_psi, class_idx",
    "PATH.pt, PATH.ts": "TorchScript generator (torch.jit.save); option latent_dim if the module has no latent_dim attribute",
    "package.module:function": "Python factory returning a torch.nn.Module; other options are passed to it",
}
#: One ``--generator`` example of each form of :data:`GENERATOR_FORMS` (``hvp-explore generators`` shows them).
GENERATOR_EXAMPLES = {
    "PATH.pkl": "--generator ffhq.pkl",
    "PATH.pt, PATH.ts": "--generator my_generator.pt",
    "package.module:function": "--generator mypackage.models:make_generator",
}


def available_generators() -> dict[str, str]:
    """Registered generator names, each with a one-line description (see also :data:`GENERATOR_FORMS`)."""
    return {name: entry.description for name, entry in _REGISTRY.items()}


def is_registered(name_or_path: str | Path) -> bool:
    """Whether ``name_or_path`` is a registered name: loading it runs only this package's code (no file, no factory)."""
    return isinstance(name_or_path, str) and name_or_path in _REGISTRY


def load_generator(name_or_path: str | Path, *, device: torch.device | str = "cpu", **options) -> nn.Module:
    """Load a generator by registered name, file path, or ``package.module:function``.

    Args:
        name_or_path: See the module docstring for the accepted forms.
        device: Device of the returned module.
        **options: Loader options: ``truncation`` (BigGAN, in (0, 1], default 0.7) and
            ``weights_dir`` (BigGAN, a folder with ``pytorch_model.bin`` and ``config.json``);
            ``latent`` (``"z"`` or ``"w"``), ``truncation_psi`` and ``class_idx`` (StyleGAN
            pickles); ``latent_dim`` (TorchScript and factories); anything else is passed to a
            factory. Options a loader does not know raise :class:`GeneratorError`.

    Returns:
        A ``torch.nn.Module`` in eval mode on ``device`` with ``latent_dim`` (n) and
        ``image_shape`` (C, H, W), mapping latents (B, n) to images (B, C, H, W) in [-1, 1].
        Parameter gradients are left as the loader made them.

    Raises:
        GeneratorError: Unknown name (listing the valid ones), missing weights or repository
            (naming the file and folder expected), wrong options, a device this machine lacks, or a
            factory that fails, raises (``sys.exit`` included) or returns something else than a
            generator (one line each).
    """
    device = check_device_available(device)
    key = str(name_or_path)
    entry = _REGISTRY.get(key)
    if entry is not None:
        module = entry.load(device=device, **options)
    elif isinstance(name_or_path, str) and FACTORY_PATTERN.match(key) and not Path(key).exists():
        module = load_factory(key, device=device, **options)
    else:
        path = Path(key)
        suffix = path.suffix.lower()
        if suffix == ".pkl":
            module = load_stylegan_pickle(path, device=device, **options)
        elif suffix in (".pt", ".ts"):
            module = load_torchscript(path, device=device, **options)
        elif path.exists():
            raise GeneratorError(
                f"cannot load a generator from {path}: expected a StyleGAN2-ADA .pkl or a TorchScript .pt/.ts file"
            )
        else:
            raise GeneratorError(
                f"unknown generator {key!r}: expected one of {', '.join(_REGISTRY)}, "
                "a StyleGAN2-ADA .pkl path, a TorchScript .pt/.ts path, or package.module:function"
            )
    return module.eval()

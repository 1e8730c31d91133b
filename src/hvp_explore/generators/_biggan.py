"""BigGAN-deep through ``pytorch-pretrained-biggan``, with the 256-d latent of Wang & Ponce (ICLR 2021).

The library's ``BigGAN.forward(z, class_one_hot, truncation)`` embeds the class and feeds the
concatenation ``[z, E y]`` (128 + 128 numbers) to ``BigGAN.generator``. As in Wang & Ponce's
Hessian analysis, the latent here *is* that 256-d conditioning vector, so noise and class
embedding are explored together: ``G(z) = BigGAN.generator(z, truncation)``.

Weights are read from the library's download cache only (never downloaded here): the folder
``$PYTORCH_PRETRAINED_BIGGAN_CACHE`` or ``~/.pytorch_pretrained_biggan``, where
``BigGAN.from_pretrained(name)`` stores each file under the sha256 of its URL, followed by
``.`` and the sha256 of the server's ETag.
"""

from __future__ import annotations

import hashlib
import json
import numbers
import os
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from hvp_explore.generators._common import GeneratorError, check_options, first_line, unit_interval

#: Truncation used when none is given: the value of Wang & Ponce's ``BigGAN_wrapper``
#: (the library's README example uses 0.4).
DEFAULT_TRUNCATION = 0.7

BIGGAN_NAMES = ("biggan-deep-128", "biggan-deep-256", "biggan-deep-512")


def _library():
    try:
        import pytorch_pretrained_biggan
    except ImportError:
        raise GeneratorError(
            "BigGAN needs the package pytorch-pretrained-biggan: pip install pytorch-pretrained-biggan"
        ) from None
    return pytorch_pretrained_biggan


class BigGANGenerator(nn.Module):
    """BigGAN-deep as a generator of the 256-d conditioning vector ``[noise, class embedding]``.

    Maps latents (B, 2 * z_dim) to images (B, 3, R, R) in [-1, 1] (the network ends in tanh).

    Attributes:
        model: The wrapped ``pytorch_pretrained_biggan.BigGAN``.
        truncation: The truncation in (0, 1] that selects the precomputed batch-norm statistics.
        latent_dim: ``2 * config.z_dim`` (256 for the released models).
        image_shape: ``(3, R, R)`` with ``R = 4 * 2**(number of up-sampling blocks)``.
    """

    def __init__(self, model: nn.Module, *, truncation: float = DEFAULT_TRUNCATION):
        super().__init__()
        self.model = model
        self.truncation = unit_interval(truncation, name="BigGAN truncation")
        config = model.config
        self.latent_dim = 2 * int(config.z_dim)
        resolution = 4 * 2 ** sum(1 for layer in config.layers if layer[0])
        self.image_shape = (3, resolution, resolution)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.model.generator(z, self.truncation)

    @torch.no_grad()
    def class_latent(self, class_index: int | Sequence[int], *, seed: int = 0) -> torch.Tensor:
        """A latent for an ImageNet class: truncated noise followed by the class embedding.

        ``z = [truncation * t, E e_c]`` with ``t`` drawn from the standard normal truncated to
        [-2, 2] (as the library's ``truncated_noise_sample``) by a ``torch.Generator`` seeded with
        ``seed``, and ``E e_c = model.embeddings(one_hot(c))``.

        Args:
            class_index: One class (returns shape (n,)) or a sequence of classes (returns (B, n)).
            seed: Seed of the noise.
        """
        single = isinstance(class_index, numbers.Integral)
        classes = torch.as_tensor([int(class_index)] if single else [int(c) for c in class_index], dtype=torch.long)
        num_classes = int(self.model.config.num_classes)
        if classes.numel() == 0 or classes.min() < 0 or classes.max() >= num_classes:
            raise GeneratorError(f"BigGAN class index must be in [0, {num_classes - 1}], got {class_index!r}")
        weight = self.model.embeddings.weight
        noise = torch.empty(len(classes), int(self.model.config.z_dim), dtype=torch.float64)
        nn.init.trunc_normal_(noise, a=-2.0, b=2.0, generator=torch.Generator().manual_seed(seed))
        noise = (self.truncation * noise).to(dtype=weight.dtype, device=weight.device)
        one_hot = nn.functional.one_hot(classes, num_classes).to(dtype=weight.dtype, device=weight.device)
        z = torch.cat([noise, self.model.embeddings(one_hot)], dim=1)
        return z[0] if single else z


def biggan_cache_dir() -> Path:
    """The folder where ``BigGAN.from_pretrained`` caches downloads (same rule as the library)."""
    return Path(os.environ.get("PYTORCH_PRETRAINED_BIGGAN_CACHE", Path.home() / ".pytorch_pretrained_biggan"))


def _cached_file(url: str, cache_dir: Path) -> Path | None:
    """The cache entry of ``url``: ``sha256(url)`` optionally followed by ``.sha256(etag)``."""
    stem = hashlib.sha256(url.encode("utf-8")).hexdigest()
    if not cache_dir.is_dir():
        return None
    candidates = [
        p
        for p in cache_dir.iterdir()
        if p.is_file() and not p.name.endswith(".json") and (p.name == stem or p.name.startswith(stem + "."))
    ]
    # Several ETags mean several downloads of the same URL: take the newest, as a fresh download would.
    return max(candidates, key=lambda p: (p.stat().st_mtime, p.name)) if candidates else None


def _resolve_files(name: str, weights_dir: Path | None, library) -> tuple[Path, Path]:
    if weights_dir is not None:
        weights_dir = Path(weights_dir)
        files = (weights_dir / "pytorch_model.bin", weights_dir / "config.json")
        missing = [str(f) for f in files if not f.is_file()]
        if missing:
            raise GeneratorError(
                f"BigGAN weights folder {weights_dir} lacks {' and '.join(missing)} (expected pytorch_model.bin and config.json)"
            )
        return files
    cache_dir = biggan_cache_dir()
    urls = (library.model.PRETRAINED_MODEL_ARCHIVE_MAP[name], library.model.PRETRAINED_CONFIG_ARCHIVE_MAP[name])
    found = [_cached_file(url, cache_dir) for url in urls]
    if None in found:
        missing = [
            f"{hashlib.sha256(url.encode()).hexdigest()}[.<etag sha256>] (from {url})" for url, f in zip(urls, found) if f is None
        ]
        raise GeneratorError(
            f"BigGAN weights for {name} not found in the pytorch-pretrained-biggan cache {cache_dir}: "
            f"missing {'; '.join(missing)}; "
            f"run BigGAN.from_pretrained('{name}') once with internet and copy that folder here "
            "(or set PYTORCH_PRETRAINED_BIGGAN_CACHE), or pass weights_dir= a folder with pytorch_model.bin and config.json"
        )
    return found[0], found[1]


def load_biggan(name: str, *, device: torch.device, **options) -> BigGANGenerator:
    """BigGAN-deep ``name`` from local files, never downloading.

    Options:
        truncation: In (0, 1], default :data:`DEFAULT_TRUNCATION`.
        weights_dir: A folder with ``pytorch_model.bin`` and ``config.json`` to use instead of the cache.
    """
    check_options(f"generator {name!r}", options, ("truncation", "weights_dir"))
    truncation = unit_interval(options.get("truncation", DEFAULT_TRUNCATION), name="BigGAN truncation")
    weights_dir = options.get("weights_dir")
    library = _library()
    model_file, config_file = _resolve_files(name, weights_dir, library)
    try:
        config = library.BigGANConfig.from_dict(json.loads(Path(config_file).read_text(encoding="utf-8")))
    except (OSError, ValueError) as exc:
        raise GeneratorError(f"BigGAN config {config_file} cannot be read: {first_line(exc)}") from None
    model = library.BigGAN(config)
    try:
        state = torch.load(model_file, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means an unusable file
        raise GeneratorError(f"BigGAN weights file {model_file} cannot be read: {first_line(exc)}") from None
    # The library loads with strict=False; accept only missing spectral-norm power-iteration vectors,
    # which PyTorch's spectral-norm state-dict hook recomputes for old files.
    result = model.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not k.endswith(("weight_u", "weight_v"))]
    if missing or result.unexpected_keys:
        raise GeneratorError(
            f"BigGAN weights file {model_file} does not match the {name} architecture: "
            f"{len(missing)} missing and {len(result.unexpected_keys)} unexpected tensors "
            f"(first: {(missing + result.unexpected_keys)[0]})"
        )
    return BigGANGenerator(model, truncation=truncation).to(device).eval()


def biggan_from_config(
    config=None, *, truncation: float = DEFAULT_TRUNCATION, seed: int = 0, device: torch.device | str = "cpu"
) -> BigGANGenerator:
    """A BigGAN-deep with random weights, for tests and benchmarks where the real weights are absent.

    Every parameter and buffer is drawn from a ``torch.Generator`` seeded with ``seed`` (the
    library leaves some batch-norm parameters as uninitialised ``torch.Tensor(n)``):

    * spectrally normalised weights ``W ~ N(0, 1)``, biases ``~ N(0, 0.1^2)``, and the stored
      power-iteration vectors ``u, v`` from 30 power iterations on ``W`` in float64, so that
      ``sigma = u^T W v`` (what eval mode divides by) approximates the top singular value;
    * class embeddings ``~ N(0, 1)``, self-attention gains ``~ N(0, 0.5^2)``, the unconditional
      batch-norm affine ``weight ~ 1 + N(0, 0.1^2)``, ``bias ~ N(0, 0.1^2)``;
    * the precomputed batch-norm statistics (the same for every truncation) from the activations of
      a batch of 4 latents ``class_latent``-style, layer by layer, as a trained network's
      statistics would be, so activations stay normalised and the tanh output is not saturated.

    Args:
        config: A ``pytorch_pretrained_biggan.BigGANConfig``; ``None`` gives the library's default,
            the BigGAN-deep-128 architecture.
        truncation: In (0, 1].
        seed: Seed of every random draw.
        device: Where the module lives.
    """
    library = _library()
    config = library.BigGANConfig() if config is None else config
    truncation = unit_interval(truncation, name="BigGAN truncation")
    gen = torch.Generator().manual_seed(seed)
    model = library.BigGAN(config)

    def normal_(tensor: torch.Tensor, std: float = 1.0, mean: float = 0.0) -> None:
        tensor.copy_(mean + std * torch.randn(tensor.shape, generator=gen))

    with torch.no_grad():
        for module in model.modules():
            if hasattr(module, "weight_orig"):
                normal_(module.weight_orig)
                if getattr(module, "bias", None) is not None:
                    normal_(module.bias, 0.1)
                w = module.weight_orig.detach().to(torch.float64).reshape(module.weight_orig.shape[0], -1)
                v = torch.randn(w.shape[1], generator=gen, dtype=torch.float64)
                for _ in range(30):
                    u = nn.functional.normalize(w @ v, dim=0)
                    v = nn.functional.normalize(w.T @ u, dim=0)
                module.weight_u.copy_(u)
                module.weight_v.copy_(v)
            elif isinstance(module, library.model.SelfAttn):
                normal_(module.gamma, 0.5)
            elif isinstance(module, library.model.BigGANBatchNorm) and not module.conditional:
                normal_(module.weight, 0.1, mean=1.0)
                normal_(module.bias, 0.1)
        normal_(model.embeddings.weight)
        _calibrate_batchnorm(model, library, truncation=truncation, gen=gen)
    wrapper = BigGANGenerator(model, truncation=truncation).to(device).eval()
    for name, tensor in (*wrapper.named_parameters(), *wrapper.named_buffers()):
        if not torch.isfinite(tensor).all():
            raise GeneratorError(f"random BigGAN initialisation left non-finite values in {name}")
    return wrapper


def _calibrate_batchnorm(model: nn.Module, library, *, truncation: float, gen: torch.Generator) -> None:
    """Set each BigGANBatchNorm's precomputed statistics to those of its input, in forward order.

    A pre-hook runs before each normalisation, so later layers already see normalised inputs.
    """

    def hook(module, args):
        x = args[0]
        mean = x.mean(dim=(0, 2, 3))
        var = x.var(dim=(0, 2, 3), unbiased=False)
        module.running_means.copy_(mean.expand_as(module.running_means))
        module.running_vars.copy_(var.expand_as(module.running_vars))

    norms = [m for m in model.modules() if isinstance(m, library.model.BigGANBatchNorm)]
    handles = [m.register_forward_pre_hook(hook) for m in norms]
    model.eval()  # spectral norm must not run power iterations (it would overwrite the stored u, v)
    try:
        wrapper = BigGANGenerator(model, truncation=truncation)
        classes = torch.randint(int(model.config.num_classes), (4,), generator=gen).tolist()
        z = wrapper.class_latent(classes, seed=int(torch.randint(2**31 - 1, (1,), generator=gen)))
        model.generator(z, truncation)
    finally:
        for handle in handles:
            handle.remove()

"""Training of the embedded default: the Fashion-MNIST DCGAN and the perceptual-trunk classifier.

Both are reproducible on CPU for a fixed seed (``torch.use_deterministic_algorithms``), and both
are run by ``hvp-explore train``. The shipped weights were produced by the commands in
``docs/model-card.md``.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from hvp_explore.io._progress import progress_bar
from hvp_explore.data import load_fashion_mnist
from hvp_explore.generators.dcgan import DCGANDiscriminator, DCGANGenerator, FashionClassifier


@dataclass(frozen=True)
class TrainingResult:
    """What a training run produced: the model, its history, and how long it took."""

    model: torch.nn.Module
    history: tuple[dict, ...]
    seconds: float
    epochs: int
    seed: int


def _seeded(seed: int) -> torch.Generator:
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


@torch.no_grad()
def _ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    for pe, p in zip(ema.parameters(), model.parameters()):
        pe.lerp_(p, 1.0 - decay)


@torch.no_grad()
def recalibrate_batchnorm(generator: DCGANGenerator, *, batches: int = 50, batch_size: int = 256, seed: int = 0) -> None:
    """Re-estimate batch-norm running statistics by cumulative averaging over fresh latents.

    The EMA generator's weights never ran in train mode, so its running statistics must be
    recomputed before it is used in eval mode.
    """
    g = torch.Generator().manual_seed(seed)
    for m in generator.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None  # cumulative moving average
    generator.train()
    for _ in range(batches):
        generator(torch.randn(batch_size, generator.latent_dim, generator=g))
    for m in generator.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = 0.1
    generator.eval()


#: Training epochs of the shipped weights (docs/model-card.md): the defaults of ``hvp-explore train``.
EPOCHS = {"gan": 15, "classifier": 4}


def train_gan(
    *,
    epochs: int = EPOCHS["gan"],
    batch_size: int = 128,
    lr: float = 2e-4,
    ema_decay: float = 0.999,
    seed: int = 0,
    limit: int | None = None,
    images: torch.Tensor | None = None,
    quiet: bool | None = None,
) -> TrainingResult:
    """Train the default DCGAN on Fashion-MNIST with the non-saturating GAN loss.

    Adam (lr 2e-4, betas 0.5/0.999) for both networks, a spectrally normalised discriminator, and an
    exponential moving average of the generator weights (the returned model), whose batch-norm
    statistics are recalibrated at the end.

    Args:
        epochs: Passes over the 60,000 training images.
        batch_size: Images per step.
        lr: Adam learning rate of both networks.
        ema_decay: Decay of the generator weight average.
        seed: Seeds initialisation, shuffling and latents.
        limit: Use only the first ``limit`` training images (for tests).
        images: Training images (N, 1, 32, 32) in [-1, 1] instead of Fashion-MNIST's training split.
        quiet: Hide the progress bar.
    """
    gen = _seeded(seed)
    if images is None:
        images, _ = load_fashion_mnist("train")
    if limit is not None:
        images = images[:limit]
    G, D = DCGANGenerator(), DCGANDiscriminator()
    G_ema = copy.deepcopy(G).eval()
    opt_g = torch.optim.Adam(G.parameters(), lr=lr, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(D.parameters(), lr=lr, betas=(0.5, 0.999))
    steps = len(images) // batch_size
    history = []
    start = time.perf_counter()
    with progress_bar("training GAN", epochs * steps, quiet=quiet) as bar:
        for epoch in range(epochs):
            perm = torch.randperm(len(images), generator=gen)
            sums = {"loss_d": 0.0, "loss_g": 0.0}
            for i in range(steps):
                real = images[perm[i * batch_size : (i + 1) * batch_size]]
                z = torch.randn(batch_size, G.latent_dim, generator=gen)
                fake = G(z)
                loss_d = F.softplus(-D(real)).mean() + F.softplus(D(fake.detach())).mean()
                opt_d.zero_grad(set_to_none=True)
                loss_d.backward()
                opt_d.step()
                loss_g = F.softplus(-D(fake)).mean()
                opt_g.zero_grad(set_to_none=True)
                loss_g.backward()
                opt_g.step()
                _ema_update(G_ema, G, ema_decay)
                sums["loss_d"] += loss_d.item()
                sums["loss_g"] += loss_g.item()
                bar.advance(status=f"epoch {epoch + 1} D {loss_d.item():.3f} G {loss_g.item():.3f}")
            history.append({"epoch": epoch + 1, **{k: v / steps for k, v in sums.items()}, "seconds": time.perf_counter() - start})
    recalibrate_batchnorm(G_ema, seed=seed)
    return TrainingResult(G_ema, tuple(history), time.perf_counter() - start, epochs, seed)


def train_classifier(
    *, epochs: int = EPOCHS["classifier"], batch_size: int = 128, lr: float = 1e-3, seed: int = 0, limit: int | None = None,
    data: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor] | None = None, quiet: bool | None = None
) -> TrainingResult:
    """Train the Fashion-MNIST classifier whose features form the default perceptual metric.

    Adam with a cosine learning-rate decay and random horizontal flips; the history records the
    test-split accuracy after each epoch.

    Args:
        data: ``(train_images, train_labels, test_images, test_labels)`` instead of Fashion-MNIST.
    """
    gen = _seeded(seed)
    if data is None:
        images, labels = load_fashion_mnist("train")
        test_images, test_labels = load_fashion_mnist("test")
    else:
        images, labels, test_images, test_labels = data
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    model = FashionClassifier()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    steps = len(images) // batch_size
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs * steps)
    history = []
    start = time.perf_counter()
    with progress_bar("training classifier", epochs * steps, quiet=quiet) as bar:
        for epoch in range(epochs):
            model.train()
            perm = torch.randperm(len(images), generator=gen)
            for i in range(steps):
                idx = perm[i * batch_size : (i + 1) * batch_size]
                x = images[idx]
                flip = torch.rand(len(idx), generator=gen) < 0.5
                x = torch.where(flip[:, None, None, None], x.flip(-1), x)
                loss = F.cross_entropy(model(x), labels[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                bar.advance(status=f"epoch {epoch + 1} loss {loss.item():.3f}")
            acc = classifier_accuracy(model, test_images, test_labels)
            history.append({"epoch": epoch + 1, "test_accuracy": acc, "seconds": time.perf_counter() - start})
    model.eval()
    return TrainingResult(model, tuple(history), time.perf_counter() - start, epochs, seed)


@torch.no_grad()
def classifier_accuracy(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 1000) -> float:
    """Top-1 accuracy of ``model`` on ``images`` (evaluated in eval mode)."""
    was_training = model.training
    model.eval()
    correct = sum(int((model(images[i : i + batch_size]).argmax(1) == labels[i : i + batch_size]).sum()) for i in range(0, len(images), batch_size))
    model.train(was_training)
    return correct / len(images)


def save_weights(model: torch.nn.Module, path: Path | str) -> str:
    """Save a state dict (float32, CPU) and return its sha256."""
    import hashlib

    path = Path(path)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    from hvp_explore.io.atomic import save_tensors

    save_tensors(state, path)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def train(kind: str, *, epochs: int | None = None, seed: int = 0, quiet: bool | None = None) -> TrainingResult:
    """Train one of the embedded networks: ``"gan"`` (:func:`train_gan`) or ``"classifier"`` (:func:`train_classifier`)."""
    if kind not in EPOCHS:
        raise ValueError(f"kind must be one of {', '.join(EPOCHS)}, got {kind!r}")
    epochs = EPOCHS[kind] if epochs is None else epochs
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"--epochs must be a positive integer, got {epochs!r}")
    return (train_gan if kind == "gan" else train_classifier)(epochs=epochs, seed=seed, quiet=quiet)


def save_trained(result: TrainingResult, path: Path | str, *, kind: str, command: str) -> dict:
    """Write the trained weights to ``path`` (a .pt file) and a JSON record beside it, both atomically.

    ``torch.save`` names its zip archive after the file, so the weights are saved under their final
    name in a temporary folder beside ``path`` (the bytes, and the sha256, match a direct save) and then
    moved into place; the record (``path`` with ``.json``) holds the command, epochs, seed, sha256,
    seconds and the loss history.

    Returns:
        The record.

    Raises:
        ValueError: ``path`` does not end in ``.pt``.
    """
    import os
    import tempfile

    from hvp_explore.io.atomic import write_json_atomic

    path = Path(path)
    if path.suffix != ".pt":
        raise ValueError(f"--out must be a .pt weights file, got {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=".train-") as tmp:
        sha = save_weights(result.model, Path(tmp) / path.name)
        os.replace(Path(tmp) / path.name, path)
    record = {"command": command, "kind": kind, "epochs": result.epochs, "seed": result.seed, "sha256": sha,
              "seconds": result.seconds, "history": list(result.history)}
    write_json_atomic(path.with_suffix(".json"), record)
    return record

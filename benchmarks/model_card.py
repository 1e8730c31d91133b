"""Model card of the embedded default: the numbers and figures of docs/model-card.md.

Measures, deterministically on CPU for the fixed seeds below:

1. the shipped Fashion-MNIST classifier: top-1 and per-class accuracy on the 10,000 test images;
2. the shipped DCGAN, with the classifier as the judge (no Inception network is available offline):
   the class histogram (classifier argmax) of 10,000 samples z ~ N(0, I_512) against the test split,
   the mean max-softmax confidence of samples and of test images, and the Frechet distance in the
   classifier's 2048-d feature space (the input of its final linear layer) between the samples and
   the test images, with two reference points: 10,000 training images (the floor: what a perfect
   generator would get at this sample size) and an untrained DCGANGenerator (the ceiling);
3. the figures: an 8 x 8 grid of samples, the class histogram, and the shipped test-split samples.

Writes ``benchmarks/results/model-card.json``, ``docs/figures/model-card-*.png`` and the quality
table of ``docs/model-card.md`` (between its ``model-card-quality`` markers). About 2-3 minutes on one
CPU thread::

    python benchmarks/model_card.py
"""

from __future__ import annotations

import argparse
import contextlib
import io
import math
import os
import re
import sys
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import scipy.linalg
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, machine, markdown_table, update_doc_section, write_json  # noqa: E402

from hvp_explore.io.weights import asset_path, sha256_file  # noqa: E402
from hvp_explore.data import CLASSES, load_fashion_mnist, sample_paths  # noqa: E402
from hvp_explore.generators import load_generator  # noqa: E402
from hvp_explore.generators._default import DEFAULT_WEIGHTS_FILE, DEFAULT_WEIGHTS_SHA256  # noqa: E402
from hvp_explore.generators.dcgan import DCGANDiscriminator, DCGANGenerator, FashionClassifier  # noqa: E402
from hvp_explore.io.images import load_image  # noqa: E402
from hvp_explore.metrics.fmnist import FMNIST_CLASSIFIER_FILE, FMNIST_CLASSIFIER_SHA256, load_fmnist_classifier  # noqa: E402
from hvp_explore.io.figures import contact_sheet  # noqa: E402
from hvp_explore.training import classifier_accuracy, recalibrate_batchnorm  # noqa: E402

N_SAMPLES = 10_000  # generated images, and training images for the floor: as many as the test split
SEED_LATENTS = 0  # z of the 10,000 samples; the grid shows the first 64 of them
SEED_TRAIN_SUBSET = 1  # which 10,000 of the 60,000 training images form the floor
SEED_UNTRAINED = 2  # initialisation of the untrained generator (the ceiling)
GRID_SIZE = 64
FIGURES = ROOT / "docs" / "figures"
DOC = ROOT / "docs" / "model-card.md"
FEATURE_LAYER = "classifier.head[:-1] applied to classifier.features(x)[-1]: MaxPool2d(2) -> Flatten -> Dropout (identity in eval)"


# --------------------------------------------------------------------------------------------------
# Frechet distance


@dataclass(frozen=True)
class Frechet:
    """A Frechet distance between two Gaussians and how it was obtained.

    Attributes:
        distance: ``mean_term + trace_term``.
        mean_term: ``||mu1 - mu2||^2``.
        trace_term: ``tr(S1 + S2 - 2 (S1 S2)^{1/2})``.
        max_imag: Largest absolute imaginary part of ``scipy.linalg.sqrtm(S1 @ S2)`` (0 when real);
            the real part is used.
        relative_imag: ``max_imag`` divided by the largest absolute entry of the square root.
        offset: ``eps`` added to both diagonals when the first square root was not finite (0 otherwise).
        singular: Whether ``sqrtm`` warned that S1 S2 is singular (as it is when some features are
            constant, e.g. ReLU units that never fire); its result is then checked by
            :func:`trace_sqrt_product` in the script.
    """

    distance: float
    mean_term: float
    trace_term: float
    max_imag: float
    relative_imag: float
    offset: float
    singular: bool


def _check_gaussian(mu: np.ndarray, sigma: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
    mu = np.asarray(mu, dtype=np.float64)
    sigma = np.asarray(sigma, dtype=np.float64)
    if mu.ndim != 1 or mu.size == 0:
        raise ValueError(f"mu{name} must be a non-empty 1-D mean vector, got shape {mu.shape}")
    if sigma.shape != (mu.size, mu.size):
        raise ValueError(f"S{name} must be a ({mu.size}, {mu.size}) covariance matching mu{name}, got shape {sigma.shape}")
    if not (np.isfinite(mu).all() and np.isfinite(sigma).all()):
        raise ValueError(f"mu{name} and S{name} must be finite, got NaN or infinite entries")
    if not np.allclose(sigma, sigma.T, rtol=1e-10, atol=1e-12 * max(1.0, float(np.abs(sigma).max()))):
        raise ValueError(f"S{name} must be a symmetric covariance matrix")
    return mu, sigma


def frechet_distance_details(mu1, S1, mu2, S2, *, eps: float = 1e-6) -> Frechet:
    r"""Frechet (2-Wasserstein) distance between N(mu1, S1) and N(mu2, S2), in float64.

    .. math::

        d^2 = \|\mu_1 - \mu_2\|^2 + \operatorname{tr}\big(S_1 + S_2 - 2 (S_1 S_2)^{1/2}\big),

    with the square root by ``scipy.linalg.sqrtm``, as in the reference FID code (pytorch-fid): the
    real part is kept (S1 S2 is similar to the PSD matrix S1^{1/2} S2 S1^{1/2}, so its square root is
    real up to rounding), and if the root is not finite, as can happen for singular covariances,
    ``eps`` is added to both diagonals and the root taken again.

    Raises:
        ValueError: Shapes that do not match, non-finite entries, or a non-symmetric covariance.
    """
    mu1, S1 = _check_gaussian(mu1, S1, "1")
    mu2, S2 = _check_gaussian(mu2, S2, "2")
    if mu1.shape != mu2.shape:
        raise ValueError(f"the two Gaussians must have the same dimension, got {mu1.size} and {mu2.size}")
    offset = 0.0
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", scipy.linalg.LinAlgWarning)
        root = scipy.linalg.sqrtm(S1 @ S2)
        if not np.isfinite(root).all():
            offset = eps
            shift = eps * np.eye(mu1.size)
            root = scipy.linalg.sqrtm((S1 + shift) @ (S2 + shift))
    singular = any(issubclass(w.category, scipy.linalg.LinAlgWarning) for w in caught)
    for w in caught:  # anything else is not ours to swallow
        if not issubclass(w.category, scipy.linalg.LinAlgWarning):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    max_imag = float(np.abs(root.imag).max()) if np.iscomplexobj(root) else 0.0
    root = root.real
    diff = mu1 - mu2
    mean_term = float(diff @ diff)
    trace_term = float(np.trace(S1) + np.trace(S2) - 2.0 * np.trace(root))
    scale = float(np.abs(root).max()) or 1.0
    return Frechet(mean_term + trace_term, mean_term, trace_term, max_imag, max_imag / scale, offset, singular)


def frechet_distance(mu1, S1, mu2, S2) -> float:
    """Frechet distance between N(mu1, S1) and N(mu2, S2); see :func:`frechet_distance_details`."""
    return frechet_distance_details(mu1, S1, mu2, S2).distance


def trace_sqrt_product(S1, S2) -> float:
    r"""``tr (S1 S2)^{1/2}`` by symmetric eigendecompositions only (cross-check of ``sqrtm``).

    With A = S1^{1/2} and B = S1^{1/2} S2, S1 S2 = A B and S1^{1/2} S2 S1^{1/2} = B A have the same
    eigenvalues (also for singular S1), the latter's being real and non-negative; the trace of the
    principal square root of S1 S2 is the sum of their square roots. Round-off negatives are clipped
    to zero.
    """
    S1 = np.asarray(S1, dtype=np.float64)
    S2 = np.asarray(S2, dtype=np.float64)
    w, V = np.linalg.eigh(S1)
    half = (V * np.sqrt(np.clip(w, 0.0, None))) @ V.T
    inner = half @ S2 @ half
    lam = np.linalg.eigvalsh((inner + inner.T) / 2)
    return float(np.sqrt(np.clip(lam, 0.0, None)).sum())


def gaussian_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and unbiased covariance (rows are observations), in float64."""
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"features must be (N, d) with N >= 2, got shape {x.shape}")
    return x.mean(axis=0), np.cov(x, rowvar=False)


# --------------------------------------------------------------------------------------------------
# the judge


@torch.no_grad()
def judge(classifier: FashionClassifier, images: torch.Tensor, *, batch_size: int = 500) -> tuple[np.ndarray, np.ndarray]:
    """The classifier's 2048-d features (float64) and softmax probabilities (float64) of ``images``."""
    was_training = classifier.training
    classifier.eval()  # Dropout in head[:-1] must be the identity
    pool, linear = classifier.head[:-1], classifier.head[-1]
    feats, probs = [], []
    for i in range(0, len(images), batch_size):
        f = pool(classifier.features(images[i : i + batch_size])[-1])
        feats.append(f.double())
        probs.append(torch.softmax(linear(f).double(), dim=1))
    classifier.train(was_training)
    return torch.cat(feats).numpy(), torch.cat(probs).numpy()


@torch.no_grad()
def generate(generator: torch.nn.Module, n: int, *, seed: int, batch_size: int = 500) -> torch.Tensor:
    """``n`` images G(z) for z ~ N(0, I) drawn in one call from a ``torch.Generator`` seeded with ``seed``."""
    z = torch.randn(n, generator.latent_dim, generator=torch.Generator().manual_seed(seed))
    return torch.cat([generator(z[i : i + batch_size]) for i in range(0, n, batch_size)])


def untrained_generator(seed: int) -> DCGANGenerator:
    """A freshly initialised DCGANGenerator with batch-norm statistics recalibrated as the shipped one's."""
    with torch.random.fork_rng(devices=[]):  # initialisation draws from the global stream: leave it as it was
        torch.manual_seed(seed)
        generator = DCGANGenerator()
    with torch.no_grad():
        recalibrate_batchnorm(generator, seed=seed)
    return generator.eval()


def class_summary(probs: np.ndarray) -> dict:
    """Histogram of the argmax classes and confidence statistics of softmax outputs (N, 10)."""
    pred = probs.argmax(1)
    counts = np.bincount(pred, minlength=len(CLASSES))
    p = counts / counts.sum()
    nz = p[p > 0]
    conf = probs.max(1)
    return {
        "counts": counts.tolist(),
        "mean_confidence": float(conf.mean()),
        "fraction_confident_0.9": float((conf > 0.9).mean()),
        "entropy_over_ln10": float(-(nz * np.log(nz)).sum() / math.log(len(CLASSES))),
        "tv_from_uniform": float(0.5 * np.abs(p - 1 / len(CLASSES)).sum()),
    }


# --------------------------------------------------------------------------------------------------
# figures


def plot_class_histogram(generated: np.ndarray, test_predicted: np.ndarray, test_labels: np.ndarray, path: Path, *, title: str) -> Path:
    """Grouped bars per class: generated samples and test images as the classifier sees them (900 x 500 px).

    The test split's true labels (1,000 per class) are drawn as short black ticks on the test bars.
    Drawn with matplotlib's object API under its default style; PNG metadata left out (deterministic).
    """
    import matplotlib.style
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    x = np.arange(len(CLASSES))
    width = 0.4
    with matplotlib.style.context(["default", {"font.size": 10, "axes.titlesize": 11}]):
        fig = Figure(figsize=(9.0, 5.0), dpi=100, layout="constrained", facecolor="white")
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        ax.scatter(x + width / 2, test_labels, marker="_", s=300, color="black", zorder=3, label="test images, true labels")
        ax.bar(x - width / 2, generated, width, color="C0", label=f"generated samples (n = {int(generated.sum()):,}), classifier argmax")
        ax.bar(x + width / 2, test_predicted, width, color="C1", label=f"test images (n = {int(test_predicted.sum()):,}), classifier argmax")
        handles, names = ax.get_legend_handles_labels()
        order = [1, 2, 0]  # bars first, then the label ticks
        ax.set_xticks(x, labels=list(CLASSES), rotation=20)
        ax.set_ylabel("images per class")
        ax.set_title(title)
        ax.grid(True, axis="y", alpha=0.5)
        ax.set_axisbelow(True)
        ax.legend([handles[i] for i in order], [names[i] for i in order], loc="upper right", fontsize=9)
        ax.set_ylim(0, max(float(generated.max()), float(test_predicted.max())) * 1.25)
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=100, metadata={"Software": None})
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".png.tmp")
    tmp.write_bytes(buffer.getvalue())
    os.replace(tmp, path)
    return path


# --------------------------------------------------------------------------------------------------
# facts about the shipped files


def _weights_facts(file: str, sha256: str | None) -> dict:
    path = asset_path(file)
    actual = sha256_file(path)
    if sha256 is not None and actual != sha256:
        raise ValueError(f"{path} has sha256 {actual[:12]}..., but the package records {sha256[:12]}...")
    return {"file": f"src/hvp_explore/assets/weights/{file}", "bytes": path.stat().st_size, "sha256": actual}


def _training_facts(name: str) -> dict:
    import json

    record = json.loads((ROOT / "benchmarks" / "results" / f"{name}.json").read_text())
    # The histories record the time since the start of training at the end of each epoch.
    ends = [h["seconds"] for h in record["history"]]
    per_epoch = np.diff([0.0, *ends])
    return {
        "command": record["command"],
        "note": record.get("note"),
        "epochs": len(ends),
        "seconds_total": record["seconds"],
        "seconds_per_epoch": per_epoch.round(1).tolist(),
        "seconds_per_epoch_median": float(np.median(per_epoch)),
        "last_epoch": record["history"][-1],
    }


def _shipped_samples(classifier: FashionClassifier, test_images: torch.Tensor, test_labels: torch.Tensor) -> list[dict]:
    rows = []
    for path in sample_paths():
        match = re.search(r"test(\d+)\.png$", path.name)
        if match is None:
            raise ValueError(f"shipped sample {path.name} does not name its test index (expected '...-testNNNN.png')")
        index = int(match.group(1))
        img = load_image(path, channels=1)
        expected = torch.round((test_images[index] + 1) * 127.5)
        if not torch.equal(torch.round((img + 1) * 127.5), expected):
            raise ValueError(f"shipped sample {path.name} differs from test image {index}")
        with torch.no_grad():
            prob = torch.softmax(classifier(img.unsqueeze(0)), dim=1)[0]
        label = int(test_labels[index])
        rows.append({"file": path.name, "test_index": index, "label": CLASSES[label], "predicted": CLASSES[int(prob.argmax())],
                     "confidence": float(prob.max())})
    return rows


# --------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--no-doc", action="store_true", help="do not update the table in docs/model-card.md")
    parser.add_argument("--doc-only", action="store_true", help="only rewrite the table of docs/model-card.md from the stored JSON")
    args = parser.parse_args(argv)
    if args.doc_only:
        import json

        payload = json.loads((ROOT / "benchmarks" / "results" / "model-card.json").read_text())
        update_doc_section("model-card-quality", quality_markdown(payload), doc=DOC)
        return payload

    # The machine is shared: one thread, and the same numbers on every run. torch's own setting goes
    # first, so that threadpoolctl, which also drives the OpenMP pool torch uses, restores it to 1.
    torch.set_num_threads(1)
    try:  # numpy's BLAS threads too (threadpoolctl is not a dependency of hvp-explore; it usually comes with scikit-learn)
        from threadpoolctl import threadpool_limits

        one_blas_thread = threadpool_limits(1)
    except ImportError:
        one_blas_thread = contextlib.nullcontext()

    start = time.perf_counter()
    timings = {}
    with one_blas_thread:
        measured_on = machine()
        t = time.perf_counter()
        classifier = load_fmnist_classifier()
        G = load_generator("default")
        test_images, test_labels = load_fashion_mnist("test")
        train_images, _ = load_fashion_mnist("train")
        subset = torch.randperm(len(train_images), generator=torch.Generator().manual_seed(SEED_TRAIN_SUBSET))[:N_SAMPLES]
        train_images = train_images[subset]
        timings["load"] = time.perf_counter() - t

        t = time.perf_counter()
        samples = generate(G, N_SAMPLES, seed=SEED_LATENTS)
        untrained = generate(untrained_generator(SEED_UNTRAINED), N_SAMPLES, seed=SEED_LATENTS)
        timings["generate"] = time.perf_counter() - t

        t = time.perf_counter()
        accuracy = classifier_accuracy(classifier, test_images, test_labels)
        feats, probs = {}, {}
        for name, images in (("test", test_images), ("generated", samples), ("train", train_images), ("untrained", untrained)):
            feats[name], probs[name] = judge(classifier, images)
        timings["classify"] = time.perf_counter() - t

        pred = probs["test"].argmax(1)
        labels = test_labels.numpy()
        # classifier_accuracy evaluates the full network; the judge goes through features then the linear layer
        assert abs(float((pred == labels).mean()) - accuracy) < 1e-12, "judge and classifier_accuracy disagree"
        per_class = {CLASSES[c]: float((pred[labels == c] == c).mean()) for c in range(len(CLASSES))}
        confusion = np.zeros((len(CLASSES), len(CLASSES)), dtype=int)
        np.add.at(confusion, (labels, pred), 1)

        t = time.perf_counter()
        stats = {name: gaussian_stats(f) for name, f in feats.items()}
        mu_t, S_t = stats["test"]
        fd = {}
        for name in ("generated", "train", "untrained"):
            mu, S = stats[name]
            details = frechet_distance_details(mu, S, mu_t, S_t)
            check = float((mu - mu_t) @ (mu - mu_t) + np.trace(S) + np.trace(S_t) - 2 * trace_sqrt_product(S, S_t))
            fd[name] = {**asdict(details), "distance_eigh_check": check}
        timings["frechet"] = time.perf_counter() - t

        t = time.perf_counter()
        FIGURES.mkdir(parents=True, exist_ok=True)
        grid_pred = probs["generated"][:GRID_SIZE]
        contact_sheet(
            list(samples[:GRID_SIZE]),
            [f"{CLASSES[int(p.argmax())].split('/')[0]} {p.max():.2f}" for p in grid_pred],
            FIGURES / "model-card-samples.png",
            columns=8,
            title=f"default DCGAN: G(z) for the first {GRID_SIZE} latents of seed {SEED_LATENTS}, with the classifier's class and confidence",
        )
        gen_summary, test_summary = class_summary(probs["generated"]), class_summary(probs["test"])
        plot_class_histogram(
            np.array(gen_summary["counts"]), np.array(test_summary["counts"]), np.bincount(labels, minlength=len(CLASSES)),
            FIGURES / "model-card-class-histogram.png",
            title="Classes of 10,000 generated samples and of the 10,000 test images, judged by the shipped classifier",
        )
        shipped = _shipped_samples(classifier, test_images, test_labels)
        contact_sheet(
            [load_image(p, channels=1) for p in sample_paths()],
            [f"{r['label'].split('/')[0]}\ntest {r['test_index']}" for r in shipped],
            FIGURES / "model-card-shipped-samples.png",
            columns=10,
        )
        timings["figures"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - start

    n_params = lambda m: int(sum(p.numel() for p in m.parameters()))  # noqa: E731
    payload = {
        "command": "python benchmarks/model_card.py",
        "machine": measured_on,
        "seeds": {"latents": SEED_LATENTS, "train_subset": SEED_TRAIN_SUBSET, "untrained_generator": SEED_UNTRAINED},
        "n_samples": N_SAMPLES,
        "feature_layer": FEATURE_LAYER,
        "feature_dim": int(feats["test"].shape[1]),
        # features that never vary over a set (ReLU units that never fire after the max-pool) make
        # its covariance singular; they are kept: a feature constant in both sets adds nothing to the FD
        "constant_features": {name: int((f.std(axis=0) == 0).sum()) for name, f in feats.items()},
        "parameters": {"generator": n_params(G), "discriminator": n_params(DCGANDiscriminator()), "classifier": n_params(classifier)},
        "weights": {
            "generator": _weights_facts(DEFAULT_WEIGHTS_FILE, DEFAULT_WEIGHTS_SHA256),
            "classifier": _weights_facts(FMNIST_CLASSIFIER_FILE, FMNIST_CLASSIFIER_SHA256),
        },
        "training": {"generator": _training_facts("training-gan"), "classifier": _training_facts("training-classifier")},
        "classifier": {"test_accuracy": accuracy, "per_class_accuracy": per_class, "confusion": confusion.tolist()},
        "class_histogram": {
            "classes": list(CLASSES),
            "generated": gen_summary,
            "test_predicted": test_summary,
            "train_predicted": class_summary(probs["train"]),
            "untrained_predicted": class_summary(probs["untrained"]),
            "test_labels": np.bincount(labels, minlength=len(CLASSES)).tolist(),
            "tv_generated_vs_test_predicted": float(0.5 * np.abs(np.array(gen_summary["counts"]) - np.array(test_summary["counts"])).sum() / N_SAMPLES),
        },
        "frechet": fd,
        # in float64: a float32 sum of 10M pixels changes in the 7th digit with the memory alignment
        "generated_pixels": {"mean": float(samples.double().mean()), "std": float(samples.double().std()),
                             "test_mean": float(test_images.double().mean()), "test_std": float(test_images.double().std())},
        "shipped_samples": shipped,
        "figures": ["docs/figures/model-card-samples.png", "docs/figures/model-card-class-histogram.png", "docs/figures/model-card-shipped-samples.png"],
        "seconds": timings,
    }
    write_json("model-card", payload)
    if not args.no_doc:
        update_doc_section("model-card-quality", quality_markdown(payload), doc=DOC)
    return payload


def quality_markdown(payload: dict) -> str:
    """The quality table of docs/model-card.md."""
    fd, hist = payload["frechet"], payload["class_histogram"]

    def row(what: str, key: str, fd_key: str | None) -> dict:
        h = hist[key]
        return {"what": what, "fd": f"{fd[fd_key]['distance']:.1f}" if fd_key else "0 (itself)",
                "mean": f"{fd[fd_key]['mean_term']:.1f}" if fd_key else "0",
                "conf": f"{h['mean_confidence']:.3f}", "c90": f"{h['fraction_confident_0.9']:.3f}",
                "tv": f"{h['tv_from_uniform']:.4f}", "ent": f"{h['entropy_over_ln10']:.4f}"}

    rows = [
        row("test images (reference)", "test_predicted", None),
        row("10,000 training images (floor)", "train_predicted", "train"),
        row("**default DCGAN, 10,000 samples**", "generated", "generated"),
        row("untrained DCGAN, 10,000 samples (ceiling)", "untrained_predicted", "untrained"),
    ]
    table = markdown_table(rows, [("what", "images"), ("fd", "Frechet distance to the test images"),
                                  ("mean", "of which the mean term"),
                                  ("conf", "mean max-softmax"), ("c90", "share with max-softmax > 0.9"),
                                  ("tv", "TV distance of the argmax histogram from uniform"),
                                  ("ent", "entropy of the argmax histogram / ln 10")])
    counts = markdown_table(
        [{"cls": c, "gen": g, "test": t, "acc": f"{a:.3f}"} for c, g, t, a in zip(
            hist["classes"], hist["generated"]["counts"], hist["test_predicted"]["counts"], payload["classifier"]["per_class_accuracy"].values())],
        [("cls", "class"), ("gen", "generated (argmax)"), ("test", "test images (argmax)"), ("acc", "classifier accuracy on the class's 1,000 test images")],
    )
    m = payload["machine"]
    return (
        f"Measured by `{payload['command']}` on {m['date']} ({m['cores']} cores, {m['torch_threads']} torch thread, torch {m['torch']}); "
        f"{payload['seconds']['total']:.0f} s.\n\n{table}\n\n{counts}\n"
    )


if __name__ == "__main__":
    main()

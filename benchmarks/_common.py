"""Shared plumbing of the benchmark scripts: timing, machine description, JSON and markdown output, observation cases."""

from __future__ import annotations

import hashlib
import math
import os
import platform
import re
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from hvp_explore.io.atomic import write_bytes_atomic, write_json_atomic
from hvp_explore.problems import ForwardOperator, SuperResolution, make_problem, observe

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
DOC = ROOT / "docs" / "benchmarks.md"

#: Central missing box (x, y, w, h) of the inpainting problem on the 32 x 32 default images.
INPAINT_BOX = "8,8,16,16"

#: ``explore``'s stages that run after its solutions are delivered and choose none of them: the perceptual distances between
#: the plain solutions and the share of their change where the data is missing. A time to N feasible solutions leaves them
#: out, as PULSE's leaves out the diversity computed of its solutions. Walks choose their solutions by those distances, so
#: there only the share is a report figure.
REPORT_STAGES = {"plain": ("distances", "unobserved_share"), "walks": ("unobserved_share",)}


def report_seconds(timings: Mapping[str, float], *, walks: bool = False) -> float:
    """Seconds ``explore`` spent on its report figures after delivering the solutions (:data:`REPORT_STAGES`)."""
    return sum(timings.get(stage, 0.0) for stage in REPORT_STAGES["walks" if walks else "plain"])



# --------------------------------------------------------------------------------------------------
# the machine


def cpu_model() -> str:
    """The processor's model name (``/proc/cpuinfo``), else what :mod:`platform` knows: timings from two CPUs differ,
    and so can float results whose rounding depends on the vector instructions the libraries pick."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict:
    """What the numbers were measured on."""
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": sys.version.split()[0],
        "date": time.strftime("%Y-%m-%d"),
    }


def load_average() -> list[float] | None:
    """The 1, 5 and 15 minute load averages (None where the platform has none)."""
    return [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None


def machine_with_load(load_at_start: list[float] | None = None) -> dict:
    """:func:`machine` plus the load average at the start of the run (given) and now, at its end."""
    return {**machine(), "load_average_at_start": load_at_start, "load_average_at_end": load_average()}


def busy_warning(machine: Mapping) -> str | None:
    """A warning when other work was running: on a shared CPU, threads of other processes slow every timing
    here (by 10x and more when OpenMP threads oversubscribe the cores), so the figures are not reliable."""
    load, cores = machine.get("load_average_at_start"), machine.get("cores")
    if load and cores and load[0] > 0.5 * cores:
        return (f"the machine was busy (load average {load[0]:.2f} on {cores} cores when the run started): other processes "
                "compete for the cores, so these timings are not reliable; rerun on a quiet machine")
    return None


# --------------------------------------------------------------------------------------------------
# timing


def timed(fn, *, repeats: int = 1):
    """Run ``fn`` ``repeats`` times; return (last result, median seconds, all seconds)."""
    seconds, result = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        seconds.append(time.perf_counter() - t0)
    return result, statistics.median(seconds), seconds


def median_repetition(run: Callable[[], tuple[float, Any]], *, repeats: int,
                      repeat_under_s: float) -> tuple[float, Any, list[float]]:
    """``run() -> (seconds, result)`` up to ``repeats`` times, again only while a run takes under
    ``repeat_under_s``; returns the median run's seconds and result (the upper one for even counts)
    and the seconds of every run."""
    reps = []
    while True:
        reps.append(run())
        if len(reps) >= repeats or reps[-1][0] >= repeat_under_s:
            break
    seconds, result = sorted(reps, key=lambda r: r[0])[len(reps) // 2]
    return seconds, result, [r[0] for r in reps]


def seed_from(*parts: Any) -> int:
    """A deterministic 31-bit seed from labels (independent streams for independent runs)."""
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:4], "little") & 0x7FFFFFFF


# --------------------------------------------------------------------------------------------------
# JSON and markdown output


def write_json(name: str, payload: dict) -> Path:
    """Write ``benchmarks/results/<name>.json`` atomically (strict JSON: NaN and inf become null)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    return write_json_atomic(RESULTS / f"{name}.json", payload)


def peer_versions(names: Sequence[str]) -> dict[str, str]:
    """The installed version of each peer package (``"not installed"`` where it is missing)."""
    import importlib.metadata

    versions = {}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def publish(name: str, payload: dict, render: Callable[[dict, Path], str], *, doc: bool = True) -> Path:
    """Write the JSON of a benchmark, then (with ``doc``) its section of docs/benchmarks.md, and say so."""
    path = write_json(name, payload)
    if doc:
        update_doc_section(name, render(payload, path))
    print(f"wrote {path} in {payload['seconds']:.0f} s")
    return path


def fmt(value: Any) -> str:
    """A table cell: floats to three significant figures (scientific below 1e-3), None and NaN as '-', booleans yes/no."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if not math.isfinite(value):
            return "-"
        return f"{value:.3g}" if abs(value) >= 1e-3 or value == 0 else f"{value:.1e}"
    return str(value)


def markdown_table(rows: Sequence[Mapping], columns: Sequence[tuple[str, str]]) -> str:
    """A markdown table of ``rows`` with (key, header) columns; floats formatted compactly, NaN and None as '-'."""
    head = "| " + " | ".join(h for _, h in columns) + " |"
    sep = "|" + "|".join("---" for _ in columns) + "|"
    body = ["| " + " | ".join(fmt(r.get(k)) for k, _ in columns) + " |" for r in rows]
    return "\n".join([head, sep, *body])


def update_doc_section(section: str, markdown: str, doc: Path = DOC) -> None:
    """Replace the text between ``<!-- section:start -->`` and ``<!-- section:end -->`` in ``doc`` (appended when
    absent; the file is written atomically)."""
    start, end = f"<!-- {section}:start -->", f"<!-- {section}:end -->"
    text = doc.read_text() if doc.exists() else "# Benchmarks\n"
    block = f"{start}\n{markdown.rstrip()}\n{end}"
    if start in text:
        text = re.sub(re.escape(start) + r".*?" + re.escape(end), lambda _: block, text, flags=re.S)
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    write_bytes_atomic(doc, text.encode("utf-8"))


# --------------------------------------------------------------------------------------------------
# observation cases


@dataclass(frozen=True)
class Case:
    """One observation to solve.

    Attributes:
        generator_name: Label of the generator (``"default"``, ``"biggan"``).
        problem: ``"sr"`` or ``"inpaint"``.
        name: Name of the observation (sample file stem, ``test0042``, ``sample0``).
        generator: Latents (B, n) -> images in [-1, 1].
        forward: The forward operator.
        y: Observation (1, ...).
        clean: Ground-truth image (1, C, H, W), or None.
        metric: Perceptual metric of the run.
        metric_name: Its description.
        notes: Facts about the case for the report.
    """

    generator_name: str
    problem: str
    name: str
    generator: Callable
    forward: ForwardOperator
    y: torch.Tensor
    clean: torch.Tensor | None
    metric: Callable
    metric_name: str
    notes: tuple[str, ...] = ()


def _freeze(module: torch.nn.Module) -> torch.nn.Module:
    for p in module.parameters():
        p.requires_grad_(False)
    return module.eval()


def default_cases(problems: Sequence[str], *, samples: int = 1, test_images: int = 0) -> list[Case]:
    """Cases on the embedded default generator, with ground truth.

    Clean images: the first ``samples`` shipped samples (read as ``--from-clean`` reads them) and the
    first ``test_images`` images of the Fashion-MNIST test split that are not shipped samples. The
    observation of each is synthesised without noise: super-resolution x4 by area averaging, or
    inpainting of the central box :data:`INPAINT_BOX`.
    """
    from hvp_explore.data import load_fashion_mnist, sample_paths
    from hvp_explore.generators import load_generator
    from hvp_explore.io.images import load_image
    from hvp_explore.metrics import load_metric

    G = _freeze(load_generator("default"))
    metric = load_metric("default")
    paths = sample_paths()
    if not 0 <= samples <= len(paths):
        raise ValueError(f"samples must be between 0 and the {len(paths)} shipped samples, got {samples}")
    clean: list[tuple[str, torch.Tensor]] = [(path.stem, load_image(path, channels=1)) for path in paths[:samples]]
    if test_images:
        shipped = {int(m.group(1)) for p in paths if (m := re.search(r"test(\d+)", p.stem))}
        images, _ = load_fashion_mnist("test")
        clean += [(f"test{i:04d}", images[i]) for i in [i for i in range(images.shape[0]) if i not in shipped][:test_images]]
    cases = []
    for problem in problems:
        forward = make_problem("sr", G.image_shape, factor=4) if problem == "sr" else \
            make_problem("inpaint", G.image_shape, box=INPAINT_BOX)
        for name, image in clean:
            x = image[None].float()
            cases.append(Case("default", problem, name, G, forward, observe(forward, x).float(), x, metric,
                              "fmnist (LPIPS form over the shipped Fashion-MNIST classifier)"))
    return cases


def _small_biggan_config():
    from pytorch_pretrained_biggan import BigGANConfig

    return BigGANConfig(output_dim=32, z_dim=128, class_embed_dim=128, channel_width=4, num_classes=10,
                        layers=[(True, 16, 8), (True, 8, 4), (False, 4, 2), (True, 2, 1)], attention_layer_position=3)


def biggan_cases(*, samples: int = 1, seed: int = 0, small: bool = False) -> list[Case]:
    """Super-resolution x4 cases on the BigGAN-deep-128 architecture with random weights.

    The weights are drawn by :func:`~hvp_explore.generators.biggan_from_config` (no pretrained
    weights here); each observation is that of one of the generator's own samples, so an exact
    solution exists. The metric is LPIPS-squeeze in residual form with a random trunk
    (``pnet_rand=True``) and the package's linear weights. ``small`` swaps in a 4-block, 32 x 32
    BigGAN-deep for smoke tests (not the benchmark's architecture).
    """
    from hvp_explore.generators import biggan_from_config
    from hvp_explore.metrics import LPIPSMetric

    G = _freeze(biggan_from_config(_small_biggan_config() if small else None, seed=seed))
    metric = LPIPSMetric("squeeze", pnet_rand=True, seed=seed)
    forward = SuperResolution(G.image_shape, 4)
    num_classes = int(G.model.config.num_classes)
    arch = "small 32x32 BigGAN-deep (smoke test)" if small else "BigGAN-deep-128 architecture"
    cases = []
    for i in range(samples):
        z_true = G.class_latent(seed_from("biggan-class", seed, i) % num_classes, seed=seed_from("biggan-noise", seed, i))
        with torch.no_grad():
            clean = G(z_true[None])
        y = observe(forward, clean)
        notes = (f"{arch} with random weights (biggan_from_config(seed={seed})): the observation is SR x4 of one of its own "
                 "samples, so an exact solution exists",
                 "metric: LPIPS-squeeze in residual form with a random trunk (pnet_rand=True) and the lpips package's "
                 "linear weights")
        cases.append(Case("biggan", "sr", f"sample{i}", G, forward, y, clean, metric, "lpips-squeeze (random trunk)",
                          notes=notes))  # the sample's latent is not kept: no method may start from it
    return cases


def parse_run_args(parser, argv=None):
    """Add ``--seed`` and ``--threads`` to a benchmark's parser, parse, and set the run up: torch's thread
    count, and convergence warnings silenced (every result records its own convergence)."""
    from hvp_explore import ConvergenceWarning

    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore", ConvergenceWarning)
    return args

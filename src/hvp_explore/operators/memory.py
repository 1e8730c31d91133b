"""Memory budgets for batched products: measure what a product needs, pick a block size that fits.

A block of b Gauss-Newton products holds b copies of the tangents and cotangents of every
activation, so peak memory grows linearly in b: ``peak(b) ~ intercept + b * per_vector``. The two
coefficients are measured with two probe blocks — on CUDA from the allocator's peak statistics, on
CPUs from the allocator's running total recorded by the torch profiler (the process's resident set
size would hide reuse of freed memory) — and the block size is the largest b whose predicted peak
fits the budget.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from hvp_explore.operators.base import CurvatureOperator
from hvp_explore.settings import MAX_MEMORY_BYTES

__all__ = ["parse_size", "default_budget", "resolve_budget", "measure_peak_bytes", "ProductMemory", "product_memory",
           "fit_block_size", "CPU_BATCH_ELEMENTS", "cpu_batch_size", "batch_limit", "SavedBytes", "saved_tensor_bytes"]

_UNITS = {"": 1, "B": 1, "K": 1 << 10, "KB": 1 << 10, "KIB": 1 << 10, "M": 1 << 20, "MB": 1 << 20, "MIB": 1 << 20,
          "G": 1 << 30, "GB": 1 << 30, "GIB": 1 << 30, "T": 1 << 40, "TB": 1 << 40, "TIB": 1 << 40}


def parse_size(text: str) -> int:
    """Bytes in a size like ``"512MB"``, ``"4G"``, ``"1.5GiB"`` or ``"1000000"`` (units are powers of 1024)."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([A-Za-z]*)\s*", str(text))
    if not match or match.group(2).upper() not in _UNITS:
        raise ValueError(f"a memory size looks like 512MB, 4GB or 1.5GiB, got {text!r}")
    value = float(match.group(1)) * _UNITS[match.group(2).upper()]
    if not value <= MAX_MEMORY_BYTES:  # inf from a 400-digit number would overflow int()
        raise ValueError(f"a memory budget must be at most 1 EiB (none: no limit), got {str(text)[:40]!r}")
    if value < 1 << 20:
        raise ValueError(f"a memory budget below 1 MiB cannot hold a product, got {text!r}")
    return int(value)


def default_budget(device: torch.device | str) -> int:
    """Half of the device's free memory: CUDA's free memory, else the system's available RAM."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free // 2
    meminfo = Path("/proc/meminfo")
    if meminfo.is_file():
        match = re.search(r"MemAvailable:\s+(\d+) kB", meminfo.read_text())
        if match:
            return int(match.group(1)) * 1024 // 2
    return 4 << 30  # unknown platform: a conservative 4 GiB


def resolve_budget(spec: str | int | None, device: torch.device | str) -> int | None:
    """A memory budget in bytes from ``--max-memory``: ``"auto"`` (:func:`default_budget`), ``"none"``/None, a size or bytes."""
    if spec is None or (isinstance(spec, str) and spec.strip().lower() == "none"):
        return None
    if isinstance(spec, str) and spec.strip().lower() == "auto":
        return default_budget(device)
    return spec if isinstance(spec, int) and not isinstance(spec, bool) else parse_size(spec)


@contextlib.contextmanager
def _quiet_stderr():
    """Silence file descriptor 2: the profiler's C++ backend prints start/stop lines that users should not see."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def measure_peak_bytes(fn: Callable[[], object], device: torch.device | str = "cpu") -> int:
    """Extra peak memory allocated by torch during one call of ``fn``, above what was allocated before."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        torch.cuda.synchronize(device)
        return max(torch.cuda.max_memory_allocated(device) - base, 0)
    from torch.profiler import ProfilerActivity, profile

    with _quiet_stderr(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    with tempfile.TemporaryDirectory() as tmp:
        trace = Path(tmp) / "trace.json"
        with _quiet_stderr():
            prof.export_chrome_trace(str(trace))
        if not trace.is_file():  # the profiler fails silently when $TMPDIR is full
            raise OSError(f"torch's profiler could not write its trace in {tmp}: free some space in the temporary folder "
                          "or set TMPDIR to another folder")
        events = json.loads(trace.read_text())["traceEvents"]
    totals = [e["args"]["Total Allocated"] for e in events if e.get("name") == "[memory]"]
    if not totals:
        return 0
    # the first record is the first allocation: the level before it is its total minus its size
    first = next(e for e in events if e.get("name") == "[memory]")
    base = totals[0] - first["args"].get("Bytes", 0)
    return max(max(totals) - base, 0)


class SavedBytes:
    """Running total of the bytes autograd saved for backward inside :func:`saved_tensor_bytes`, weights excluded."""

    def __init__(self, exclude: set[int]) -> None:
        self.total = 0
        self._seen = set(exclude)

    def pack(self, t: torch.Tensor) -> torch.Tensor:
        key = t.untyped_storage().data_ptr()
        if key not in self._seen:  # a tensor saved by several nodes, or views of one storage, count once
            self._seen.add(key)
            self.total += t.untyped_storage().nbytes()
        return t


@contextlib.contextmanager
def saved_tensor_bytes(modules: tuple[torch.nn.Module, ...] = ()):
    """Measure the bytes of the activations autograd saves for backward while the block runs.

    Tensors of ``modules`` (weights and buffers, which a batch does not replicate) are not counted.
    No profiler is needed: the graph is being built anyway. A batched product holds about one
    tangent or cotangent of each activation per vector (measured on the embedded default: 0.55 MB
    per vector of a Gauss-Newton block, 1.05 MB per Jacobian column with its 57,344-long output), so
    this sizes batches without a probe (the Jacobian route does).
    """
    exclude = {t.untyped_storage().data_ptr() for m in modules for t in (*m.parameters(), *m.buffers())}
    saved = SavedBytes(exclude)
    with torch.autograd.graph.saved_tensors_hooks(saved.pack, lambda t: t):
        yield saved


@dataclass(frozen=True)
class ProductMemory:
    """Measured memory of a block of products: ``peak(b) = intercept + b * per_vector`` bytes."""

    per_vector: int
    intercept: int
    probes: tuple[tuple[int, int], ...]

    def peak(self, b: int) -> int:
        return self.intercept + b * self.per_vector


def product_memory(op: CurvatureOperator, *, probes: tuple[int, int] = (2, 16), seed: int = 0) -> ProductMemory:
    """Measure the peak memory of blocks of ``probes`` products (the products count toward ``num_matvecs``)."""
    g = torch.Generator().manual_seed(seed)
    saved = op.block_size
    op.block_size = None
    measured = []
    try:
        for b in probes:
            V = torch.randn(op.shape[0], b, generator=g, dtype=torch.float64).to(op.device, op.dtype)
            op.matmat(V)  # warm-up: first calls allocate caches that are not per-product
            measured.append((b, measure_peak_bytes(lambda V=V: op.matmat(V), op.device)))
    finally:
        op.block_size = saved
    (b1, p1), (b2, p2) = measured
    per_vector = max((p2 - p1) // (b2 - b1), 1)
    return ProductMemory(per_vector=per_vector, intercept=max(p1 - b1 * per_vector, 0), probes=tuple(measured))


def check_one_product(op: CurvatureOperator, budget: int) -> ProductMemory:
    """The measured memory of ``op``'s products, after checking that one product fits ``budget`` bytes.

    Raises:
        MemoryError: Even one product needs more than the budget (one line, with both sizes).
    """
    mem = product_memory(op)
    if mem.peak(1) > budget:
        raise MemoryError(f"{op.name}: one product needs about {mem.peak(1) / 2**20:.0f} MiB, more than the "
                          f"--max-memory budget of {budget / 2**20:.0f} MiB")
    return mem


def fit_block_size(op: CurvatureOperator, budget: int, *, largest: int = 1024) -> int:
    """Set and return the largest block size whose measured peak fits ``budget`` bytes (at least 1).

    Raises:
        MemoryError: Even one product needs more than the budget (one line, with both sizes).
    """
    mem = check_one_product(op, budget)
    op.block_size = int(min(largest, math.floor((budget - mem.intercept) / mem.per_vector)))
    return op.block_size


#: Image elements per batch beyond which batching stops paying on a CPU (see :func:`cpu_batch_size`).
CPU_BATCH_ELEMENTS = 1 << 18


def cpu_batch_size(image_numel: int, *, largest: int = 256) -> int:
    r"""Images (or product vectors) per batch on a CPU: :math:`2^{18} / (C H W)`, within ``[1, largest]``.

    On a CPU a batch pays only while its activations stay small: measured on 2 cores, the 32 x 32
    default generator costs 0.15 ms per image in a batch of 101 against 0.45 ms alone, while
    BigGAN-deep-128 (3 x 128 x 128) costs 0.108 s per image in a batch of 4, 0.129 s alone and 0.19 s
    in a batch of 32, and its H_Y products 0.33 s per vector in blocks of 5 against 0.48 s in one block
    of 20. The bound gives the default 256 and BigGAN-deep-128 5. (On a GPU larger batches keep
    paying; callers cap batches there only by memory.)
    """
    if not (isinstance(image_numel, int) and image_numel >= 1):
        raise ValueError(f"image_numel must be a positive integer, got {image_numel!r}")
    return max(1, min(largest, CPU_BATCH_ELEMENTS // image_numel))


def batch_limit(image: torch.Tensor) -> int | None:
    """Largest useful batch of images like ``image`` ((C, H, W) or (1, C, H, W)): :func:`cpu_batch_size` on a CPU,
    ``None`` (no limit but memory) elsewhere."""
    return cpu_batch_size(image.shape[-3:].numel()) if image.device.type == "cpu" else None

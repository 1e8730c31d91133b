"""Shared plumbing of the benchmark scripts: timing, machine description, JSON and markdown output."""

from __future__ import annotations

import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from hvp_explore.io.atomic import write_json_atomic
from hvp_explore.bench import markdown_table  # noqa: F401 - re-exported for the benchmark scripts
from hvp_explore.bench import update_doc_section as _update_doc_section

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
DOC = ROOT / "docs" / "benchmarks.md"


def machine() -> dict:
    """What the numbers were measured on."""
    return {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": sys.version.split()[0],
        "date": time.strftime("%Y-%m-%d"),
    }


def timed(fn, *, repeats: int = 1):
    """Run ``fn`` ``repeats`` times; return (last result, median seconds, all seconds)."""
    seconds, result = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        seconds.append(time.perf_counter() - t0)
    return result, statistics.median(seconds), seconds


def write_json(name: str, payload: dict) -> Path:
    """Write ``benchmarks/results/<name>.json`` atomically (strict JSON: NaN and inf become null)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    return write_json_atomic(RESULTS / f"{name}.json", payload)


def update_doc_section(section: str, markdown: str, doc: Path = DOC) -> None:
    """Replace the text between ``<!-- section:start -->`` and ``<!-- section:end -->`` in ``doc`` (atomically)."""
    _update_doc_section(doc, section, markdown)

"""Benchmark: time to N feasible solutions, e-GLASS (full and matrix-free Hessians, generalized directions) against PULSE.

The logic lives in :mod:`hvp_explore.bench` (the CLI runs the same thing as ``hvp-explore bench solutions``);
this script only resolves the output paths against the repository root.

    python benchmarks/solutions.py                                     # full run: JSON, plots, docs/benchmarks.md
    python benchmarks/solutions.py --problems sr --generators default --ns 1,10 --samples 1   # smoke run
"""

from __future__ import annotations

from pathlib import Path

from hvp_explore.bench import main

ROOT = Path(__file__).resolve().parents[1]

if __name__ == "__main__":
    main(root=ROOT)

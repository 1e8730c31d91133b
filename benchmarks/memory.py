"""Peak memory of one batched product, per vector and fixed, for the embedded default and BigGAN-deep-128 (CPU).

    python benchmarks/memory.py      # writes benchmarks/results/memory.json and the "memory" section of docs/reliability.md
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, machine, markdown_table, update_doc_section, write_json  # noqa: E402

from hvp_explore import LPIPSMetric, SuperResolution, load_metric, measurement_hessian, perceptual_hessian  # noqa: E402
from hvp_explore.generators import biggan_from_config, load_generator  # noqa: E402
from hvp_explore.operators.memory import product_memory  # noqa: E402


def measure(name, G, metric, metric_name, probes):
    C, H, W = G.image_shape
    z0 = torch.randn(G.latent_dim, generator=torch.Generator().manual_seed(0))
    forward = SuperResolution((C, H, W), 4)
    rows = []
    for op_name, op in (("H_Y (SR x4)", measurement_hessian(G, forward, z0)), (f"H_X ({metric_name})", perceptual_hessian(G, metric, z0))):
        mem = product_memory(op, probes=probes)
        V = torch.randn(G.latent_dim, probes[1])
        t0 = time.perf_counter()
        op.matmat(V)
        seconds = (time.perf_counter() - t0) / probes[1]
        rows.append({"generator": name, "operator": op_name, "n": G.latent_dim, "per_vector_MiB": mem.per_vector / 2**20,
                     "fixed_MiB": mem.intercept / 2**20, "peak_1_MiB": mem.peak(1) / 2**20,
                     "peak_32_MiB": mem.peak(32) / 2**20, "block_in_1GiB": int((2**30 - mem.intercept) // mem.per_vector),
                     "s_per_product": seconds, "probes": [list(p) for p in mem.probes]})
        print(rows[-1], flush=True)
    return rows


def main():
    torch.set_num_threads(2)
    start = time.perf_counter()
    rows = measure("default (DCGAN, 32x32)", load_generator("default"), load_metric("default"), "fmnist", (2, 16))
    rows += measure("BigGAN-deep-128 (random weights)", biggan_from_config(seed=0), LPIPSMetric("squeeze", pnet_rand=True),
                    "LPIPS-squeeze, random trunk", (1, 4))
    payload = {"command": "python benchmarks/memory.py", "machine": machine(), "seconds": time.perf_counter() - start, "rows": rows}
    write_json("memory", payload)
    md = [f"Command: `python benchmarks/memory.py` ({payload['machine']['cores']} cores, torch {payload['machine']['torch']}, "
          f"{payload['machine']['date']}). Peak memory allocated by torch during one block of Gauss-Newton products, fitted as "
          "fixed + b x per-vector from two probe blocks (float32, CPU).", "",
          markdown_table(rows, [("generator", "generator"), ("operator", "operator"), ("n", "n"), ("per_vector_MiB", "MiB / vector"),
                                ("fixed_MiB", "fixed MiB"), ("peak_32_MiB", "peak, block of 32 (MiB)"),
                                ("block_in_1GiB", "block in 1 GiB"), ("s_per_product", "s / product")])]
    update_doc_section("memory", "\n".join(md), doc=ROOT / "docs" / "reliability.md")


if __name__ == "__main__":
    main()

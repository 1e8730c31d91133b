"""Where does the exact Jacobian route stop being the cheapest way to the top-k of H_Y?

The Jacobian solver costs m batched vector-Jacobian products (then an SVD); block Krylov costs a
few blocks of k + oversampling Gauss-Newton products, independent of m. This measures both on the
embedded default (n = 512) for compressed sensing with m from 16 to 1024 measurements, k in {10, 20, 50},
and reports the crossover m* (the smallest m where block Krylov is faster) that the "auto" cost model
should reproduce.

    python benchmarks/crossover.py     # writes benchmarks/results/crossover.json and the "crossover" section of docs/benchmarks.md
"""

from __future__ import annotations

import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, markdown_table, timed, update_doc_section, write_json  # noqa: E402

from hvp_explore import CompressedSensing, ConvergenceWarning, choose_solver, measurement_hessian, top_eigenpairs  # noqa: E402
from hvp_explore.generators import load_generator  # noqa: E402

MS = (16, 32, 64, 128, 256, 512, 1024)
KS = (10, 20, 50)


def main():
    torch.set_num_threads(2)
    warnings.simplefilter("ignore", ConvergenceWarning)
    start = time.perf_counter()
    G = load_generator("default")
    z0 = torch.randn(512, generator=torch.Generator().manual_seed(1))
    rows = []
    for m in MS:
        forward = CompressedSensing((1, 32, 32), m, seed=0)
        for k in KS:
            if k >= m:
                continue
            row = {"m": m, "k": k}
            for solver in ("jacobian", "block-krylov"):
                def run(solver=solver):
                    return top_eigenpairs(measurement_hessian(G, forward, z0), k, solver=solver, tol=1e-4, warn=False)

                res, sec, _ = timed(run, repeats=3)
                row[f"{solver}_s"] = sec
                row[f"{solver}_products"] = res.matvecs
            row["faster"] = "jacobian" if row["jacobian_s"] <= row["block-krylov_s"] else "block-krylov"
            row["auto"] = choose_solver(measurement_hessian(G, forward, z0), k)[0]
            rows.append(row)
            print(row, flush=True)
    crossover = {}
    for k in KS:
        ms = [r["m"] for r in rows if r["k"] == k and r["faster"] == "block-krylov"]
        crossover[k] = min(ms) if ms else None
    agree = sum(r["auto"] == r["faster"] for r in rows)
    payload = {"command": "python benchmarks/crossover.py", "machine": machine(), "seconds": time.perf_counter() - start,
               "rows": rows, "crossover_m": crossover, "auto_agrees": f"{agree}/{len(rows)}"}
    write_json("crossover", payload)
    md = [f"Command: `python benchmarks/crossover.py` ({payload['machine']['cores']} cores, torch {payload['machine']['torch']}, "
          f"{payload['machine']['date']}). H_Y of the embedded default (n = 512) for compressed sensing with m measurements; "
          "median of 3 runs, operator construction included.", "",
          markdown_table(rows, [("m", "m"), ("k", "k"), ("jacobian_s", "jacobian s"), ("jacobian_products", "vjps"),
                                ("block-krylov_s", "block Krylov s"), ("block-krylov_products", "products"), ("faster", "faster"),
                                ("auto", "auto picks")]), "",
          "Crossover (smallest m where block Krylov wins): " + ", ".join(f"k = {k}: m* = {v}" for k, v in crossover.items())
          + f". The auto cost model agrees with the faster solver in {payload['auto_agrees']} cases."]
    update_doc_section("crossover", "\n".join(md))


if __name__ == "__main__":
    main()

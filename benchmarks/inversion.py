"""Cost of the first solution: CSGM alone against CSGM with the Gauss-Newton refinement, in PULSE runs.

For every shipped Fashion-MNIST sample, super-resolution x4 (m = 64 <= n = 512, so the refinement is on
by default) and compressed sensing with m = 256 Gaussian measurements: ``invert`` with
``gauss_newton=False`` and with its default ("auto"), the first PULSE run (sequential, stopping at eps
like PULSE's code) as the unit the solutions benchmark compares against, and the measurement MSE each
reaches. Inpainting (m = 768 > n) keeps CSGM alone and is not repeated here (docs/inversion.md, cost
measurements).

    python benchmarks/inversion.py       # benchmarks/results/inversion.json and docs/inversion.md
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, machine, markdown_table, update_doc_section, write_json  # noqa: E402

from hvp_explore import load_image, make_problem, observe  # noqa: E402
from hvp_explore.data import sample_paths  # noqa: E402
from hvp_explore.generators import load_generator  # noqa: E402
from hvp_explore.inversion import invert  # noqa: E402
from hvp_explore.inversion import pulse  # noqa: E402

PROBLEMS = {"sr": {"factor": 4}, "cs": {"m": 256, "seed": 0}}


def main() -> None:
    torch.set_num_threads(2)
    start = time.perf_counter()
    G = load_generator("default")
    for p in G.parameters():
        p.requires_grad_(False)
    rows = []
    for problem, options in PROBLEMS.items():
        forward = make_problem(problem, G.image_shape, **options)
        for path in sample_paths():
            y = observe(forward, load_image(path, channels=1)[None].float()).float()
            csgm = invert(G, forward, y, gauss_newton=False, quiet=True)
            gn = invert(G, forward, y, quiet=True)
            run = pulse(G, forward, y, 1, quiet=True)
            rows.append({"problem": problem, "sample": path.stem, "m": int(y.numel()),
                         "csgm_s": csgm.seconds, "csgm_steps": csgm.steps_run, "csgm_mse": csgm.measurement_mse,
                         "gn_s": gn.seconds, "gn_csgm_steps": gn.steps_run, "gn_steps": gn.gauss_newton_steps,
                         "gn_refine_s": gn.timings.get("gauss_newton", 0.0), "gn_mse": gn.measurement_mse,
                         "pulse_s": float(run.seconds_per_run[0]), "pulse_feasible": bool(run.feasible[0]),
                         "csgm_in_pulse_runs": csgm.seconds / float(run.seconds_per_run[0]),
                         "gn_in_pulse_runs": gn.seconds / float(run.seconds_per_run[0])})
            print({k: (round(v, 4) if isinstance(v, float) else v) for k, v in rows[-1].items()}, flush=True)
    summary = []
    for problem in PROBLEMS:
        rs = [r for r in rows if r["problem"] == problem]
        summary.append({"problem": problem, "samples": len(rs), **{
            key: statistics.median(r[key] for r in rs)
            for key in ("csgm_s", "gn_s", "pulse_s", "csgm_in_pulse_runs", "gn_in_pulse_runs", "csgm_mse", "gn_mse")},
            "feasible_csgm": sum(r["csgm_mse"] <= 2e-3 for r in rs), "feasible_gn": sum(r["gn_mse"] <= 2e-3 for r in rs)})
    payload = {"command": "python benchmarks/inversion.py", "machine": machine(), "seconds": time.perf_counter() - start,
               "problems": {k: dict(v) for k, v in PROBLEMS.items()}, "summary": summary, "rows": rows}
    write_json("inversion", payload)
    mach = payload["machine"]
    md = [f"Command: `python benchmarks/inversion.py` ({mach['cores']} cores, torch {mach['torch']}, {mach['date']}, "
          f"{payload['seconds']:.0f} s). JSON: `benchmarks/results/inversion.json`. The 10 shipped samples; `sr` is "
          "super-resolution x4 (m = 64), `cs` compressed sensing with 256 Gaussian measurements; tau = 2e-3, "
          "stop at tau / 4; a PULSE run stops at eps = tau as PULSE's code does.", "",
          "Medians over the samples:", "",
          markdown_table(summary, [("problem", "problem"), ("samples", "samples"), ("csgm_s", "CSGM only (s)"),
                                   ("gn_s", "CSGM + Gauss-Newton (s)"), ("pulse_s", "one PULSE run (s)"),
                                   ("csgm_in_pulse_runs", "CSGM only / PULSE run"),
                                   ("gn_in_pulse_runs", "CSGM + GN / PULSE run"), ("csgm_mse", "MSE, CSGM only"),
                                   ("gn_mse", "MSE, CSGM + GN"), ("feasible_csgm", "feasible, CSGM only"),
                                   ("feasible_gn", "feasible, CSGM + GN")]), "",
          "<details><summary>Per sample</summary>", "",
          markdown_table(rows, [("problem", "problem"), ("sample", "sample"), ("csgm_s", "CSGM only (s)"),
                                ("csgm_steps", "steps"), ("csgm_mse", "MSE"), ("gn_s", "CSGM + GN (s)"),
                                ("gn_csgm_steps", "CSGM steps"), ("gn_steps", "LM steps"), ("gn_refine_s", "LM (s)"),
                                ("gn_mse", "MSE"), ("pulse_s", "PULSE run (s)")]), "", "</details>"]
    update_doc_section("inversion-gn", "\n".join(md), doc=ROOT / "docs" / "inversion.md")


if __name__ == "__main__":
    main()

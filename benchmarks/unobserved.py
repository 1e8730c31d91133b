"""Study (issue #25): where each mode puts its diversity, and which mode should be the default.

For every observation one first solution (``invert``, shared by every method) and then, with every other library
default, the N = 10 solutions of each method: e-GLASS (``mode="eglass"``), generalized directions
(``"generalized"``), the unobserved part's pencil (``"unobserved"``: the perceptual metric of what A cannot see
against H_Y), e-GLASS with feasible walks (12 steps of 4 walkers, as benchmarks/versus_pulse.py) and PULSE
(10 sequential runs on the same generator). Per method: the share of the change in the unobserved part
(:func:`hvp_explore.unobserved_share`, from the first solution and between solutions; for inpainting the hole, for
super-resolution x4 the null space of A), the perceptual diversity of the unobserved part alone (mean pairwise
distance of the images ``x0 + P(x_i - x0)``), the number of feasible PNGs (measurement MSE of the 8-bit images
<= tau) and the time after the shared inversion. PULSE's share is taken from its first feasible run.

The first-order bound: no latent direction can put more of its change in the unobserved part than
``mu / (1 + mu)``, ``mu`` the top eigenvalue of the pixel pencil ``J^T P J d = mu J^T (I - P) J d`` (J the
generator's Jacobian at z0, ``P = I - A^+ A``); it is reported beside the measured shares.

Observations, none used to choose any setting: held-out faces (seeds 2001-2010 of the face generator, metric
``effnet``, x4 super-resolution and the eyes band rows 18-33) and Fashion-MNIST test images on the embedded
default (x4 super-resolution and the central box), tau = 2e-3.

    python benchmarks/unobserved.py                    # benchmarks/results/unobserved.json, docs/results.md
    python benchmarks/unobserved.py --faces 3 --images 3 --no-doc   # a quick look
    # on 2 cores, two processes of one thread each, then the table from both:
    python benchmarks/unobserved.py --threads 1 --shard 0/2 --rows /tmp/u0.jsonl &
    python benchmarks/unobserved.py --threads 1 --shard 1/2 --rows /tmp/u1.jsonl; wait
    python benchmarks/unobserved.py --merge /tmp/u0.jsonl /tmp/u1.jsonl
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import scipy.linalg
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, default_cases, machine_with_load, load_average, markdown_table, update_doc_section, write_json  # noqa: E402
from faces import EYES, SEEDS, median_ci  # noqa: E402

from hvp_explore import explore, invert, load_generator, load_metric, measurement_mse, unobserved_share  # noqa: E402
from hvp_explore.inversion import pulse  # noqa: E402
from hvp_explore.io.images import quantize  # noqa: E402
from hvp_explore.problems import Inpainting, SuperResolution, observe  # noqa: E402

TAU = 2e-3
N = 10
METHODS = ("eglass", "generalized", "unobserved", "walks", "pulse")
RESULTS_DOC = ROOT / "docs" / "results.md"


def first_order_bound(G, forward, z0: torch.Tensor) -> float:
    """``mu / (1 + mu)``: the largest share of a first-order change ``J d`` in the unobserved part."""
    J = torch.func.jacfwd(lambda z: G(z[None]).reshape(-1))(z0.detach().reshape(-1)).detach().to(torch.float64)  # (pixels, n)
    shape = (J.shape[1], *forward.image_shape)
    PJ = forward.unobserved(J.T.reshape(shape).to(torch.float64)).reshape(J.shape[1], -1).T
    hidden, seen = PJ.T @ PJ, (J - PJ).T @ (J - PJ)
    scale = float(torch.linalg.eigvalsh(seen)[-1])
    mu = float(scipy.linalg.eigh(hidden.numpy(), (seen + 1e-9 * scale * torch.eye(J.shape[1], dtype=torch.float64)).numpy(),
                                 eigvals_only=True)[-1])
    return mu / (1 + mu)


def measure(forward, y, images: torch.Tensor, first: torch.Tensor, metric, seconds: float) -> dict:
    with torch.no_grad():
        images = quantize(images)
        mse = measurement_mse(forward, images, y)
    share = unobserved_share(forward, images, first, metric=metric) if images.shape[0] else {}
    return {"seconds": seconds, "returned": int(images.shape[0]), "feasible": int((mse <= TAU).sum()),
            "from_first": share.get("from_first"), "pairwise": share.get("pairwise"),
            "unobserved_diversity": share.get("perceptual_pairwise_mean")}


def run_case(name: str, G, forward, clean: torch.Tensor, metric, *, seed: int) -> dict:
    y = observe(forward, clean[None].float())
    t0 = time.perf_counter()
    inv = invert(G, forward, y, tau=TAU, seed=seed, quiet=True)
    row = {"observation": name, "inversion_s": time.perf_counter() - t0, "first_mse": inv.measurement_mse,
           "bound": first_order_bound(inv.generator, forward, inv.latent)}
    for method in METHODS[:4]:
        mode, walk = (method, 0) if method != "walks" else ("eglass", 12)
        t0 = time.perf_counter()
        res = explore(G, forward, y, metric=metric, inversion=inv, tau=TAU, seed=seed, quiet=True, num_solutions=N, mode=mode,
                      walk_steps=walk)
        seconds = time.perf_counter() - t0
        images = torch.stack([s.image for s in res.solutions]) if res.solutions else torch.zeros(0, *forward.image_shape)
        row[method] = measure(forward, y, images, res.first_image, metric, seconds)
        if res.pencil is not None:
            row[method].update(pencil_solver=res.pencil.solver, pencil_converged=bool(res.pencil.all_converged))
    t0 = time.perf_counter()
    runs = pulse(inv.generator, forward, y, N, eps=TAU, seed=seed, quiet=True)
    seconds = time.perf_counter() - t0
    with torch.no_grad():
        images = quantize(runs.images)
        ok = measurement_mse(forward, images, y) <= TAU
    found = images[ok]
    row["pulse"] = measure(forward, y, found[1:], found[:1], metric, seconds) if found.shape[0] > 1 else \
        {"seconds": seconds, "returned": N, "feasible": int(ok.sum()), "from_first": None, "pairwise": None, "unobserved_diversity": None}
    row["pulse"]["feasible"] = int(ok.sum())
    print(name, {m: (round(row[m]["pairwise"] or float("nan"), 3), row[m]["feasible"], round(row[m]["seconds"], 2)) for m in METHODS},
          f"bound {row['bound']:.3f}", flush=True)
    return row


def cases(args):
    out = []
    if args.faces:
        G, metric = load_generator("faces"), load_metric("effnet")
        problems = {"faces-sr": SuperResolution((3, 64, 64), 4), "faces-inpaint": Inpainting.from_box((3, 64, 64), *EYES)}
        for seed in list(SEEDS)[: args.faces]:
            with torch.no_grad():
                clean = G(torch.randn(1, 100, generator=torch.Generator().manual_seed(seed)))[0]
            for case, forward in problems.items():
                out.append((case, f"face{seed}", G, forward, clean, metric))
    if args.images:
        for c in default_cases(["sr", "inpaint"], samples=0, test_images=args.images):
            out.append((f"default-{c.problem}", c.name, c.generator, c.forward, c.clean[0], c.metric))
    return out


def summarise(rows: list[dict]) -> list[dict]:
    table = []
    for case in sorted({r["case"] for r in rows}):
        sub = [r for r in rows if r["case"] == case]
        for method in METHODS:
            def ci(key):
                values = [r[method][key] for r in sub if r[method][key] is not None]
                med, lo, hi = median_ci(values)
                return f"{med:.3g} [{lo:.3g}, {hi:.3g}]" if values else "-"
            bound = median_ci([r["bound"] for r in sub])
            table.append({"case": case, "method": method, "share of differences unobserved": ci("pairwise"),
                          "share of change from the first": ci("from_first"), "unobserved perceptual diversity": ci("unobserved_diversity"),
                          "feasible of N": f"{statistics.median(r[method]['feasible'] for r in sub):g}",
                          "seconds after inversion": ci("seconds"),
                          "first-order bound": f"{bound[0]:.3g} [{bound[1]:.3g}, {bound[2]:.3g}]" if method == "eglass" else "",
                          "observations": len(sub)})
    return table


COLUMNS = [(k, k) for k in ("case", "method", "share of differences unobserved", "share of change from the first",
                            "unobserved perceptual diversity", "feasible of N", "seconds after inversion", "first-order bound",
                            "observations")]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--faces", type=int, default=10)
    parser.add_argument("--images", type=int, default=10, help="Fashion-MNIST test images on the default generator")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-doc", action="store_true")
    parser.add_argument("--shard", default="0/1", help="I/N: run every N-th case from the I-th (0-based)")
    parser.add_argument("--rows", type=Path, help="append each case's row to this JSON-lines file as it finishes; no table")
    parser.add_argument("--merge", type=Path, nargs="+", help="build the JSON and the table from the rows of sharded runs")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    load, t0 = load_average(), time.perf_counter()
    command = "python benchmarks/unobserved.py" + ("" if argv is None else " " + " ".join(argv))
    if args.merge:
        rows = [json.loads(line) for path in args.merge for line in path.read_text().splitlines() if line.strip()]
        seconds = sum(r.pop("wall_s", 0.0) for r in rows)
        command = ("python benchmarks/unobserved.py --threads 1 --shard 0/2 --rows u0.jsonl, the same with --shard 1/2 side by side, "
                   "then --merge u0.jsonl u1.jsonl")
    else:
        index, count = (int(x) for x in args.shard.split("/"))
        rows = []
        for case, name, G, forward, clean, metric in cases(args)[index::count]:
            t_case = time.perf_counter()
            row = {"case": case, **run_case(name, G, forward, clean, metric, seed=args.seed)}
            rows.append(row)
            if args.rows:
                with args.rows.open("a") as f:
                    f.write(json.dumps({**row, "wall_s": time.perf_counter() - t_case}) + "\n")
        if args.rows:
            return
        seconds = time.perf_counter() - t0
    table = summarise(rows)
    payload = {"command": command, "machine": machine_with_load(load), "seconds": seconds, "tau": TAU, "N": N,
               "rows": rows, "table": table}
    path = write_json("unobserved", payload)
    md = (f"Command: `{command}` ({payload['machine'].get('cores', '?')} cores, {payload['machine'].get('date', '')}, "
          f"{payload['seconds']:.0f} s). JSON: `benchmarks/results/unobserved.json`. Medians over the observations with 95% "
          "bootstrap intervals of the median.\n\n" + markdown_table(table, COLUMNS))
    print(md)
    if not args.no_doc:
        update_doc_section("unobserved", md, RESULTS_DOC)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

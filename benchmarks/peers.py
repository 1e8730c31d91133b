"""Benchmark: the top-20 eigenpairs of H_X and H_Y, this project against the peer toolkits, side by side in one process.

For each case (generator x metric) and each thread count (1 and 2) one process times, on the same latent
point, the same operator and the same tolerance (tol = 1e-3 relative, ``which = "LA"``, k = 20):

1. ``ours`` - :func:`hvp_explore.top_eigenpairs` with every default (``solver="auto"``: the exact route when
   it is no dearer, else block Krylov with a static block, handed to ARPACK when the operator's build or its
   first, timed, block shows a cheap operator), and block Krylov with blocks of 1 and 8 (auto alone on the face and BigGAN cases,
   where one solve takes seconds to a minute);
2. ``gan-geometry`` - the baseline a researcher writes (GAN-Geometry's ``BackwardIter``): the gradient
   of the distance built once with ``create_graph=True`` on the user's modules, then scipy ``eigsh`` on
   single-vector double-backprop products (:func:`gan_geometry_eigsh`, a dozen lines);
3. ``eigenthings`` - hessian-eigenthings' ``lanczos`` on its ``HessianOperator`` over the latent (a module
   whose only parameter is z), ``max_iter = 4k`` (its default 2k returned wrong pairs at n = 2048) with full
   reorthogonalisation (its default drops it above 50 steps, and then returns copies of lambda_1);
4. ``curvlinops`` - curvlinops' ``GGNLinearOperator`` of the residual (MSE with sum reduction, times 1/2)
   bridged to scipy ``eigsh``;

and a dense float64 reference (``eigh`` of J^T J, J the full Jacobian of float64 copies of the modules), not
timed, against which every method's eigenvalue error (relative to lambda_1) and smallest principal-angle
cosine are reported. ``floor`` is the measured time of one batched call of k = 20 products of this
project's operator (one batched forward-mode and one batched reverse-mode pass): no top-20 solve can
cost less, and the table reports how far each method is from it.

Cases: the embedded default (Fashion-MNIST DCGAN, n = 512, fmnist metric), a random conv generator with
n = 2048 (the default's architecture, seeded weights, batch-norm statistics of its own activations),
the face generator (n = 100, effnet metric) and BigGAN-deep-128's architecture with random weights
(n = 256, effnet metric); H_Y (super-resolution x4) on the first two; and a cheap operator, where every fixed
cost of a solve shows: the Hessian of the extended Rosenbrock function at n = 2000 (``rosenbrock``, ``H``,
double backprop on both sides, curvlinops' ``HessianLinearOperator``, a dense float64 reference).

The regression check: the default (``ours-auto``) must never be slower than the GAN-Geometry loop (column
``auto <= 1``; ``--check`` exits 1 when it is, issue #22).

Round r of the interleaved timing starts every method from seed r, and seconds and product counts are medians
over the rounds: a Krylov solve's product count depends on its start vector (ARPACK on the Rosenbrock case: 138 to
172 over twenty seeds), so one fixed seed per side would compare draws, not methods. Every ARPACK run of round r
starts from the same vector (common random numbers, :func:`start_vector`: the one ``top_eigenpairs(seed=r)`` draws
for ARPACK), so two sides that both run ARPACK take the same products and differ only in what a product and the
solve around it cost; hessian-eigenthings draws its own start from seed r. The Rosenbrock case runs nine times
the rounds (its solves take 0.1 s, and its ratio sits near 1.0, where single rounds of either side range over
0.07-0.12 s).

The peers are benchmark extras, not dependencies: ``pip install --no-deps --pre hessian-eigenthings==1.0.0a5
curvlinops-for-pytorch==3.0.1 backpack-for-pytorch einops einconv opt-einsum`` (``--no-deps`` so that pip
never replaces this machine's torch; ``pip install -e .[peers]`` declares the same). A peer that cannot be
imported or run is reported as such in the JSON and the table instead of failing the run.

    python benchmarks/peers.py                       # all cases, 1 and 2 threads: JSON + docs/benchmarks.md
    python benchmarks/peers.py --cases default --threads 1 --no-doc
"""

from __future__ import annotations

import os

# Waiting OpenMP threads sleep instead of spinning: on a 2-core machine that other jobs share, spinning threads
# of a 2-thread run slowed every method 5-20x (set before torch loads; it applies to every method alike).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import copy  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import scipy.sparse.linalg as sla  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import load_average, machine_with_load, markdown_table, peer_versions, publish  # noqa: E402

from hvp_explore import (  # noqa: E402
    ConvergenceWarning,
    SuperResolution,
    load_metric,
    hessian_operator,
    measurement_hessian,
    perceptual_hessian,
    subspace_cosines,
    top_eigenpairs,
)
from hvp_explore.generators import biggan_from_config, load_generator  # noqa: E402
from hvp_explore.generators.dcgan import DCGANGenerator  # noqa: E402

K, TOL = 20, 1e-3
CASES = ("default", "conv2048", "faces", "biggan", "rosenbrock")
#: The extended Rosenbrock function's size: a cheap operator, where any fixed cost of a solve shows.
ROSENBROCK_N = 2000
OURS = (("ours-auto", "auto", None), ("ours-bk1", "block-krylov", 1), ("ours-bk8", "block-krylov", 8))


# --------------------------------------------------------------------------------------------------
# the cases


def random_conv_generator(n: int = 2048, seed: int = 0) -> DCGANGenerator:
    """The default's DCGAN architecture with an n-dimensional latent, seeded weights, and batch-norm
    statistics of its own activations over 256 latents (as training would leave them)."""
    torch.manual_seed(seed)
    G = DCGANGenerator(latent_dim=n)
    for m in G.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None  # cumulative average: the statistics of the whole batch
    G.train()
    with torch.no_grad():
        G(torch.randn(256, n, generator=torch.Generator().manual_seed(seed + 1)))
    return G.eval()


def build_case(name: str):
    """(generator, metric, z0, forward or None) of a case, all frozen, in float32 (no modules for ``rosenbrock``)."""
    if name == "rosenbrock":  # a point where the Hessian is indefinite and its top eigenvalues spread out
        return None, None, torch.linspace(-0.3, 0.9, ROSENBROCK_N), None
    if name == "default":
        G, metric = load_generator("default"), load_metric("fmnist")
    elif name == "conv2048":
        G, metric = random_conv_generator(), load_metric("fmnist")
    elif name == "faces":
        G, metric = load_generator("faces"), load_metric("effnet")
    elif name == "biggan":
        G, metric = biggan_from_config(seed=0), load_metric("effnet")
    else:
        raise ValueError(f"unknown case {name!r}; choose from {', '.join(CASES)}")
    for module in (G, metric):
        module.eval()
        module.requires_grad_(False)
    n = G.latent_dim
    z0 = G.class_latent(1, seed=0) if name == "biggan" else torch.randn(n, generator=torch.Generator().manual_seed(1))
    forward = SuperResolution(G.image_shape, 4, kernel="area") if name in ("default", "conv2048") else None
    return G, metric, z0.float(), forward


def residual_fn(op_name, G, metric, forward, z0):
    """r(z) on the user's modules (no folding: the peers get the modules as a researcher has them), and r's zero point.

    ``H`` (the ``rosenbrock`` case): the extended Rosenbrock function as a sum of squares,
    :math:`f = \sum_i 100 (z_{i+1} - z_i^2)^2 + (1 - z_i)^2 = \tfrac12 \|r\|^2`; its residual does not vanish, so
    the operator is the Hessian of :math:`f` (double backprop), not :math:`J^T J`.
    """
    if op_name == "H":
        return lambda z: 2 ** 0.5 * torch.cat([10 * (z[1:] - z[:-1] ** 2), 1 - z[:-1]])
    with torch.no_grad():
        if op_name == "H_Y":
            y0 = forward(G(z0[None]))
            return lambda z: (forward(G(z[None])) - y0).reshape(-1)
        x0 = G(z0[None])
    return lambda z: metric.residual(G(z[None]), x0).reshape(-1)


def our_operator(op_name, G, metric, forward, z0):
    if op_name == "H":
        residual = residual_fn("H", G, metric, forward, z0)
        return hessian_operator(lambda z: 0.5 * residual(z).pow(2).sum(), z0)
    return measurement_hessian(G, forward, z0) if op_name == "H_Y" else perceptual_hessian(G, metric, z0)


def reference(op_name, G, metric, forward, z0):
    """Dense float64 eigendecomposition of J^T J, J the float64 Jacobian of float64 copies of the modules (not timed)."""
    if op_name == "H":
        w, V = torch.linalg.eigh(our_operator(op_name, G, metric, forward, z0.double()).dense())
        return w.flip(0), V.flip(1)
    G64, m64 = copy.deepcopy(G).double(), copy.deepcopy(metric).double()
    f64 = None if forward is None else copy.deepcopy(forward).double()
    J = our_operator(op_name, G64, m64, f64, z0.double()).jacobian()  # min(m, n) rows or columns, batched
    w, V = torch.linalg.eigh(J.T @ J)
    return w.flip(0), V.flip(1)


# --------------------------------------------------------------------------------------------------
# the methods: each returns (values, vectors (n, k) float64, products)


def start_vector(n: int, seed: int) -> np.ndarray:
    """ARPACK's ``v0`` in round ``seed``, for every side: the standard normal vector ``top_eigenpairs(seed=seed)`` draws
    for ARPACK (a fresh generator seeded with ``seed``, float64)."""
    return torch.randn(n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).numpy()


def gan_geometry_eigsh(residual, z0, k=K, tol=TOL, seed=0):
    """GAN-Geometry's BackwardIter: the gradient graph built once, ARPACK on single double-backprop products."""
    z = z0.clone().requires_grad_(True)
    distance = 0.5 * residual(z).pow(2).sum()
    (grad,) = torch.autograd.grad(distance, z, create_graph=True)
    count = [0]

    def hvp(v):
        count[0] += 1
        v = torch.as_tensor(np.asarray(v, dtype=np.float32).reshape(-1))
        return torch.autograd.grad(grad, z, v, retain_graph=True)[0].double().numpy()

    n = z0.numel()
    op = sla.LinearOperator((n, n), matvec=hvp, dtype=np.float64)
    values, vectors = sla.eigsh(op, k=k, which="LA", tol=tol, v0=start_vector(n, seed))
    order = np.argsort(values)[::-1]
    return torch.from_numpy(values[order].copy()), torch.from_numpy(vectors[:, order].copy()), count[0]


class _LatentModel(nn.Module):
    """A module whose only parameter is the latent z (the form both peers differentiate)."""

    def __init__(self, residual, z0):
        super().__init__()
        self.z = nn.Parameter(z0.clone())
        object.__setattr__(self, "_residual", residual)  # not a submodule: its weights are not parameters

    def forward(self, X=None):
        return self._residual(self.z)[None]


def eigenthings_lanczos(residual, z0, k=K, tol=TOL, seed=0):
    import hessian_eigenthings as he

    model = _LatentModel(residual, z0)
    count = [0]

    def loss_fn(m, batch):
        count[0] += 1
        return 0.5 * m().pow(2).sum()

    op = he.HessianOperator(model, [None], loss_fn)
    # Full reorthogonalisation: its default turns it off above 50 steps, and then returns copies of lambda_1.
    result = he.lanczos(op, k=k, max_iter=min(4 * k, z0.numel() - 1), tol=tol, which="LA", seed=seed, reorthogonalize=True)
    values = result.eigenvalues.double()
    order = torch.argsort(values, descending=True)
    return values[order], result.eigenvectors.double().T[:, order], count[0]


def curvlinops_eigsh(residual, z0, k=K, tol=TOL, *, hessian=False, seed=0):
    from curvlinops import GGNLinearOperator, HessianLinearOperator

    model = _LatentModel(residual, z0)
    m = residual(z0).numel()
    X, y = torch.zeros(1, 1), torch.zeros(1, m)
    kind = HessianLinearOperator if hessian else GGNLinearOperator
    ggn = kind(model, nn.MSELoss(reduction="sum"), [model.z], [(X, y)], check_deterministic=False)
    scipy_op = (0.5 * ggn).to_scipy(np.float64)  # MSE(sum) has Hessian 2 I: half of it is J^T J
    count = [0]
    matvec = scipy_op.matvec

    def counted(v):
        count[0] += 1
        return matvec(v)

    op = sla.LinearOperator(scipy_op.shape, matvec=counted, dtype=np.float64)
    values, vectors = sla.eigsh(op, k=k, which="LA", tol=tol, v0=start_vector(z0.numel(), seed))
    order = np.argsort(values)[::-1]
    return torch.from_numpy(values[order].copy()), torch.from_numpy(vectors[:, order].copy()), count[0]


def ours(op_name, G, metric, forward, z0, solver, block, seed=0):
    op = our_operator(op_name, G, metric, forward, z0)
    res = top_eigenpairs(op, K, solver=solver, block=block, tol=TOL, warn=False, seed=seed)
    choice = res.solver + (f":{res.info['block']}" if res.solver == "block-krylov" else "")
    return res.values, res.vectors, res.matvecs, {"passes": res.info.get("passes"), "choice": choice,
                                                  "converged": res.all_converged,
                                                  "max_relative_residual": res.max_relative_residual,
                                                  "floor_pairs": res.info.get("floor", {}).get("pairs", [])}


# --------------------------------------------------------------------------------------------------
# timing


def accuracy(values, vectors, ref):
    w, V = ref
    values = torch.as_tensor(values, dtype=torch.float64)
    if values.numel() < K:
        return {"eig_rel_err": None, "subspace_cos": None}
    return {"eig_rel_err": float((values[:K] - w[:K]).abs().max() / w[0]),
            "subspace_cos": float(subspace_cosines(torch.as_tensor(vectors, dtype=torch.float64)[:, :K], V[:, :K]).min())}


def interleaved_runs(methods, *, rounds, first_seed=0):
    """Run every method once per round, the order rotating each round (contention from other processes then
    hits every method alike), and return per method its seconds and product counts of every round and its last
    result (or error).

    Round r seeds every method's start vectors with ``first_seed + r`` (ARPACK's ``v0``, our ``seed``, the
    peers' own seeds): how many products a Krylov solve needs depends on its start (138 to 161 for ARPACK on
    the Rosenbrock case over ten seeds), so medians over rounds compare the methods, not one lucky draw.
    """
    seconds = {label: [] for label, _ in methods}
    products = {label: [] for label, _ in methods}
    results = {}
    for r in range(rounds):
        for label, fn in methods[r % len(methods):] + methods[: r % len(methods)]:
            if isinstance(results.get(label), Exception):
                continue
            try:
                t0 = time.perf_counter()
                results[label] = fn(seed=first_seed + r)
                seconds[label].append(time.perf_counter() - t0)
                products[label].append(results[label][2])
            except Exception as exc:  # noqa: BLE001 - a peer that cannot run is reported, not fatal
                print(f"  {label}: failed: {exc!r}", flush=True)
                results[label] = exc
    return seconds, products, results


def paired_ratio(row, baseline):
    """Median over rounds of ``row``'s seconds over ``baseline``'s in the same round (``None`` without a baseline).

    A round runs every method back to back, so a slow spell of the machine hits both sides of a pair: on the
    Rosenbrock case (15 rounds, solves of 0.1 s) the ratio of the two medians and this paired median differed by
    up to 0.12.
    """
    if not baseline or "runs" not in row or "runs" not in baseline:
        return None
    return statistics.median(a / b for a, b in zip(row["runs"], baseline["runs"]))


def floor_seconds(op_name, G, metric, forward, z0):
    """Median time of one batched call of K products of this project's operator (after a warm call)."""
    op = our_operator(op_name, G, metric, forward, z0)
    V = torch.randn(z0.numel(), K, generator=torch.Generator().manual_seed(0))
    op.matmat(V)
    runs = []
    for _ in range(3):
        t0 = time.perf_counter()
        op.matmat(V)
        runs.append(time.perf_counter() - t0)
        if runs[-1] > 5:
            break
    return statistics.median(runs)


def run_case(case, threads_list, *, rounds, slow):
    G, metric, z0, forward = build_case(case)
    ops = ["H"] if case == "rosenbrock" else ["H_X"] + (["H_Y"] if forward is not None else [])
    rows, summary = [], []
    for op_name in ops:
        torch.set_num_threads(max(threads_list))
        t0 = time.perf_counter()
        ref = reference(op_name, G, metric, forward, z0)
        print(f"{case} {op_name}: float64 reference in {time.perf_counter() - t0:.1f} s "
              f"(lambda_1 = {float(ref[0][0]):.4g}, lambda_21/lambda_20 = {float(ref[0][K] / ref[0][K - 1]):.3f})", flush=True)
        residual = residual_fn(op_name, G, metric, forward, z0)
        # On the slow cases (a solve takes seconds to a minute) only auto represents this project.
        methods = [(label, lambda s=solver, b=block, seed=0: ours(op_name, G, metric, forward, z0, s, b, seed))
                   for label, solver, block in OURS if not slow or solver == "auto"]
        methods += [("gan-geometry", lambda seed=0: gan_geometry_eigsh(residual, z0, seed=seed)),
                    ("eigenthings", lambda seed=0: eigenthings_lanczos(residual, z0, seed=seed)),
                    ("curvlinops", lambda seed=0: curvlinops_eigsh(residual, z0, hessian=op_name == "H", seed=seed))]
        for threads in threads_list:
            torch.set_num_threads(threads)
            # warm-up: torch's first forward-mode and double-backward calls in a process compile helpers
            warm = our_operator(op_name, G, metric, forward, z0)
            warm.matmat(torch.randn(z0.numel(), 2))
            warm.matvec(torch.randn(z0.numel()))
            gan_geometry_eigsh(residual, z0, k=2, tol=1e-1)
            floor = floor_seconds(op_name, G, metric, forward, z0)
            base = {"case": case, "operator": op_name, "n": z0.numel(), "threads": threads}
            if not slow:  # warm-up run of every method (caches, scipy, the peers' lazy set-ups)
                interleaved_runs(methods, rounds=1, first_seed=1000)
            # the cheap case's solves take 0.1 s and vary most from round to round: more rounds
            seconds, products_by_round, results = interleaved_runs(
                methods, rounds=1 if slow else rounds * (9 if case == "rosenbrock" else 1))
            case_rows = []
            for label, _ in methods:
                out = results.get(label)
                if isinstance(out, Exception) or out is None:
                    case_rows.append({**base, "method": label, "error": f"{type(out).__name__}: {out}"[:300]})
                    continue
                values, vectors = out[:2]
                products = statistics.median(products_by_round[label])
                extra = out[3] if len(out) > 3 else {}
                median = statistics.median(seconds[label])
                row = {**base, "method": label, "seconds": median, "runs": seconds[label], "products": products,
                       "products_by_round": products_by_round[label], **extra,
                       **accuracy(values, vectors, ref), "floor_s": floor}
                case_rows.append(row)
                print(f"  {case} {op_name} {threads}t {label}: {median:.3f} s ({len(seconds[label])} runs), {products} "
                      f"products {extra.get('choice', '')} err {row['eig_rel_err']} cos {row['subspace_cos']}", flush=True)
            timed = {r["method"]: r for r in case_rows if "seconds" in r}
            baseline = timed.get("gan-geometry")
            for r in case_rows:
                if baseline and "seconds" in r:
                    r["vs_gan_geometry"] = r["seconds"] / baseline["seconds"]
                    r["vs_floor"] = r["seconds"] / floor
            rows += case_rows
            our_rows = [r for r in case_rows if r["method"].startswith("ours") and "seconds" in r]
            best = min(our_rows, key=lambda r: r["seconds"])
            accurate = (best["eig_rel_err"] or 1) <= 1e-4 and (best["subspace_cos"] or 0) >= 0.999
            summary.append({**base, "best": best["method"] + f" ({best.get('choice')})", "best_s": best["seconds"],
                            "products": best["products"], "passes": best.get("passes"),
                            "auto_s": timed["ours-auto"]["seconds"], "auto_choice": timed["ours-auto"].get("choice"),
                            "gan_geometry_s": baseline["seconds"] if baseline else None,
                            "gan_geometry_products": baseline["products"] if baseline else None,
                            "eigenthings_s": timed.get("eigenthings", {}).get("seconds"),
                            "curvlinops_s": timed.get("curvlinops", {}).get("seconds"),
                            "floor_s": floor, "ratio": best.get("vs_gan_geometry"),
                            "auto_ratio": timed["ours-auto"].get("vs_gan_geometry"),
                            "auto_paired_ratio": paired_ratio(timed["ours-auto"], baseline),
                            "auto_never_loses": bool(timed["ours-auto"].get("vs_gan_geometry", 9) <= 1.0),
                            "best_vs_floor": best["seconds"] / floor,
                            "target_met": bool(best.get("vs_gan_geometry", 9) <= 0.2 and accurate),
                            "eig_rel_err": best["eig_rel_err"], "subspace_cos": best["subspace_cos"]})
    return rows, summary


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=CASES)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--rounds", type=int, default=5,
                        help="interleaved rounds of every method on the fast cases (median); faces and biggan run once")
    parser.add_argument("--no-doc", action="store_true", help="do not update docs/benchmarks.md")
    parser.add_argument("--check", action="store_true",
                        help="exit 1 when the default (auto) is slower than the GAN-Geometry loop on any case")
    parser.add_argument("--merge", action="store_true",
                        help="keep the other cases' rows of the existing benchmarks/results/peers.json (rerun some cases)")
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore", ConvergenceWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    load_at_start = load_average()
    start = time.perf_counter()
    rows, summary = [], []
    for case in args.cases:
        case_rows, case_summary = run_case(case, args.threads, rounds=args.rounds, slow=case in ("faces", "biggan"))
        rows += case_rows
        summary += case_summary
    command = "python benchmarks/peers.py " + " ".join(sys.argv[1:] if argv is None else argv)
    previous = Path(__file__).resolve().parent / "results" / "peers.json"
    if args.merge and previous.is_file():
        import json

        old = json.loads(previous.read_text())
        kept = [c for c in CASES if c not in args.cases and any(r["case"] == c for r in old["rows"])]
        rows = [r for r in old["rows"] if r["case"] in kept] + rows
        summary = [r for r in old["summary"] if r["case"] in kept] + summary
        order = {c: i for i, c in enumerate(CASES)}
        rows.sort(key=lambda r: order[r["case"]])
        summary.sort(key=lambda r: order[r["case"]])
        command = f"{old['command']}, then {command} (cases {', '.join(args.cases)} rerun)"
    peers = peer_versions(("hessian-eigenthings", "curvlinops-for-pytorch"))
    payload = {"command": command.strip(), "machine": machine_with_load(load_at_start), "k": K, "tol": TOL, "peers": peers,
               "seconds": time.perf_counter() - start, "summary": summary, "rows": rows}
    publish("peers", payload, render, doc=not args.no_doc)
    losses = [f"{r['case']} {r['operator']} {r['threads']}t ({r['auto_ratio']:.2f}x)" for r in summary
              if (r.get("auto_ratio") or 0) > 1.0]  # rows merged from older runs have no auto_never_loses
    if losses:
        print("the default is slower than the GAN-Geometry loop on: " + ", ".join(losses), file=sys.stderr)
        if args.check:
            sys.exit(1)


def render(payload, path) -> str:
    mach = payload["machine"]
    errors = [r for r in payload["rows"] if "error" in r]
    md = [f"Command: `{payload['command']}` ({mach['cores']} cores, torch {mach['torch']}, {mach['date']}; load average "
          f"{mach.get('load_average_at_start')} at the start, {mach.get('load_average_at_end')} at the end; total "
          f"{payload['seconds']:.0f} s). Peers: " + ", ".join(f"{k} {v}" for k, v in payload["peers"].items())
          + f". JSON: `{path.relative_to(path.parents[2])}`.", "",
          f"Top {payload['k']} at tol = {payload['tol']:g}, one process per run, every method on the same latent point; "
          "seconds and products are medians of interleaved rounds (every method once per round, after a warm-up round; "
          "one round on the face and BigGAN cases), operator construction included; in round r every ARPACK run (ours "
          "and the peers') starts from the same vector, the one our seed r draws (common random numbers), and "
          "hessian-eigenthings from its own seed r, so a lucky start vector favours no side. `ratio` is this "
          "project's best over the "
          "GAN-Geometry-style loop (target <= 0.2); `auto ratio` is the default's median over the loop's median "
          "(the regression check, `auto <= 1`), `auto ratio, paired` the median of the two sides' ratio in each round; "
          "`floor` is one batched call of k products (the least any top-k solve costs).", "",
          markdown_table(payload["summary"], [
              ("case", "case"), ("operator", "op"), ("n", "n"), ("threads", "threads"), ("best", "ours (best)"),
              ("best_s", "s"), ("products", "products"), ("passes", "passes"), ("auto_s", "auto s"),
              ("gan_geometry_s", "GAN-Geometry eigsh s"), ("gan_geometry_products", "its products"),
              ("eigenthings_s", "eigenthings s"), ("curvlinops_s", "curvlinops s"), ("ratio", "ratio"),
              ("auto_ratio", "auto ratio"), ("auto_paired_ratio", "auto ratio, paired"), ("auto_never_loses", "auto <= 1"), ("floor_s", "floor s"), ("best_vs_floor", "best / floor"),
              ("eig_rel_err", "eig err"), ("subspace_cos", "min cos"), ("target_met", "target")]),
          "", "<details><summary>All methods</summary>", "",
          markdown_table([r for r in payload["rows"] if "seconds" in r], [
              ("case", "case"), ("operator", "op"), ("threads", "threads"), ("method", "method"), ("choice", "solver"),
              ("seconds", "s"), ("products", "products"), ("passes", "passes"), ("vs_gan_geometry", "/ GAN-Geometry"),
              ("vs_floor", "/ floor"), ("eig_rel_err", "eig err"), ("subspace_cos", "min cos"), ("converged", "converged")]),
          "", "</details>"]
    if errors:
        md += ["", "Methods that could not run: " + "; ".join(f"{r['case']} {r['operator']} {r['threads']}t {r['method']}: "
                                                             f"{r['error']}" for r in errors) + "."]
    return "\n".join(md)


if __name__ == "__main__":
    main()

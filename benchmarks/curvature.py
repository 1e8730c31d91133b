"""Benchmark: the loss Hessian of a CNN in parameter space, on the peers' own ground: top-5 eigenvalues, trace, density.

This project (``loss_hessian`` with ``top_eigenpairs``, ``estimate_trace``, ``spectral_density``) against
PyHessian, curvlinops and hessian-eigenthings, on the same model, the same data and the same machine, in one
process, every method's operator construction included in its time.

Model: a 2,202-parameter CNN (conv 1->4 5x5, ReLU, max-pool, conv 4->8 5x5, ReLU, max-pool, linear 128->10),
trained for 300 Adam steps on 20,000 Fashion-MNIST training images (seeded, one thread), evaluated with
cross-entropy (mean) on Fashion-MNIST test images (Debian's ``dataset-fashion-mnist``:
``apt-get install dataset-fashion-mnist``). Cases:

- ``dense``: 500 test images in 5 batches of 100. Reference: the dense float64 Hessian (2,202 float64
  products of this project's operator on a float64 copy, untimed): its eigenvalues, trace and spectrum.
- ``large``: 2,000 test images in 10 batches of 200. No dense reference (it would take about 20 minutes):
  the top-5 reference is a float64 block-Krylov solve to tol 1e-10 (residual-certified: by Bauer-Fike its
  eigenvalues are within 1e-10 relative); the trace reference is the exact float64 trace of the GGN, which
  equals the Hessian's for this network (its outputs are linear in each single parameter on every ReLU and
  max-pool region, so the two diagonals agree; the ``dense`` case checks it against the dense Hessian).

Methods:

- **top-5** (largest algebraic, relative error against the reference): ours = ``top_eigenpairs(loss_hessian(...),
  5)`` with every default (tol 1e-4: a residual bound, so eigenvalue errors are far smaller); PyHessian
  ``eigenvalues(top_n=5)`` at its defaults (power iteration, maxIter 100, tol 1e-3) and at tol 1e-6;
  curvlinops' ``HessianLinearOperator`` bridged to scipy ``eigsh`` at scipy's default tolerance (machine
  precision) and at tol 1e-4; hessian-eigenthings' ``lanczos`` at its defaults (2k = 10 steps) and with 40.
- **trace at equal error**: the time to a median relative error over 5 seeds of at most 1%, and of at most
  0.3%. Ours: ``estimate_trace`` asked for a standard error of the target (a median error of about two thirds of
  it: normal errors have a median of 0.674 standard errors), its own stopping rule choosing the products, once as
  Hutch++ and once with the loss's GGN as a control variate (its exact trace from per-example Jacobians,
  Hutchinson on H - G). Peers, whose estimators take a fixed number of products: that number grows (24, 36, 48,
  72, 96, 144, 192, 288, 384) until the median error over the 5 seeds reaches the target (a choice made after
  seeing the errors, which favours them): curvlinops' ``hutchpp_trace`` and ``xtrace``,
  hessian-eigenthings' Hutch++; curvlinops' ``hutchinson_trace`` runs once, at 96 products (plain Hutchinson
  needs about 2,000 here);
  PyHessian's ``trace()`` runs at its defaults (Hutchinson to a relative change of 1e-3, 100 probes at most),
  which do not aim at a given error. Each row states whether the method reached 1% and with how many products.
- **density** (``dense`` case only, where the true spectrum is known): 8 probes x 64 Lanczos steps for every
  method (PyHessian ``density(iter=64, n_v=8)``, curvlinops ``lanczos_approximate_spectrum(ncv=64,
  num_repeats=8)``, hessian-eigenthings ``spectral_density(num_runs=8, lanczos_steps=64)``); accuracy is the
  Wasserstein-1 distance between the method's spectral measure (quadrature nodes and weights, or the CDF of its
  smoothed density) and the true one, relative to the spectrum's width.

Peers are benchmark extras, never dependencies: ``pip install --no-deps --pre hessian-eigenthings==1.0.0a5
curvlinops-for-pytorch==3.0.1 pyhessian==0.1 backpack-for-pytorch einops einconv opt-einsum`` (``--no-deps``
so pip never replaces this machine's torch). A peer that cannot be imported or run is reported as such.

    python benchmarks/curvature.py                      # both cases, one thread: JSON + docs/benchmarks.md
    python benchmarks/curvature.py --cases dense --rounds 1 --no-doc
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as peers.py: sleeping OpenMP threads on a shared 2-core machine

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

from hvp_explore import ConvergenceWarning, estimate_trace, loss_ggn, loss_hessian, spectral_density, top_eigenpairs  # noqa: E402
from hvp_explore.data import load_fashion_mnist  # noqa: E402

K = 5
CASES = {"dense": (500, 100), "large": (2000, 200)}
#: The median relative errors the trace estimates are timed at (equal error).
TRACE_TARGETS = (0.01, 0.003)
TRACE_SEEDS = 5
LADDER = (24, 36, 48, 72, 96, 144, 192, 288, 384)
DENSITY_PROBES, DENSITY_STEPS = 8, 64


# --------------------------------------------------------------------------------------------------
# the model and the data


def cnn() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 4, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(4, 8, 5), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(128, 10))


def trained_cnn(seed: int = 0, steps: int = 300) -> nn.Module:
    """The CNN after ``steps`` Adam steps on 20,000 training images (one thread: the same weights on every run)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(seed)
        model = cnn()
        x, y = load_fashion_mnist("train")
        x, y = x[:20000, :, 2:30, 2:30], y[:20000]  # the original 28 x 28 images
        opt = torch.optim.Adam(model.parameters(), 3e-3)
        g = torch.Generator().manual_seed(seed)
        for _ in range(steps):
            idx = torch.randint(0, len(x), (128,), generator=g)
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    finally:
        torch.set_num_threads(threads)
    return model.eval()


def test_batches(count: int, batch: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    x, y = load_fashion_mnist("test")
    x, y = x[:count, :, 2:30, 2:30].contiguous(), y[:count]
    return list(zip(x.split(batch), y.split(batch)))


# --------------------------------------------------------------------------------------------------
# references (untimed)


def dense_reference(model, data):
    """The dense float64 Hessian by this project's operator on float64 copies (n batched products)."""
    model64 = copy.deepcopy(model).double()
    data64 = [(x.double(), y) for x, y in data]
    H = loss_hessian(model64, nn.CrossEntropyLoss(), data64, block_size=64).dense()
    H = 0.5 * (H + H.T)
    w = torch.linalg.eigvalsh(H)
    ggn_trace = loss_ggn(model64, nn.CrossEntropyLoss(), data64).trace()
    return {"top": w.flip(0)[:K], "trace": float(H.trace()), "eigenvalues": w, "kind": "dense float64 Hessian",
            "trace_gap": abs(ggn_trace - float(H.trace())) / abs(float(H.trace()))}


def iterative_reference(model, data):
    """float64 top-5 to tol 1e-10 (residual-certified) and the trace as the exact float64 trace of the GGN.

    For this network (convolutions, linear layers, ReLU and max-pool) the outputs are linear in each single
    parameter on every activation region, so the Hessian's diagonal equals the GGN's: the ``dense`` case verifies
    it (``trace_gap``). The GGN's diagonal comes from per-example Jacobians, no sampling.
    """
    model64 = copy.deepcopy(model).double()
    data64 = [(x.double(), y) for x, y in data]
    H = loss_hessian(model64, nn.CrossEntropyLoss(), data64)
    top = top_eigenpairs(H, K, solver="block-krylov", tol=1e-10, warn=False)
    trace = loss_ggn(model64, nn.CrossEntropyLoss(), data64).trace()
    return {"top": top.values, "top_converged": top.all_converged, "trace": trace, "eigenvalues": None,
            "kind": "float64 block Krylov to tol 1e-10 (top-5); the exact float64 GGN trace, equal to the Hessian's here (trace)"}


# --------------------------------------------------------------------------------------------------
# the methods


def loss_fn():
    return nn.CrossEntropyLoss()


def ours_top(model, data):
    res = top_eigenpairs(loss_hessian(model, loss_fn(), data), K, warn=False)
    return res.values, {"products": res.matvecs + res.check_matvecs, "solver": res.solver + (
        f":{res.info['block']}" if res.solver == "block-krylov" else ""), "converged": res.all_converged}


def pyhessian_top(model, data, *, tol=1e-3, max_iter=100):
    from pyhessian import hessian

    torch.manual_seed(0)
    values, _ = hessian(model, loss_fn(), dataloader=data, cuda=False).eigenvalues(top_n=K, tol=tol, maxIter=max_iter)
    return torch.tensor(sorted(values, reverse=True), dtype=torch.float64), {}


def _curvlinops_hessian(model, data):
    from curvlinops import HessianLinearOperator

    return HessianLinearOperator(model, loss_fn(), [p for p in model.parameters() if p.requires_grad], data,
                                 check_deterministic=False)


def curvlinops_top(model, data, *, tol=0.0):
    op = _curvlinops_hessian(model, data).to_scipy(np.float64)
    count = [0]

    def matvec(v):
        count[0] += 1
        return op.matvec(v)

    n = op.shape[0]
    values = sla.eigsh(sla.LinearOperator(op.shape, matvec=matvec, dtype=np.float64), k=K, which="LA", tol=tol,
                       v0=np.random.default_rng(0).standard_normal(n), return_eigenvectors=False)
    return torch.from_numpy(np.sort(values)[::-1].copy()), {"products": count[0]}


def _eigenthings_hessian(model, data):
    from hessian_eigenthings import HessianOperator, supervised_loss

    return HessianOperator(model, data, supervised_loss(loss_fn()))


def eigenthings_top(model, data, *, max_iter=None):
    from hessian_eigenthings import lanczos

    res = lanczos(_eigenthings_hessian(model, data), k=K, max_iter=max_iter, which="LA", seed=0)
    values = torch.as_tensor(res.eigenvalues, dtype=torch.float64)
    return values.sort(descending=True).values, {}


TOP_METHODS = {
    "ours": ours_top,
    "pyhessian (defaults)": pyhessian_top,
    "pyhessian (tol 1e-6)": lambda m, d: pyhessian_top(m, d, tol=1e-6, max_iter=1000),
    "curvlinops + eigsh (tol 0)": curvlinops_top,
    "curvlinops + eigsh (tol 1e-4)": lambda m, d: curvlinops_top(m, d, tol=1e-4),
    "eigenthings (defaults)": eigenthings_top,
    "eigenthings (40 steps)": lambda m, d: eigenthings_top(m, d, max_iter=40),
}


# trace estimators: (model, data, seed, products) -> (estimate, products used, extra)

def ours_trace(model, data, seed, target):
    est = estimate_trace(loss_hessian(model, loss_fn(), data), rtol=target, max_matvecs=4000, seed=seed)
    return est.estimate, est.matvecs, {"interval": est.interval, "converged": est.converged}


def ours_trace_control(model, data, seed, target):
    """tr H = tr G (exact, per-example Jacobians) + Hutchinson on H - G (each probe: a form of H and one of G)."""
    est = estimate_trace(loss_hessian(model, loss_fn(), data), control=loss_ggn(model, loss_fn(), data), method="hutchinson",
                         rtol=target, max_matvecs=4000, seed=seed)
    return est.estimate, est.matvecs, {"interval": est.interval, "converged": est.converged}


def curvlinops_trace(kind):
    def run(model, data, seed, products):
        from curvlinops import hutchinson_trace, hutchpp_trace, xtrace

        torch.manual_seed(seed)
        fn = {"hutch++": hutchpp_trace, "xtrace": xtrace, "hutchinson": hutchinson_trace}[kind]
        return float(fn(_curvlinops_hessian(model, data), products)), products, {}
    return run


def eigenthings_trace(model, data, seed, products):
    from hessian_eigenthings import trace

    res = trace(_eigenthings_hessian(model, data), num_matvecs=products, method="hutch++", seed=seed)
    return float(res.estimate), products, {}


def pyhessian_trace(model, data, seed, _products=None):
    from pyhessian import hessian

    torch.manual_seed(seed)
    samples = hessian(model, loss_fn(), dataloader=data, cuda=False).trace()
    return float(np.mean(samples)), len(samples), {}


#: name -> (estimator, what it is given at each target): "target" (our rtol: the estimator's own rule chooses the
#: products), the numbers of products to try in turn, or None (its own defaults, run once, at the first target only).
#: Plain Hutchinson needs about 2,000 probes for 1% on these spectra (a sample's standard deviation is 44% of the
#: trace): curvlinops' runs once, at 96 products, and its error is reported.
TRACE_METHODS = {
    "ours (Hutch++, adaptive)": (ours_trace, "target"),
    "ours (GGN control variate)": (ours_trace_control, "target"),
    "curvlinops hutchpp_trace": (curvlinops_trace("hutch++"), LADDER),
    "curvlinops xtrace": (curvlinops_trace("xtrace"), LADDER),
    "curvlinops hutchinson_trace": (curvlinops_trace("hutchinson"), (96,)),
    "eigenthings trace (hutch++)": (eigenthings_trace, LADDER),
    "pyhessian trace (defaults)": (pyhessian_trace, None),
}


# density: (model, data) -> (nodes (P, m), weights (P, m)) or ("cdf", grid, density)

def ours_density(model, data):
    d = spectral_density(loss_hessian(model, loss_fn(), data), num_probes=DENSITY_PROBES, steps=DENSITY_STEPS)
    return ("quadrature", d.nodes, d.weights)


def pyhessian_density(model, data):
    from pyhessian import hessian

    torch.manual_seed(0)
    nodes, weights = hessian(model, loss_fn(), dataloader=data, cuda=False).density(iter=DENSITY_STEPS, n_v=DENSITY_PROBES)
    return ("quadrature", torch.tensor(nodes, dtype=torch.float64), torch.tensor(weights, dtype=torch.float64))


def curvlinops_density(model, data):
    from curvlinops import lanczos_approximate_spectrum

    np.random.seed(0)
    grid, density = lanczos_approximate_spectrum(_curvlinops_hessian(model, data), DENSITY_STEPS, num_repeats=DENSITY_PROBES)
    return ("density", torch.as_tensor(np.asarray(grid), dtype=torch.float64), torch.as_tensor(np.asarray(density),
                                                                                                 dtype=torch.float64))


def eigenthings_density(model, data):
    from hessian_eigenthings import spectral_density as eigenthings_sd

    res = eigenthings_sd(_eigenthings_hessian(model, data), num_runs=DENSITY_PROBES, lanczos_steps=DENSITY_STEPS, seed=0)
    return ("quadrature", res.raw_eigenvalues.double(), res.raw_weights.double())


DENSITY_METHODS = {"ours": ours_density, "pyhessian": pyhessian_density, "curvlinops": curvlinops_density,
                   "eigenthings": eigenthings_density}


def wasserstein_to_spectrum(result, eigenvalues: torch.Tensor) -> float:
    """W1 distance between a method's spectral measure and the uniform measure on ``eigenvalues``, over their width."""
    kind, a, b = result
    w = eigenvalues.double().sort().values
    lo, hi = float(w[0]), float(w[-1])
    grid = torch.linspace(lo - 0.1 * (hi - lo), hi + 0.1 * (hi - lo), 20001, dtype=torch.float64)
    true_cdf = torch.searchsorted(w, grid, right=True).double() / w.numel()
    if kind == "quadrature":
        nodes, weights = a.reshape(-1), b.reshape(-1)
        keep = torch.isfinite(nodes)
        nodes, weights = nodes[keep], weights[keep] / weights[keep].sum()
        order = nodes.argsort()
        nodes, cum = nodes[order], weights[order].cumsum(0)
        idx = torch.searchsorted(nodes, grid, right=True)
        est_cdf = torch.where(idx > 0, cum[(idx - 1).clamp_min(0)], torch.zeros_like(grid))
    else:
        t, density = a, b.clamp_min(0.0)
        cdf = torch.cat([torch.zeros(1, dtype=torch.float64), torch.cumsum(0.5 * (density[1:] + density[:-1]) * t.diff(), 0)])
        cdf = cdf / cdf[-1]
        est_cdf = torch.from_numpy(np.interp(grid.numpy(), t.numpy(), cdf.numpy(), left=0.0, right=1.0))
    dx = float(grid[1] - grid[0])
    return float((est_cdf - true_cdf).abs().sum() * dx / (hi - lo))


# --------------------------------------------------------------------------------------------------
# the run


def timed_call(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def run_top(case, model, data, ref, rounds):
    rows = []
    seconds = {name: [] for name in TOP_METHODS}
    results = {}
    for r in range(rounds):
        names = list(TOP_METHODS)
        for name in names[r % len(names):] + names[: r % len(names)]:  # rotate: contention hits every method alike
            if isinstance(results.get(name), Exception):
                continue
            try:
                s, out = timed_call(lambda: TOP_METHODS[name](model, data))
                seconds[name].append(s)
                results[name] = out
            except Exception as exc:  # noqa: BLE001 - a peer that cannot run is reported
                results[name] = exc
    for name in TOP_METHODS:
        out = results[name]
        if isinstance(out, Exception):
            rows.append({"case": case, "method": name, "error": f"{type(out).__name__}: {out}"[:300]})
            continue
        values, extra = out
        err = float(((values[:K] - ref["top"]) / ref["top"].abs()).abs().max())
        rows.append({"case": case, "method": name, "seconds": statistics.median(seconds[name]), "runs": seconds[name],
                     "eig_rel_err": err, "agrees": err <= 1e-4, "values": values[:K].tolist(), **extra})
        print(f"  {case} top-5 {name}: {rows[-1]['seconds']:.2f} s, error {err:.1e}", flush=True)
    return rows


def run_trace(case, model, data, ref):
    """Every method at each target error: ours with rtol = target; a peer's products grow until its median error over
    the seeds is at most the target (from the number that reached the previous target)."""
    rows = []
    true = ref["trace"]
    start = {}
    for target in TRACE_TARGETS:
        for name, (fn, given) in TRACE_METHODS.items():
            if given is None and target != TRACE_TARGETS[0] or (isinstance(given, tuple) and len(given) == 1
                                                                 and target != TRACE_TARGETS[0]):
                continue  # fixed settings: one run says all
            try:
                budgets = [target] if given == "target" else [None] if given is None else [b for b in given if b >= start.get(name, 0)]
                for budget in budgets:
                    runs = [timed_call(lambda s=s, b=budget: fn(model, data, s, b)) for s in range(TRACE_SEEDS)]
                    errors = [abs(out[0] - true) / abs(true) for _, out in runs]
                    median_err = statistics.median(errors)
                    if median_err <= target:
                        break
                start[name] = budget if isinstance(budget, int) else 0
            except Exception as exc:  # noqa: BLE001
                rows.append({"case": case, "target": target, "method": name, "error": f"{type(exc).__name__}: {exc}"[:300]})
                continue
            row = {"case": case, "target": target, "method": name, "seconds": statistics.median(s for s, _ in runs),
                   "runs": [s for s, _ in runs], "products": statistics.median(out[1] for _, out in runs),
                   "median_rel_err": median_err, "max_rel_err": max(errors), "reached": median_err <= target,
                   "estimates": [out[0] for _, out in runs]}
            intervals = [out[2].get("interval") for _, out in runs if out[2].get("interval")]
            if intervals:
                row["covered"] = sum(lo <= true <= hi for lo, hi in intervals)
            rows.append(row)
            print(f"  {case} trace <= {target:.1%} {name}: {row['seconds']:.2f} s, {row['products']} products, "
                  f"median error {median_err:.1e}", flush=True)
    return rows


def run_density(case, model, data, ref):
    rows = []
    for name, fn in DENSITY_METHODS.items():
        try:
            s, out = timed_call(lambda: fn(model, data))
            rows.append({"case": case, "method": name, "seconds": s, "w1_rel": wasserstein_to_spectrum(out, ref["eigenvalues"])})
            print(f"  {case} density {name}: {s:.2f} s, W1 {rows[-1]['w1_rel']:.2e}", flush=True)
        except Exception as exc:  # noqa: BLE001
            rows.append({"case": case, "method": name, "error": f"{type(exc).__name__}: {exc}"[:300]})
    return rows


#: The method of this project each task's summary names, fixed before any run: for a loss Hessian the docs
#: recommend the GGN control variate (its Hutch++ row is in the table beside it).
HEADLINE_TOP, HEADLINE_TRACE = "ours", "ours (GGN control variate)"


def _versus(case, task, rows, headline, ok):
    ours = next((r for r in rows if r["method"] == headline and "seconds" in r), None)
    peers = [r for r in rows if not r["method"].startswith("ours") and r.get(ok)]
    best = min(peers, key=lambda r: r["seconds"]) if peers else None
    return {"case": case, "task": task, "ours": ours and ours["method"], "ours_s": ours and ours["seconds"],
            "ours_ok": ours and ours.get(ok), "best_peer": best and best["method"], "best_peer_s": best and best["seconds"],
            "speedup": (best["seconds"] / ours["seconds"]) if (best and ours) else None,
            "target_met": bool(best and ours and ours.get(ok) and best["seconds"] / ours["seconds"] >= 2)}


def summarise(case, top, trace):
    """This project against the fastest peer that agrees with the reference, per task."""
    out = [_versus(case, "top-5", top, HEADLINE_TOP, "agrees")]
    for target in TRACE_TARGETS:
        out.append(_versus(case, f"trace at {target:.1%}", [r for r in trace if r.get("target") == target], HEADLINE_TRACE,
                           "reached"))
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds of the top-5 methods (median)")
    parser.add_argument("--no-doc", action="store_true", help="do not update docs/benchmarks.md")
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore", ConvergenceWarning)
    warnings.filterwarnings("ignore", category=UserWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    load_at_start = load_average()
    start = time.perf_counter()
    model = trained_cnn()
    for p in model.parameters():
        p.requires_grad_(True)
    payload_cases, top_rows, trace_rows, density_rows, summary = [], [], [], [], []
    for case in args.cases:
        count, batch = CASES[case]
        data = test_batches(count, batch)
        torch.set_num_threads(2)  # references are untimed: both cores
        t0 = time.perf_counter()
        ref = dense_reference(model, data) if case == "dense" else iterative_reference(model, data)
        ref_seconds = time.perf_counter() - t0
        print(f"{case}: reference ({ref['kind']}) in {ref_seconds:.0f} s; top-5 {ref['top'].tolist()}, trace {ref['trace']:.6g}",
              flush=True)
        torch.set_num_threads(args.threads)
        ours_top(model, data)  # warm-up: torch's first functorch calls in a process set up their helpers
        top = run_top(case, model, data, ref, args.rounds)
        trace = run_trace(case, model, data, ref)
        density = run_density(case, model, data, ref) if ref["eigenvalues"] is not None else []
        top_rows += top
        trace_rows += trace
        density_rows += density
        summary += summarise(case, top, trace)
        payload_cases.append({"case": case, "images": count, "batch": batch, "parameters": sum(p.numel() for p in model.parameters()),
                              "reference": ref["kind"], "reference_seconds": ref_seconds, "top": ref["top"].tolist(),
                              "trace": ref["trace"], "trace_gap": ref.get("trace_gap")})
    peers = peer_versions(("pyhessian", "curvlinops-for-pytorch", "hessian-eigenthings"))
    command = "python benchmarks/curvature.py " + " ".join(sys.argv[1:] if argv is None else argv)
    payload = {"command": command.strip(), "machine": machine_with_load(load_at_start), "threads": args.threads, "k": K,
               "peers": peers, "seconds": time.perf_counter() - start, "cases": payload_cases, "summary": summary,
               "top": top_rows, "trace": trace_rows, "density": density_rows}
    publish("curvature", payload, render, doc=not args.no_doc)


def render(payload, path) -> str:
    mach = payload["machine"]
    md = [f"Command: `{payload['command']}` ({mach['cores']} cores, {payload['threads']} torch thread(s), torch {mach['torch']}, "
          f"{mach['date']}; load average {mach.get('load_average_at_start')} at the start, {mach.get('load_average_at_end')} at "
          f"the end; total {payload['seconds']:.0f} s). Peers: " + ", ".join(f"{k} {v}" for k, v in payload["peers"].items())
          + f". JSON: `{path.relative_to(path.parents[2])}`.", "",
          markdown_table(payload["cases"], [("case", "case"), ("images", "images"), ("batch", "batch"), ("parameters", "n"),
                                            ("reference", "reference"), ("trace", "trace"),
                                            ("trace_gap", "|tr G - tr H| / tr H")]), "",
          "This project against the fastest peer that agrees with the reference (top-5: every eigenvalue within 1e-4 "
          "relative; trace: median relative error <= 1% over 5 seeds); target: a speed-up of at least 2.", "",
          markdown_table(payload["summary"], [("case", "case"), ("task", "task"), ("ours", "ours"), ("ours_s", "ours s"),
                                              ("ours_ok", "ours agrees"),
                                              ("best_peer", "fastest agreeing peer"), ("best_peer_s", "its s"),
                                              ("speedup", "speed-up"), ("target_met", "target")]), "",
          "**Top-5 eigenvalues** (seconds: median of interleaved rounds, operator construction included):", "",
          markdown_table([r for r in payload["top"] if "seconds" in r], [
              ("case", "case"), ("method", "method"), ("seconds", "s"), ("eig_rel_err", "max rel. error"), ("agrees", "agrees"),
              ("products", "products"), ("solver", "solver")]), "",
          f"**Trace at equal error** (targets: a median relative error of at most "
          f"{' and '.join(f'{t:.1%}' for t in TRACE_TARGETS)} over {TRACE_SEEDS} seeds; seconds and products: medians over the "
          "seeds at the first number of products that reached the target, or at the largest tried; `covered`: our 95% "
          "intervals that contain the reference trace):", "",
          markdown_table([r for r in payload["trace"] if "seconds" in r], [
              ("case", "case"), ("target", "target"), ("method", "method"), ("seconds", "s"), ("products", "products"),
              ("median_rel_err", "median error"),
              ("max_rel_err", "max error"), ("reached", "reached"), ("covered", "covered")])]
    if payload["density"]:
        md += ["", f"**Spectral density** ({DENSITY_PROBES} probes x {DENSITY_STEPS} Lanczos steps each; W1: Wasserstein-1 "
                   "distance to the true spectrum over its width):", "",
               markdown_table([r for r in payload["density"] if "seconds" in r],
                              [("case", "case"), ("method", "method"), ("seconds", "s"), ("w1_rel", "W1 / width")])]
    errors = [r for r in payload["top"] + payload["trace"] + payload["density"] if "error" in r]
    if errors:
        md += ["", "Methods that could not run: " + "; ".join(f"{r['case']} {r['method']}: {r['error']}" for r in errors) + "."]
    return "\n".join(md)


if __name__ == "__main__":
    main()

"""Benchmark: top-k eigenpairs of H_Y and H_X, matrix-free solvers against dense Hessians.

For latent sizes n in {128, 512, 2048, 8192}, k in {10, 20, 50}, both operators (H_Y: super-resolution
x4 by area averaging, m = 64 measurements; H_X: the default Fashion-MNIST LPIPS-form metric), one run
compares:

1. ``bp``: the dense Hessian by ``torch.autograd.functional.hessian`` then ``eigh`` (Wang & Ponce's "BP");
2. ``dense-jac``: the dense Hessian J^T J from a batched Jacobian (``jacrev`` for H_Y, m < n;
   ``jacfwd`` for H_X, n < M), then ``eigh`` - the strongest dense baseline;
3. ``arpack-dbp``: ARPACK over single-vector double-backprop products (Wang & Ponce's "BackwardIter");
4. this project's solvers over Gauss-Newton products (``arpack``, ``lanczos``, ``lobpcg``,
   ``block-krylov``, ``jacobian`` where the residual is short, and ``auto``).

Accuracy is measured against a float64 dense reference (not timed). Generators: the embedded DCGAN
(n = 512); for other n the same network with a real n-wide first layer, G_n(z) = G(R z) folded into
``fc`` (R a seeded matrix with orthonormal rows for n > 512, orthonormal columns scaled by
sqrt(512 / n) for n < 512), so the images are those of the trained model and the cost of one pass
grows with n as in wide-latent GANs.

    python benchmarks/eigen.py                       # full run, writes JSON + docs/benchmarks.md
    python benchmarks/eigen.py --ns 512 --ks 20      # one configuration
"""

from __future__ import annotations

import argparse
import math
import sys
import time
import warnings

import torch

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent))
from _common import machine, markdown_table, timed, update_doc_section, write_json  # noqa: E402

from hvp_explore import (  # noqa: E402
    ConvergenceWarning,
    SuperResolution,
    hessian_operator,
    load_metric,
    measurement_hessian,
    perceptual_hessian,
    subspace_cosines,
    top_eigenpairs,
)
from hvp_explore.generators import load_generator  # noqa: E402
from hvp_explore.generators.dcgan import DCGANGenerator  # noqa: E402

OUR_SOLVERS = ("arpack", "lanczos", "lobpcg", "block-krylov", "jacobian", "auto")


def widened_generator(base: DCGANGenerator, n: int, seed: int = 0) -> DCGANGenerator:
    """The base DCGAN with an n-dimensional latent: G_n(z) = G(R z), R folded into the first layer."""
    n0 = base.latent_dim
    if n == n0:
        return base
    g = torch.Generator().manual_seed(seed)
    R = torch.randn(max(n, n0), min(n, n0), generator=g, dtype=torch.float64)
    Q, _ = torch.linalg.qr(R)  # orthonormal columns
    R = Q.T if n > n0 else Q * math.sqrt(n0 / n)  # (n0, n)
    wide = DCGANGenerator(latent_dim=n, width=base.width)
    state = base.state_dict()
    state["fc.weight"] = (state["fc.weight"].double() @ R).float()
    wide.load_state_dict(state)
    return wide.eval()


def problem(n: int, *, random_weights: bool):
    torch.manual_seed(0)
    base = DCGANGenerator().eval() if random_weights else load_generator("default")
    G = widened_generator(base, n)
    if random_weights:
        from hvp_explore.generators.dcgan import FashionClassifier
        from hvp_explore.metrics import ClassifierMetric

        metric = ClassifierMetric(FashionClassifier().eval())
    else:
        metric = load_metric("default")
    forward = SuperResolution((1, 32, 32), 4, kernel="area")
    z0 = torch.randn(n, generator=torch.Generator().manual_seed(1))
    return G, metric, forward, z0


def scalar_and_residual(op_name, G, metric, forward, z0):
    """The scalar distance f (for double backprop) and the residual r (for Jacobians) of one operator."""
    if op_name == "H_Y":
        y0 = forward(G(z0[None])).detach()
        residual = lambda z: (forward(G(z[None])) - y0).reshape(-1)  # noqa: E731
    else:
        x0 = G(z0[None]).detach()
        residual = lambda z: metric.residual(G(z[None]), x0).reshape(-1)  # noqa: E731
    return (lambda z: 0.5 * residual(z).pow(2).sum()), residual


def build_operator(op_name, G, metric, forward, z0, method="ggn"):
    if op_name == "H_Y":
        return measurement_hessian(G, forward, z0, method=method)
    return perceptual_hessian(G, metric, z0, method=method)


def frozen(*modules):
    for m in modules:
        for p in m.parameters():
            p.requires_grad_(False)


def accuracy(values, vectors, ref_values, ref_vectors, k):
    values = torch.as_tensor(values, dtype=torch.float64).cpu()
    if values.numel() < k:
        return {"eig_rel_err": None, "subspace_cos": None}
    err = float((values[:k] - ref_values[:k]).abs().max() / ref_values[0])
    cos = float(subspace_cosines(torch.as_tensor(vectors, dtype=torch.float64)[:, :k], ref_vectors[:, :k]).min())
    return {"eig_rel_err": err, "subspace_cos": cos}


def run(ns, ks, *, random_weights, tol, bp_max_n, repeats_under):
    rows = []
    for n in ns:
        G, metric, forward, z0 = problem(n, random_weights=random_weights)
        frozen(G, metric)
        # float64 dense reference (not timed)
        G64, metric64 = widened_generator(G.double(), n), metric.double()
        t0 = time.perf_counter()
        refs = {}
        for op_name in ("H_Y", "H_X"):
            H = build_operator(op_name, G64, metric64, forward, z0.double())
            H.block_size = 256
            evals, evecs = torch.linalg.eigh(H.dense())
            refs[op_name] = (evals.flip(0), evecs.flip(1))
        G, metric = G.float(), metric.float()
        print(f"n={n}: float64 references in {time.perf_counter() - t0:.1f}s", flush=True)
        for op_name in ("H_Y", "H_X"):
            ref_values, ref_vectors = refs[op_name]
            f, residual = scalar_and_residual(op_name, G, metric, forward, z0)
            m = residual(z0).numel()

            def timed_auto(fn):
                result, sec, _ = timed(fn)
                if sec < repeats_under:
                    result, sec, _ = timed(fn, repeats=3)
                return result, sec

            # k-independent dense baselines: one full eigendecomposition serves every k
            dense = {}
            if n <= bp_max_n:
                (w, V), sec = timed_auto(lambda: torch.linalg.eigh(torch.autograd.functional.hessian(f, z0).double()))
                dense["bp"] = (w.flip(0), V.flip(1), sec, n)
            def dense_jac():
                if m < n:  # m reverse-mode rows
                    J = torch.func.jacrev(residual, chunk_size=256)(z0)
                else:  # n forward-mode columns, in chunks
                    tangent = torch.func.vmap(lambda v: torch.func.jvp(residual, (z0,), (v,))[1])
                    eye = torch.eye(n, dtype=z0.dtype)
                    J = torch.cat([tangent(eye[i : i + 256]) for i in range(0, n, 256)]).T
                J = J.double()
                return torch.linalg.eigh(J.T @ J)

            (w, V), sec = timed_auto(dense_jac)
            dense["dense-jac"] = (w.flip(0), V.flip(1), sec, min(m, n))
            for k in ks:
                base = {"n": n, "operator": op_name, "k": k, "m": m, "gap": float(ref_values[k] / ref_values[k - 1])}
                for name, (w, V, sec, products) in dense.items():
                    rows.append({**base, "method": name, "seconds": sec, "products": products, **accuracy(w, V, ref_values, ref_vectors, k)})

                def dbp_arpack():
                    op = hessian_operator(f, z0, modules=(G, metric))
                    return top_eigenpairs(op, k, solver="arpack", tol=tol, warn=False)

                res, sec = timed_auto(dbp_arpack)
                rows.append({**base, "method": "arpack-dbp", "seconds": sec, "products": res.matvecs,
                             **accuracy(res.values, res.vectors, ref_values, ref_vectors, k)})
                for solver in OUR_SOLVERS:
                    if solver == "jacobian" and m > 4 * n:
                        continue

                    def ours():
                        op = build_operator(op_name, G, metric, forward, z0)
                        return top_eigenpairs(op, k, solver=solver, tol=tol, warn=False)

                    res, sec = timed_auto(ours)
                    rows.append({**base, "method": f"ggn-{solver}" + (f" ({res.solver})" if solver == "auto" else ""),
                                 "seconds": sec, "products": res.matvecs, "converged": res.all_converged,
                                 **accuracy(res.values, res.vectors, ref_values, ref_vectors, k)})
                print(f"n={n} {op_name} k={k}: " + ", ".join(f"{r['method']} {r['seconds']:.3f}s" for r in rows
                                                          if r["n"] == n and r["operator"] == op_name and r["k"] == k), flush=True)
    return rows


def summarise(rows):
    """Ratios of the best matrix-free solver against the BP and BackwardIter baselines, per case."""
    out = []
    keys = sorted({(r["n"], r["operator"], r["k"]) for r in rows})
    for key in keys:
        case = [r for r in rows if (r["n"], r["operator"], r["k"]) == key]
        ours = [r for r in case if r["method"].startswith("ggn-")]
        best = min(ours, key=lambda r: r["seconds"])
        get = {r["method"]: r for r in case}
        out.append({"n": key[0], "operator": key[1], "k": key[2], "best": best["method"], "best_s": best["seconds"],
                    "bp_s": get.get("bp", {}).get("seconds"), "dense_jac_s": get["dense-jac"]["seconds"],
                    "arpack_dbp_s": get["arpack-dbp"]["seconds"],
                    "vs_bp": best["seconds"] / get["bp"]["seconds"] if "bp" in get else None,
                    "vs_arpack_dbp": best["seconds"] / get["arpack-dbp"]["seconds"],
                    "eig_rel_err": best["eig_rel_err"], "subspace_cos": best["subspace_cos"]})
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ns", type=int, nargs="+", default=[128, 512, 2048, 8192])
    parser.add_argument("--ks", type=int, nargs="+", default=[10, 20, 50])
    parser.add_argument("--tol", type=float, default=1e-4)
    parser.add_argument("--bp-max-n", type=int, default=8192, help="skip the autograd Hessian above this n")
    parser.add_argument("--repeats-under", type=float, default=2.0, help="median of 3 runs for methods faster than this")
    parser.add_argument("--random-weights", action="store_true", help="random generator and metric (smoke test)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--no-doc", action="store_true", help="do not update docs/benchmarks.md")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore", ConvergenceWarning)
    start = time.perf_counter()
    rows = run(args.ns, args.ks, random_weights=args.random_weights, tol=args.tol, bp_max_n=args.bp_max_n,
               repeats_under=args.repeats_under)
    summary = summarise(rows)
    command = "python benchmarks/eigen.py " + " ".join(sys.argv[1:] if argv is None else argv)
    payload = {"command": command.strip(), "machine": machine(), "tol": args.tol, "random_weights": args.random_weights,
               "seconds": time.perf_counter() - start, "rows": rows, "summary": summary}
    path = write_json("eigen" + ("-random" if args.random_weights else ""), payload)
    if not args.no_doc:
        md = [f"Command: `{payload['command']}` ({payload['machine']['cores']} cores, torch {payload['machine']['torch']}, "
              f"{payload['machine']['date']}; tol = {args.tol:g}; total {payload['seconds']:.0f} s). JSON: `{path.relative_to(path.parents[2])}`.",
              "", "Best matrix-free solver per case, and its time as a fraction of the baselines:", "",
              markdown_table(summary, [("n", "n"), ("operator", "op"), ("k", "k"), ("best", "best solver"), ("best_s", "s"),
                                       ("bp_s", "BP s"), ("dense_jac_s", "dense-jac s"), ("arpack_dbp_s", "ARPACK-dbp s"),
                                       ("vs_bp", "/ BP"), ("vs_arpack_dbp", "/ ARPACK-dbp"), ("eig_rel_err", "eig err"),
                                       ("subspace_cos", "min cos")]),
              "", "<details><summary>All methods</summary>", "",
              markdown_table(rows, [("n", "n"), ("operator", "op"), ("k", "k"), ("method", "method"), ("seconds", "s"),
                                    ("products", "products"), ("eig_rel_err", "eig err"), ("subspace_cos", "min cos"),
                                    ("gap", "lambda_k+1/lambda_k")]),
              "", "</details>"]
        update_doc_section("eigen", "\n".join(md))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

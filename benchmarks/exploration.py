"""Study: does e-GLASS do what the paper claims on the embedded default, and which defaults work best?

For every shipped Fashion-MNIST sample and both problems (super-resolution x4, central-box inpainting),
from the CSGM solution z0 of the synthesised observation:

(a) at equal step eta, the change of the measurements ||A G(z0 + eta d) - A G(z0)||^2 and of the image
    (perceptual distance to G(z0)) for raw v^K against its e-GLASS projection d;
(b) anisotropy of both spectra (lambda_1 / lambda_i);
(c) cosines of v^K and of d with the top eigenvectors of H_Y and H_X (the paper's Fig. 1);
(d) generalized directions against e-GLASS: perceptual change per unit of measurement change, and
    the diversity of the N = 10 feasible solutions of each mode (pairwise perceptual distance, and the
    smallest pairwise mean absolute pixel difference, the prototype's figure);
plus the acceptance checks of issue 4 (10 feasible solutions per sample and problem, pairwise distances
above zero, change concentrated where the measurements leave the image free) and a sweep of the
defaults (eta_max, threshold, K, direction mode), and a paired sweep of k_y for inpainting over 20
observations (shipped samples and further Fashion-MNIST test images).

    python benchmarks/exploration.py            # writes benchmarks/results/exploration.json,
                                                # docs/figures/results-*.png, and the marked
                                                # sections of docs/results.md
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, default_cases, machine, markdown_table, parse_run_args, update_doc_section, write_json  # noqa: E402

from hvp_explore import load_image, load_metric, measurement_hessian, perceptual_hessian, top_eigenpairs, unobserved_share  # noqa: E402
from hvp_explore.data import sample_paths  # noqa: E402
from hvp_explore.exploration import (  # noqa: E402
    default_eta_max,
    default_k_y,
    explore,
    make_directions,
    render_solutions,
)
from hvp_explore.generators import load_generator  # noqa: E402
from hvp_explore.inversion import invert  # noqa: E402
from hvp_explore.io.figures import contact_sheet, plot_correlation, plot_spectra  # noqa: E402
from hvp_explore.problems import Inpainting, SuperResolution, observe  # noqa: E402
from hvp_explore.settings import DEFAULT_TAU, DELIVERY_MARGIN  # noqa: E402

FIGURES = ROOT / "docs" / "figures"
RESULTS_DOC = ROOT / "docs" / "results.md"
BOX = (8, 8, 16, 16)
TAU = 2e-3


def problems():
    return {"sr": SuperResolution((1, 32, 32), 4), "inpaint": Inpainting.from_box((1, 32, 32), *BOX)}


def free_region_share(problem: str, first: torch.Tensor, images: torch.Tensor) -> float:
    """Share of the change's energy ||x - x0||^2 in the part of the image the measurements leave free: the library's
    :func:`~hvp_explore.unobserved_share` (``from_first``) with the problem's own operator. Inpainting: the energy
    inside the missing box (25% of the pixels); super-resolution: of the change's component in the null space of A."""
    share = unobserved_share(problems()[problem], images, first.reshape(1, *images.shape[1:]))["from_first"]
    return share if share is not None else float("nan")


def changes(G, forward, metric, z0, D, eta):
    """Measurement change ||A G(z0 + eta d) - A G(z0)||^2 and perceptual distance to G(z0), per column of D."""
    with torch.no_grad():
        x0 = G(z0[None])
        x = G(z0[None] + eta * D.T.to(z0.dtype))
        meas = (forward(x) - forward(x0)).pow(2).flatten(1).sum(1)
        perc = metric(x, x0)
    return meas.double(), perc.double()


def min_pixel_difference(images: torch.Tensor) -> float:
    """Smallest mean absolute pixel difference between two of the images (in [-1, 1]), on the [0, 1] scale."""
    N = images.shape[0]
    flat = (images.flatten(1) + 1) / 2
    d = (flat[:, None, :] - flat[None, :, :]).abs().mean(-1)
    return float(d[~torch.eye(N, dtype=torch.bool)].min()) if N > 1 else float("nan")


def study_case(path: Path, name: str, G, metric, *, K: int, eta_probe: float, seed: int):
    forward = problems()[name]
    clean = load_image(path)
    y = observe(forward, clean)[None]
    inv = invert(G, forward, y, seed=seed, quiet=True)
    G = inv.generator  # IAGAN's fine-tuned copy when CSGM could not reach tau
    z0 = inv.latent
    n = z0.numel()
    H_Y, H_X = measurement_hessian(G, forward, z0), perceptual_hessian(G, metric, z0)
    m = H_Y.residual_dim
    eig_y = top_eigenpairs(H_Y, default_k_y(m, n), seed=seed, warn=False)
    eig_x = top_eigenpairs(H_X, 50, seed=seed, warn=False)
    row = {"sample": path.name, "problem": name, "m": m, "first_mse": inv.measurement_mse, "inversion_s": inv.seconds,
           "fine_tuned": inv.fine_tuned}
    # (b) anisotropy
    for label, e in (("H_Y", eig_y), ("H_X", eig_x)):
        v = e.values
        row[f"{label}_l1_over_l10"] = float(v[0] / v[min(9, v.numel() - 1)])
        row[f"{label}_l1_over_l{v.numel()}"] = float(v[0] / v[-1]) if float(v[-1]) > 0 else float("inf")
    # (a) equal eta: raw v^K vs its e-GLASS projection, for the 5 directions of N = 10
    raw, _ = make_directions("raw", eig_y, eig_x, count=5, K=K)
    egl, _ = make_directions("eglass", eig_y, eig_x, count=5, K=K)
    gen, pencil = make_directions("generalized", eig_y, eig_x, count=5, H_X=H_X, H_Y=H_Y, seed=seed)
    stack = lambda ds: torch.stack([d.vector for d in ds], 1)  # noqa: E731
    m_raw, p_raw = changes(G, forward, metric, z0, stack(raw), eta_probe)
    m_egl, p_egl = changes(G, forward, metric, z0, stack(egl), eta_probe)
    m_gen, p_gen = changes(G, forward, metric, z0, stack(gen), eta_probe)
    row.update(meas_raw=float(m_raw.mean()), meas_eglass=float(m_egl.mean()), meas_generalized=float(m_gen.mean()),
               perc_raw=float(p_raw.mean()), perc_eglass=float(p_egl.mean()), perc_generalized=float(p_gen.mean()),
               meas_ratio_raw_over_eglass=float(m_raw.mean() / m_egl.mean()),
               perc_ratio_eglass_over_raw=float(p_egl.mean() / p_raw.mean()),
               perc_per_meas_eglass=float((p_egl / m_egl).mean()), perc_per_meas_generalized=float((p_gen / m_gen).mean()),
               max_cos_after=max(float(d.projection.cosines_after.abs().max()) for d in egl),
               max_cos_before=max(float(d.projection.cosines_before.abs().max()) for d in egl))
    # (d) + acceptance: the 10 feasible solutions of each mode
    eta_max = default_eta_max(n)
    for mode, dirs in (("raw", raw), ("eglass", egl), ("generalized", gen)):
        sols, rejected, pairwise, _ = render_solutions(G, forward, y, z0, inv.image, dirs, metric=metric, num_solutions=10, tau=TAU,
                                                       eta_max=eta_max)
        images = torch.stack([s.image for s in sols]) if sols else inv.image[:0]
        iu = torch.triu_indices(len(sols), len(sols), 1)
        row.update({f"{mode}_solutions": len(sols), f"{mode}_feasible": sum(s.feasible for s in sols),
                    f"{mode}_max_mse": max((s.measurement_mse for s in sols), default=float("nan")),
                    f"{mode}_mean_abs_eta": statistics.fmean(abs(s.eta) for s in sols) if sols else 0.0,
                    f"{mode}_capped": sum(s.status == "capped" for s in sols),
                    f"{mode}_mean_pixel_change": float((images - inv.image).abs().mean()) / 2 if sols else 0.0,  # [0, 1] scale
                    f"{mode}_mean_perc_first": statistics.fmean(s.perceptual_distance for s in sols) if sols else float("nan"),
                    # perceptual change bought per unit of measurement-MSE increase, at the feasible step
                    f"{mode}_perc_per_meas_step": statistics.fmean(
                        s.perceptual_distance / max(s.measurement_mse - inv.measurement_mse, 1e-12) for s in sols) if sols else float("nan"),
                    f"{mode}_min_pairwise_perc": float(pairwise[iu[0], iu[1]].min()) if len(sols) > 1 else float("nan"),
                    f"{mode}_mean_pairwise_perc": float(pairwise[iu[0], iu[1]].mean()) if len(sols) > 1 else float("nan"),
                    f"{mode}_min_pixel_diff": min_pixel_difference(images),
                    f"{mode}_free_share": free_region_share(name, inv.image, images) if sols else float("nan"),
                    f"{mode}_gt_mse": float(((images - clean) / 2).pow(2).mean()) if sols else float("nan")})
        if mode == "generalized":
            keep_gen = {"images": [inv.image[0], *images], "labels": ["first solution", *[f"{s.direction} eta {s.eta:+.1f}\nMSE {s.measurement_mse:.1e}" for s in sols]]}
        if mode == "eglass":
            keep = {"images": [clean, inv.image[0], *images], "labels": ["ground truth", f"first solution\nMSE {inv.measurement_mse:.1e}",
                                                                         *[f"{s.direction} eta {s.eta:+.1f}\nMSE {s.measurement_mse:.1e}"
                                                                           for s in sols]],
                    "eig_y": eig_y, "eig_x": eig_x, "first": egl[0], "y_image": forward.observation_image(y)[0]}
    keep["generalized"] = keep_gen
    return row, keep


def sweep(path: Path, name: str, G, metric, *, seed: int):
    """Defaults sweep on one case: eta_max, threshold, K and the direction mode."""
    forward = problems()[name]
    y = observe(forward, load_image(path))[None]
    inv = invert(G, forward, y, seed=seed, quiet=True)
    n = inv.latent.numel()
    rows = []
    # k_y has its own paired sweep over more observations (k_y_sweep)
    variants = [{"eta_max": math.sqrt(n)}, {"eta_max": math.sqrt(n) / 2}, {"eta_max": 1.5 * math.sqrt(n)}, {"threshold": 0.1},
                {"threshold": 0.2}, {"K": 20}, {"mode": "generalized"}]
    for v in variants:
        # the paper's e-GLASS by name: these tables are its claims, whatever the library's default mode
        res = explore(G, forward, y, metric=metric, num_solutions=10, inversion=inv, seed=seed, quiet=True, **{"mode": "eglass", **v})
        if not res.solutions:
            continue
        N = len(res.solutions)
        iu = torch.triu_indices(N, N, 1)
        images = torch.stack([s.image for s in res.solutions])
        rows.append({"sample": path.name, "problem": name,
                     "variant": ", ".join(f"{k}={val:g}" if isinstance(val, float) else f"{k}={val}" for k, val in v.items()),
                     "feasible": sum(s.feasible for s in res.solutions), "mean_abs_eta": statistics.fmean(abs(s.eta) for s in res.solutions),
                     "mean_perc": statistics.fmean(s.perceptual_distance for s in res.solutions),
                     "min_pairwise_perc": float(res.pairwise[iu[0], iu[1]].min()),
                     "mean_pixel_change": float((images - inv.image).abs().mean()) / 2,  # [0, 1] scale
                     "free_share": free_region_share(name, inv.image, images)})
    return rows


K_Y_FRACTIONS = (32, 16, 32 / 3, 8, 16 / 3, 4, 8 / 3, 2)  # k_y = n / f: 16, 32, 48, 64, 96, 128, 192, 256 for n = 512


def k_y_sweep(*, samples: int, test_images: int, ns=(10, 100), seed: int) -> tuple[list[dict], list[dict]]:
    """Paired sweep of k_y for inpainting (m >= n, where H_Y has full rank and k_y is a choice).

    Every observation is explored from the same first solution for every k_y in ``n / K_Y_FRACTIONS``
    and every N; the summary gives medians over observations and, per observation, ratios to the
    default k_y (:func:`~hvp_explore.exploration.default_k_y`), so that differences between
    observations do not hide the effect of k_y.
    """
    cases = default_cases(["inpaint"], samples=samples, test_images=test_images)
    rows = []
    for case in cases:
        inv = invert(case.generator, case.forward, case.y, seed=seed, quiet=True)
        n = inv.latent.numel()
        # a first solution at tau leaves no room for a step: no solutions at any k_y, nothing to compare
        if inv.measurement_mse > DEFAULT_TAU * (1 - DELIVERY_MARGIN):
            print(f"k_y sweep: {case.name} left out: its first solution is at {inv.measurement_mse / DEFAULT_TAU:.3f} tau", flush=True)
            continue
        for k_y in sorted({max(1, round(n / f)) for f in K_Y_FRACTIONS}):
            for N in ns:
                res = explore(case.generator, case.forward, case.y, metric=case.metric, num_solutions=N, k_y=k_y, inversion=inv, mode="eglass",
                              seed=seed, quiet=True)
                images = torch.stack([s.image for s in res.solutions])
                iu = torch.triu_indices(len(images), len(images), 1)
                rows.append({"case": case.name, "k_y": k_y, "default": k_y == default_k_y(res.settings["m"], n), "N": N,
                             "returned": len(images), "feasible": sum(s.feasible for s in res.solutions),
                             "perc": statistics.fmean(s.perceptual_distance for s in res.solutions),
                             "pair_mean": float(res.pairwise[iu[0], iu[1]].mean()),
                             "pair_min": float(res.pairwise[iu[0], iu[1]].min()),
                             "free_share": free_region_share("inpaint", inv.image, images),
                             "gt_mse": float(((images - case.clean) / 2).pow(2).mean()),
                             "eigen_y_s": res.timings["eigen_y"], "solver_y": res.eig_y.solver})
        print(f"k_y sweep: {case.name} done", flush=True)
    base = {(r["case"], r["N"]): r for r in rows if r["default"]}
    summary = []
    for k_y in sorted({r["k_y"] for r in rows}):
        for N in ns:
            rs = [r for r in rows if r["k_y"] == k_y and r["N"] == N]
            paired = lambda key: statistics.median(r[key] / base[(r["case"], N)][key] for r in rs)  # noqa: E731
            drops = [base[(r["case"], N)]["free_share"] - r["free_share"] for r in rs]
            summary.append({"k_y": k_y, "N": N, "default": rs[0]["default"], "cases": len(rs),
                            "feasible": f"{sum(r['feasible'] for r in rs)}/{sum(r['returned'] for r in rs)}",
                            "perceptual change": statistics.median(r["perc"] for r in rs), "/ default": paired("perc"),
                            "mean pairwise": statistics.median(r["pair_mean"] for r in rs), "/ default ": paired("pair_mean"),
                            "min pairwise / default": paired("pair_min"),
                            "share in hole": statistics.median(r["free_share"] for r in rs),
                            "cases losing > 0.05 of it": sum(d > 0.05 for d in drops),
                            "MSE to truth / default": paired("gt_mse"),
                            "H_Y eigen s": statistics.median(r["eigen_y_s"] for r in rs), "solver": rs[0]["solver_y"]})
    return rows, summary


def write_tables(payload: dict) -> None:
    """docs/results.md's exploration and k_y-sweep sections from a payload (``--tables-only`` rereads the JSON)."""
    summary, sweeps, k_y_summary = payload["summary"], payload["sweep"], payload["k_y_sweep"]["summary"]
    samples = payload.get("samples", 10)
    cols = list(summary[0].keys())
    md = [f"Command: `{payload['command'].strip()}` ({payload['machine']['cores']} cores, torch {payload['machine']['torch']}, "
          f"{payload['machine']['date']}, {payload['seconds']:.0f} s). JSON: `benchmarks/results/exploration.json`. Medians over "
          f"the {samples} shipped samples per problem (min for the pairwise minimum). Pixel differences and changes are mean "
          "absolute differences on the [0, 1] scale.", ""]
    half = len(cols) // 2 + 1
    md += [markdown_table(summary, [(c, c) for c in cols[:half]]), "", markdown_table(summary, [(c, c) for c in ["problem", *cols[half:]]])]
    md += ["", "Defaults sweep (first samples):", "",
           markdown_table(sweeps, [(c, c) for c in ("sample", "problem", "variant", "feasible", "mean_abs_eta", "mean_perc",
                                                     "min_pairwise_perc", "mean_pixel_change", "free_share")])]
    update_doc_section("exploration", "\n".join(md), doc=RESULTS_DOC)
    k_y_cases = k_y_summary[0]["cases"]
    md = [f"Command: `{payload['command'].strip()}` (same run). Inpainting of {k_y_cases} observations "
          f"({payload.get('k_y_samples', 10)} shipped samples and {payload.get('k_y_test_images', 10)} further Fashion-MNIST test "
          f"images), each explored from one first solution for every "
          f"k_y. Medians over observations; the `/ default` columns are medians of per-observation ratios to the default k_y "
          f"(marked), and `cases losing > 0.05 of it` counts observations whose share of the change inside the hole is more "
          f"than 0.05 below the default's.", "",
          markdown_table([{**r, "k_y": f"**{r['k_y']}** (default)" if r["default"] else r["k_y"]} for r in k_y_summary],
                         [(c, c) for c in k_y_summary[0] if c != "default"])]
    update_doc_section("k_y-sweep", "\n".join(md), doc=RESULTS_DOC)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=10, help="how many shipped samples (all 10 by default)")
    parser.add_argument("--K", type=int, default=10)
    parser.add_argument("--eta-probe", type=float, default=4.0, help="the equal step of claim (a)")
    parser.add_argument("--sweep-samples", type=int, default=3)
    parser.add_argument("--k-y-samples", type=int, default=10, help="shipped samples in the k_y sweep")
    parser.add_argument("--k-y-test-images", type=int, default=10, help="Fashion-MNIST test images added to the k_y sweep")
    parser.add_argument("--tables-only", action="store_true", help="rewrite docs/results.md from benchmarks/results/exploration.json")
    args = parse_run_args(parser, argv)
    if args.tables_only:
        write_tables(json.loads((ROOT / "benchmarks" / "results" / "exploration.json").read_text()))
        return
    start = time.perf_counter()
    G, metric = load_generator("default"), load_metric("default")
    rows, keeps = [], {}
    for path in sample_paths()[: args.samples]:
        for name in ("sr", "inpaint"):
            row, keep = study_case(path, name, G, metric, K=args.K, eta_probe=args.eta_probe, seed=args.seed)
            rows.append(row)
            keeps.setdefault(name, keep)
            print(f"{path.name} {name}: meas raw/eglass {row['meas_ratio_raw_over_eglass']:.1f}x, "
                  f"feasible {row['eglass_feasible']}/10, min pairwise {row['eglass_min_pairwise_perc']:.2e}", flush=True)
    sweeps = [r for path in sample_paths()[: args.sweep_samples] for name in ("sr", "inpaint")
              for r in sweep(path, name, G, metric, seed=args.seed)]
    k_y_rows, k_y_summary = k_y_sweep(samples=args.k_y_samples, test_images=args.k_y_test_images, seed=args.seed)
    FIGURES.mkdir(parents=True, exist_ok=True)
    for name, keep in keeps.items():
        contact_sheet([keep["y_image"], *keep["images"]], ["observation", *keep["labels"]], FIGURES / f"results-sheet-{name}.png")
        gen = keep["generalized"]
        contact_sheet([keep["y_image"], *gen["images"]], ["observation", *gen["labels"]], FIGURES / f"results-sheet-{name}-generalized.png")
        plot_spectra(keep["eig_y"].values, keep["eig_x"].values, FIGURES / f"results-spectra-{name}.png",
                     title=f"top eigenvalues at the first solution ({name})")
        U, V, d = keep["eig_y"].vectors, keep["eig_x"].vectors, keep["first"]
        v = V[:, d.index - 1]
        plot_correlation((U.T @ v).abs(), (U.T @ d.vector).abs(), (V.T @ v).abs(), (V.T @ d.vector).abs(),
                         FIGURES / f"results-correlation-{name}.png", start_label=f"$v^{{{d.index}}}$", final_label="$d$ (e-GLASS)",
                         threshold=0.05, title=f"cosines with the top eigenvectors ({name})")
    summary = []
    for name in ("sr", "inpaint"):
        rs = [r for r in rows if r["problem"] == name]
        agg = lambda key, f=statistics.median: f([r[key] for r in rs if r[key] == r[key]] or [float("nan")])  # noqa: E731 - skip NaN
        summary.append({"problem": name, "cases": len(rs), "meas raw/eglass": agg("meas_ratio_raw_over_eglass"),
                        "perc eglass/raw": agg("perc_ratio_eglass_over_raw"),
                        "perc/meas gen/eglass (eta=probe)": agg("perc_per_meas_generalized") / agg("perc_per_meas_eglass"),
                        "perc/meas gen/eglass (at step)": agg("generalized_perc_per_meas_step") / agg("eglass_perc_per_meas_step"),
                        "perc to first: raw": agg("raw_mean_perc_first"), "eglass": agg("eglass_mean_perc_first"),
                        "gen": agg("generalized_mean_perc_first"),
                        "H_Y l1/l10": agg("H_Y_l1_over_l10"), "H_X l1/l10": agg("H_X_l1_over_l10"),
                        "H_X l1/l50": agg("H_X_l1_over_l50"),
                        "feasible (eglass)": f"{sum(r['eglass_feasible'] for r in rs)}/{sum(r['eglass_solutions'] for r in rs)}",
                        "min pairwise perc (eglass)": min(r["eglass_min_pairwise_perc"] for r in rs),
                        "|eta| raw": agg("raw_mean_abs_eta"), "|eta| eglass": agg("eglass_mean_abs_eta"),
                        "|eta| gen": agg("generalized_mean_abs_eta"),
                        "pixel change raw": agg("raw_mean_pixel_change"), "pixel change eglass": agg("eglass_mean_pixel_change"),
                        "pixel change gen": agg("generalized_mean_pixel_change"),
                        "min pixel diff eglass": agg("eglass_min_pixel_diff"), "min pixel diff gen": agg("generalized_min_pixel_diff"),
                        "mean pairwise eglass": agg("eglass_mean_pairwise_perc"), "mean pairwise gen": agg("generalized_mean_pairwise_perc"),
                        "free share eglass": agg("eglass_free_share"), "free share raw": agg("raw_free_share")})
    payload = {"command": "python benchmarks/exploration.py " + " ".join(argv if argv is not None else sys.argv[1:]),
               "machine": machine(), "seconds": time.perf_counter() - start, "eta_probe": args.eta_probe, "K": args.K,
               "samples": args.samples, "k_y_samples": args.k_y_samples, "k_y_test_images": args.k_y_test_images,
               "pixel_scale": "[0, 1]", "rows": rows, "summary": summary, "sweep": sweeps,
               "k_y_sweep": {"rows": k_y_rows, "summary": k_y_summary}}
    path = write_json("exploration", payload)
    write_tables(payload)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

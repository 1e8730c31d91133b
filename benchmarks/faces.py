"""Study: the e-GLASS paper's claims on faces, and e-GLASS against PULSE side by side.

Generator ``faces`` (DCGAN of the PyTorch tutorial trained on DigiFace1M, n = 100, 64x64 RGB), metric
``effnet`` (LPIPS form over ImageNet EfficientNet-Lite0), tau = 2e-3, every library default. Problems:
super-resolution x4 (16x16 observations, m = 768) and inpainting of the eyes band (rows 18-33, m = 9216).

Observations, none of them used to choose any setting: 10 held-out generated faces (seeds 2001-2010 of
``torch.randn(1, 100, generator=torch.Generator().manual_seed(seed))``; the shipped samples use seeds 1-8,
the inversion defaults were compared on seeds 1001-1010), and two photographs (out of the generator's
distribution), face-cropped by fixed boxes: the portrait of Grace Hopper shipped with matplotlib and the
portrait of Eileen Collins (``astronaut.png``) shipped in the scikit-image wheel (``pip install --no-deps
scikit-image``: only that PNG is read, located through the distribution's metadata; without it that
photograph is left out and the JSON says so). Both are US government works in the public domain.

For every observation and problem, from one first solution z0 (``invert``, IAGAN when CSGM and Gauss-Newton
stay above tau, as ``explore`` does):

(a) at an equal step eta along unit directions: the measurement change ||A G(z0 + eta d) - A G(z0)||^2 and
    the perceptual change of raw v^K against its e-GLASS projection d;
(b) anisotropy of both spectra (lambda_1 / lambda_10 of H_Y and H_X);
(c) cosines of v^K and of d with the top eigenvectors of both metrics (the paper's Fig. 1), first face;
(d) generalized directions against e-GLASS: perceptual change per unit of measurement change at the
    feasible step, and the diversity of the 10 solutions of each mode;
and e-GLASS (``explore``, N = 10, timed end to end until its solutions are delivered: the report figures it
computes after, ``_common.REPORT_STAGES``, are left out as PULSE's diversity is, and reported apart) against
PULSE (10 sequential runs on the same generator e-GLASS explored, the IAGAN copy when one was made): wall
time, feasibility of the saved 8-bit images, mean and minimum pairwise perceptual distance, mean pairwise
pixel difference, distance to the ground truth. Medians over the 10 faces with 95% bootstrap intervals of the
median; photographs per image.

    python benchmarks/faces.py       # benchmarks/results/faces.json, docs/figures/faces-*.png, docs/results.md
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import warnings
from importlib import metadata
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, machine, markdown_table, report_seconds, update_doc_section, write_json  # noqa: E402
from exploration import changes, min_pixel_difference  # noqa: E402

from hvp_explore import ConvergenceWarning, load_image, load_metric, measurement_hessian, measurement_mse  # noqa: E402
from hvp_explore import perceptual_hessian, top_eigenpairs  # noqa: E402
from hvp_explore.data import photo_path  # noqa: E402
from hvp_explore.exploration import explore, make_directions, pairwise_distances  # noqa: E402
from hvp_explore.exploration.explorer import capped_solutions  # noqa: E402
from hvp_explore.settings import DEFAULT_K  # noqa: E402
from hvp_explore.generators import load_generator  # noqa: E402
from hvp_explore.io.images import crop_resize, quantize  # noqa: E402
from hvp_explore.problems import Inpainting, SuperResolution, observe  # noqa: E402
from hvp_explore.inversion import pulse  # noqa: E402
from hvp_explore.io.figures import contact_sheet, plot_correlation, plot_spectra, spread_image  # noqa: E402

FIGURES = ROOT / "docs" / "figures"
RESULTS_DOC = ROOT / "docs" / "results.md"
TAU = 2e-3
EYES = (0, 18, 64, 16)  # x, y, w, h: the eyes band of the generator's framing
SEEDS = range(2001, 2011)
#: Face crops (top, left, side) of the two photographs, chosen by eye to match the generator's framing.
PHOTO_CROPS = {"grace-hopper": (100, 140, 250), "eileen-collins": (30, 155, 160)}


def photographs() -> dict[str, torch.Tensor]:
    """The two real photographs, face-cropped and resized to 64x64 (Lanczos); a missing one is left out."""
    paths = {"grace-hopper": photo_path()}
    try:
        paths["eileen-collins"] = Path(str(metadata.distribution("scikit-image").locate_file("skimage/data/astronaut.png")))
    except metadata.PackageNotFoundError:
        print("scikit-image is not installed: the Eileen Collins photograph is left out", flush=True)
    out = {}
    for name, path in paths.items():
        top, left, side = PHOTO_CROPS[name]
        out[name] = crop_resize(load_image(path, channels=3)[:, top : top + side, left : left + side], (64, 64))
    return out


def problems():
    return {"sr": SuperResolution((3, 64, 64), 4), "inpaint": Inpainting.from_box((3, 64, 64), *EYES)}


def pairwise_summary(pairwise: torch.Tensor) -> tuple[float, float]:
    """(mean, min) of the off-diagonal entries."""
    N = pairwise.shape[0]
    if N < 2:
        return float("nan"), float("nan")
    iu = torch.triu_indices(N, N, 1)
    vals = pairwise[iu[0], iu[1]]
    return float(vals.mean()), float(vals.min())


def mean_pixel_difference(images: torch.Tensor) -> float:
    """Mean absolute pixel difference between two of the images, on the [0, 1] scale, over all pairs."""
    N = images.shape[0]
    if N < 2:
        return float("nan")
    x = (images.flatten(1) + 1) / 2
    d = (x[:, None] - x[None]).abs().mean(-1)
    return float(d.sum() / (N * (N - 1)))


def case_study(name: str, clean: torch.Tensor, problem: str, G, metric, *, seed: int, eta_probe: float) -> tuple[dict, dict]:
    forward = problems()[problem]
    y = observe(forward, clean[None])
    row: dict = {"observation": name, "problem": problem}
    # e-GLASS end to end, as `hvp-explore explore` runs it
    res = explore(G, forward, y, metric=metric, num_solutions=10, seed=seed, quiet=True, mode="eglass")  # the paper's method, by name
    inv, Gu, z0 = res.inversion, res.inversion.generator, res.inversion.latent
    # no solution at all when no direction had a feasible step (an infeasible first solution)
    images = torch.stack([s.image for s in res.solutions]) if res.solutions else clean.new_zeros(0, *clean.shape)
    pair_mean, pair_min = pairwise_summary(res.pairwise)
    report_s = report_seconds(res.timings)  # after the solutions are delivered
    row.update(eglass_s=res.timings["total"] - report_s, eglass_report_s=report_s, inversion_s=inv.seconds, fine_tuned=inv.fine_tuned,
               first_mse=res.first_mse, first_gt_mse=float(((res.first_image - clean) / 2).pow(2).mean()),
               eglass_feasible=sum(s.feasible for s in res.solutions), eglass_returned=len(res.solutions),
               eglass_pair_mean=pair_mean, eglass_pair_min=pair_min, eglass_pixel_pair=mean_pixel_difference(images),
               eglass_gt_mse=float(((images - clean) / 2).pow(2).mean()),
               eglass_gt_perc=float(metric(images, clean[None]).mean()) if images.shape[0] else float("nan"), k_y=res.settings["k_y"])
    # PULSE on the same generator
    p = pulse(Gu, forward, y, 10, seed=seed, quiet=True)
    with torch.no_grad():
        p_images = quantize(p.images)  # judged, as e-GLASS, on the images as saved
        p_mse = measurement_mse(forward, p_images, y)
    ok = p_mse <= TAU
    feasible = p_images[ok]
    p_mean, p_min = pairwise_summary(pairwise_distances(metric, feasible))
    row.update(pulse_s=p.seconds, pulse_feasible=int(ok.sum()), pulse_pair_mean=p_mean, pulse_pair_min=p_min,
               pulse_pixel_pair=mean_pixel_difference(feasible),
               pulse_gt_mse=float(((feasible - clean) / 2).pow(2).mean()) if feasible.shape[0] else float("nan"),
               pulse_gt_perc=float(metric(feasible, clean[None]).mean()) if feasible.shape[0] else float("nan"))
    row["time_ratio"] = row["eglass_s"] / row["pulse_s"]
    # (b) anisotropy: 20 pairs of each metric at z0
    H_Y, H_X = measurement_hessian(Gu, forward, z0), perceptual_hessian(Gu, metric, z0)
    eig_y = top_eigenpairs(H_Y, 20, seed=seed, warn=False)
    eig_x = top_eigenpairs(H_X, 20, seed=seed, warn=False)
    row.update(H_Y_l1_over_l10=float(eig_y.values[0] / eig_y.values[9]), H_X_l1_over_l10=float(eig_x.values[0] / eig_x.values[9]),
               H_Y_l1_over_l20=float(eig_y.values[0] / eig_y.values[19]), H_X_l1_over_l20=float(eig_x.values[0] / eig_x.values[19]))
    # (a) equal step, and (d) the three modes at their feasible steps, from the exploration's own eigenpairs
    dirs = {mode: make_directions(mode, res.eig_y, res.eig_x, count=5, K=DEFAULT_K, H_X=H_X, H_Y=H_Y, seed=seed)[0]
            for mode in ("raw", "eglass", "generalized")}
    stack = lambda ds: torch.stack([d.vector for d in ds], 1)  # noqa: E731
    for mode, ds in dirs.items():
        meas, perc = changes(Gu, forward, metric, z0, stack(ds), eta_probe)
        row[f"meas_{mode}"], row[f"perc_{mode}"] = float(meas.mean()), float(perc.mean())
        # capped as explore() caps them: geometric per direction unless a fixed eta_max was given
        fixed = res.settings["eta_max"]
        sols, _, pairwise, *_ = capped_solutions(Gu, forward, y, z0, res.first_image, ds, metric=metric, H_X=H_X, num_solutions=10,
                                                 tau=TAU, eta_max=None if fixed == "geometric" else fixed, seed=seed)
        imgs = torch.stack([s.image for s in sols])
        mean_pw, min_pw = pairwise_summary(pairwise)
        row.update({f"{mode}_perc_per_meas_step": statistics.fmean(
                        s.perceptual_distance / max(s.measurement_mse - res.first_mse, 1e-12) for s in sols),
                    f"{mode}_mean_abs_eta": statistics.fmean(abs(s.eta) for s in sols),
                    f"{mode}_pair_mean": mean_pw, f"{mode}_pair_min": min_pw, f"{mode}_min_pixel_diff": min_pixel_difference(imgs),
                    f"{mode}_feasible": sum(s.feasible for s in sols)})
    row["meas_ratio_raw_over_eglass"] = row["meas_raw"] / row["meas_eglass"]
    row["perc_ratio_eglass_over_raw"] = row["perc_eglass"] / row["perc_raw"]
    row["gen_over_eglass_perc_per_meas"] = row["generalized_perc_per_meas_step"] / row["eglass_perc_per_meas_step"]
    first_dir = dirs["eglass"][0]
    keep = {"res": res, "clean": clean, "y_image": forward.observation_image(y)[0], "pulse": (p_images, p_mse),
            "eig_y": eig_y, "eig_x": eig_x, "first_dir": first_dir}
    return row, keep


def pulse_time_to_10(row: dict) -> float:
    """PULSE's expected time to 10 feasible solutions: 10 runs' time / its feasible fraction.

    With no feasible run of 10, the fraction is replaced by its one-sided 95% Clopper-Pearson upper
    bound 1 - 0.05^(1/10) = 0.259, which gives a lower bound on the time (as the solutions benchmark does).
    """
    rate = row["pulse_feasible"] / 10 if row["pulse_feasible"] else 1 - 0.05 ** (1 / 10)
    return row["pulse_s"] / rate


def median_ci(values: list[float], *, seed: int = 0, draws: int = 2000) -> tuple[float, float, float]:
    """Median and its 95% bootstrap interval (percentile method)."""
    arr = np.asarray([v for v in values if v == v], dtype=float)
    if arr.size == 0:
        return float("nan"), float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    meds = np.median(rng.choice(arr, size=(draws, arr.size), replace=True), axis=1)
    return float(np.median(arr)), float(np.percentile(meds, 2.5)), float(np.percentile(meds, 97.5))


def fmt_ci(values: list[float]) -> str:
    """``median [low, high]``; NaN values (a PULSE set with fewer than two feasible solutions) are left out and counted."""
    values = [float("nan") if v is None else v for v in values]  # the JSON keeps NaN as null
    missing = sum(v != v for v in values)
    med, lo, hi = median_ci(values)
    if med != med:
        return f"- (none of {len(values)})"
    note = f" ({len(values) - missing} of {len(values)})" if missing else ""
    f = (lambda v: f"{v:.3g}") if abs(med) >= 1e-3 or med == 0 else (lambda v: f"{v:.2e}")
    return f"{f(med)} [{f(lo)}, {f(hi)}]{note}"


SUMMARY_KEYS = {
    "time to 10 feasible, e-GLASS (s)": "eglass_s", "e-GLASS's report figures after that (s)": "eglass_report_s",
    "time of 10 runs, PULSE (s)": "pulse_s",
    "time to 10 feasible, PULSE (s, from its rate)": "pulse_time_to_10", "e-GLASS / PULSE, time to 10 feasible": "time_ratio_10",
    "feasible of 10, e-GLASS": "eglass_feasible", "feasible of 10, PULSE": "pulse_feasible",
    "mean pairwise perceptual, e-GLASS": "eglass_pair_mean", "mean pairwise perceptual, PULSE": "pulse_pair_mean",
    "min pairwise perceptual, e-GLASS": "eglass_pair_min", "min pairwise perceptual, PULSE": "pulse_pair_min",
    "mean pairwise pixel diff, e-GLASS": "eglass_pixel_pair", "mean pairwise pixel diff, PULSE": "pulse_pixel_pair",
    "pixel MSE to truth, e-GLASS": "eglass_gt_mse", "pixel MSE to truth, PULSE": "pulse_gt_mse",
    "perceptual distance to truth, e-GLASS": "eglass_gt_perc", "perceptual distance to truth, PULSE": "pulse_gt_perc",
}
CLAIM_KEYS = {
    "(a) measurement change raw / e-GLASS": "meas_ratio_raw_over_eglass", "(a) perceptual change e-GLASS / raw": "perc_ratio_eglass_over_raw",
    "(b) H_Y lambda1/lambda10": "H_Y_l1_over_l10", "(b) H_X lambda1/lambda10": "H_X_l1_over_l10",
    "(d) perceptual per measurement, generalized / e-GLASS": "gen_over_eglass_perc_per_meas",
    "(d) mean pairwise perceptual, e-GLASS": "eglass_pair_mean", "(d) mean pairwise perceptual, generalized": "generalized_pair_mean",
    "(d) min pixel diff, e-GLASS": "eglass_min_pixel_diff", "(d) min pixel diff, generalized": "generalized_min_pixel_diff",
    "mean step abs(eta), raw": "raw_mean_abs_eta", "mean step abs(eta), e-GLASS": "eglass_mean_abs_eta",
    "mean step abs(eta), generalized": "generalized_mean_abs_eta",
}


def sheets(keep: dict, tag: str, title: str) -> None:
    res, clean = keep["res"], keep["clean"]
    sols = res.solutions
    tile, largest = spread_image([s.image for s in sols])
    contact_sheet([keep["y_image"], clean, res.first_image, tile, *[s.image for s in sols]],
                  ["observation", "ground truth", f"first solution\nMSE {res.first_mse:.1e}", f"spread (std)\nmax {largest:.2f}",
                   *[f"{s.direction}  eta {s.eta:+.1f}\nMSE {s.measurement_mse:.1e}" for s in sols]],
                  FIGURES / f"faces-sheet-{tag}-eglass.png", columns=7, title=f"e-GLASS: {title}")
    p_images, p_mse = keep["pulse"]
    ok = [i for i in range(p_images.shape[0]) if float(p_mse[i]) <= TAU]
    spread = [spread_image([p_images[i] for i in ok])] if len(ok) > 1 else []
    contact_sheet([keep["y_image"], clean, *[t for t, _ in spread], *p_images],
                  ["observation", "ground truth", *[f"spread (std)\nmax {m:.2f}" for _, m in spread],
                   *[f"run {i + 1}{'' if float(p_mse[i]) <= TAU else ' (infeasible)'}\nMSE {float(p_mse[i]):.1e}"
                     for i in range(p_images.shape[0])]],
                  FIGURES / f"faces-sheet-{tag}-pulse.png", columns=7, title=f"PULSE, 10 runs: {title}")


def write_tables(payload: dict) -> Path:
    """The summary tables of ``payload["rows"]``: into the JSON and the marked section of docs/results.md."""
    rows = payload["rows"]
    for row in rows:
        row["pulse_time_to_10"] = pulse_time_to_10(row)
        row["time_ratio_10"] = row["eglass_s"] / row["pulse_time_to_10"]
    cases = payload["observations"]
    n_faces = sum(c.startswith("face") for c in cases)
    summary, claims, photos = [], [], []
    for problem in ("sr", "inpaint"):
        faces_rows = [r for r in rows if r["problem"] == problem and r["observation"].startswith("face")]
        photo_rows = [r for r in rows if r["problem"] == problem and r["observation"].startswith("photo")]
        summary += [{"problem": problem, "figure": label, f"faces (median [95% CI], {len(faces_rows)})": fmt_ci([r[k] for r in faces_rows]),
                     **{r["observation"].removeprefix("photo "): r[k] for r in photo_rows}} for label, k in SUMMARY_KEYS.items()]
        claims += [{"problem": problem, "claim": label, "faces (median [95% CI])": fmt_ci([r[k] for r in faces_rows]),
                    **{r["observation"].removeprefix("photo "): r[k] for r in photo_rows}} for label, k in CLAIM_KEYS.items()]
        photos += [{"problem": problem, "observation": r["observation"], "fine-tuned (IAGAN)": r["fine_tuned"],
                    "first solution MSE": r["first_mse"], "first solution pixel MSE to truth": r["first_gt_mse"],
                    "inversion s": r["inversion_s"]} for r in rows if r["problem"] == problem]
    payload.update(summary=summary, claims=claims, inversions=photos)
    path = write_json("faces", payload)
    photo_cols = [c.removeprefix("photo ") for c in cases if c.startswith("photo")]
    head = (f"Command: `{payload['command'].strip()}` ({payload['machine']['cores']} cores, torch {payload['machine']['torch']}, "
            f"{payload['machine']['date']}, {payload['seconds']:.0f} s). JSON: `benchmarks/results/faces.json`. Faces: medians over "
            f"{n_faces} held-out generated faces with 95% bootstrap intervals; photographs: one value each.")
    faces_col = next(c for c in summary[0] if c.startswith("faces"))
    md = [head, "", "### e-GLASS against PULSE (N = 10, same generator, same observation)", "",
          markdown_table(summary, [(c, c) for c in ("problem", "figure", faces_col, *photo_cols)]), "",
          "### The paper's claims", "",
          markdown_table(claims, [(c, c) for c in ("problem", "claim", "faces (median [95% CI])", *photo_cols)]), "",
          "### First solutions", "",
          markdown_table(photos, [(c, c) for c in photos[0]])]
    update_doc_section("faces", "\n".join(md), doc=RESULTS_DOC)
    return path


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--faces", type=int, default=10, help="held-out faces (seeds 2001 on)")
    parser.add_argument("--eta-probe", type=float, default=1.0, help="the equal step of claim (a), in latent units")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--tables-only", action="store_true", help="rewrite docs/results.md from benchmarks/results/faces.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore", ConvergenceWarning)
    start = time.perf_counter()
    G, metric = load_generator("faces"), load_metric("effnet")
    with torch.no_grad():
        cases = {f"face {s}": G(torch.randn(1, 100, generator=torch.Generator().manual_seed(s)))[0] for s in list(SEEDS)[: args.faces]}
    cases.update({f"photo {k}": v for k, v in photographs().items()})
    if args.tables_only:
        payload = json.loads((ROOT / "benchmarks" / "results" / "faces.json").read_text())
        write_tables(payload)
        return
    rows, keeps = [], {}
    for name, clean in cases.items():
        for problem in ("sr", "inpaint"):
            row, keep = case_study(name, clean, problem, G, metric, seed=args.seed, eta_probe=args.eta_probe)
            rows.append(row)
            keeps[(name, problem)] = keep
            print(f"{name} {problem}: e-GLASS {row['eglass_s']:.1f} s {row['eglass_feasible']}/10, PULSE {row['pulse_s']:.1f} s "
                  f"{row['pulse_feasible']}/10, pairwise {row['eglass_pair_mean']:.3g} vs {row['pulse_pair_mean']:.3g}, "
                  f"fine-tuned {row['fine_tuned']}", flush=True)
    FIGURES.mkdir(parents=True, exist_ok=True)
    first_face = next(iter(cases))
    for problem, what in (("sr", "super-resolution x4"), ("inpaint", "inpainting of the eyes band")):
        sheets(keeps[(first_face, problem)], problem, f"{what}, held-out {first_face}")
        keep = keeps[(first_face, problem)]
        plot_spectra(keep["eig_y"].values, keep["eig_x"].values, FIGURES / f"faces-spectra-{problem}.png",
                     title=f"top eigenvalues at the first solution (faces, {problem})")
        U, V, d = keep["res"].eig_y.vectors, keep["eig_x"].vectors, keep["first_dir"]
        v = keep["res"].eig_x.vectors[:, d.index - 1]
        plot_correlation((U.T @ v).abs(), (U.T @ d.vector).abs(), (V.T @ v).abs(), (V.T @ d.vector).abs(),
                         FIGURES / f"faces-correlation-{problem}.png", start_label=f"$v^{{{d.index}}}$", final_label="$d$ (e-GLASS)",
                         threshold=0.05, title=f"cosines with the top eigenvectors (faces, {problem})")
    if "photo grace-hopper" in cases:
        sheets(keeps[("photo grace-hopper", "sr")], "photo-sr", "super-resolution x4 of a photograph (Grace Hopper)")

    payload = {"pixel_scale": "[0, 1]", "command": "python benchmarks/faces.py " + " ".join(argv if argv is not None else sys.argv[1:]),
               "machine": machine(), "seconds": time.perf_counter() - start, "eta_probe": args.eta_probe, "tau": TAU,
               "observations": list(cases), "rows": rows}
    path = write_tables(payload)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

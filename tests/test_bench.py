"""The solutions benchmark: the arithmetic of its times, and a whole case on a tiny generator."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
import torch
from conftest import TinyConvGenerator

from hvp_explore import PixelMetric, SuperResolution, measurement_mse
from hvp_explore.exploration import explore

# The harness is a script under benchmarks/; it puts that folder on sys.path for its _common helpers, as here.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import solutions as bench  # noqa: E402
from _common import REPORT_STAGES, Case, machine_with_load, median_repetition, report_seconds  # noqa: E402
from solutions import (  # noqa: E402
    GeneratorSetup,
    add_ratios,
    benchmark_case,
    evaluate_targets,
    extrapolated_time_to_n,
    marginal_seconds,
    monotone_times,
    step_envelope,
    step_seconds_at,
    summarise,
    time_to_n_feasible,
    write_outputs,
)

# A tau this small makes PULSE on the tiny generator need 30-50 of its steps, so that with 40 steps
# some runs fail and some succeed (checked below, not assumed).
TAU = 1e-6


def tiny_case() -> Case:
    G = TinyConvGenerator(latent_dim=24)
    forward = SuperResolution((1, 8, 8), 2).double()
    z_true = torch.randn(24, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    with torch.no_grad():
        clean = G(z_true[None])
    return Case("tiny", "sr", "tiny0", G, forward, forward(clean), clean, PixelMetric(), "pixel")


# --- pure arithmetic ----------------------------------------------------------------------------------

def test_time_to_n_feasible_is_the_prefix_up_to_the_nth_feasible_run():
    seconds, feasible = [1.0, 2.0, 3.0, 4.0, 5.0], [False, True, False, True, True]
    assert time_to_n_feasible(seconds, feasible, 1) == (3.0, 2)  # the failed first run is paid for
    assert time_to_n_feasible(seconds, feasible, 2) == (10.0, 4)
    assert time_to_n_feasible(seconds, feasible, 3) == (15.0, 5)
    assert time_to_n_feasible(seconds, feasible, 4) is None
    with pytest.raises(ValueError, match="one feasibility flag per run"):
        time_to_n_feasible(seconds, feasible[:2], 1)
    with pytest.raises(ValueError, match="positive integer"):
        time_to_n_feasible(seconds, feasible, 0)


def test_report_seconds_are_explores_stages_after_the_solutions():
    # A time to N feasible leaves out what explore computes after delivering them and chooses no solution by: the
    # plain run's distances and the unobserved share; walks choose by their distances, so only the share is left out.
    timings = {"inversion": 5.0, "eigen_x": 1.0, "steps": 0.5, "distances": 0.25, "walks": 2.0, "unobserved_share": 0.125}
    assert report_seconds(timings) == 0.375
    assert report_seconds(timings, walks=True) == 0.125
    case = tiny_case()
    res = explore(case.generator, case.forward, case.y, metric=case.metric, num_solutions=2, seed=0, quiet=True,
                  invert_options={"restarts": 2, "steps": 300})
    # the names are explore's own: a renamed stage would otherwise be counted as delivery time without a word
    assert {"distances", "unobserved_share"} <= res.timings.keys()
    assert report_seconds(res.timings) == res.timings["distances"] + res.timings["unobserved_share"] > 0


def test_eglass_times_of_solutions_py_stop_before_the_report_figures(monkeypatch):
    # Charged 100 s more of report figures than explore took, every e-GLASS time goes negative: the subtraction is
    # applied, with report_seconds' value for the very run whose breakdown the row keeps (one repeat).
    from hvp_explore import invert

    seen = []

    def charged(timings, **kwargs):
        seen.append(report_seconds(timings, **kwargs))
        return seen[-1] + 100.0

    monkeypatch.setattr(bench, "report_seconds", charged)
    case = tiny_case()
    inv = invert(case.generator, case.forward, case.y, tau=TAU, restarts=2, steps=300, seed=0, quiet=True)
    setup = GeneratorSetup("tiny", ns=(1, 2), methods=("eglass-auto",), repeats=1)
    rows = bench._eglass_rows(case, setup, inv, "eglass-auto", tau=TAU, seed=0, lpips_metric=None, log=lambda _: None)
    assert [r["N"] for r in rows] == [1, 2] and len(seen) == 2
    for r, report in zip(rows, seen):
        assert r["seconds_run"] < 0
        assert report == r["breakdown"]["distances"] + r["breakdown"]["unobserved_share"] > 0


def test_median_repetition_keeps_the_median_run_and_stops_when_expensive():
    times = iter([0.3, 0.1, 0.2, 9.0])
    seconds, result, runs = median_repetition(lambda: (t := next(times), f"run at {t}"), repeats=3, repeat_under_s=30.0)
    assert (seconds, result, runs) == (0.2, "run at 0.2", [0.3, 0.1, 0.2])
    times = iter([0.2, 0.4])  # even count: the upper of the two middle runs
    assert median_repetition(lambda: (t := next(times), t), repeats=2, repeat_under_s=30.0)[:2] == (0.4, 0.4)
    times = iter([40.0, 0.1])  # one run over repeat_under_s is not repeated
    assert median_repetition(lambda: (t := next(times), t), repeats=3, repeat_under_s=30.0)[2] == [40.0]


def test_extrapolated_time_is_n_over_rate_times_mean_run():
    assert extrapolated_time_to_n(10, 2.0, 0.25) == pytest.approx(80.0, rel=1e-15)
    assert extrapolated_time_to_n(100, 3.5, 1.0) == pytest.approx(350.0, rel=1e-15)
    assert extrapolated_time_to_n(3, 1.0, 0.0) == math.inf
    with pytest.raises(ValueError, match=r"rate must be in \[0, 1\]"):
        extrapolated_time_to_n(3, 1.0, 1.5)


def test_monotone_times_take_the_fastest_run_with_enough_solutions():
    # The run for N = 10 was faster than the one for N = 1 and also gives 1 solution; the N = 100 run found only 98.
    runs = {1: (5.0, 1), 10: (4.0, 10), 100: (20.0, 98)}
    assert monotone_times(runs) == {1: 4.0, 10: 4.0, 100: None}
    times = monotone_times({1: (1.0, 1), 10: (2.0, 10), 100: (11.0, 100)})
    assert times == {1: 1.0, 10: 2.0, 100: 11.0}
    seconds, a, b = marginal_seconds(times)
    assert (a, b) == (10, 100) and seconds == pytest.approx((11.0 - 2.0) / 90, rel=1e-15)
    assert marginal_seconds({1: 1.0, 10: None}) is None


def test_step_seconds_interpolate_and_extrapolate_linearly():
    table = {1: 0.01, 10: 0.02, 100: 0.11}
    assert step_seconds_at(table, 10) == (0.02, False)
    t, extrapolated = step_seconds_at(table, 55)
    assert extrapolated and t == pytest.approx(0.02 + 0.09 / 90 * 45, rel=1e-12)
    t, _ = step_seconds_at(table, 200)  # the line through B = 10 and B = 100
    assert t == pytest.approx(0.11 + 0.09 / 90 * 100, rel=1e-12)
    assert step_seconds_at({4: 0.08}, 8) == (pytest.approx(0.16, rel=1e-12), True)
    # a small batch timed slower than a larger one was disturbed: the larger batch's time bounds it
    assert step_envelope({1: 1.43, 10: 0.179, 100: 2.0}) == {1: 0.179, 10: 0.179, 100: 2.0}
    assert step_seconds_at({1: 1.43, 10: 0.179}, 1) == (0.179, False)
    assert step_seconds_at({1: 1.43, 10: 0.179}, 5) == (0.179, True)
    with pytest.raises(ValueError, match="no Adam-step timings"):
        step_seconds_at({}, 3)


def test_add_ratios_against_pulse_and_marginal_forwards():
    def row(method, n, seconds):
        return {"generator": "g", "problem": "sr", "case": "c", "method": method, "N": n, "seconds": seconds}

    rows = [row("pulse", 10, 40.0), row("pulse", 100, 400.0), row("pulse-batch", 10, 8.0), row("pulse-batch", 100, 20.0),
            row("eglass-auto", 10, 5.0), row("eglass-auto", 100, 9.5)]
    add_ratios(rows, {"g": 0.01})
    e10, e100 = rows[4], rows[5]
    assert e10["vs_pulse"] == pytest.approx(5.0 / 40.0) and e10["vs_pulse_batch"] == pytest.approx(5.0 / 8.0)
    assert e100["vs_pulse"] == pytest.approx(9.5 / 400.0) and e100["vs_pulse_batch"] == pytest.approx(9.5 / 20.0)
    assert e100["marginal_seconds"] == pytest.approx(4.5 / 90) and e100["marginal_forwards"] == pytest.approx(4.5 / 90 / 0.01)
    assert e10["marginal_seconds"] is None  # stored on the row of the larger N only
    assert rows[1]["marginal_forwards"] == pytest.approx(360.0 / 90 / 0.01)
    summary = summarise([{**r, "estimate": None, "feasible": r["N"], "breakdown": {}} for r in rows])
    targets, notes = evaluate_targets(summary)
    by_name = {t["target"]: t for t in targets}
    ratio = by_name["eglass-auto / pulse, time to 10"]
    assert ratio["value"] == pytest.approx(0.125) and ratio["met"] is None  # no bound for the generator "g"
    assert by_name["eglass-auto, forward passes per extra solution"]["met"] is False  # 5 forward passes > 3
    assert any("forward passes per extra solution" in n for n in notes)
    # a negative marginal cost is noise: reported, not evaluated
    rows[5]["seconds"] = 4.0
    add_ratios(rows, {"g": 0.01})
    targets, notes = evaluate_targets(summarise([{**r, "estimate": None, "feasible": r["N"], "breakdown": {}} for r in rows]))
    marginal = next(t for t in targets if t["target"] == "eglass-auto, forward passes per extra solution")
    assert marginal["value"] == pytest.approx(-1.0 / 90 / 0.01) and marginal["met"] is None
    assert any("below the timing noise" in n for n in notes)


def test_pulse_rows_extrapolate_from_a_fake_sequence():
    case = tiny_case()
    with torch.no_grad():
        images = case.generator(torch.randn(4, 24, generator=torch.Generator().manual_seed(1), dtype=torch.float64))
    mse = measurement_mse(case.forward, images, case.y)
    tau = float(mse.sort().values[1]) * (1 + 1e-9)  # exactly two of the four fake runs are feasible
    feasible = (mse <= tau).tolist()
    seq = {"seconds": [1.0, 2.0, 3.0, 6.0], "feasible": feasible, "images": images, "mse": mse.tolist(), "steps": [100] * 4,
           "stop": "run budget (4 runs)"}
    setup = GeneratorSetup("tiny", ns=(1, 2, 10))
    rows = {r["N"]: r for r in bench._pulse_rows(case, setup, seq, tau=tau, lpips_metric=None)}
    first, second = [i for i, f in enumerate(feasible) if f]
    assert rows[1]["seconds"] == pytest.approx(sum(seq["seconds"][: first + 1])) and rows[1]["estimate"] is None
    assert rows[2]["seconds"] == pytest.approx(sum(seq["seconds"][: second + 1])) and rows[2]["returned"] == second + 1
    # N = 10 was not reached: 10 / (2 / 4) x mean(1, 2, 3, 6) = 20 x 3 = 60 s, marked as extrapolated
    assert rows[10]["estimate"] == "extrapolated" and rows[10]["seconds"] == pytest.approx(60.0, rel=1e-12)
    assert rows[10]["feasible"] == 2 and len(rows[10]["mse"]) == 4 and rows[10]["returned"] == 4
    none = {**seq, "feasible": [False] * 4}
    lower = bench._pulse_rows(case, setup, none, tau=tau, lpips_metric=None)[-1]
    # no feasible run in 4: the rate's 95% upper confidence bound 1 - 0.05^(1/4) stands in for it
    assert lower["estimate"] == "lower-bound" and lower["seconds"] == pytest.approx(10 * 3.0 / (1 - 0.05 ** 0.25), rel=1e-12)
    assert lower["seconds_rate_one"] == pytest.approx(10 * 3.0)


def test_rate_upper_bound_is_clopper_pearson():
    # no success in R runs: 1 - 0.05^(1/R), close to the rule of three for large R
    for runs in (1, 3, 20, 300):
        assert bench.rate_upper_bound(0, runs) == pytest.approx(1 - 0.05 ** (1 / runs), rel=1e-10)
    assert bench.rate_upper_bound(0, 300) == pytest.approx(3 / 300, rel=0.01)
    # with successes it exceeds the observed rate, and a rate at the bound makes the observation a 5% event
    from scipy.stats import binom

    bound = bench.rate_upper_bound(2, 20)
    assert bound > 2 / 20 and binom.cdf(2, 20, bound) == pytest.approx(0.05, rel=1e-8)
    assert bench.rate_upper_bound(5, 5) == 1.0
    with pytest.raises(ValueError, match="feasible <= runs"):
        bench.rate_upper_bound(3, 2)


# --- a whole case on a tiny generator ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_run():
    from hvp_explore.metrics import LPIPSMetric

    case = tiny_case()
    setup = GeneratorSetup("tiny", ns=(1, 2), methods=("pulse", "pulse-batch", "eglass-dense", "eglass-auto", "generalized"),
                           pulse_max_runs=8, pulse_steps=40, step_batches=(1, 4), step_repeats=1, forward_repeats=2, repeats=2,
                           invert_options={"restarts": 2, "steps": 300})
    steps = bench.adam_step_seconds(case.generator, case.forward, case.y, setup.step_batches, repeats=1, eps=TAU)
    lpips = LPIPSMetric("squeeze", pnet_rand=True)  # the real-LPIPS path, with a random trunk (nothing to load)
    rows, info, points = benchmark_case(case, setup, step_table=steps, tau=TAU, lpips_metric=lpips)
    fwd = bench.forward_pass_seconds(case.generator, 24, repeats=2)
    add_ratios(rows, {"tiny": fwd})
    return case, rows, info, points, fwd


def test_tiny_case_rows_are_consistent(tiny_run):
    case, rows, info, points, fwd = tiny_run
    methods = {r["method"] for r in rows}
    assert methods == {"pulse", "pulse-batch", "eglass-dense", "eglass-auto", "generalized"}
    # PULSE with 40 steps at this tau fails some runs (seeded, so the same ones every time): they are counted in its time.
    assert info["pulse"]["runs"] > info["pulse"]["feasible"] == 2
    for r in rows:
        mse = torch.tensor(r["mse"], dtype=torch.float64)
        assert r["feasible"] == int((mse <= TAU).sum()), r["method"]
        assert r["feasibility_rate"] == pytest.approx(r["feasible"] / len(r["mse"]))
    for method in methods:
        by_n = {r["N"]: r for r in rows if r["method"] == method}
        assert by_n[1]["seconds"] is not None and by_n[1]["seconds"] <= by_n[2]["seconds"], method
    pulse = {r["N"]: r for r in rows if r["method"] == "pulse"}
    # the N = 2 prefix contains the N = 1 prefix, and every run of it (failed ones too) has an MSE
    assert pulse[2]["returned"] >= pulse[1]["returned"] and len(pulse[2]["mse"]) == pulse[2]["returned"]
    assert pulse[2]["feasible"] == 2 and pulse[2]["estimate"] is None
    for r in rows:
        if r["method"].startswith("eglass-") or r["method"] == "generalized":
            # feasible by construction, with the shared inversion charged to each method
            assert r["feasible"] == r["returned"] == r["N"]
            assert r["breakdown"]["inversion"] == info["inversion"]["seconds"]
            # the time stops at delivery: the report figures after it are in the breakdown, not in the time
            delivered = sum(v for k, v in r["breakdown"].items() if k not in REPORT_STAGES["plain"])
            assert delivered <= r["seconds_run"] * (1 + 1e-9)
            assert r["seconds_run"] >= r["seconds"]
            assert r["eigen_seconds"] == pytest.approx(r["breakdown"]["eigen_y"] + r["breakdown"]["eigen_x"])
        assert r["gt_mse"] is not None and r["gt_mse"] >= 0
        if r["N"] == 2 and r["feasible"] == 2:
            assert r["diversity"] is not None and r["diversity"] > 0 and r["diversity_lpips"] is not None
        # ratios recomputed from the rows
        pulse_n = pulse[r["N"]]["seconds"]
        assert r["vs_pulse"] == pytest.approx(r["seconds"] / pulse_n)
    # the inversion is timed as the median of setup.repeats = 2 seeded runs (the upper one for even counts)
    assert len(info["inversion"]["repeats"]) == 2 and info["inversion"]["seconds"] == max(info["inversion"]["repeats"])
    auto = {r["N"]: r for r in rows if r["method"] == "eglass-auto"}
    assert auto[2]["marginal_seconds"] == pytest.approx(auto[2]["seconds_run"] - auto[1]["seconds_run"])
    assert auto[2]["marginal_forwards"] == pytest.approx(auto[2]["marginal_seconds"] / fwd)
    assert set(points) == methods and all(len(m) == len(d) and n == 2 for m, d, n in points.values())


def test_tiny_case_diversity_is_the_mean_pairwise_pixel_distance(tiny_run):
    case, rows, *_ = tiny_run
    # Re-run one explore with the same inversion settings and compare the row's diversity with a direct computation.
    r = next(r for r in rows if r["method"] == "eglass-dense" and r["N"] == 2)
    inv = bench._first_solution(case, GeneratorSetup("tiny", invert_options={"restarts": 2, "steps": 300}), tau=TAU, seed=0)[0]
    res = explore(case.generator, case.forward, case.y, metric=case.metric, num_solutions=2, solver="dense", tau=TAU,
                  inversion=inv, quiet=True, mode="eglass")  # the benchmark's eglass-dense row
    a, b = (s.image for s in res.solutions)
    # PixelMetric is the mean squared pixel difference; the benchmark gets it from the float64 Gram identity
    # |r_a|^2 + |r_b|^2 - 2 r_a.r_b, whose cancellation error is ~1e-16 |r|^2 / d, far below 1e-9 relative here.
    assert r["diversity"] == pytest.approx(float((a - b).pow(2).mean()), rel=1e-9)
    gt = [float(((s.image - case.clean[0]) / 2).pow(2).mean()) for s in res.solutions]
    assert r["gt_mse"] == pytest.approx(sum(gt) / 2, rel=1e-9)


def test_outputs_are_written_and_parse(tiny_run, tmp_path):
    case, rows, info, points, fwd = tiny_run
    summary = summarise(rows)
    targets, notes = evaluate_targets(summary)
    diversity = {"generator": "tiny", "problem": "sr", "case": "tiny0", "N": 2,
                 "methods": {m: {"mse": v[0], "diversity": v[1], "N": v[2]} for m, v in points.items()}}
    result = bench.SolutionsBenchmark(rows=tuple(rows), summary=tuple(summary), targets=tuple(targets),
                                      regimes=({"generator": "tiny", **bench._regime({1: 0.001, 4: 0.002}, fwd)},),
                                      cases=(info,), diversity_points=diversity, notes=tuple(notes),
                                      settings={"tau": TAU, "command": "test"}, machine=machine_with_load([9.0, 1.0, 1.0]),
                                      lpips={"status": "test", "available": False}, seconds=1.0)
    doc = tmp_path / "docs" / "benchmarks.md"
    doc.parent.mkdir()
    doc.write_text("# Benchmarks\n\n<!-- solutions:start -->\nold\n<!-- solutions:end -->\n\nafter\n")
    paths = write_outputs(result, json_path=tmp_path / "results" / "solutions.json", doc_path=doc,
                          figures_dir=tmp_path / "docs" / "figures")
    payload = json.loads(paths["json"].read_text())
    assert payload["benchmark"] == "solutions" and len(payload["rows"]) == len(rows)
    assert payload["rows"][0]["seconds"] == pytest.approx(rows[0]["seconds"])
    text = doc.read_text()
    assert "old" not in text and text.endswith("after\n") and "figures/solutions-time.png" in text
    assert "| tiny | sr | eglass-auto | 2 |" in text
    assert "machine was busy (load average 9.00" in text  # the load passed in above: timings flagged as unreliable
    assert paths["time_plot"].stat().st_size > 0 and paths["diversity_plot"].stat().st_size > 0


# --- validation -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, match", [
    ({"generators": ["stylegan"]}, "unknown generator 'stylegan'"),
    ({"methods": ["pulse", "csgm"]}, "unknown method 'csgm'"),
    ({"ns": [0, 10]}, "positive integers"),
    ({"problems": ["cs"]}, "unknown problem 'cs'"),
    ({"repeats": 0}, "repeats must be a positive integer"),
    ({"generators": ["biggan"], "problems": ["inpaint"]}, "nothing to run"),
])
def test_invalid_options_raise_one_line_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        bench.run_solutions_benchmark(**kwargs, log=lambda _: None)


def test_script_entry_reports_bad_lists():
    with pytest.raises(SystemExit, match="--ns must be a comma-separated list of ints"):
        bench.main(["--ns", "1,ten"])


def test_every_pixel_figure_of_the_benchmarks_is_on_the_unit_scale():
    """Images live in [-1, 1]; every pixel difference the benchmarks report is on [0, 1] (issue #25): black against
    white differs by 1, a shift by 0.2 in model units by 0.1."""
    import exploration
    import faces
    import versus_pulse

    black, white = -torch.ones(1, 1, 4, 4), torch.ones(1, 1, 4, 4)
    pair = torch.cat([black, white])
    assert exploration.min_pixel_difference(pair) == pytest.approx(1.0)
    assert faces.mean_pixel_difference(pair) == pytest.approx(1.0)
    assert versus_pulse.pixel_mse(white, black) == pytest.approx(1.0)
    assert exploration.min_pixel_difference(torch.cat([black, black + 0.2])) == pytest.approx(0.1)
    for name in ("exploration", "faces"):
        payload = json.loads((Path(__file__).resolve().parents[1] / "benchmarks" / "results" / f"{name}.json").read_text())
        assert payload["pixel_scale"].startswith("[0, 1]")

"""The command line, driven by Click's runner on small settings; reports are checked by their numbers."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from hvp_explore import Inpainting, SuperResolution, load_image, measurement_mse
from hvp_explore.cli import cli
from hvp_explore.data import sample_paths
from hvp_explore.generators import load_generator
from hvp_explore.metrics import load_metric

SAMPLE = str(sample_paths()[0])
FAST = ["--restarts", "2", "--steps", "150"]


def run(*args):
    result = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    return result


def report(folder):
    return json.loads((folder / "report.json").read_text())


@pytest.fixture(scope="module")
def inverted(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "inv"
    result = run("invert", SAMPLE, "--from-clean", "--out", out, "--quiet", *FAST)
    assert result.exit_code == 0, result.output
    return out


def test_invert_writes_a_feasible_solution_and_its_state(inverted):
    rep = report(inverted)
    assert rep["measurement_mse"] < rep["tau"] == 2e-3 and rep["feasible"]
    assert rep["lr_psnr"] == pytest.approx(-10 * np.log10(rep["measurement_mse"]))
    assert {"csgm", "total"} <= set(rep["timings"])
    # the saved solution really has that measurement error
    G = load_generator("default")
    state = torch.load(inverted / "state.pt", weights_only=True)
    forward = SuperResolution((1, 32, 32), 4)
    y = forward(load_image(SAMPLE)[None])
    with torch.no_grad():
        mse = float(measurement_mse(forward, G(state["latent"][None]), y))
    assert mse == pytest.approx(rep["measurement_mse"], rel=1e-4)
    for name in ("observation.png", "solution.png", "ground_truth.png", ".hvp-explore.json"):
        assert (inverted / name).is_file()


@pytest.mark.parametrize("halving", [0, 3])
def test_invert_halving_is_the_librarys(tmp_path, halving):
    # --halving reaches invert(): the saved latent is the library's for the same settings, bit for bit (CPU, fixed seed)
    from hvp_explore.inversion import invert

    out = tmp_path / "inv"
    args = ["--restarts", "4", "--steps", "12", "--gauss-newton", "off", "--iagan", "off"]
    result = run("invert", SAMPLE, "--from-clean", "--out", out, "--quiet", "--halving", halving, *args)
    assert result.exit_code == 0, result.output
    forward = SuperResolution((1, 32, 32), 4)
    y = forward(load_image(SAMPLE)[None])
    options = {"restarts": 4, "steps": 12, "gauss_newton": False, "iagan": False, "quiet": True}
    ref = invert(load_generator("default"), forward, y, halving=halving, **options)
    assert torch.equal(torch.load(out / "state.pt", weights_only=True)["latent"], ref.latent)
    if halving == 3:  # halving every 3 steps drops the restart that ends best: a CLI that ignored --halving would fail here
        assert not torch.equal(ref.latent, invert(load_generator("default"), forward, y, **options).latent)
    bad = run("invert", SAMPLE, "--from-clean", "--out", tmp_path / "bad", "--quiet", "--halving", "-1")
    assert bad.exit_code != 0 and "--halving must be a non-negative integer" in bad.output and "Traceback" not in bad.output
    assert not (tmp_path / "bad").exists()


def test_stage_commands_compose(inverted, tmp_path):
    eig, cpl, prj, rnd = (tmp_path / s for s in ("eig", "couple", "project", "render"))
    assert run("eig", inverted, "--out", eig, "--k", "8", "--quiet").exit_code == 0
    rep = report(eig)
    assert rep["eigen"]["H_Y"]["solver"] == "jacobian"  # m = 64 measurements: the exact route
    assert rep["eigen"]["H_X"]["k"] == 8 and rep["eigen"]["H_X"]["all_converged"]
    values = rep["eigen"]["H_X"]["values"]
    assert values == sorted(values, reverse=True)
    npz = np.load(eig / "eigenpairs.npz")
    V = npz["vectors_x"]
    np.testing.assert_allclose(V.T @ V, np.eye(8), atol=1e-8)
    assert run("couple", eig, "--out", cpl, "--quiet").exit_code == 0
    C = np.load(cpl / "coupling.npy")
    np.testing.assert_allclose(C, npz["vectors_y"].T @ V, atol=1e-10)
    assert report(cpl)["significant"] == int((np.abs(C) > 0.05).sum())
    assert run("project", eig, "--out", prj, "--solutions", "4", "--mode", "eglass", "--quiet").exit_code == 0
    dirs = np.load(prj / "directions.npz")
    assert list(dirs["labels"]) == ["v8", "v7"]
    assert np.abs(npz["vectors_y"].T @ dirs["vectors"]).max() <= 0.05 + 1e-9
    assert run("render", prj, "--out", rnd, "--quiet").exit_code == 0
    rep = report(rnd)
    assert [s["direction"] for s in rep["solutions"]] == ["+v8", "-v8", "+v7", "-v7"]
    assert all(s["feasible"] and s["measurement_mse"] <= 2e-3 and s["perceptual_distance"] > 0 for s in rep["solutions"])
    assert len(list((rnd / "solutions").glob("*.png"))) == 4
    # beyond 2K solutions the extra directions are combinations of the eigenvector ones, stored and rendered
    prj2, rnd2 = tmp_path / "project2", tmp_path / "render2"
    assert run("project", eig, "--out", prj2, "--solutions", "20", "--mode", "eglass", "--quiet").exit_code == 0
    entries = report(prj2)["directions"]
    assert [d["label"] for d in entries] == [f"v{i}" for i in range(8, 0, -1)] + ["c1", "c2"]
    dirs = np.load(prj2 / "directions.npz")
    from hvp_explore.exploration import eglass_projection

    for d, v in zip(entries[8:], dirs["vectors"].T[8:]):
        combined = torch.from_numpy(dirs["vectors"][:, :8] @ np.array(d["combination"]))
        assert float(combined.norm()) == pytest.approx(1.0, abs=1e-6)
        expected = eglass_projection(combined, torch.from_numpy(npz["vectors_y"]), threshold=0.05).direction
        np.testing.assert_allclose(v, expected.numpy(), atol=1e-6)  # the stored vector: Algorithm 1 on the combination
    assert run("render", prj2, "--out", rnd2, "--quiet").exit_code == 0
    rep = report(rnd2)
    assert len(rep["solutions"]) == 20 and all(s["feasible"] and s["measurement_mse"] <= 2e-3 for s in rep["solutions"])
    assert {s["step_status"] for s in rep["solutions"][16:]} <= {"predicted", "backtracked", "capped"}


def test_explore_report_numbers(tmp_path):
    out = tmp_path / "exp"
    result = run("explore", SAMPLE, "--from-clean", "--problem", "inpaint", "--box", "8,8,16,16", "--solutions", "4", "--out", out,
                 "--quiet", "--seed", "1")
    assert result.exit_code == 0, result.output
    rep = report(out)
    assert rep["tau"] == 2e-3 and rep["generator"] == "default" and rep["problem"]["forward"]["kind"] == "inpaint"
    assert rep["num_solutions"] == 4 == len(rep["solutions"]) and rep["num_feasible"] == 4
    assert set(rep["timings"]) >= {"inversion", "eigen_y", "eigen_x", "directions", "steps", "distances", "total"}
    assert rep["eigen"]["H_Y"]["k"] == 32  # m = 768 > n = 512: n / 16 pairs
    metric = load_metric("default")
    forward = Inpainting.from_box((1, 32, 32), 8, 8, 16, 16)
    clean = load_image(SAMPLE)
    y = forward(clean[None])
    first = load_image(out / "first_solution.png")
    assert first.shape == (1, 32, 32)  # saved at the generator's resolution
    assert float(measurement_mse(forward, first[None], y)) == pytest.approx(rep["first_solution"]["measurement_mse"], rel=1e-5)
    for s in rep["solutions"]:
        img = load_image(out / s["file"])
        assert img.shape == (1, 32, 32)
        # the reported numbers are those of the 8-bit files themselves
        mse = float(measurement_mse(forward, img[None], y))
        assert mse == pytest.approx(s["measurement_mse"], rel=1e-5)
        assert mse <= 2e-3 and s["feasible"]
        assert s["perceptual_distance"] > 1e-4
        with torch.no_grad():
            d = float(metric(img[None], first[None]))
        assert d == pytest.approx(s["perceptual_distance"], rel=1e-4)
        assert float((img - first).abs().max()) > 0.05  # visibly different somewhere
    for name in ("sheet.png", "spectra.png", "coupling.png", "correlation.png", "eigenpairs.npz", "directions.npz"):
        assert (out / name).is_file()
    assert rep["ground_truth_mse"]["first_solution"] > 0


def test_explore_with_walks_reports_and_draws_them(tmp_path):
    out = tmp_path / "walks"
    result = run("explore", SAMPLE, "--from-clean", "--solutions", "4", "--walk-steps", "2", "--walkers", "2", "--out", out,
                 "--quiet", *FAST)
    assert result.exit_code == 0, result.output
    rep = report(out)
    walks = rep["walks"]
    assert walks["walkers"] == 2 and walks["steps"] == 2 and walks["points"] + walks["stuck_steps"] == 4
    assert walks["all_points_feasible"] and walks["figure"] == "walks.png" and (out / "walks.png").is_file()
    assert walks["selected"] == sum(s["step_status"] == "walk" for s in rep["solutions"])
    assert rep["settings"]["walk_steps"] == 2 and "walks" in rep["timings"]
    forward = SuperResolution((1, 32, 32), 4)
    y = forward(load_image(SAMPLE)[None])
    for s in rep["solutions"]:  # walk points or e-GLASS steps, each PNG meets tau itself
        mse = float(measurement_mse(forward, load_image(out / s["file"])[None], y))
        assert mse == pytest.approx(s["measurement_mse"], rel=1e-5) and mse <= 2e-3


@pytest.mark.parametrize("args, message", [(["--walk-steps", "-1"], "--walk-steps must be a non-negative integer"),
                                           (["--walkers", "0"], "--walkers must be a positive integer")])
def test_bad_walk_options_are_one_line_errors(tmp_path, args, message):
    result = run("explore", SAMPLE, "--from-clean", "--out", tmp_path / "x", "--quiet", *args)
    assert result.exit_code != 0 and message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "x").exists()


def test_pulse_report(tmp_path):
    out = tmp_path / "pulse"
    result = run("pulse", SAMPLE, "--from-clean", "--solutions", "2", "--out", out, "--quiet")
    assert result.exit_code == 0, result.output
    rep = report(out)
    assert rep["runs"] == 2 == len(rep["solutions"])
    assert rep["feasibility_rate"] == pytest.approx(sum(s["feasible"] for s in rep["solutions"]) / 2)
    for s in rep["solutions"]:
        assert s["feasible"] == (s["measurement_mse"] <= 2e-3)
    assert rep["timings"]["total"] > 0


def test_demo_runs_offline_and_says_where(tmp_path):
    out = tmp_path / "demo"
    result = run("demo", "--out", out)
    assert result.exit_code == 0, result.output
    rep = report(out)
    assert rep["num_solutions"] == 10 and rep["num_feasible"] == 10
    assert rep["pairwise_perceptual_distance"]["min"] > 0
    assert str(out) in result.output.replace("\n", "")


def test_batch_shards_cover_every_image_once_and_resume(tmp_path):
    import shutil

    inputs = tmp_path / "in"
    inputs.mkdir()
    for p in sample_paths()[:3]:
        shutil.copy(p, inputs / p.name)
    out = tmp_path / "out"
    args = ["batch", inputs, "--from-clean", "--solutions", "2", "--out", out, "--quiet"]
    for shard in ("0/2", "1/2"):
        assert run(*args, "--shard", shard).exit_code == 0
    lines = [json.loads(line) for f in sorted(out.glob("manifest-*.jsonl")) for line in f.read_text().splitlines()]
    assert sorted(r["input"] for r in lines) == sorted(p.name for p in sample_paths()[:3])
    assert all(r["status"] == "ok" and r["summary"]["feasible"] == 2 for r in lines), [(r["status"], r["summary"], r["message"]) for r in lines]
    for p in sample_paths()[:3]:
        assert report(out / p.stem)["num_feasible"] == 2
    # a rerun finds every image complete and redoes nothing
    assert run(*args, "--shard", "0/2").exit_code == 0
    rerun = (out / "manifest-0-of-2.jsonl").read_text().splitlines()[-2:]
    assert all(json.loads(line)["status"] == "skipped" for line in rerun)


def test_same_seed_same_outputs_byte_for_byte(tmp_path):
    """Two runs with the same seed: identical report numbers (timings aside) and identical images."""
    outs = [tmp_path / "a", tmp_path / "b"]
    for out in outs:
        result = run("explore", SAMPLE, "--from-clean", "--solutions", "4", "--out", out, "--quiet", "--seed", "3")
        assert result.exit_code == 0, result.output

    def numbers(folder):
        rep = report(folder)
        for key in ("timings", "command"):
            rep.pop(key)
        rep["settings"].pop("max_memory")  # half the free RAM at the time: not a result
        rep["first_solution"].pop("seconds")
        rep["first_solution"].pop("timings")
        for name in rep["eigen"]:
            rep["eigen"][name].pop("seconds")
            rep["eigen"][name].pop("solver_seconds")
        return json.dumps(rep, sort_keys=True)

    assert numbers(outs[0]) == numbers(outs[1])
    files = sorted(p.relative_to(outs[0]) for p in outs[0].rglob("*.png"))
    assert len(files) >= 9
    for f in files:
        assert (outs[0] / f).read_bytes() == (outs[1] / f).read_bytes(), f
    assert (outs[0] / "eigenpairs.npz").read_bytes() == (outs[1] / "eigenpairs.npz").read_bytes()


def test_cli_defaults_are_the_library_defaults():
    from hvp_explore.cli import cli
    from hvp_explore.settings import DEFAULT_TOL
    from hvp_explore.problems import DEFAULT_TAU

    for name in ("explore", "eig", "batch"):
        params = {p.name: p.default for p in cli.commands[name].params}
        assert params["tol"] == DEFAULT_TOL
        if "tau" in params:
            assert params["tau"] == DEFAULT_TAU


def test_invert_gauss_newton_switch(inverted, tmp_path):
    on = report(inverted)  # SR x4: min(m, n) = 64, so 'auto' refines (feasible; the margin tau / 4 is a target, not a promise)
    assert on["gauss_newton_steps"] >= 1 and "gauss_newton" in on["timings"] and on["measurement_mse"] < 2e-3
    off = tmp_path / "off"
    assert run("invert", SAMPLE, "--from-clean", "--out", off, "--quiet", "--gauss-newton", "off", *FAST).exit_code == 0
    rep = report(off)
    assert rep["gauss_newton_steps"] == 0 and "gauss_newton" not in rep["timings"] and rep["measurement_mse"] < 2e-3


def test_python_warnings_print_as_one_line_and_quiet_silences_them(capsys):
    """A library warning (an eigensolve short of tol warns) prints as the CLI's own one-line warning, not as Python's
    two lines with a line of this project's source, and --quiet silences it as it does every diagnostic."""
    import warnings

    from hvp_explore import ConvergenceWarning
    from hvp_explore.cli._common import setup

    setup(False, 0)
    warnings.warn("H_X: 1 of 3 eigenpairs did not reach tol", ConvergenceWarning)
    assert capsys.readouterr().err.strip() == "warning: H_X: 1 of 3 eigenpairs did not reach tol"
    setup(True, 0)
    warnings.warn("H_X: 2 of 3 eigenpairs did not reach tol", ConvergenceWarning)
    assert capsys.readouterr().err == ""


def test_explore_says_an_unconverged_pencil_once(tmp_path, monkeypatch):
    """A pencil that stops short of tol (its inner solve cut to a budget of 3 products): the report's warning says so,
    with its residual, and Python's own ConvergenceWarning does not say it a second time."""
    from hvp_explore.eigen import generalized

    real = generalized.top_eigenpairs
    monkeypatch.setattr(generalized, "top_eigenpairs", lambda *a, **k: real(*a, **{**k, "max_matvecs": 3}))
    result = run("explore", sample_paths()[1], "--from-clean", "--solutions", "2", "--out", tmp_path / "out")
    assert result.exit_code == 0, result.output
    said = [line for line in result.output.splitlines() if "did not reach tol" in line]
    assert len(said) == 1 and re.match(r"warning: pencil: \d+ of the \d+ eigenpairs kept did not reach tol=0.001", said[0]), said
    assert "ConvergenceWarning" not in result.output
    rep = report(tmp_path / "out")
    assert not rep["eigen"]["pencil"]["all_converged"] and rep["eigen"]["pencil"]["max_relative_residual"] > 1e-3

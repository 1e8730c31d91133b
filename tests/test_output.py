"""What the command line prints and where (issue 23): progress in a log, results on stdout, --json, threads, closed stderr,
one vocabulary across commands (sheet titles, stage folders of another command), and pulse's report on explore's scale."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import hvp_explore.io._progress as progress
from hvp_explore import SuperResolution, load_image, measurement_mse
from hvp_explore.cli import cli
from hvp_explore.data import sample_paths
from hvp_explore.eigen.solvers import EigenResult
from hvp_explore.exploration.explorer import numerical_rank_part
from hvp_explore.io._threads import available_cpus, busy_notice, cgroup_cpu_limit, resolve_threads
from hvp_explore.metrics import load_metric

SAMPLE = str(sample_paths()[0])
FAST = ["--restarts", "2", "--steps", "150"]
F64 = torch.float64
STAMP = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d ")


def run(*args, env=None):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False, env=env)


# --- progress in a log ------------------------------------------------------------------------------------


class _Clock:
    def __init__(self, step: float):
        self.t, self.step = 0.0, step

    def __call__(self) -> float:
        self.t += self.step
        return self.t


def _log_lines(monkeypatch, description, total, advances, *, step=3.0, quiet=None):
    stream = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)
    monkeypatch.setattr(progress, "_clock", _Clock(step))
    with progress.progress_bar(description, total, quiet=quiet) as bar:
        for n, status in advances:
            bar.advance(n, status=status)
    return stream.getvalue().splitlines()


def test_progress_mode_follows_stderr(monkeypatch):
    class Tty(io.StringIO):
        def isatty(self):
            return True

    closed = io.StringIO()
    closed.close()
    for stream, mode in ((Tty(), "bar"), (io.StringIO(), "log"), (None, "off"), (closed, "off")):
        monkeypatch.setattr(sys, "stderr", stream)
        assert progress.progress_mode() == mode
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    assert progress.progress_mode(quiet=True) == "off" and not progress.progress_enabled(quiet=True)


def test_a_log_gets_timestamped_lines_at_most_every_interval(monkeypatch):
    # 100 steps, 3 s each on the bar's clock: a line when 10 s have passed since the last, plus the start and the end
    lines = _log_lines(monkeypatch, "CSGM inversion", 100, [(1, f"MSE {i}") for i in range(100)])
    assert all(STAMP.match(line) for line in lines), lines
    text = [STAMP.sub("", line) for line in lines]
    assert text[0] == "CSGM inversion: started (100 steps)"
    assert text[-1].startswith("CSGM inversion: done (100/100) in ")
    middle = text[1:-1]
    # the clock reads 3 s per call: start at 3, then a line at every fourth advance (12 s later), never more often
    assert len(middle) == 24, middle
    assert middle[0] == "CSGM inversion: 4% (4/100), MSE 3, 12 s, about 4.8 min left"
    assert middle[1].startswith("CSGM inversion: 8% (8/100), MSE 7, 24 s")


def test_a_stage_bar_writes_each_stage_and_quiet_writes_nothing(monkeypatch):
    stages = [(0, "eigenpairs"), (2, "directions"), (1, "feasible steps"), (1, "done")]
    text = [STAMP.sub("", line) for line in _log_lines(monkeypatch, "exploring", 4, stages, step=0.5)]
    assert text == ["exploring: started (4 steps)", "exploring: 0% (0/4), eigenpairs, 0.5 s", "exploring: 50% (2/4), directions, 1.0 s",
                    "exploring: 75% (3/4), feasible steps, 1.5 s", "exploring: done (4/4) in 2.0 s"]
    assert _log_lines(monkeypatch, "exploring", 4, stages, quiet=True) == []


def test_a_stopped_bar_says_where_it_stopped(monkeypatch):
    stream = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)
    monkeypatch.setattr(progress, "_clock", _Clock(1.0))
    with pytest.raises(KeyboardInterrupt), progress.progress_bar("PULSE runs", 10) as bar:
        bar.advance(3)
        raise KeyboardInterrupt
    assert STAMP.sub("", stream.getvalue().splitlines()[-1]) == "PULSE runs: stopped at 30% (3/10) after 2.0 s"


# --- results on stdout, diagnostics on stderr, --json ------------------------------------------------------


def test_generators_list_is_on_stdout_one_row_per_line_and_as_json():
    result = run("generators")
    assert result.exit_code == 0 and result.stderr == ""
    rows = [line for line in result.stdout.splitlines() if "faces" in line and "DigiFace1M" in line]
    assert len(rows) == 1 and "--generator faces" in rows[0]  # `hvp-explore generators | grep faces` prints the row whole
    assert "metrics: " in result.stdout
    data = json.loads(run("generators", "--json").stdout)
    assert "faces" in [g["name"] for g in data["generators"]] and "fmnist" in data["metrics"]


@pytest.fixture(scope="module")
def inverted(tmp_path_factory):
    out = tmp_path_factory.mktemp("output") / "inv"
    result = run("invert", SAMPLE, "--from-clean", "--out", out, *FAST)
    assert result.exit_code == 0, result.output
    return out, result


def test_invert_prints_results_on_stdout_and_progress_lines_on_stderr(inverted):
    out, result = inverted
    report = json.loads((out / "report.json").read_text())
    assert "inversion" in result.stdout and f"outputs in {out}" in result.stdout.replace("\n", "")
    assert f"{report['measurement_mse']:.4g}" in result.stdout
    assert "CSGM inversion: started" in result.stderr and "CSGM inversion" not in result.stdout
    assert all(STAMP.match(line) for line in result.stderr.splitlines() if "CSGM" in line)


def test_json_is_the_report_on_stdout_even_when_quiet(tmp_path):
    out = tmp_path / "inv"
    result = run("invert", SAMPLE, "--from-clean", "--out", out, "--quiet", "--json", *FAST)
    assert result.exit_code == 0 and result.stderr == ""  # --quiet: no progress lines
    printed = json.loads(result.stdout)
    assert printed.pop("out") == str(out)
    assert printed == json.loads((out / "report.json").read_text())


def test_a_closed_stderr_does_not_fail_the_run(tmp_path):
    """`invert ... 2>&-` used to exit 1 without a word (sys.stderr is None then)."""
    out = tmp_path / "inv"
    cmd = [sys.executable, "-c", "from hvp_explore.cli import main; main()", "invert", SAMPLE, "--from-clean", "--out", str(out), *FAST]
    done = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, timeout=300, preexec_fn=lambda: os.close(2),
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0 and f"outputs in {out}" in done.stdout.replace("\n", "")
    assert json.loads((out / "report.json").read_text())["feasible"]


# --- threads ---------------------------------------------------------------------------------------------------


def _cgroup(tmp_path, files: dict[str, str], proc: str) -> dict:
    root = tmp_path / "cgroup"
    root.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    (tmp_path / "proc_cgroup").write_text(proc)
    return {"cgroup_root": root, "proc_cgroup": tmp_path / "proc_cgroup"}


def test_cgroup_quotas_v2_and_v1(tmp_path):
    v2 = _cgroup(tmp_path / "a", {"job/cpu.max": "150000 100000\n", "cpu.max": "max 100000\n"}, "0::/job\n")
    assert cgroup_cpu_limit(v2["cgroup_root"], v2["proc_cgroup"]) == 2  # 1.5 CPUs rounds up
    nested = _cgroup(tmp_path / "b", {"a/cpu.max": "100000 100000\n", "a/b/cpu.max": "max 100000\n"}, "0::/a/b\n")
    assert cgroup_cpu_limit(nested["cgroup_root"], nested["proc_cgroup"]) == 1  # a parent's quota applies
    v1 = _cgroup(tmp_path / "c", {"cpu,cpuacct/cpu.cfs_quota_us": "300000\n", "cpu,cpuacct/cpu.cfs_period_us": "100000\n"},
                 "2:cpu,cpuacct:/\n1:memory:/x\n")
    assert cgroup_cpu_limit(v1["cgroup_root"], v1["proc_cgroup"]) == 3
    unlimited = _cgroup(tmp_path / "d", {"cpu,cpuacct/cpu.cfs_quota_us": "-1\n", "cpu,cpuacct/cpu.cfs_period_us": "100000\n"},
                        "2:cpu,cpuacct:/\n")
    assert cgroup_cpu_limit(unlimited["cgroup_root"], unlimited["proc_cgroup"]) is None


def test_threads_follow_the_option_then_omp_then_the_cpus_allowed(tmp_path):
    where = _cgroup(tmp_path, {"cpu.max": "100000 100000\n"}, "0::/\n")
    cpus = len(os.sched_getaffinity(0))
    assert available_cpus({}, **_cgroup(tmp_path / "none", {}, "0::/\n")) == cpus
    assert available_cpus({}, **where) == 1  # a one-CPU quota on any machine
    assert available_cpus({"SLURM_CPUS_PER_TASK": "1"}, **_cgroup(tmp_path / "none", {}, "0::/\n")) == 1
    assert resolve_threads(None, {}, **where) == (1, "the CPUs this process may use")
    assert resolve_threads(None, {"OMP_NUM_THREADS": "3"}, **where) == (3, "OMP_NUM_THREADS")
    assert resolve_threads(None, {"OMP_NUM_THREADS": "4,2"}, **where) == (4, "OMP_NUM_THREADS")
    assert resolve_threads(5, {"OMP_NUM_THREADS": "3"}, **where) == (5, "--threads")
    with pytest.raises(ValueError, match="OMP_NUM_THREADS must be a positive integer, got 'two'"):
        resolve_threads(None, {"OMP_NUM_THREADS": "two"})
    # other jobs are invisible to affinity and quotas: a busy machine gets a notice, a chosen count none
    assert "load average 7.5 on the 2 CPUs" in busy_notice(2, "the CPUs this process may use", load=7.5)
    assert busy_notice(2, "the CPUs this process may use", load=0.3) is None
    assert busy_notice(2, "--threads", load=7.5) is None and busy_notice(1, "the CPUs this process may use", load=7.5) is None


def test_threads_option_sets_torch_and_bad_values_are_one_line(tmp_path):
    before = torch.get_num_threads()
    try:
        result = run("invert", SAMPLE, "--from-clean", "--out", tmp_path / "a", "--quiet", "--threads", "2", *FAST)
        assert result.exit_code == 0 and torch.get_num_threads() == 2
        result = run("invert", SAMPLE, "--from-clean", "--out", tmp_path / "b", "--quiet", *FAST, env={"OMP_NUM_THREADS": "1"})
        assert result.exit_code == 0 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    result = run("invert", SAMPLE, "--out", tmp_path / "c", "--threads", "0")
    assert result.exit_code == 2 and "--threads" in result.output and "Traceback" not in result.output
    result = run("invert", SAMPLE, "--from-clean", "--out", tmp_path / "d", env={"OMP_NUM_THREADS": "lots"})
    assert result.exit_code == 2 and result.output.strip().splitlines()[-1].startswith("Error: OMP_NUM_THREADS must be")
    assert not (tmp_path / "d").exists()


# --- one vocabulary: stage folders of other commands, sheet titles, the H_Y message ---------------------------------


@pytest.mark.parametrize("command, writer, wanted", [("eig", "explore", "invert"), ("render", "render", "project"),
                                                     ("project", "pulse", "eig")])
def test_a_stage_given_another_commands_folder_names_it(tmp_path, command, writer, wanted):
    folder = tmp_path / "run1"
    folder.mkdir()
    (folder / ".hvp-explore.json").write_text(json.dumps({"tool": "hvp-explore", "command": f"hvp-explore {writer} x.png --out run1"}))
    result = run(command, folder, "--out", tmp_path / "next")
    assert result.exit_code == 2
    line = result.output.strip()
    assert len(line.splitlines()) == 1 and "Traceback" not in line
    assert f"was written by 'hvp-explore {writer}', which keeps no state.pt" in line
    assert f"'{command}' reads the folder of 'hvp-explore {wanted}'" in line
    # a folder hvp-explore did not write keeps the plain message
    plain = run(command, tmp_path, "--out", tmp_path / "next")
    assert plain.exit_code == 2 and "holds no state.pt" in plain.output


def test_h_y_message_says_the_pairs_beyond_the_rank_are_dropped():
    from hvp_explore.io.stages import _eigen_warnings

    values = torch.tensor([2.0, 1.0, 1e-12, 0.0], dtype=F64)
    result = EigenResult(values=values, vectors=torch.eye(4, dtype=F64), residuals=torch.full((4,), 1e-13, dtype=F64),
                         converged=torch.ones(4, dtype=torch.bool), matvecs=0, check_matvecs=0, seconds=0.0, solver="jacobian",
                         tol=1e-4, requested=4)
    (message,) = _eigen_warnings("H_Y", numerical_rank_part(result))
    assert message.startswith("H_Y: 2 of the 4 eigenpairs asked for lie beyond its numerical rank 2")
    assert "are dropped" in message and "used as computed" not in message and "did not reach" not in message
    unconverged = EigenResult(values=values[:2], vectors=torch.eye(4, dtype=F64)[:, :2], residuals=torch.tensor([1e-13, 0.5], dtype=F64),
                              converged=torch.tensor([True, False]), matvecs=0, check_matvecs=0, seconds=0.0, solver="lanczos",
                              tol=1e-4, requested=2)
    (message,) = _eigen_warnings("H_X", unconverged)
    assert message.startswith("H_X: 1 of the 2 eigenpairs kept did not reach tol=0.0001") and "used as computed" in message


# --- pulse's report on explore's scale ---------------------------------------------------------------------------


def _png_measures(folder: Path, report: dict, first_file: str, clean: torch.Tensor, metric) -> dict:
    """Every shared per-solution figure recomputed from the PNGs alone, the same way for both commands."""
    forward = SuperResolution((1, 32, 32), 4)
    y = forward(clean[None])
    first = load_image(folder / first_file)[None]
    out = {"measurement_mse": [], "perceptual_distance": [], "ground_truth_mse": []}
    for s in report["solutions"]:
        x = load_image(folder / s["file"])[None]
        out["measurement_mse"].append(float(measurement_mse(forward, x, y)))
        out["perceptual_distance"].append(float(metric(x, first)))
        # on [0, 1]: the 8-bit pixels' mean squared difference over 255^2
        pixels = np.asarray(np.round((x[0].numpy() + 1) * 127.5), dtype=np.float64)
        truth = np.asarray(np.round((clean.numpy() + 1) * 127.5), dtype=np.float64)
        out["ground_truth_mse"].append(float(np.mean((pixels - truth) ** 2) / 255**2))
    return out


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("compare")
    explore, pulse = base / "explore", base / "pulse"
    assert run("explore", SAMPLE, "--from-clean", "--solutions", "2", "--k", "2", "--out", explore, "--quiet", *FAST).exit_code == 0
    result = run("pulse", SAMPLE, "--from-clean", "--solutions", "3", "--steps", "60", "--out", pulse, "--quiet")
    assert result.exit_code == 0, result.output
    return explore, pulse


def test_pulse_report_figures_are_those_of_its_pngs(two_runs):
    _, folder = two_runs
    report = json.loads((folder / "report.json").read_text())
    clean, metric = load_image(SAMPLE), load_metric("fmnist")
    assert report["metric"] == "fmnist"
    png = _png_measures(folder, report, report["first_solution"]["file"], clean, metric)
    solutions = report["solutions"]
    for i, s in enumerate(solutions):
        assert s["measurement_mse"] == pytest.approx(png["measurement_mse"][i], rel=1e-5, abs=1e-9)
        assert s["feasible"] == (s["measurement_mse"] <= report["tau"])
        assert s["perceptual_distance"] == pytest.approx(png["perceptual_distance"][i], rel=1e-4, abs=1e-7)
        assert report["ground_truth_mse"]["solutions"][i] == pytest.approx(png["ground_truth_mse"][i], rel=1e-6)
        assert 0 <= s["measurement_mse"] <= 1 and 0 <= report["ground_truth_mse"]["solutions"][i] <= 1
    assert report["feasibility_rate"] == pytest.approx(sum(s["feasible"] for s in solutions) / len(solutions))
    first = next((s for s in solutions if s["feasible"]), solutions[0])
    assert report["first_solution"]["file"] == first["file"] and first["perceptual_distance"] == pytest.approx(0, abs=1e-9)
    found = [load_image(folder / s["file"])[None] for s in solutions if s["feasible"]]
    pairs = [float(metric(a, b)) for i, a in enumerate(found) for b in found[i + 1:]]
    if pairs:
        assert report["pairwise_perceptual_distance"]["min"] == pytest.approx(min(pairs), rel=1e-4)
        assert report["pairwise_perceptual_distance"]["mean"] == pytest.approx(float(np.mean(pairs)), rel=1e-4)


def test_explore_and_pulse_reports_share_fields_that_mean_the_same(two_runs):
    explore, pulse = two_runs
    reports = {name: json.loads((folder / "report.json").read_text()) for name, folder in (("explore", explore), ("pulse", pulse))}
    shared = ("tau", "generator", "metric", "timings", "solutions", "num_solutions", "num_feasible", "pairwise_perceptual_distance",
              "first_solution", "ground_truth_mse")
    for name, report in reports.items():
        assert all(key in report for key in shared), (name, [k for k in shared if k not in report])
    assert set(reports["explore"]["solutions"][0]) <= set(reports["pulse"]["solutions"][0])
    clean, metric = load_image(SAMPLE), load_metric("fmnist")
    for name, folder in (("explore", explore), ("pulse", pulse)):
        report = reports[name]
        png = _png_measures(folder, report, report["first_solution"]["file"], clean, metric)
        got = {"measurement_mse": [s["measurement_mse"] for s in report["solutions"]],
               "perceptual_distance": [s["perceptual_distance"] for s in report["solutions"]],
               "ground_truth_mse": report["ground_truth_mse"]["solutions"]}
        for key, values in got.items():
            np.testing.assert_allclose(values, png[key], rtol=1e-4, atol=1e-8, err_msg=f"{name}: {key}")


def test_pulse_and_render_sheets_have_titles_and_pulse_shows_the_truth(two_runs, monkeypatch, tmp_path):
    import hvp_explore.io.stages as stages
    from hvp_explore.exploration.explorer import Solution
    from hvp_explore.io.stages import RunState

    calls = []
    monkeypatch.setattr(stages, "contact_sheet", lambda images, labels, path, **kw: calls.append((labels, kw.get("title"))))
    clean = load_image(SAMPLE)
    forward = SuperResolution((1, 32, 32), 4)
    from hvp_explore.problems.observation import Observation

    observation = Observation(forward, forward(clean[None]), clean[:, ::4, ::4], clean, SAMPLE)
    state = RunState(generator="default", generator_state=None, problem={"kind": "sr", "image_shape": [1, 32, 32], "factor": 4,
                                                                         "kernel": "area"},
                     y=observation.y, display=observation.display, clean=clean, source=SAMPLE, latent=torch.zeros(512),
                     image=clean[None], inversion={"measurement_mse": 0.0}, metric="fmnist",
                     directions={"mode": "eglass", "labels": ["v1"]})
    solutions = [Solution(latent=torch.zeros(512), image=clean, direction=d, eta=1.0, measurement_mse=0.0, feasible=True,
                          perceptual_distance=0.0, status="geometric") for d in ("+v1", "-v1")]
    stages.write_render(tmp_path, state, observation, solutions, [], torch.zeros(2, 2), {}, tau=2e-3, command="test")
    labels, title = calls[-1]
    assert title.startswith("e-GLASS: 2 solutions of super-resolution x4, generator default") and "tau = 0.002" in title
    assert "ground truth" in labels
    # the pulse sheet of the module's run: its title and the truth, redrawn from the same writer
    from hvp_explore.inversion import PulseResult

    images = torch.stack([clean, clean])
    result = PulseResult(latents=torch.zeros(2, 512), images=images, measurement_mse=torch.zeros(2), feasible=torch.ones(2, dtype=torch.bool),
                         seconds_per_run=torch.ones(2), seconds=2.0, feasibility_rate=1.0, steps_run=torch.ones(2, dtype=torch.int64),
                         runs=2, batch=1, eps=2e-3)
    (tmp_path / "p").mkdir()
    report = stages.write_pulse(tmp_path / "p", result, observation, generator="default", problem=state.problem, command="test",
                                metric=load_metric("fmnist"), metric_name="fmnist")
    labels, title = calls[-1]
    assert title.startswith("PULSE: 2 independent inversions of super-resolution x4, generator default")
    assert "2 of 2 with measurement MSE <= tau = 0.002" in title and labels[:2] == ["observation", "ground truth"]
    assert report["ground_truth_mse"]["solutions"] == pytest.approx([0.0, 0.0], abs=1e-12)
    assert report["pairwise_perceptual_distance"]["max"] == pytest.approx(0.0, abs=1e-9)

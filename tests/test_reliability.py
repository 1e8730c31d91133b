"""Hostile inputs of issue #15: each case ends as docs/reliability.md promises (one line and exit 2, or a bounded run).

Cases: devices, memory budgets, tampered and code-running stage files, factories, decompression bombs,
undecodable and control-character names, overflowing values, degenerate problems (bilevel image,
factor 1), huge N, output folders (inputs inside, --overwrite, reruns), batches, signals, permissions
(umask), the temporary folder, latents for regeneration, and readable output. Every run uses the tiny
default generator with a few steps.
"""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import click
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from hvp_explore.cli import Terminated, cli
from hvp_explore.data import sample_paths

SAMPLE = sample_paths()[0]
FAST = ["--restarts", "1", "--steps", "5", "--iagan", "off", "--gauss-newton", "off", "--quiet"]
# a first solution under tau in a second (SR x4 of a shipped sample: Gauss-Newton finishes CSGM), for runs that explore
FEASIBLE = ["--restarts", "1", "--steps", "30", "--iagan", "off", "--quiet"]
ROOT = Path(__file__).resolve().parents[1]


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def one_line_error(result, needle: str, *, status: int = 2) -> str:
    """The run ended with status 2 and a single ``Error:`` line holding ``needle``, no traceback."""
    assert result.exit_code == status, (result.exit_code, result.output, result.exception)
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert lines and lines[-1].startswith("Error: "), result.output
    assert needle.lower() in lines[-1].lower(), (needle, result.output)
    assert "Traceback" not in result.output
    return lines[-1]


def nothing_written(parent: Path, name: str = "out") -> None:
    assert not (parent / name).exists(), "no output folder on failure"
    assert not [p for p in parent.iterdir() if p.name.startswith(f".{name}.hvp-")], "no temporary folder left behind"


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory):
    """An 'invert' folder of the default generator (a few steps: only its state.pt matters here)."""
    out = tmp_path_factory.mktemp("rel") / "inv"
    result = invoke("invert", SAMPLE, "--from-clean", "--out", out, *FAST)
    assert result.exit_code == 0, result.output
    return out


def edited_copy(run_folder: Path, tmp_path: Path, edit) -> Path:
    """A copy of ``run_folder`` whose state.pt was changed by ``edit(dict)`` (as a hostile sender would)."""
    import shutil

    folder = tmp_path / "edited"
    shutil.copytree(run_folder, folder)
    data = torch.load(folder / "state.pt", weights_only=True)
    edit(data)
    torch.save(data, folder / "state.pt")
    return folder


# --------------------------------------------------------------------------------------------------
# devices


@pytest.mark.parametrize("device, needle", [
    pytest.param("cuda", "not available",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU: plain cuda is available")),
    (f"cuda:{torch.cuda.device_count()}", "not available"),  # one index past the last GPU: never available
    pytest.param("mps", "not available",
                 marks=pytest.mark.skipif(torch.backends.mps.is_available(), reason="this machine has Apple's mps device")),
    ("meta", "--device must be"), ("gpu", "--device must be"), ("cuda:x", "--device must be"),
])
def test_unavailable_devices_are_one_line_before_any_work(device, needle, tmp_path):
    for command in (["invert", SAMPLE, "--from-clean"], ["explore", SAMPLE, "--from-clean"], ["demo"]):
        tic = time.perf_counter()
        one_line_error(invoke(*command, "--device", device, "--out", tmp_path / "out", "--quiet"), needle)
        assert time.perf_counter() - tic < 5
        nothing_written(tmp_path)


def test_stage_commands_check_the_device_first(run_folder, tmp_path):
    one_line_error(invoke("eig", run_folder, "--device", "meta", "--out", tmp_path / "out"), "--device must be")
    if not torch.cuda.is_available():
        one_line_error(invoke("eig", run_folder, "--device", "cuda", "--out", tmp_path / "out"), "not available")
    nothing_written(tmp_path)


def test_library_refuses_a_missing_device():
    from hvp_explore.generators import GeneratorError, load_generator

    with pytest.raises(GeneratorError, match="not supported"):
        load_generator("default", device="meta")
    if not torch.cuda.is_available():
        with pytest.raises(GeneratorError, match="not available"):
            load_generator("default", device="cuda")


# --------------------------------------------------------------------------------------------------
# memory


def test_memory_budget_too_small_for_one_product(tmp_path, monkeypatch):
    def no_inversion(*args, **kwargs):
        raise AssertionError("the budget must be refused before the inversion")

    monkeypatch.setattr("hvp_explore.exploration.explorer.invert", no_inversion)
    result = invoke("explore", SAMPLE, "--from-clean", "--max-memory", "1MB", "--k", "2", "--solutions", "2",
                    "--out", tmp_path / "out", *FAST)
    one_line_error(result, "more than the --max-memory budget")
    nothing_written(tmp_path)


@pytest.mark.parametrize("value", ["12xyz", "-1GB", "", "1e9"])
def test_memory_budget_that_is_not_a_size(value, tmp_path):
    one_line_error(invoke("explore", SAMPLE, "--max-memory", value, "--out", tmp_path / "out"), "--max-memory must be")


def test_huge_n_beyond_the_budget_is_refused_before_work(tmp_path):
    tic = time.perf_counter()
    result = invoke("explore", SAMPLE, "--from-clean", "--solutions", "10000000", "--max-memory", "100MB",
                    "--out", tmp_path / "out", *FAST)
    one_line_error(result, "--solutions 10000000 needs about")
    assert time.perf_counter() - tic < 10  # before the inversion
    nothing_written(tmp_path)


def _with_directions(n: int, q: int):
    """Edit for state.pt: eigenpairs and q directions as 'eig' and 'project' would store them."""
    def edit(data):
        g = torch.Generator().manual_seed(0)
        V = torch.linalg.qr(torch.randn(n, 4, generator=g, dtype=torch.float64))[0]
        data["metric"] = "fmnist"
        data["eigen"] = {f"{key}_{side}": value for side in ("y", "x") for key, value in
                         (("values", torch.tensor([4.0, 3.0, 2.0, 1.0], dtype=torch.float64)), ("vectors", V),
                          ("residuals", torch.zeros(4, dtype=torch.float64)), ("converged", torch.ones(4, dtype=torch.bool)))}
        data["directions"] = {"vectors": V[:, :q], "labels": [f"v{i}" for i in range(q, 0, -1)], "indices": list(range(q, 0, -1)),
                              "combinations": [None] * q, "mode": "eglass"}
    return edit


def test_render_more_solutions_than_the_directions_give_is_refused(run_folder, tmp_path):
    folder = edited_copy(run_folder, tmp_path, _with_directions(512, 2))
    result = invoke("render", folder, "--solutions", "100000", "--out", tmp_path / "out")
    one_line_error(result, "more than the 4 solutions the 2 directions")
    nothing_written(tmp_path)


# --------------------------------------------------------------------------------------------------
# tampered stage files: validated against the schema, one line each


def _set(key, value):
    return lambda data: data.__setitem__(key, value)


TAMPERED = {
    "extra key": (_set("payload", "x"), "unexpected entry 'payload'"),
    "missing key": (lambda data: data.pop("latent"), "missing entry 'latent'"),
    "wrong type": (_set("latent", [0.0] * 512), "'latent' must be a tensor"),
    "wrong dtype": (_set("latent", torch.zeros(512, dtype=torch.int64)), "'latent' must be a floating-point tensor"),
    "NaN latent": (_set("latent", torch.full((512,), float("nan"))), "'latent' holds NaN"),
    "wrong image shape": (_set("image", torch.zeros(1, 1, 8, 8)), "'image' must have shape (1, 1, 32, 32)"),
    "bad problem kind": (lambda data: data["problem"].__setitem__("kind", "deblur"), "'problem' kind"),
    "unknown metric": (_set("metric", "tempfile:mkdtemp"), "'metric' must be one of"),
    "not a dict": (None, "must be a dict"),
    "eigenvectors of another length": (_with_directions(100, 2), "'eigen' vectors_y must have shape (512, 4)"),
    "measurements of another shape": (_set("y", torch.zeros(1, 5)), "the measurements in state.pt have shape (1, 5)"),
}


@pytest.mark.parametrize("case", list(TAMPERED))
def test_tampered_state_file_is_one_line(case, run_folder, tmp_path):
    edit, needle = TAMPERED[case]
    if edit is None:
        folder = tmp_path / "edited"
        folder.mkdir()
        torch.save([1, 2, 3], folder / "state.pt")
    else:
        folder = edited_copy(run_folder, tmp_path, edit)
    one_line_error(invoke("eig", folder, "--out", tmp_path / "out", "--quiet"), needle)
    nothing_written(tmp_path)


def test_wrong_latent_length_is_one_line(run_folder, tmp_path):
    folder = edited_copy(run_folder, tmp_path, _set("latent", torch.zeros(100)))
    one_line_error(invoke("eig", folder, "--out", tmp_path / "out"), "has 100 values but generator default takes latents of 512")
    folder = edited_copy(run_folder, tmp_path / "b", _set("generator_state", {"weight": torch.zeros(3)}))
    one_line_error(invoke("eig", folder, "--out", tmp_path / "out"), "fine-tuned weights in state.pt are not those of generator")
    nothing_written(tmp_path)


# --------------------------------------------------------------------------------------------------
# stage folders are data: a generator named by a file or a factory is never loaded on the folder's word


@pytest.fixture
def sentinel_module(tmp_path, monkeypatch):
    """A module whose factory writes a file when called (it returns the default generator)."""
    sentinel = tmp_path / "RAN"
    (tmp_path / "sender_code.py").write_text(
        "import pathlib\n"
        "def make():\n"
        f"    pathlib.Path({str(sentinel)!r}).write_text('ran')\n"
        "    from hvp_explore.generators import load_generator\n"
        "    return load_generator('default')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    return sentinel


def test_a_factory_named_in_a_stage_file_runs_only_when_repeated(run_folder, tmp_path, sentinel_module):
    folder = edited_copy(run_folder, tmp_path, _set("generator", "sender_code:make"))
    out = tmp_path / "out"
    for command in ("eig", "project", "render"):
        one_line_error(invoke(command, folder, "--out", out), "pass --generator sender_code:make")
    one_line_error(invoke("eig", folder, "--generator", "default", "--out", out), "is not the generator this run was made with")
    assert not sentinel_module.exists(), "the folder's factory must not run"
    nothing_written(tmp_path)
    # repeated on the command line, or trusted, it loads (--k 600 then stops the run right after loading)
    for extra in (["--generator", "sender_code:make"], ["--trust-generator"]):
        one_line_error(invoke("eig", folder, *extra, "--k", "600", "--out", out), "--k must be between 1 and n - 1 = 511")
        assert sentinel_module.read_text() == "ran"
        sentinel_module.unlink()


class _RunsCode:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (Path.write_text, (Path(self.path), "ran"))


@pytest.mark.parametrize("suffix", [".pkl", ".pt"])
def test_a_pickle_or_torchscript_path_in_a_stage_file_is_not_loaded(suffix, run_folder, tmp_path):
    sentinel = tmp_path / "RAN"
    evil = tmp_path / f"network{suffix}"
    evil.write_bytes(pickle.dumps({"G_ema": _RunsCode(sentinel)}))
    folder = edited_copy(run_folder, tmp_path, _set("generator", str(evil)))
    one_line_error(invoke("eig", folder, "--out", tmp_path / "out"), "--trust-generator")
    assert not sentinel.exists()


def test_registered_names_in_stage_files_load_without_repeating(run_folder, tmp_path):
    from hvp_explore.io.stages import generator_to_load, load_state

    state = load_state(run_folder)
    assert state.generator == "default" and generator_to_load(state) == "default"
    with pytest.raises(ValueError, match="runs code when loaded"):
        generator_to_load(type(state)(**{**state.__dict__, "generator": "x.pkl"}))


# --------------------------------------------------------------------------------------------------
# factories on the command line: anything they do becomes one line


def test_factories_that_exit_abort_or_return_the_wrong_thing(tmp_path, monkeypatch):
    (tmp_path / "user_factories.py").write_text(
        "import sys, torch\n"
        "def exits():\n    sys.exit(0)\n"
        "def interrupts():\n    raise KeyboardInterrupt\n"
        "def not_a_module():\n    return 'G'\n"
        "def no_latent_size():\n    return torch.nn.Linear(4, 4)\n"
        "class OneAtATime(torch.nn.Module):\n"
        "    latent_dim = 4\n"
        "    def forward(self, z):\n"
        "        return torch.tanh(z[:1].sum()).expand(1, 1, 2, 2) if z.shape[0] == 1 else z.view(1, 1, 2, 2, 9)\n"
        "def batch_fails():\n    return OneAtATime()\n"
        "sys_exit_on_import = None\n")
    (tmp_path / "exits_on_import.py").write_text("import sys\nsys.exit(3)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    cases = {
        "sys:exit": "names the Python standard library",
        "os:abort": "names the Python standard library",
        "tempfile:mkdtemp": "names the Python standard library",
        "user_factories:exits": "failed: SystemExit",
        "user_factories:interrupts": "failed: KeyboardInterrupt",
        "user_factories:not_a_module": "returned str, expected a torch.nn.Module",
        "user_factories:no_latent_size": "has no latent_dim attribute",
        "user_factories:batch_fails": "latent of shape (2, 4)",
        "exits_on_import:make": "cannot import module 'exits_on_import'",
    }
    for spec, needle in cases.items():
        result = invoke("invert", SAMPLE, "--from-clean", "--generator", spec, "--out", tmp_path / "out", "--quiet")
        one_line_error(result, needle)
    nothing_written(tmp_path)


# --------------------------------------------------------------------------------------------------
# input files


def test_decompression_bomb_is_refused_from_its_header(tmp_path):
    bomb = tmp_path / "bomb.png"
    Image.new("1", (12000, 12000)).save(bomb)  # 144 megapixels in a few kilobytes
    assert bomb.stat().st_size < 1 << 20
    tic = time.perf_counter()
    with _no_warnings():
        result = invoke("invert", bomb, "--from-clean", "--resize", "--out", tmp_path / "out")
    one_line_error(result, "12000x12000 pixels (144 megapixels), more than the 67 megapixels")
    assert time.perf_counter() - tic < 1.0
    from hvp_explore.io.images import ImageError, load_image

    tic = time.perf_counter()
    with pytest.raises(ImageError, match="nothing was decoded"):
        load_image(bomb)
    assert time.perf_counter() - tic < 0.5


class _no_warnings:
    """No warning (Pillow's DecompressionBombWarning included) escapes the block."""

    def __enter__(self):
        import warnings

        self._catch = warnings.catch_warnings(record=True)
        self.records = self._catch.__enter__()
        warnings.simplefilter("always")
        return self

    def __exit__(self, *exc):
        self._catch.__exit__(*exc)
        assert not [w for w in self.records if "DecompressionBomb" in type(w.message).__name__], self.records


@pytest.mark.parametrize("name, shown", [(b"bad\xff\xfe.png", "bad\\xff\\xfe.png"), (b"two\nlines.png", "two\\nlines.png")])
def test_undecodable_or_control_character_names_are_one_escaped_line(name, shown, tmp_path):
    path = os.path.join(os.fsencode(tmp_path), name)
    with open(path, "wb") as f:
        f.write(SAMPLE.read_bytes())
    result = CliRunner().invoke(cli, ["invert", os.fsdecode(path), "--from-clean", "--out", str(tmp_path / "out"), "--quiet"])
    line = one_line_error(result, shown)
    assert "rename it" in line
    out = os.fsdecode(os.path.join(os.fsencode(tmp_path), b"out\nput"))
    one_line_error(CliRunner().invoke(cli, ["invert", str(SAMPLE), "--from-clean", "--out", out]), "out\\nput")


@pytest.mark.parametrize("args, needle", [
    (["--noise", "1e300"], "--noise must be a finite number"),
    (["--noise", "-0.1"], "--noise must be a standard deviation"),
    (["--eta-max", "1e308"], "--eta-max must be a finite number"),
    (["--tau", "nan"], "--tau must be a positive finite number"),
    (["--seed", str(2**70)], "--seed must be an integer from 0"),
    (["--seed", "-1"], "--seed must be an integer from 0"),
    (["--factor", "0"], "--factor must be a positive integer"),
])
def test_values_that_overflow_or_make_no_sense_are_refused_up_front(args, needle, tmp_path):
    tic = time.perf_counter()
    one_line_error(invoke("explore", SAMPLE, "--from-clean", *args, "--out", tmp_path / "out"), needle)
    assert time.perf_counter() - tic < 2  # before the generator loads


def test_measurements_that_overflow_float32_are_refused(tmp_path):
    y = tmp_path / "y.npy"
    np.save(y, np.full(64, 1e308))
    one_line_error(invoke("invert", y, "--problem", "cs", "--out", tmp_path / "out"), "must stay within")
    nothing_written(tmp_path)


def test_an_output_folder_that_cannot_be_created_fails_before_the_run(tmp_path, monkeypatch):
    # A folder whose mode bits allow writing but which refuses new entries (/proc, a read-only mount, a
    # full quota): only creating one tells. Simulated for one folder so the test runs everywhere, as root too.
    import errno
    import tempfile

    locked = tmp_path / "read-only-mount"
    locked.mkdir()
    real_mkdtemp = tempfile.mkdtemp

    def mkdtemp(*args, dir=None, **kwargs):
        if dir is not None and Path(dir) == locked:
            raise OSError(errno.EROFS, "Read-only file system")
        return real_mkdtemp(*args, dir=dir, **kwargs)

    monkeypatch.setattr(tempfile, "mkdtemp", mkdtemp)
    tic = time.perf_counter()
    one_line_error(invoke("invert", SAMPLE, "--from-clean", "--out", locked / "out"), "does not accept new folders (Read-only file system)")
    assert time.perf_counter() - tic < 2
    assert list(locked.iterdir()) == []


# --------------------------------------------------------------------------------------------------
# degenerate problems end with a result that says it did not reach tau, within the steps asked for


def test_bilevel_image_ends_with_a_clear_result(tmp_path):
    board = (np.indices((32, 32)).sum(0) // 4 % 2 * 255).astype(np.uint8)
    path = tmp_path / "bilevel.png"
    Image.fromarray(board).convert("1").save(path)
    tic = time.perf_counter()
    result = invoke("invert", path, "--from-clean", "--factor", "2", "--out", tmp_path / "out", *FAST[:-1])
    assert result.exit_code == 0, result.output
    assert time.perf_counter() - tic < 60
    rep = json.loads((tmp_path / "out" / "report.json").read_text())
    assert rep["steps_run"] <= 5 and rep["feasible"] is False
    assert rep["warnings"] and "did not reach tau" in rep["warnings"][0]
    assert "did not reach tau" in result.output


def test_factor_1_ends_within_the_steps(tmp_path):
    tic = time.perf_counter()
    result = invoke("invert", SAMPLE, "--from-clean", "--factor", "1", "--out", tmp_path / "out", *FAST)
    assert result.exit_code == 0, result.output
    assert time.perf_counter() - tic < 60
    rep = json.loads((tmp_path / "out" / "report.json").read_text())
    assert rep["steps_run"] <= 5
    assert rep["feasible"] == (rep["measurement_mse"] <= rep["tau"]) and bool(rep["warnings"]) != rep["feasible"]


def test_explore_from_an_infeasible_first_solution_says_so(tmp_path):
    result = invoke("explore", SAMPLE, "--from-clean", "--factor", "1", "--solutions", "2", "--k", "2", "--out", tmp_path / "out",
                    *FAST)
    assert result.exit_code == 0, result.output
    rep = json.loads((tmp_path / "out" / "report.json").read_text())
    assert any("did not reach tau" in w or "exceeds tau" in w for w in rep["warnings"])


# --------------------------------------------------------------------------------------------------
# output folders


def test_out_may_never_contain_the_input(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    clean = folder / "clean.png"
    clean.write_bytes(SAMPLE.read_bytes())
    (folder / "notes.txt").write_text("unrelated")
    for out in (folder, tmp_path):
        for extra in ([], ["--overwrite"]):
            one_line_error(invoke("invert", clean, "--from-clean", "--out", out, *extra, *FAST), "would contain the input")
    mask = folder / "mask.png"
    Image.fromarray(np.pad(np.full((8, 8), 255, np.uint8), 12)).save(mask)
    result = invoke("invert", SAMPLE, "--from-clean", "--problem", "inpaint", "--mask", mask, "--out", folder, "--overwrite")
    one_line_error(result, "would contain the input")
    assert sorted(p.name for p in folder.iterdir()) == ["clean.png", "mask.png", "notes.txt"]
    assert clean.read_bytes() == SAMPLE.read_bytes()


def test_stage_output_may_not_replace_its_input_folder(run_folder, tmp_path):
    one_line_error(invoke("eig", run_folder, "--out", run_folder, "--overwrite"), "would contain the input")
    assert (run_folder / "state.pt").is_file()


# --------------------------------------------------------------------------------------------------
# batch


@pytest.fixture
def batch_inputs(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.png").write_bytes(SAMPLE.read_bytes())
    return folder


def test_batch_bad_global_option_is_one_line_even_quiet_and_writes_nothing(batch_inputs, tmp_path):
    for args, needle in ((["--factor", "0"], "--factor must be"), (["--factor", "5"], "factor"),
                         (["--box", "30,30,8,8", "--problem", "inpaint"], "box"), (["--shard", "2/1"], "--shard")):
        result = invoke("batch", batch_inputs, "--from-clean", *args, "--out", tmp_path / "out", "--quiet")
        one_line_error(result, needle)
        assert not (tmp_path / "out").exists(), args  # no manifest, no folder


def test_batch_undecodable_name_never_blocks_and_overwrite_reaches_each_image(batch_inputs, tmp_path):
    with open(os.path.join(os.fsencode(batch_inputs), b"\xff\xfe.png"), "wb") as f:
        f.write(SAMPLE.read_bytes())
    out = tmp_path / "out"
    args = ["batch", batch_inputs, "--from-clean", "--solutions", "2", "--k", "2", "--out", out, *FEASIBLE]
    for attempt in range(2):  # the bad name is an error each time, the good image is done then skipped
        result = invoke(*args)
        assert result.exit_code == 1 and "1 of 2 image(s) failed" in result.output, result.output
        records = [json.loads(line) for line in (out / "manifest-0-of-1.jsonl").read_text().splitlines()]
        latest = {r["input"]: r for r in records}
        assert latest["\\xff\\xfe.png"]["status"] == "error" and "not valid UTF-8" in latest["\\xff\\xfe.png"]["message"]
        assert latest["a.png"]["status"] == ("ok" if attempt == 0 else "skipped")
    first = (out / "a" / ".hvp-explore.json").read_text()
    result = invoke(*args, "--overwrite")  # --overwrite redoes the complete image (its folder is replaced)
    records = [json.loads(line) for line in (out / "manifest-0-of-1.jsonl").read_text().splitlines()]
    assert records[-2]["input"] == "a.png" and records[-2]["status"] == "ok", records[-2:]
    assert (out / "a" / ".hvp-explore.json").read_text() != first


# --------------------------------------------------------------------------------------------------
# signals


def test_sigterm_is_handled_like_ctrl_c(tmp_path):
    """SIGTERM (Slurm's time limit) while the output is being written: message, temporary folder removed, exit 143."""
    out = tmp_path / "out"
    script = (
        "import sys, time\n"
        "import hvp_explore.io.stages as stages\n"
        "real = stages.write_inversion\n"
        "def slow(folder, *a, **k):\n"
        "    report = real(folder, *a, **k)\n"
        "    print('WRITING', folder, flush=True)\n"
        "    time.sleep(120)\n"
        "    return report\n"
        "stages.write_inversion = slow\n"
        "from hvp_explore.cli import main\n"
        f"sys.argv = ['hvp-explore', 'invert', {str(SAMPLE)!r}, '--from-clean', '--out', {str(out)!r}, "
        + ", ".join(repr(a) for a in FAST) + "]\n"
        "main()\n")
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    line = proc.stdout.readline()
    assert line.startswith("WRITING"), (line, proc.stderr.read() if proc.poll() is not None else "")
    temporary = Path(line.split(maxsplit=1)[1].strip())
    assert temporary.is_dir() and temporary.name.startswith(".out.hvp-new-")
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert err.strip().splitlines()[-1].startswith("terminated (SIGTERM): no partial output was written"), err
    assert "Traceback" not in err
    assert not temporary.exists() and not out.exists()


@pytest.mark.parametrize("error, status, word", [(KeyboardInterrupt, 130, "interrupted"), (Terminated, 143, "terminated")])
def test_interrupts_during_start_up_are_one_line(error, status, word, monkeypatch, capsys):
    import hvp_explore.cli.commands as commands
    from hvp_explore.cli import main

    def raise_it(*args, **kwargs):
        raise error

    monkeypatch.setattr(commands, "cli", raise_it)
    monkeypatch.setattr(sys, "argv", ["hvp-explore", "--help"])
    saved = signal.getsignal(signal.SIGTERM)
    try:
        with pytest.raises(SystemExit) as info:
            main()
    finally:
        signal.signal(signal.SIGTERM, saved)
    assert info.value.code == status
    assert capsys.readouterr().err.strip().startswith(word)


def test_interrupts_inside_a_command_are_one_line(monkeypatch):
    from hvp_explore.cli import _common

    for error, status in ((KeyboardInterrupt, 130), (Terminated, 143)):
        group = _common.Group(name="g")

        @group.command()
        def boom():
            raise error

        result = CliRunner().invoke(group, ["boom"])
        assert result.exit_code == status and "no partial output was written" in result.output


# --------------------------------------------------------------------------------------------------
# sharing: permissions follow the umask, nothing left in $TMPDIR, latents saved


@pytest.mark.parametrize("umask, file_mode, dir_mode", [(0o022, 0o644, 0o755), (0o077, 0o600, 0o700), (0o002, 0o664, 0o775)])
def test_outputs_follow_the_umask(umask, file_mode, dir_mode, tmp_path):
    from hvp_explore.io.atomic import atomic_output_dir, write_bytes_atomic

    saved = os.umask(umask)
    try:
        with atomic_output_dir(tmp_path / "out") as tmp:
            write_bytes_atomic(tmp / "a.png", b"png")
            write_bytes_atomic(tmp / "sub" / "b.json", b"{}")
    finally:
        os.umask(saved)
    out = tmp_path / "out"
    assert out.stat().st_mode & 0o777 == dir_mode and (out / "sub").stat().st_mode & 0o777 == dir_mode
    for f in ("a.png", "sub/b.json", ".hvp-explore.json"):
        assert (out / f).stat().st_mode & 0o777 == file_mode, f


def test_a_run_shares_its_folder_leaves_no_cache_and_saves_the_latents(tmp_path):
    """A whole exploration in a fresh process: 0644/0755 under umask 022, an empty $TMPDIR, solutions regenerable."""
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if k != "TORCHINDUCTOR_CACHE_DIR"}
    env["TMPDIR"] = str(tmpdir)
    env["OMP_NUM_THREADS"] = "1"  # as conftest.py sets for the in-process tests: small products are fastest on one thread
    cmd = [sys.executable, "-c", "from hvp_explore.cli import main; main()", "explore", str(SAMPLE), "--from-clean",
           "--solutions", "2", "--k", "2", "--max-memory", "512MB", "--out", str(out), *FEASIBLE]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, preexec_fn=lambda: os.umask(0o022))
    assert done.returncode == 0, done.stderr
    assert list(tmpdir.iterdir()) == [], "no torchinductor (or other) folder left in $TMPDIR"
    for path in [out, *out.rglob("*")]:
        assert path.stat().st_mode & 0o777 == (0o755 if path.is_dir() else 0o644), path
    report = json.loads((out / "report.json").read_text())
    assert report["eigen"]["H_X"]["seconds"] == report["timings"]["eigen_x"]  # one number for one stage
    assert report["eigen"]["H_Y"]["seconds"] == report["timings"]["eigen_y"]
    assert report["latents"]["file"] == "solutions.npz" and report["latents"]["generator_state"] is None
    saved = np.load(out / "solutions.npz")
    assert list(saved["files"]) == [s["file"] for s in report["solutions"]]
    assert list(saved["directions"]) == [s["direction"] for s in report["solutions"]]
    from hvp_explore import load_generator, load_image

    G = load_generator("default")
    with torch.no_grad():
        images = G(torch.from_numpy(saved["latents"]).float())
    for image, name in zip(images, saved["files"]):
        png = load_image(out / name)
        assert png.shape == image.shape == (1, 32, 32)  # the generator's resolution
        assert float((png - image.clamp(-1, 1)).abs().max()) <= 2 / 255 + 1e-6  # the same solution, up to 8-bit rounding


# --------------------------------------------------------------------------------------------------
# readable output


def test_every_option_of_every_command_has_help():
    for name, command in cli.commands.items():
        for param in command.params:
            if isinstance(param, click.Option) and not param.hidden:
                assert param.help and param.help.strip(), (name, param.name)


def test_tables_are_not_cut_when_not_a_terminal(capsys):
    result = invoke("generators")
    assert result.exit_code == 0
    assert "…" not in result.output
    for example in ("--generator ffhq.pkl", "--generator my_generator.pt", "--generator mypackage.models:make_generator",
                    "--generator biggan-deep-256"):
        assert example in result.output, example
    from hvp_explore.cli._common import print_table
    from hvp_explore.io.tables import summary_table

    rows = [{"file": "solutions/001.png", "measurement_mse": 0.000412345678, "perceptual_distance": 0.00912345,
             "x" * 90: "y" * 90}]
    capsys.readouterr()
    print_table(summary_table(rows, list(rows[0])))
    text = capsys.readouterr().out  # results go to stdout (issue 23), whole when piped
    assert "…" not in text and "solutions/001.png" in text and "0.0004123" in text and "y" * 90 in text


def test_explore_and_render_tables_use_the_report_names():
    from hvp_explore.cli._common import SOLUTION_COLUMNS

    assert SOLUTION_COLUMNS == ("file", "direction", "eta", "measurement_mse", "feasible", "perceptual_distance")
    source = (ROOT / "src/hvp_explore/cli/solve.py").read_text() + (ROOT / "src/hvp_explore/cli/stages.py").read_text()
    assert source.count("print_solutions(") >= 2 and "perceptual dist." not in source


# --------------------------------------------------------------------------------------------------
# memory linear in N: no N x N distance matrix beyond PAIRWISE_MATRIX_MAX


@pytest.mark.parametrize("residual_form", [True, False])
def test_streamed_pairwise_summary_equals_the_dense_matrix(residual_form):
    from hvp_explore.exploration.distances import distances_to, pairwise_distances, pairwise_summary
    from hvp_explore.metrics import load_metric

    metric = load_metric("fmnist")
    plain = metric if residual_form else (lambda a, b: metric(a, b))  # a plain callable has no residual form
    images = torch.rand(9, 1, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    D = pairwise_distances(metric, images)
    upper = D[torch.triu_indices(9, 9, 1).unbind()]
    summary = pairwise_summary(plain, images, chunk=4)  # chunks that split the rows
    # float32 features: the Gram form and the direct differences agree to a few float32 ulps of the distances
    assert summary["mean"] == pytest.approx(float(upper.mean()), rel=1e-4)
    assert summary["min"] == pytest.approx(float(upper.min()), rel=1e-4)
    assert summary["max"] == pytest.approx(float(upper.max()), rel=1e-4)
    assert torch.allclose(distances_to(plain, images, images[:1], chunk=4), D[0], rtol=1e-4, atol=1e-7)


def test_distances_batch_images_as_the_cpu_likes_by_default(monkeypatch):
    """Issue #22: without a ``chunk`` the metric sees at most ``batch_limit`` images a call (21 of the faces' 64 x 64 RGB:
    one batch of 100 through EfficientNet took 2.6x as long), and the distances are those of one batch."""
    from hvp_explore.exploration import distances
    from hvp_explore.metrics import load_metric
    from hvp_explore.operators.memory import batch_limit

    metric = load_metric("fmnist")
    images = torch.rand(11, 1, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    assert batch_limit(images[:1]) == 256 and distances._chunk(torch.zeros(1, 3, 64, 64), None) == 21
    whole = {"D": distances.pairwise_distances(metric, images), "to": distances.distances_to(metric, images, images[:1]),
             "summary": distances.pairwise_summary(metric, images)}
    monkeypatch.setattr(distances, "batch_limit", lambda image: 4)  # as a larger image would set it
    batches = []
    residual = type(metric).residual
    monkeypatch.setattr(type(metric), "residual", lambda self, x, x0: batches.append(x.shape[0]) or residual(self, x, x0))
    D = distances.pairwise_distances(metric, images)
    assert batches == [4, 4, 3] and torch.allclose(D, whole["D"], rtol=1e-5, atol=1e-7)
    summary = distances.pairwise_summary(metric, images)
    assert all(summary[k] == pytest.approx(whole["summary"][k], rel=1e-5) for k in ("min", "mean", "max"))
    forward_calls = []
    call = type(metric).__call__
    monkeypatch.setattr(type(metric), "__call__", lambda self, x, x0: forward_calls.append(x.shape[0]) or call(self, x, x0))
    assert torch.allclose(distances.distances_to(metric, images, images[:1]), whole["to"], rtol=1e-5, atol=1e-7)
    assert forward_calls == [4, 4, 3]


def test_explore_beyond_the_matrix_limit_keeps_a_summary(monkeypatch):
    from hvp_explore import explore, load_generator, load_metric, make_problem, observe

    monkeypatch.setattr("hvp_explore.exploration.explorer.PAIRWISE_MATRIX_MAX", 3)
    G = load_generator("default")
    forward = make_problem("sr", G.image_shape, factor=4)
    with torch.no_grad():
        clean = G(torch.randn(1, G.latent_dim, generator=torch.Generator().manual_seed(1)))
    y = observe(forward, clean)
    res = explore(G, forward, y, metric=load_metric("fmnist"), num_solutions=6, K=4, seed=0, quiet=True,
                  invert_options={"restarts": 2, "steps": 60})
    assert isinstance(res.pairwise, dict) and set(res.pairwise) == {"min", "mean", "max"}
    assert 0 < res.pairwise["min"] <= res.pairwise["mean"] <= res.pairwise["max"]
    assert len(res.solutions) == 6

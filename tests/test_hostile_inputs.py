"""Hostile inputs of issue #23 that broke: each ends with exit status 2 and one line naming the file and the fix.

Written from the reproductions (docs/reliability.md): data loss under --overwrite, memory from small files
(deflated records, stride-0 tensors, huge image shapes and .npy headers, a photograph's decoding), work
before a doomed write, tracebacks (huge option values, a full disk, a second signal), and the unclear cases
(a deleted working folder, a full or littered $TMPDIR, symlink loops, files of the wrong kind, tampered
stage files, concurrent batches, a mask beside the observations). Nothing here allocates more than a few
megabytes: sizes are claimed by small crafted files, never materialised.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from hvp_explore.cli import cli
from hvp_explore.data import sample_paths
from hvp_explore.io.atomic import MARKER_NAME, atomic_output_dir, foreign_files, remove_stale_temporaries, save_tensors, \
    temporary_prefix

# the 'invert' folder every state.pt case edits, and its editor, are the reliability suite's own
from test_reliability import edited_copy, run_folder  # noqa: E402, F401

SAMPLE = sample_paths()[0]
FAST = ["--restarts", "1", "--steps", "5", "--iagan", "off", "--gauss-newton", "off", "--quiet"]


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def one_line_error(result, *needles: str, status: int = 2) -> str:
    """The run ended with ``status`` and a single ``Error:`` line holding every needle, no traceback."""
    assert result.exit_code == status, (result.exit_code, result.output, result.exception)
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert lines and lines[-1].startswith("Error: "), result.output
    for needle in needles:
        assert needle.lower() in lines[-1].lower(), (needle, result.output)
    assert "Traceback" not in result.output
    return lines[-1]


def _set(key, value):
    return lambda data: data.__setitem__(key, value)


# --------------------------------------------------------------------------------------------------
# data loss: --overwrite on a folder that holds a user's file


def _earlier_run(target: Path) -> Path:
    with atomic_output_dir(target) as tmp:
        (tmp / "report.json").write_text("{}")
        (tmp / "solutions").mkdir()
        (tmp / "solutions" / "001.png").write_bytes(b"png")
    return target


def test_overwrite_refuses_a_folder_holding_files_it_did_not_write(tmp_path):
    out = _earlier_run(tmp_path / "run")
    assert json.loads((out / MARKER_NAME).read_text())["files"] == ["report.json", "solutions/001.png"]
    (out / "NOTES.txt").write_text("my notes")
    result = invoke("invert", SAMPLE, "--from-clean", "--out", out, "--overwrite", *FAST)
    one_line_error(result, str(out), "NOTES.txt", "did not write")
    assert (out / "NOTES.txt").read_text() == "my notes"
    (out / "NOTES.txt").unlink()
    assert foreign_files(out) == []  # the folder as written may be replaced


def test_foreign_files_of_a_marker_without_a_file_list(tmp_path):
    out = _earlier_run(tmp_path / "run")
    marker = json.loads((out / MARKER_NAME).read_text())
    del marker["files"]  # as an older version wrote it
    (out / MARKER_NAME).write_text(json.dumps(marker))
    os.utime(out / MARKER_NAME, (1e9, 1e9))
    for name in ("report.json", "solutions/001.png"):
        os.utime(out / name, (1e9 - 10, 1e9 - 10))
    (out / "NOTES.txt").write_text("added later")
    assert foreign_files(out) == ["NOTES.txt"]


# --------------------------------------------------------------------------------------------------
# memory from small files


@pytest.mark.parametrize("edit, needle", [
    (_set("latent", torch.zeros(1).expand(750_000_000)), "'latent' claims 750000000 values"),
    (_set("latent", torch.zeros(1).expand(10**12)), "'latent' claims 1000000000000 values"),
    (_set("display", torch.zeros(1, 1, 1).expand(1, 20000, 20000)), "'display' claims 400000000 values"),
    (lambda data: data["problem"].__setitem__("image_shape", [1, 40000, 40000]), "image_shape [1, 40000, 40000]"),
    (lambda data: data.__setitem__("latent", data["latent"].half()), "'latent' must be float32 or float64"),
], ids=["stride-0 latent", "1e12 latent", "stride-0 display", "huge image_shape", "float16 latent"])
@pytest.mark.parametrize("command", ["eig", "render"])
def test_state_files_that_claim_huge_or_odd_tensors_are_refused_before_reading_values(command, edit, needle, run_folder,
                                                                                      tmp_path):
    folder = edited_copy(run_folder, tmp_path, edit)
    assert (folder / "state.pt").stat().st_size < 64 << 10  # a small file
    one_line_error(invoke(command, folder, "--out", tmp_path / "out"), str(folder / "state.pt"), needle)
    assert not (tmp_path / "out").exists()


def test_a_state_file_with_a_deflated_record_is_refused_before_torch_reads_it(run_folder, tmp_path):
    folder = tmp_path / "deflated"
    shutil.copytree(run_folder, folder)
    src = folder / "state.pt"
    packed = tmp_path / "packed.pt"
    with zipfile.ZipFile(src) as old, zipfile.ZipFile(packed, "w") as new:
        for info in old.infolist():  # torch's miniz inflates such records: gigabytes of zeros fit in megabytes
            new.writestr(info.filename, old.read(info.filename), compress_type=zipfile.ZIP_DEFLATED)
    packed.replace(src)
    one_line_error(invoke("eig", folder, "--out", tmp_path / "out"), str(src), "is compressed", "torch.save never compresses")


def test_a_photograph_is_converted_in_blocks(tmp_path, monkeypatch):
    """An 8192x8192 PNG with --resize peaked at 7.1 GB: float64 copies of the whole image. Now a block of rows at a
    time, with the same arithmetic per pixel."""
    from hvp_explore.io import images

    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (300, 200, 3), dtype=np.uint8)
    path = tmp_path / "photo.png"
    Image.fromarray(pixels).save(path)
    expected = torch.from_numpy(np.ascontiguousarray(((pixels / 255.0) @ np.array([0.299, 0.587, 0.114])[:, None])
                                                     .transpose(2, 0, 1)))
    expected = (expected * 2.0 - 1.0).float()
    monkeypatch.setattr(images, "_BLOCK_PIXELS", 1000)  # 5 rows a block: 60 blocks
    tracemalloc.start()
    got = images.load_image(path, channels=1)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert torch.equal(got, expected)
    assert torch.equal(images.load_image(path), images.load_image(path, channels=3))
    assert peak < 300 * 200 * 3 * 8  # less than ONE float64 copy of the image (the old path made several)


# --------------------------------------------------------------------------------------------------
# work before a doomed write


def test_an_empty_mount_point_as_out_is_refused_before_the_run(tmp_path, monkeypatch):
    mount = tmp_path / "mnt"
    mount.mkdir()
    real = os.path.ismount
    monkeypatch.setattr(os.path, "ismount", lambda p: Path(p) == mount or real(p))
    one_line_error(invoke("invert", SAMPLE, "--from-clean", "--out", mount, *FAST), str(mount), "mount point",
                   f"--out {mount / 'run'}")


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs /proc")
def test_train_checks_its_output_file_before_training():
    one_line_error(invoke("train", "gan", "--out", "/proc/x/w.pt", "--epochs", "1", "--quiet"), "/proc/x/w.pt",
                   "cannot create weights file")


def test_train_refuses_a_folder_as_its_output_file(tmp_path):
    (tmp_path / "w.pt").mkdir()
    one_line_error(invoke("train", "gan", "--out", tmp_path / "w.pt", "--epochs", "1", "--quiet"), "is a folder")


# --------------------------------------------------------------------------------------------------
# tracebacks


@pytest.mark.parametrize("args, needle", [
    (["explore", SAMPLE, "--from-clean", "--max-memory", "9" * 400], "--max-memory must be at most 1 EiB"),
    (["invert", SAMPLE, "--from-clean", "--restarts", "200000000"], "--restarts must be at most 1024"),
    (["pulse", SAMPLE, "--from-clean", "--solutions", "300000000", "--batch", "300000000"], "--batch must be at most 1024"),
    (["pulse", SAMPLE, "--from-clean", "--solutions", "300000000"], "--solutions 300000000 needs about"),
], ids=["max-memory 400 digits", "restarts", "pulse batch", "pulse solutions"])
def test_huge_counts_and_sizes_are_refused_with_their_limit(args, needle, tmp_path):
    one_line_error(invoke(*args, "--out", tmp_path / "out", "--quiet"), needle)
    assert not (tmp_path / "out").exists()


def test_a_full_disk_during_torch_save_names_the_file(tmp_path, monkeypatch):
    def full(obj, path, *args, **kwargs):  # what torch raises when the disk fills up under its zip writer
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")

    monkeypatch.setattr(torch, "save", full)
    line = one_line_error(invoke("invert", SAMPLE, "--from-clean", "--out", tmp_path / "out", *FAST), "state.pt",
                          "cannot write", "free some space")
    assert "inline_container" in line  # torch's reason, when the disk is not (or no longer) full
    assert not (tmp_path / "out").exists() and not [p for p in tmp_path.iterdir() if ".hvp-" in p.name]


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_save_tensors_on_a_full_device_is_an_os_error_naming_the_file():
    with pytest.raises(OSError, match="cannot write /dev/full"):
        save_tensors({"a": torch.zeros(4096)}, "/dev/full")


def test_a_second_signal_during_cleanup_is_ignored(monkeypatch):
    """Ctrl-C twice 50 ms apart, or SIGTERM then Ctrl-C, printed "Exception ignored in atexit callback" and a traceback:
    the first signal now makes the process ignore the others, and so does the end of the command (atexit is cleanup)."""
    from hvp_explore import cli as cli_module

    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        for handler, error in ((cli_module._raise_interrupted, KeyboardInterrupt), (cli_module._raise_terminated,
                                                                                    cli_module.Terminated)):
            for s in saved:
                signal.signal(s, signal.default_int_handler)
            with pytest.raises(error):
                handler(signal.SIGINT, None)
            assert all(signal.getsignal(s) == signal.SIG_IGN for s in saved)
        for s in saved:
            signal.signal(s, signal.default_int_handler)
        monkeypatch.setattr(sys, "argv", ["hvp-explore", "--help"])
        with pytest.raises(SystemExit):
            cli_module.main()
        assert all(signal.getsignal(s) == signal.SIG_IGN for s in saved)
    finally:
        for s, handler in saved.items():
            signal.signal(s, handler)


# --------------------------------------------------------------------------------------------------
# unclear cases


def test_a_deleted_working_folder_is_one_line(tmp_path):
    script = f"mkdir gone && cd gone && rmdir ../gone && exec {sys.executable} -m hvp_explore.cli invert x.png --out o"
    done = subprocess.run(["bash", "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "TMPDIR": str(tmp_path)})
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [done.stderr.strip()] and "current folder" in done.stderr
    assert "FATAL" not in done.stderr and "Traceback" not in done.stderr
    assert not list(tmp_path.glob("hvp-explore-torch-*"))


def test_torch_cache_folders_of_killed_runs_are_removed(tmp_path, monkeypatch):
    dead = subprocess.Popen(["true"])
    dead.wait()
    prefix = temporary_prefix("hvp-explore-torch-")
    host = prefix[len("hvp-explore-torch-"):].split("-")[0]
    stale = tmp_path / f"hvp-explore-torch-{host}-{dead.pid}-abcd"
    live, other = tmp_path / f"{prefix}live", tmp_path / "hvp-explore-torch-unknownform"
    for folder in (stale, live, other):
        folder.mkdir()
    assert remove_stale_temporaries(tmp_path, "hvp-explore-torch-") == [stale]
    assert not stale.exists() and live.exists() and other.exists()
    # the command line does it on start, and names its own folder so that the next run can do the same
    from hvp_explore.cli import _common

    stale.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", "")  # unset for the call, and restored as it was after the test
    _common._private_torch_cache()
    assert not stale.exists()
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"].startswith(str(tmp_path / prefix))


def test_a_nearly_full_tmpdir_is_refused_before_work(tmp_path, monkeypatch):
    real = shutil.disk_usage

    def nearly_full(path):
        usage = real(path)
        return usage._replace(free=32 << 10) if Path(path) == Path(tempfile.gettempdir()) else usage

    monkeypatch.setattr(shutil, "disk_usage", nearly_full)
    one_line_error(invoke("invert", SAMPLE, "--from-clean", "--out", tmp_path / "out", *FAST), tempfile.gettempdir(),
                   "32 KiB free", "set TMPDIR")


def test_a_symlink_loop_in_a_batch_folder_is_named(tmp_path):
    obs = tmp_path / "obs"
    obs.mkdir()
    shutil.copy(SAMPLE, obs / "a.png")
    os.symlink("loop1", obs / "loop2.png")
    os.symlink("loop2.png", obs / "loop1")
    one_line_error(invoke("batch", obs, "--out", tmp_path / "out", *FAST), str(obs / "loop2.png"), "cannot be followed")


@pytest.mark.parametrize("name, content, needle", [
    ("y.npy", "png", "is a PNG image, not a .npy array"),
    ("huge.npy", "header", "declares 1099511627776 values"),
], ids=["png named y.npy", "npy header of 2**40 values"])
def test_npy_files_are_checked_from_their_first_bytes(name, content, needle, tmp_path):
    path = tmp_path / name
    if content == "png":
        Image.new("L", (8, 8)).save(path, format="PNG")
    else:
        with open(path, "wb") as f:
            np.lib.format.write_array_header_1_0(f, {"descr": "<f8", "fortran_order": False, "shape": (2**40,)})
            f.write(b"\0" * 64)
    one_line_error(invoke("invert", path, "--problem", "cs", "--out", tmp_path / "out", *FAST), str(path), needle)


def _eig_folder(run_folder: Path, tmp_path: Path, solutions: int = 4) -> Path:
    """eig then project on ``run_folder``: combinations appear beyond 2k solutions."""
    eig, proj = tmp_path / "eig", tmp_path / "proj"
    assert invoke("eig", run_folder, "--out", eig, "--k", "2", "--k-y", "4", "--quiet").exit_code == 0
    result = invoke("project", eig, "--out", proj, "--solutions", str(solutions), "--mode", "eglass", "--quiet")
    assert result.exit_code == 0, result.output
    return proj


def _zero_eigenvectors(data):
    data["eigen"]["vectors_x"] = torch.zeros_like(data["eigen"]["vectors_x"])


def _nan_combination(data):
    combos = data["directions"]["combinations"]
    data["directions"]["combinations"] = [c if c is None else [float("nan")] * len(c) for c in combos]


@pytest.mark.parametrize("edit, needle", [
    (_set("display", torch.zeros(7, 8, 8)), "'display' must have 1 channel(s)"),
    (_nan_combination, "combinations hold NaN"),
    (_zero_eigenvectors, "'eigen' vectors_x must be unit vectors"),
], ids=["7-channel display", "NaN combinations", "zero eigenvectors"])
def test_tampered_state_files_that_passed_the_schema_now_fail_in_it(edit, needle, run_folder, tmp_path):
    proj = _eig_folder(run_folder, tmp_path, solutions=8)  # k = 2: four eigenvector directions, then combinations
    assert any(c is not None for c in torch.load(proj / "state.pt", weights_only=True)["directions"]["combinations"])
    folder = edited_copy(proj, tmp_path, edit)
    one_line_error(invoke("render", folder, "--out", tmp_path / "out", "--quiet"), str(folder / "state.pt"),
                   "does not match the stage-file schema", needle)


def test_a_second_batch_on_the_same_out_stops(tmp_path):
    import fcntl

    obs = tmp_path / "obs"
    obs.mkdir()
    shutil.copy(SAMPLE, obs / "a.png")
    out = tmp_path / "out"
    out.mkdir()
    fd = os.open(out, os.O_RDONLY)  # as a live unsharded batch holds it
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        result = invoke("batch", obs, "--out", out, *FAST)
    finally:
        os.close(fd)
    one_line_error(result, "another live batch", str(out), "stops")
    assert not (out / "a").exists()


def test_shards_of_one_batch_share_the_folder_but_not_a_shard(tmp_path):
    from hvp_explore.io.atomic import OutputDirError
    from hvp_explore.io.batch import Shard, _claim, _release

    out = tmp_path / "out"
    out.mkdir()
    first = _claim(out, Shard(0, 2))
    try:
        second = _claim(out, Shard(1, 2))  # another shard: fine
        _release(second)
        with pytest.raises(OutputDirError, match="another live batch"):
            _claim(out, Shard(0, 2))  # the same shard twice
        with pytest.raises(OutputDirError, match="another live batch"):
            _claim(out, Shard(0, 1))  # an unsharded batch beside a sharded one
    finally:
        _release(first)
    _release(_claim(out, Shard(0, 1)))  # released when done (and by the kernel when killed)


def test_a_mask_inside_the_input_folder_is_not_an_observation(tmp_path):
    from hvp_explore.io.batch import discover_inputs

    obs = tmp_path / "obs"
    obs.mkdir()
    Image.new("L", (32, 32)).save(obs / "mask.png")
    assert [p.name for p in discover_inputs(obs)] == ["mask.png"]
    shutil.copy(SAMPLE, obs / "a.png")
    assert [p.name for p in discover_inputs(obs, exclude=[obs / "mask.png"])] == ["a.png"]
    # alone in its folder, the mask leaves no observation: the batch says so before any work
    (obs / "a.png").unlink()
    one_line_error(invoke("batch", obs, "--mask", obs / "mask.png", "--problem", "inpaint", "--out", tmp_path / "out", *FAST),
                   "holds no observations")

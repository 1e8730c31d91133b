"""Atomic output: folders that are complete or absent, safe replacement, recovery, strict JSON."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import skip_or_fail

from hvp_explore.io import atomic
from hvp_explore.io.atomic import (
    MARKER_NAME,
    OutputDirError,
    atomic_output_dir,
    check_output_dir,
    is_complete,
    recover_output_dir,
    to_jsonable,
    write_bytes_atomic,
    write_json_atomic,
)


def _tree(folder: Path) -> dict[str, str]:
    """Relative path -> text of every file below ``folder`` except the marker."""
    return {
        str(p.relative_to(folder)): p.read_text()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != MARKER_NAME
    }


def _run(target: Path, files: dict[str, str], **kwargs) -> None:
    with atomic_output_dir(target, **kwargs) as tmp:
        for name, text in files.items():
            (tmp / name).parent.mkdir(parents=True, exist_ok=True)
            (tmp / name).write_text(text)


def _siblings(target: Path) -> list[str]:
    """Names in the target's folder other than the target itself (temporary folders left behind)."""
    return sorted(p.name for p in target.parent.iterdir() if p.name != target.name)


class _FailingRename:
    """Replacement for os.rename that raises ``error`` on the given call numbers (1-based)."""

    def __init__(self, fail_on: set[int], error: BaseException = OSError(5, "simulated crash")):
        self.calls, self.fail_on, self.error, self._rename = 0, fail_on, error, os.rename

    def __call__(self, src, dst):
        self.calls += 1
        if self.calls in self.fail_on:
            raise self.error
        self._rename(src, dst)


# --------------------------------------------------------------------------------------------------
# success, failure, interruption


def test_success_creates_target_with_marker(tmp_path):
    target = tmp_path / "out"
    with atomic_output_dir(target, marker={"image": "a.png"}) as tmp:
        # The work happens in a hidden folder beside the target, not in the target.
        assert tmp.parent == target.parent and tmp.name.startswith(".out.hvp-new-")
        assert not target.exists()
        (tmp / "solutions").mkdir()
        (tmp / "solutions" / "00.png").write_text("pixels")
    assert _tree(target) == {"solutions/00.png": "pixels"}
    assert is_complete(target)
    marker = json.loads((target / MARKER_NAME).read_text())
    from hvp_explore import __version__

    assert marker["tool"] == "hvp-explore" and marker["version"] == __version__
    assert marker["image"] == "a.png" and marker["command"] and marker["created"].endswith("+00:00")
    assert _siblings(target) == []


def test_marker_cannot_change_the_tool_name(tmp_path):
    _run(tmp_path / "out", {"a": "1"}, marker={"tool": "other"})
    assert json.loads((tmp_path / "out" / MARKER_NAME).read_text())["tool"] == "hvp-explore"


@pytest.mark.parametrize("error", [RuntimeError("boom"), KeyboardInterrupt()])
def test_exception_leaves_no_target_and_no_temp(tmp_path, error):
    target = tmp_path / "out"
    with pytest.raises(type(error)):
        with atomic_output_dir(target) as tmp:
            (tmp / "partial.png").write_text("half")
            raise error
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("error", [RuntimeError("boom"), KeyboardInterrupt()])
def test_exception_keeps_previous_run_intact(tmp_path, error):
    target = tmp_path / "out"
    _run(target, {"old.txt": "old"})
    with pytest.raises(type(error)):
        with atomic_output_dir(target, overwrite=True) as tmp:
            (tmp / "new.txt").write_text("new")
            raise error
    assert _tree(target) == {"old.txt": "old"} and is_complete(target)
    assert _siblings(target) == []


def test_replacing_a_previous_run_keeps_only_the_new_content(tmp_path):
    target = tmp_path / "out"
    _run(target, {"old.txt": "old", "solutions/00.png": "old pixels"})
    with pytest.raises(OutputDirError, match="holds an earlier hvp-explore run: pass --overwrite to replace it"):
        _run(target, {"new.txt": "new"})  # a rerun into a folder of ours needs --overwrite
    assert _tree(target) == {"old.txt": "old", "solutions/00.png": "old pixels"}
    _run(target, {"new.txt": "new"}, overwrite=True)
    assert _tree(target) == {"new.txt": "new"} and is_complete(target)
    assert _siblings(target) == []


# --------------------------------------------------------------------------------------------------
# refusals


def test_foreign_folder_refused_even_with_overwrite(tmp_path):
    target = tmp_path / "photos"
    target.mkdir()
    (target / "holiday.jpg").write_text("precious")
    message = (f"output folder {target} exists and was not written by hvp-explore: choose another --out "
               "(only folders hvp-explore wrote are ever replaced)")
    for overwrite in (False, True):
        with pytest.raises(OutputDirError, match="was not written by hvp-explore") as info:
            check_output_dir(target, overwrite=overwrite)
        assert str(info.value) == message
        ran = False
        with pytest.raises(OutputDirError, match="was not written by hvp-explore"):
            with atomic_output_dir(target, overwrite=overwrite):
                ran = True  # refused up front: the body never runs
        assert not ran
    assert _tree(target) == {"holiday.jpg": "precious"} and _siblings(target) == []


def test_an_input_inside_the_output_folder_is_refused(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "clean.png").write_text("input")
    (folder / "notes.txt").write_text("unrelated")
    for target, inputs in ((folder, [folder / "clean.png"]), (tmp_path, [folder / "clean.png"]), (folder, [folder])):
        for overwrite in (False, True):
            with pytest.raises(OutputDirError, match="would contain the input"):
                check_output_dir(target, overwrite=overwrite, inputs=inputs)
    assert sorted(p.name for p in folder.iterdir()) == ["clean.png", "notes.txt"]
    assert check_output_dir(folder / "out", inputs=[folder / "clean.png"]) == (folder / "out").resolve()  # beside it is fine


def test_empty_foreign_folder_is_accepted(tmp_path):
    target = tmp_path / "empty"
    target.mkdir()
    _run(target, {"a.txt": "a"})
    assert _tree(target) == {"a.txt": "a"}


def test_file_target_refused(tmp_path):
    target = tmp_path / "report.json"
    target.write_text("{}")
    with pytest.raises(OutputDirError, match="exists and is a file"):
        check_output_dir(target, overwrite=True)  # even --overwrite never replaces a file by a folder
    with pytest.raises(OutputDirError, match="exists and is a file"):
        with atomic_output_dir(target, overwrite=True):
            pass
    assert target.read_text() == "{}"


def test_parent_under_a_file_refused(tmp_path):
    blocker = tmp_path / "notes.txt"
    blocker.write_text("x")
    target = blocker / "sub" / "out"
    with pytest.raises(OutputDirError, match=f"cannot create output folder {target}: {blocker} is a file, not a folder"):
        check_output_dir(target)


def test_missing_parents_are_created(tmp_path):
    target = tmp_path / "a" / "b" / "out"
    _run(target, {"x": "1"})
    assert _tree(target) == {"x": "1"}


@contextlib.contextmanager
def _read_only_folder(parent: Path):
    """A folder nobody may write into: mode 0o555 for a normal user; for root, whom modes do not stop, a read-only
    tmpfs mounted on it (root may mount; the same trick test_hostile_inputs uses for a mount point)."""
    parent.mkdir()
    if os.geteuid() != 0:
        parent.chmod(0o555)
        try:
            yield parent
        finally:
            parent.chmod(0o755)
        return
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(parent)], capture_output=True)
    if mounted.returncode != 0:  # a container without CAP_SYS_ADMIN: root can write anywhere else
        skip_or_fail(f"running as root without permission to mount a read-only tmpfs ({mounted.stderr.decode().strip()})")
    try:
        yield parent
    finally:
        subprocess.run(["umount", str(parent)], check=True)


@pytest.mark.skipif(os.name != "posix", reason="read-only folders by POSIX modes or mounts")
def test_unwritable_parent_refused_chmod(tmp_path):
    with _read_only_folder(tmp_path / "locked") as parent:
        with pytest.raises(OutputDirError, match=f"{parent} is not writable"):
            check_output_dir(parent / "sub" / "out")


def test_unwritable_parent_refused_access_check(tmp_path, monkeypatch):
    # Runs as root too: the check's logic is exercised by making os.access deny the parent.
    parent = tmp_path / "locked"
    parent.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if Path(p) == parent else real_access(p, mode))
    with pytest.raises(OutputDirError, match=f"cannot create output folder {parent / 'sub' / 'out'}: {parent} is not writable"):
        check_output_dir(parent / "sub" / "out")
    assert not (parent / "sub").exists()


def test_current_folder_never_replaced(tmp_path, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    (work / "data.txt").write_text("keep")
    monkeypatch.chdir(work)
    for target in (".", str(tmp_path)):
        with pytest.raises(OutputDirError, match="current folder"):
            check_output_dir(target, overwrite=True)
    assert (work / "data.txt").read_text() == "keep"


def test_target_changed_during_the_run_is_checked_again(tmp_path):
    target = tmp_path / "out"
    with pytest.raises(OutputDirError, match="was not written by hvp-explore"):
        with atomic_output_dir(target) as tmp:
            (tmp / "a").write_text("new")
            target.mkdir()  # someone else creates a folder there meanwhile
            (target / "theirs.txt").write_text("theirs")
    assert _tree(target) == {"theirs.txt": "theirs"} and _siblings(target) == []


# --------------------------------------------------------------------------------------------------
# crashes inside the swap, recovery, stale temporaries


@pytest.mark.parametrize(
    ("error", "raised", "match"),
    [
        (OSError(5, "simulated crash"), OutputDirError, "cannot move the outputs into .*simulated crash"),
        (KeyboardInterrupt(), KeyboardInterrupt, None),  # Ctrl-C exactly between the renames
    ],
)
def test_failure_between_the_two_renames_rolls_back(tmp_path, monkeypatch, error, raised, match):
    """The second rename fails: the old folder is renamed back at once, so the target stays complete."""
    target = tmp_path / "out"
    _run(target, {"old.txt": "old"})
    rename = _FailingRename({2}, error)
    monkeypatch.setattr(os, "rename", rename)
    with pytest.raises(raised, match=match):
        _run(target, {"new.txt": "new"}, overwrite=True)
    assert rename.calls == 3  # old aside, new in place (fails), old back
    assert _tree(target) == {"old.txt": "old"} and is_complete(target)
    assert _siblings(target) == []


def test_hard_crash_between_the_two_renames_is_recovered(tmp_path, monkeypatch):
    """Both the second rename and the roll-back fail (as after a kill): the old folder is recoverable.

    The target is then absent and the previous complete folder waits at a ``.out.hvp-old-`` name;
    the next check (or run) renames it back, so the previous state is restored.
    """
    target = tmp_path / "out"
    _run(target, {"old.txt": "old"})
    monkeypatch.setattr(os, "rename", _FailingRename({2, 3}))
    with pytest.raises(OutputDirError):
        _run(target, {"new.txt": "new"}, overwrite=True)
    monkeypatch.undo()
    assert not target.exists()
    (aside,) = _siblings(target)
    assert aside.startswith(".out.hvp-old-") and is_complete(tmp_path / aside)
    with pytest.raises(OutputDirError, match="pass --overwrite"):  # restored first, then a rerun over it needs --overwrite
        check_output_dir(target)
    assert _tree(target) == {"old.txt": "old"} and is_complete(target)
    assert _siblings(target) == []
    _run(target, {"new.txt": "new"}, overwrite=True)  # and the rerun succeeds
    assert _tree(target) == {"new.txt": "new"}


def test_recover_does_nothing_when_target_exists(tmp_path):
    target = tmp_path / "out"
    _run(target, {"a": "1"})
    assert recover_output_dir(target) is None
    assert _tree(target) == {"a": "1"}


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_stale_temporaries_of_dead_processes_are_removed(tmp_path):
    target = tmp_path / "out"
    host = atomic._host_tag()
    dead = tmp_path / f".out.hvp-new-{host}-{_dead_pid()}-abc123"
    alive = tmp_path / f".out.hvp-new-{host}-1-def456"  # pid 1 always exists: its folder is kept
    other_host = tmp_path / f".out.hvp-new-00000000-{_dead_pid()}-xyz789"  # cannot tell: kept
    unrelated = tmp_path / ".other.hvp-new-00000000-1-aaa"
    for folder in (dead, alive, other_host, unrelated):
        folder.mkdir()
        (folder / "partial").write_text("x")
    _run(target, {"a": "1"})
    assert _siblings(target) == sorted(p.name for p in (alive, other_host, unrelated))


def test_symlinked_target_writes_where_the_link_points(tmp_path):
    real = tmp_path / "real"
    _run(real, {"old.txt": "old"})
    link = tmp_path / "link"
    link.symlink_to(real, target_is_directory=True)
    _run(link, {"new.txt": "new"}, overwrite=True)
    assert link.is_symlink() and _tree(real) == {"new.txt": "new"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link", "real"]


def test_long_target_name(tmp_path):
    target = tmp_path / ("x" * 200)
    _run(target, {"a": "1"})
    _run(target, {"b": "2"}, overwrite=True)
    assert _tree(target) == {"b": "2"} and _siblings(target) == []


# --------------------------------------------------------------------------------------------------
# is_complete


def test_is_complete(tmp_path):
    folder = tmp_path / "f"
    folder.mkdir()
    assert not is_complete(folder)
    (folder / MARKER_NAME).write_text("not json")
    assert not is_complete(folder)
    (folder / MARKER_NAME).write_text(json.dumps({"tool": "something-else"}))
    assert not is_complete(folder)
    (folder / MARKER_NAME).write_text(json.dumps({"tool": "hvp-explore"}))
    assert is_complete(folder)
    assert not is_complete(tmp_path / "missing")


# --------------------------------------------------------------------------------------------------
# JSON


@dataclasses.dataclass(frozen=True)
class _Result:
    eta: torch.Tensor
    feasible: bool


def test_write_json_atomic_converts_and_is_strict(tmp_path):
    payload = {
        "tau": np.float32(0.5),  # exactly representable, so the float32 -> float round trip is exact
        "k": np.int64(64),
        "ok": np.bool_(True),
        "nan": float("nan"),
        "inf": -float("inf"),
        "scalar": torch.tensor(2.5, dtype=torch.float64),
        "vector": torch.tensor([1.0, float("nan"), float("inf")]),
        "matrix": np.arange(6, dtype=np.int32).reshape(2, 3),
        "pair": (1, "a"),
        "file": Path("solutions") / "00.png",
        "result": _Result(eta=torch.tensor(8.25), feasible=False),
        np.int64(3): "numpy key",
    }
    path = write_json_atomic(tmp_path / "sub" / "report.json", payload)
    text = path.read_text(encoding="utf-8")
    assert "NaN" not in text and "Infinity" not in text
    assert text.startswith('{\n  "tau": 0.5,')  # indent 2, keys in the given order
    assert json.loads(text) == {
        "tau": 0.5,
        "k": 64,
        "ok": True,
        "nan": None,
        "inf": None,
        "scalar": 2.5,
        "vector": [1.0, None, None],
        "matrix": [[0, 1, 2], [3, 4, 5]],
        "pair": [1, "a"],
        "file": "solutions/00.png",
        "result": {"eta": 8.25, "feasible": False},
        "3": "numpy key",
    }
    assert list(json.loads(text)) == ["tau", "k", "ok", "nan", "inf", "scalar", "vector", "matrix", "pair", "file", "result", "3"]
    assert sorted(p.name for p in path.parent.iterdir()) == ["report.json"]


def test_to_jsonable_rejects_unknown_types_naming_where():
    with pytest.raises(TypeError, match=r"report\['solutions'\]\[1\]: cannot write a value of type object"):
        to_jsonable({"solutions": [1, object()]}, where="report")
    with pytest.raises(TypeError, match="complex tensor"):
        to_jsonable(torch.tensor([1 + 2j]))
    with pytest.raises(TypeError, match="mapping key"):
        to_jsonable({(1, 2): 3})


def test_write_bytes_atomic_failure_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "sheet.png"
    write_bytes_atomic(path, b"old")

    def fail(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="No space left"):
        write_bytes_atomic(path, b"new")
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["sheet.png"]

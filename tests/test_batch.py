"""Batch runs: input discovery, shards from options and schedulers, resumable runs and manifests."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import socket
from datetime import datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console

from hvp_explore.io.atomic import OutputDirError, atomic_output_dir, is_complete
from hvp_explore.io.batch import (
    BatchResult,
    Shard,
    batch_summary_table,
    discover_inputs,
    manifest_path,
    output_name,
    output_names,
    read_manifests,
    resolve_shard,
    run_batch,
    select,
)

RECORD_KEYS = ["input", "output", "status", "seconds", "message", "summary", "shard", "host", "time"]


def _touch(folder: Path, *names: str) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_bytes(b"x")
    return [folder / name for name in names]


class FakeProcess:
    """A per-image callable like the CLI's: writes its folder atomically and returns summary figures.

    ``fail`` maps a file name to the exception raised for it; ``interrupt_on`` is the 1-based call
    number that raises KeyboardInterrupt half-way through writing the folder.
    """

    def __init__(self, *, fail: dict[str, BaseException] | None = None, interrupt_on: int | None = None):
        self.calls: list[str] = []
        self.fail = fail or {}
        self.interrupt_on = interrupt_on

    def __call__(self, input_path: Path, target: Path) -> dict:
        self.calls.append(input_path.name)
        if input_path.name in self.fail:
            raise self.fail[input_path.name]
        with atomic_output_dir(target) as tmp:
            (tmp / "input.txt").write_text(input_path.name)
            if len(self.calls) == self.interrupt_on:
                raise KeyboardInterrupt
        return {"solutions": len(input_path.name), "feasible": 2, "psnr": float("nan")}


def _lines(path: Path) -> list[dict]:
    text = path.read_text()
    assert text.endswith("\n")
    return [json.loads(line) for line in text.splitlines()]


@pytest.fixture
def images(tmp_path) -> list[Path]:
    return _touch(tmp_path / "in", *(f"img{i}.png" for i in range(7)))


# --------------------------------------------------------------------------------------------------
# discovery


def test_discover_inputs_sorted_filtered(tmp_path):
    folder = tmp_path / "in"
    _touch(folder, "b.png", "A.JPG", "c.jpeg", "d.npy", "e.Png", "notes.txt", "f.png.bak", ".hidden.png", "._a.png")
    _touch(folder / "sub", "g.png")
    (folder / "dir.png").mkdir()  # a folder with an image extension is not an input
    (folder / "link.npy").symlink_to(folder / "d.npy")
    (folder / "broken.png").symlink_to(folder / "missing.png")
    found = discover_inputs(folder)
    # Code-point order of the names: upper case before lower case, independent of the locale.
    assert [p.name for p in found] == ["A.JPG", "b.png", "c.jpeg", "d.npy", "e.Png", "link.npy"]
    assert all(p.parent == folder for p in found)
    assert discover_inputs(str(folder)) == found


def test_discover_inputs_errors(tmp_path):
    with pytest.raises(ValueError, match=r"^input folder .*nope does not exist$"):
        discover_inputs(tmp_path / "nope")
    (tmp_path / "f.png").write_bytes(b"x")
    with pytest.raises(ValueError, match=r"^input folder .*f\.png is a file: expected a folder of observations$"):
        discover_inputs(tmp_path / "f.png")
    empty = tmp_path / "empty"
    _touch(empty, ".hidden.png", "readme.txt")
    _touch(empty / "sub", "a.png")
    with pytest.raises(ValueError) as info:
        discover_inputs(empty)
    message = str(info.value)
    assert "\n" not in message
    assert "holds no observations" in message and ".png, .jpg, .jpeg, .npy" in message


# --------------------------------------------------------------------------------------------------
# shards


def test_shard_dataclass():
    shard = Shard(2, 5, "option")
    assert str(shard) == "2/5"
    with pytest.raises(dataclasses.FrozenInstanceError):
        shard.index = 1  # type: ignore[misc]
    for bad in [(5, 5), (-1, 3), (0, 0)]:
        with pytest.raises(ValueError, match="0 <= index < count"):
            Shard(*bad)
    with pytest.raises(ValueError, match="integer"):
        Shard(True, 2)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="source"):
        Shard(0, 1, "mpi")  # type: ignore[arg-type]


@pytest.mark.parametrize(("option", "expected"), [("0/1", (0, 1)), ("3/8", (3, 8)), (" 1 / 4 ", (1, 4)), ("07/10", (7, 10))])
def test_resolve_shard_option(option, expected):
    assert resolve_shard(option, env={}) == Shard(*expected, "option")


@pytest.mark.parametrize("option", ["3/3", "4/3", "0/0", "-1/3", "1", "a/b", "1/4/5", "", "1.0/4"])
def test_resolve_shard_bad_option(option):
    with pytest.raises(ValueError) as info:
        resolve_shard(option, env={})
    assert str(info.value) == f"--shard must look like i/n with 0 <= i < n, got {option}"


def test_resolve_shard_torchrun_and_slurm():
    assert resolve_shard(None, env={"RANK": "3", "WORLD_SIZE": "8", "LOCAL_RANK": "3"}) == Shard(3, 8, "torchrun")
    assert resolve_shard(None, env={"RANK": "0", "WORLD_SIZE": "1"}) == Shard(0, 1, "torchrun")
    # --array=0-15: the task id is the index.
    slurm = {"SLURM_ARRAY_TASK_ID": "5", "SLURM_ARRAY_TASK_COUNT": "16"}
    assert resolve_shard(None, env=slurm) == Shard(5, 16, "slurm")
    assert resolve_shard(None, env={**slurm, "SLURM_ARRAY_TASK_MIN": "0", "SLURM_ARRAY_TASK_MAX": "15"}) == Shard(5, 16, "slurm")
    # --array=1-16: the index is id - min, so the shards are 0..15 again.
    one_based = {"SLURM_ARRAY_TASK_COUNT": "16", "SLURM_ARRAY_TASK_MIN": "1", "SLURM_ARRAY_TASK_MAX": "16"}
    assert resolve_shard(None, env={**one_based, "SLURM_ARRAY_TASK_ID": "1"}) == Shard(0, 16, "slurm")
    assert resolve_shard(None, env={**one_based, "SLURM_ARRAY_TASK_ID": "16"}) == Shard(15, 16, "slurm")
    # Nothing set, or only empty values: one shard.
    assert resolve_shard(None, env={}) == Shard(0, 1, "single")
    assert resolve_shard(None, env={"RANK": "", "WORLD_SIZE": " ", "SLURM_ARRAY_TASK_ID": ""}) == Shard(0, 1, "single")


def test_resolve_shard_precedence(monkeypatch):
    torchrun = {"RANK": "1", "WORLD_SIZE": "2"}
    slurm = {"SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_COUNT": "4"}
    assert resolve_shard("2/3", env={**torchrun, **slurm}) == Shard(2, 3, "option")
    assert resolve_shard(None, env={**torchrun, **slurm}) == Shard(1, 2, "torchrun")
    # An explicit option is not checked against malformed scheduler variables: it wins outright.
    assert resolve_shard("0/2", env={"RANK": "x"}) == Shard(0, 2, "option")
    # The default environment is this process's.
    for name in ("RANK", "WORLD_SIZE", "SLURM_ARRAY_TASK_ID"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "2")
    monkeypatch.setenv("SLURM_ARRAY_TASK_COUNT", "3")
    monkeypatch.delenv("SLURM_ARRAY_TASK_MIN", raising=False)
    monkeypatch.delenv("SLURM_ARRAY_TASK_MAX", raising=False)
    assert resolve_shard(None) == Shard(2, 3, "slurm")


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({"RANK": "x", "WORLD_SIZE": "4"}, ["RANK"]),
        ({"RANK": "4", "WORLD_SIZE": "4"}, ["RANK", "WORLD_SIZE=4"]),
        ({"RANK": "-1", "WORLD_SIZE": "4"}, ["RANK"]),
        ({"RANK": "0", "WORLD_SIZE": "0"}, ["WORLD_SIZE"]),
        ({"RANK": "0", "WORLD_SIZE": "2.5"}, ["WORLD_SIZE"]),
        ({"RANK": "1"}, ["RANK", "WORLD_SIZE is not"]),
        ({"WORLD_SIZE": "4"}, ["WORLD_SIZE", "RANK is not"]),
        ({"SLURM_ARRAY_TASK_ID": "3"}, ["SLURM_ARRAY_TASK_COUNT is not"]),
        ({"SLURM_ARRAY_TASK_ID": "three", "SLURM_ARRAY_TASK_COUNT": "4"}, ["SLURM_ARRAY_TASK_ID"]),
        ({"SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_TASK_COUNT": "many"}, ["SLURM_ARRAY_TASK_COUNT"]),
        ({"SLURM_ARRAY_TASK_ID": "0", "SLURM_ARRAY_TASK_COUNT": "0"}, ["SLURM_ARRAY_TASK_COUNT"]),
        ({"SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_TASK_COUNT": "4", "SLURM_ARRAY_TASK_MIN": "x"}, ["SLURM_ARRAY_TASK_MIN"]),
        ({"SLURM_ARRAY_TASK_ID": "4", "SLURM_ARRAY_TASK_COUNT": "4"}, ["SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_COUNT=4"]),
        ({"SLURM_ARRAY_TASK_ID": "0", "SLURM_ARRAY_TASK_COUNT": "4", "SLURM_ARRAY_TASK_MIN": "1"}, ["SLURM_ARRAY_TASK_ID"]),
        # --array=0-14:2 has 8 tasks with ids 0, 2, ..., 14: id - min would skip shards.
        ({"SLURM_ARRAY_TASK_ID": "2", "SLURM_ARRAY_TASK_COUNT": "8", "SLURM_ARRAY_TASK_MIN": "0", "SLURM_ARRAY_TASK_MAX": "14"},
         ["not a contiguous range", "SLURM_ARRAY_TASK_MAX=14"]),
    ],
)
def test_resolve_shard_malformed_env(env, names):
    with pytest.raises(ValueError) as info:
        resolve_shard(None, env=env)
    message = str(info.value)
    assert "\n" not in message
    for name in names:
        assert name in message


def test_select_round_robin():
    items = list(range(11))
    assert select(items, Shard(0, 3)) == [0, 3, 6, 9]
    assert select(items, Shard(2, 3)) == [2, 5, 8]
    assert select(items, Shard(0, 1)) == items
    assert select(items[:2], Shard(4, 5)) == []
    for count in range(1, 14):
        parts = [select(items, Shard(i, count)) for i in range(count)]
        assert sorted(x for part in parts for x in part) == items  # disjoint, and together complete
        assert max(map(len, parts)) - min(map(len, parts)) <= 1  # balanced
    with pytest.raises(ValueError, match="Shard"):
        select(items, (0, 2))  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------------
# output names


def test_output_names_stems_and_collisions():
    sha = lambda name: hashlib.sha1(name.encode()).hexdigest()[:8]  # noqa: E731
    names = output_names([Path("in/b.png"), Path("in/a.png"), Path("in/a.npy"), Path("in/Cat.jpg"), Path("in/cat.PNG")])
    assert names == {
        Path("in/a.npy"): "a.npy",
        Path("in/a.png"): "a.png",
        Path("in/b.png"): "b",
        Path("in/Cat.jpg"): "Cat.jpg",  # stems equal ignoring case: distinct on case-insensitive file systems too
        Path("in/cat.PNG"): "cat.PNG",
    }
    # A full name equal to another input's stem: only the input still on its stem moves on.
    assert output_names(["a.png", "a.npy", "a.png.npy"]) == {
        Path("a.png"): "a.png", Path("a.npy"): "a.npy", Path("a.png.npy"): "a.png.npy",
    }
    # Full names equal ignoring case: the full name and a hash of it.
    assert output_names(["A.png", "a.png", "b.npy"]) == {
        Path("A.png"): f"A.png-{sha('A.png')}", Path("a.png"): f"a.png-{sha('a.png')}", Path("b.npy"): "b",
    }
    # A stem that reads like a manifest keeps away from the manifests.
    assert output_names(["manifest-0-of-2.jsonl.png", "x.png"]) == {
        Path("manifest-0-of-2.jsonl.png"): "manifest-0-of-2.jsonl.png", Path("x.png"): "x",
    }
    assert output_name("in/a.npy", ["in/a.png", "in/a.npy"]) == "a.npy"
    assert output_name("in/a.npy", ["in/a.npy"]) == "a"
    with pytest.raises(ValueError, match="not among the batch's inputs"):
        output_name("in/z.png", ["in/a.png"])
    with pytest.raises(ValueError, match="distinct file names"):
        output_names(["x/a.png", "y/a.png"])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from(["a", "A", "b", "a.png", "a.PNG", "manifest-0-of-1.jsonl"]), min_size=1, max_size=6),
       st.lists(st.sampled_from([".png", ".PNG", ".npy", ".jpg", ".jpeg"]), min_size=6, max_size=6), st.randoms())
def test_output_names_injective_and_order_free(stems, exts, rnd):
    files = sorted({stem + ext for stem, ext in zip(stems, exts)})
    names = output_names(files)
    assert len({n.casefold() for n in names.values()}) == len(files)  # distinct even ignoring case
    shuffled = list(files)
    rnd.shuffle(shuffled)
    assert output_names(shuffled) == names  # the order (and so the shard) does not matter
    stems_cf = [Path(f).stem.casefold() for f in files]
    for f in files:  # an unambiguous stem is kept unless it equals another input's full name
        stem = Path(f).stem
        if stems_cf.count(stem.casefold()) == 1 and not stem.startswith("manifest-") and all(
            g.casefold() != stem.casefold() for g in files
        ):
            assert names[Path(f)] == stem


# --------------------------------------------------------------------------------------------------
# running


def test_two_shards_cover_every_image_once(images, tmp_path):
    out = tmp_path / "out"
    processes = [FakeProcess(), FakeProcess()]
    # Two tasks of a Slurm array --array=1-2: the shards come from the variables.
    results = []
    for task, process in zip(("1", "2"), processes):
        env = {"SLURM_ARRAY_TASK_ID": task, "SLURM_ARRAY_TASK_COUNT": "2",
               "SLURM_ARRAY_TASK_MIN": "1", "SLURM_ARRAY_TASK_MAX": "2"}
        results.append(run_batch(images, out, process, shard=resolve_shard(None, env=env), quiet=True))
    names = [p.name for p in images]
    assert processes[0].calls == names[0::2] and processes[1].calls == names[1::2]
    assert sorted(processes[0].calls + processes[1].calls) == sorted(names)  # each once, none twice
    assert [(r.ok, r.skipped, r.error) for r in results] == [(4, 0, 0), (3, 0, 0)]
    assert [r.shard for r in results] == [Shard(0, 2, "slurm"), Shard(1, 2, "slurm")]
    for path in images:
        folder = out / path.stem
        assert is_complete(folder) and (folder / "input.txt").read_text() == path.name
    assert results[0].manifest == out / "manifest-0-of-2.jsonl" == manifest_path(out, Shard(0, 2))
    assert [r["input"] for r in _lines(results[0].manifest)] == names[0::2]
    assert [r["input"] for r in _lines(results[1].manifest)] == names[1::2]
    merged = read_manifests(out)
    assert [r["input"] for r in merged] == names and {r["status"] for r in merged} == {"ok"}
    # Running both shards again redoes nothing.
    again = [run_batch(images, out, p, shard=Shard(i, 2), quiet=True) for i, p in enumerate(processes)]
    assert len(processes[0].calls) + len(processes[1].calls) == len(images)
    assert [(r.ok, r.skipped, r.error) for r in again] == [(0, 4, 0), (0, 3, 0)]


def test_killed_batch_resumes_without_redoing(images, tmp_path):
    out = tmp_path / "out"
    names = [p.name for p in images]
    killed = FakeProcess(interrupt_on=3)
    with pytest.raises(KeyboardInterrupt):
        run_batch(images, out, killed, shard=Shard(0, 1), quiet=True)
    assert killed.calls == names[:3]
    assert [is_complete(out / p.stem) for p in images] == [True, True] + [False] * 5
    # Only the two finished images and the manifest: no partial folder of the third, no temporary folder.
    assert sorted(p.name for p in out.iterdir()) == ["img0", "img1", "manifest-0-of-1.jsonl"]
    assert [(r["input"], r["status"]) for r in _lines(out / "manifest-0-of-1.jsonl")] == [("img0.png", "ok"), ("img1.png", "ok")]

    rerun = FakeProcess()
    result = run_batch(images, out, rerun, shard=Shard(0, 1), quiet=True)
    assert rerun.calls == names[2:]  # the finished images are not redone
    assert (result.ok, result.skipped, result.error) == (5, 2, 0)
    assert [r["status"] for r in result.records] == ["skipped"] * 2 + ["ok"] * 5
    lines = _lines(out / "manifest-0-of-1.jsonl")
    assert [(r["input"], r["status"]) for r in lines[2:4]] == [("img0.png", "skipped"), ("img1.png", "skipped")]
    # A skipped image keeps the summary of its run, so the merged manifest still has its figures.
    assert lines[2]["summary"] == lines[0]["summary"] == {"solutions": 8, "feasible": 2, "psnr": None}
    assert lines[2]["seconds"] == lines[0]["seconds"] and lines[3]["seconds"] == lines[1]["seconds"]
    merged = read_manifests(out)
    assert [(r["input"], r["status"]) for r in merged] == [(n, "skipped") for n in names[:2]] + [(n, "ok") for n in names[2:]]
    assert all(r["summary"]["solutions"] == 8 for r in merged)
    # Skipped again: the figures are carried over from the skipped lines just as well.
    again = run_batch(images, out, FakeProcess(), shard=Shard(0, 1), quiet=True)
    assert [r["summary"] for r in again.records] == [r["summary"] for r in merged]
    assert [r["seconds"] for r in again.records] == [r["seconds"] for r in merged]
    # A complete folder that no manifest knows (manifests deleted): skipped, figures unknown.
    for path in out.glob("manifest-*.jsonl"):
        path.unlink()
    unknown = run_batch(images, out, FakeProcess(), shard=Shard(0, 1), quiet=True)
    assert {(r["status"], r["seconds"], str(r["summary"])) for r in unknown.records} == {("skipped", None, "{}")}


def test_errors_are_recorded_and_the_batch_goes_on(images, tmp_path):
    out = tmp_path / "out"
    fail = {
        "img1.png": ValueError("image size 30x30 does not fit the generator:\n expected 32x32"),
        "img3.png": OSError(5, "Input/output error"),
        "img5.png": FloatingPointError(""),
    }
    process = FakeProcess(fail=fail)
    result = run_batch(images, out, process, shard=Shard(0, 1), quiet=True)
    assert process.calls == [p.name for p in images]
    assert (result.ok, result.skipped, result.error) == (4, 0, 3)
    errors = {r["input"]: r["message"] for r in result.records if r["status"] == "error"}
    assert errors == {
        "img1.png": "image size 30x30 does not fit the generator: expected 32x32",  # one line
        "img3.png": "[Errno 5] Input/output error",
        "img5.png": "FloatingPointError",  # no message: the exception's name
    }
    assert all(r["summary"] == {} for r in result.records if r["status"] == "error")
    assert all(r["message"] is None for r in result.records if r["status"] == "ok")
    assert not any((out / name.removesuffix(".png")).exists() for name in fail)
    # A rerun retries only the failed images.
    fixed = FakeProcess()
    result = run_batch(images, out, fixed, shard=Shard(0, 1), quiet=True)
    assert fixed.calls == sorted(fail)
    assert (result.ok, result.skipped, result.error) == (3, 4, 0)
    assert {r["status"] for r in read_manifests(out)} == {"ok", "skipped"}


def test_other_exceptions_stop_the_batch(images, tmp_path):
    process = FakeProcess(fail={"img1.png": RuntimeError("a bug")})
    with pytest.raises(RuntimeError, match="a bug"):
        run_batch(images, tmp_path / "out", process, shard=Shard(0, 1), quiet=True)
    assert process.calls == ["img0.png", "img1.png"]

    def returns_list(input_path, target):
        return [1, 2]

    with pytest.raises(TypeError, match="mapping"):
        run_batch(images, tmp_path / "out2", returns_list, shard=Shard(0, 1), quiet=True)


def test_manifest_lines(images, tmp_path):
    out = tmp_path / "out"
    result = run_batch(images[:3], out, FakeProcess(fail={"img2.png": ValueError("bad")}), shard=Shard(1, 2), quiet=True)
    assert isinstance(result, BatchResult) and result.seconds >= 0
    lines = _lines(out / "manifest-1-of-2.jsonl")
    assert len(lines) == 1 and lines == list(result.records)  # shard 1/2 of img0..img2 is img1 alone
    record = lines[0]
    assert list(record) == RECORD_KEYS
    assert record["input"] == "img1.png" and record["output"] == "img1" and record["status"] == "ok"
    assert record["summary"] == {"solutions": 8, "feasible": 2, "psnr": None}  # NaN is written as null
    assert record["shard"] == "1/2" and record["host"] == socket.gethostname() and record["message"] is None
    assert isinstance(record["seconds"], float) and 0 <= record["seconds"] < 60
    assert datetime.fromisoformat(record["time"]).utcoffset().total_seconds() == 0
    shard0 = run_batch(images[:3], out, FakeProcess(fail={"img2.png": ValueError("bad")}), shard=Shard(0, 2), quiet=True)
    assert [(r["input"], r["status"], r["message"]) for r in shard0.records] == [
        ("img0.png", "ok", None), ("img2.png", "error", "bad"),
    ]
    for path in out.glob("manifest-*.jsonl"):
        for line in path.read_text().splitlines():
            assert list(json.loads(line)) == RECORD_KEYS


def test_read_manifests_merges_latest(tmp_path, caplog):
    out = tmp_path / "out"
    out.mkdir()
    base = {"output": "x", "seconds": 1.0, "message": None, "summary": {}, "host": "h"}
    old = {**base, "input": "a.png", "status": "error", "message": "bad", "shard": "0/2",
           "time": "2024-01-01T10:00:00.000000+00:00"}
    new = {**base, "input": "a.png", "status": "ok", "shard": "0/1", "time": "2024-01-02T10:00:00.000000+00:00"}
    b = {**base, "input": "b.png", "status": "ok", "shard": "1/2", "time": "2024-01-01T09:00:00.000000+00:00"}
    (out / "manifest-0-of-2.jsonl").write_text(json.dumps(old) + "\n")
    (out / "manifest-1-of-2.jsonl").write_text(json.dumps(b) + "\n" + '{"input": "c.png", "sta')  # cut short by a crash
    (out / "manifest-0-of-1.jsonl").write_text(json.dumps(new) + "\n\n")
    (out / "manifest-notes.jsonl").write_text("not a manifest\n")
    with caplog.at_level(logging.WARNING, logger="hvp_explore.io.batch"):
        merged = read_manifests(out)
    assert merged == [new, b]  # the later line wins for a.png, whatever the file order
    assert "manifest-1-of-2.jsonl line 2" in caplog.text
    assert read_manifests(tmp_path / "missing") == []


def test_append_after_torn_line(images, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "manifest-0-of-1.jsonl").write_text('{"input": "img9.png", "stat')  # a killed write
    run_batch(images[:2], out, FakeProcess(), shard=Shard(0, 1), quiet=True)
    lines = (out / "manifest-0-of-1.jsonl").read_text().splitlines()
    assert lines[0] == '{"input": "img9.png", "stat'
    assert [json.loads(line)["input"] for line in lines[1:]] == ["img0.png", "img1.png"]
    assert [r["input"] for r in read_manifests(out)] == ["img0.png", "img1.png"]


def test_output_folder_rules(images, tmp_path):
    # Missing: created, parents too.
    result = run_batch(images[:1], tmp_path / "a" / "b", FakeProcess(), shard=Shard(0, 1), quiet=True)
    assert result.ok == 1 and (tmp_path / "a" / "b" / "img0").is_dir()
    # A foreign non-empty folder is refused before any work, unless overwrite.
    foreign = tmp_path / "foreign"
    _touch(foreign, "thesis.tex")
    process = FakeProcess()
    with pytest.raises(OutputDirError) as info:
        run_batch(images, foreign, process, shard=Shard(0, 1), quiet=True)
    assert "holds neither batch manifests nor hvp-explore results; pass --overwrite" in str(info.value)
    assert process.calls == [] and sorted(p.name for p in foreign.iterdir()) == ["thesis.tex"]
    assert run_batch(images[:2], foreign, process, shard=Shard(0, 1), quiet=True, overwrite=True).ok == 2
    assert (foreign / "thesis.tex").read_bytes() == b"x"
    # Accepted without overwrite: a folder with another shard's manifest, with a finished result,
    # or with only a temporary folder of a run killed during its first image.
    for name, make in [
        ("with-manifest", lambda d: (d / "manifest-3-of-4.jsonl").write_text("")),
        ("with-result", lambda d: FakeProcess()(images[0], d / "img0")),
        ("with-temp", lambda d: (d / ".img0.hvp-new-0123abcd-99999-xyz").mkdir()),
        ("empty", lambda d: None),
    ]:
        folder = tmp_path / name
        folder.mkdir()
        make(folder)
        (folder / "thesis.tex").write_text("")
        if name == "empty":
            (folder / "thesis.tex").unlink()
        assert run_batch(images[:2], folder, FakeProcess(), shard=Shard(0, 1), quiet=True).error == 0
    (tmp_path / "file").write_text("")
    with pytest.raises(OutputDirError, match="is a file"):
        run_batch(images, tmp_path / "file", FakeProcess(), shard=Shard(0, 1), quiet=True)


def test_more_shards_than_images(images, tmp_path):
    result = run_batch(images[:2], tmp_path / "out", FakeProcess(), shard=Shard(5, 8), quiet=True)
    assert (result.ok, result.skipped, result.error, result.records) == (0, 0, 0, ())
    assert result.manifest.read_text() == ""  # the manifest exists: the folder is marked as a batch's


def test_run_batch_output_name_collisions_across_shards(tmp_path):
    inputs = _touch(tmp_path / "in", "a.png", "a.npy", "b.png")
    out = tmp_path / "out"
    processes = [FakeProcess(), FakeProcess()]
    for i, process in enumerate(processes):
        run_batch(inputs, out, process, shard=Shard(i, 2), quiet=True)
    # Sorted: a.npy, a.png, b.png; the names come from all three inputs in both shards.
    assert processes[0].calls == ["a.npy", "b.png"] and processes[1].calls == ["a.png"]
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["a.npy", "a.png", "b"]
    assert (out / "a.npy" / "input.txt").read_text() == "a.npy"
    assert {r["input"]: r["output"] for r in read_manifests(out)} == {"a.npy": "a.npy", "a.png": "a.png", "b.png": "b"}
    with pytest.raises(ValueError, match="Shard"):
        run_batch(inputs, out, FakeProcess(), shard="0/1", quiet=True)  # type: ignore[arg-type]


def test_batch_summary_table(images, tmp_path):
    out = tmp_path / "out"
    run_batch(images[:3], out, FakeProcess(fail={"img1.png": ValueError("bad [size]")}), shard=Shard(0, 1), quiet=True)
    result = run_batch(images[:3], out, FakeProcess(), shard=Shard(0, 1), quiet=True)
    table = batch_summary_table(result.records)
    assert [str(c.header) for c in table.columns] == ["input", "output", "status", "seconds", "solutions", "feasible", "psnr"]
    assert str(table.title) == "batch: 1 ok, 2 skipped, 0 error"
    merged = batch_summary_table(read_manifests(out), title="all shards")
    assert str(merged.title) == "all shards"
    first_run = _lines(out / "manifest-0-of-1.jsonl")[:3]
    table = batch_summary_table(first_run)
    assert [str(c.header) for c in table.columns][-1] == "message"
    console = Console(record=True, width=200)
    console.print(table)
    text = console.export_text()
    assert "batch: 2 ok, 0 skipped, 1 error" in text
    assert "bad [size]" in text  # literal text, not rich markup
    assert "img0.png" in text
    with pytest.raises(ValueError, match=r"records\[0\]"):
        batch_summary_table([["input"]])  # type: ignore[list-item]


def test_summary_figures_pass_through_unchanged(images, tmp_path):
    # Floats are written with full precision (json round-trips float64 exactly).
    value = math.pi / 7

    def process(input_path, target):
        with atomic_output_dir(target) as tmp:
            (tmp / "x").write_text("")
        return {"mse": value, "count": 3}

    result = run_batch(images[:1], tmp_path / "out", process, shard=Shard(0, 1), quiet=True)
    assert result.records[0]["summary"] == {"mse": value, "count": 3}
    assert read_manifests(tmp_path / "out")[0]["summary"]["mse"] == value


def test_refuses_home_as_output_folder(images, tmp_path, monkeypatch):
    # Each image's folder could replace a folder of the same name: never directly inside ~ or /.
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    process = FakeProcess()
    with pytest.raises(OutputDirError, match="refusing to use .* as a batch output folder"):
        run_batch(images, home, process, shard=Shard(0, 1), quiet=True, overwrite=True)
    with pytest.raises(OutputDirError, match="refusing"):
        run_batch(images, "/", process, shard=Shard(0, 1), quiet=True, overwrite=True)
    assert process.calls == [] and list(home.iterdir()) == []

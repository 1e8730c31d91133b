"""Batch runs: one output folder per observation, resumable, and sharded over many processes.

A batch takes every observation file of a folder (:func:`discover_inputs`), keeps the share of this
process (:func:`resolve_shard`, :func:`select`) and runs a per-image callable on each
(:func:`run_batch`), writing one subfolder per image into the output folder.

**Sharding.** The inputs are sorted by file name and shard ``i`` of ``n`` takes every n-th one
starting at the i-th, ``inputs[i::n]`` (round-robin, so the shares differ in size by at most one
image and stay balanced when file names group similar images). Every process computes the same
sorted list, so the ``n`` shards are disjoint and together cover every input exactly once, with no
communication between them: the shard comes from ``--shard i/n``, from torchrun (``RANK``,
``WORLD_SIZE``) or from a Slurm array (``SLURM_ARRAY_TASK_ID``, ``SLURM_ARRAY_TASK_COUNT``).

**Resuming.** Each image's folder is written atomically by the per-image callable (see
:mod:`hvp_explore.io.atomic`), so a folder holding the tool's marker is complete. A batch skips
complete folders, so a batch that was killed (Ctrl-C, a Slurm time limit, a lost node) is resumed by
running the same command again; a later run may use another number of shards.

**Manifests.** Every processed or skipped image appends one JSON line to the shard's own file
``manifest-<i>-of-<n>.jsonl`` in the output folder; no two shards write the same file, so no lock
is needed, and each line is written with a single ``write`` followed by ``fsync``.
:func:`read_manifests` merges the files of all shards (and of earlier runs) into one record per
input, the latest one.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import json
import logging
import os
import re
import socket
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal, TypeVar

from hvp_explore.io.atomic import OutputDirError, check_not_an_input, is_complete, to_jsonable
from hvp_explore.io.files import check_path_text, display_path, one_line
from hvp_explore.io._progress import progress_bar
from hvp_explore.io.tables import summary_table

logger = logging.getLogger(__name__)

T = TypeVar("T")

INPUT_EXTENSIONS = (".png", ".jpg", ".jpeg", ".npy")
"""File name endings of observations (compared case-insensitively)."""

SHARD_SOURCES = ("option", "torchrun", "slurm", "single")

STATUSES = ("ok", "skipped", "error")

CAUGHT_ERRORS = (ValueError, OSError, FloatingPointError)
"""Exceptions of one image that are recorded as an ``"error"`` and do not stop the batch."""

_MANIFEST = re.compile(r"manifest-(\d+)-of-(\d+)\.jsonl\Z")
_TEMPORARY = re.compile(r"\..+\.hvp-(new|old)-[0-9a-f]{8}-\d+-[^/]+\Z")  # _atomic's temporary folders
_SHARD_OPTION = re.compile(r"\s*(\d+)\s*/\s*(\d+)\s*\Z")


# --------------------------------------------------------------------------------------------------
# inputs


def _sort_key(path: Path) -> tuple[str, str]:
    # Code-point order of the file name: the same on every machine and locale, which the sharding needs.
    return path.name, str(path)


def discover_inputs(input_dir: Path | str, *, exclude: Iterable[Path | str] = ()) -> list[Path]:
    """The observation files directly inside ``input_dir``, sorted by file name.

    Files whose names end in one of :data:`INPUT_EXTENSIONS` (any case: ``.PNG`` counts) are
    inputs; hidden files (name starting with ``.``), subfolders and their content are ignored. A
    symbolic link to a file counts as that file. The order is the code-point order of the names,
    independent of the machine and locale, so every shard sees the same list.

    Args:
        input_dir: The folder.
        exclude: Files that are not observations even if they sit there (the ``--mask`` of the batch),
            compared after resolving links.

    Raises:
        ValueError: ``input_dir`` does not exist, is not a folder, cannot be read, holds no input, or holds
            a link that cannot be followed (a loop: named).
    """
    folder = Path(input_dir)
    if not folder.exists():
        raise ValueError(f"input folder {folder} does not exist")
    if not folder.is_dir():
        raise ValueError(f"input folder {folder} is a file: expected a folder of observations")
    try:
        with os.scandir(folder) as it:
            entries = [e for e in it if not e.name.startswith(".") and e.name.lower().endswith(INPUT_EXTENSIONS)]
    except OSError as exc:
        raise ValueError(f"cannot read input folder {folder}: {exc.strerror or exc}") from None
    names = []
    for entry in entries:
        try:
            if entry.is_file():
                names.append(entry.name)
        except OSError as exc:  # a loop of symbolic links: name it, rather than the folder
            raise ValueError(f"input {display_path(folder / entry.name)} cannot be followed ({exc.strerror or exc}): "
                             "remove the link or point it at a file") from None
    skip = {os.path.realpath(p) for p in exclude}
    names = [name for name in names if os.path.realpath(folder / name) not in skip]
    if not names:
        raise ValueError(
            f"input folder {folder} holds no observations: looked for files ending in "
            f"{', '.join(INPUT_EXTENSIONS)} (any case), hidden files and subfolders ignored"
        )
    return sorted((folder / name for name in names), key=_sort_key)


# --------------------------------------------------------------------------------------------------
# shards


@dataclasses.dataclass(frozen=True)
class Shard:
    """Share ``index`` of ``count`` of a batch, and where it came from.

    ``str(shard)`` is ``"index/count"``, the form ``--shard`` takes.

    Attributes:
        index: 0-based index, ``0 <= index < count``.
        count: Number of shards.
        source: ``"option"`` (``--shard``), ``"torchrun"``, ``"slurm"`` or ``"single"`` (one shard).
    """

    index: int
    count: int
    source: Literal["option", "torchrun", "slurm", "single"] = "single"

    def __post_init__(self) -> None:
        for name in ("index", "count"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"shard {name} must be an integer, got {value!r}")
        if not 0 <= self.index < self.count:
            raise ValueError(f"a shard must have 0 <= index < count, got {self.index}/{self.count}")
        if self.source not in SHARD_SOURCES:
            raise ValueError(f"shard source must be one of {', '.join(SHARD_SOURCES)}, got {self.source!r}")

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def _env(env: Mapping[str, str], name: str) -> str | None:
    # An empty value counts as unset, as in shell tests (${VAR:-}): schedulers sometimes export "".
    value = env.get(name)
    return value.strip() if value is not None and value.strip() else None


def _env_int(env: Mapping[str, str], name: str, *, expected: str) -> int:
    value = _env(env, name)
    if value is None or not re.fullmatch(r"[+-]?\d+", value):
        raise ValueError(f"environment variable {name} must be {expected}, got {env.get(name)!r}")
    return int(value)


def _torchrun_shard(env: Mapping[str, str]) -> Shard:
    rank, world = _env(env, "RANK"), _env(env, "WORLD_SIZE")
    if world is None:
        raise ValueError(f"RANK is set ({rank}) but WORLD_SIZE is not: torchrun sets both; set both or pass --shard i/n")
    if rank is None:
        raise ValueError(f"WORLD_SIZE is set ({world}) but RANK is not: torchrun sets both; set both or pass --shard i/n")
    count = _env_int(env, "WORLD_SIZE", expected="a positive integer")
    if count < 1:
        raise ValueError(f"environment variable WORLD_SIZE must be a positive integer, got {world!r}")
    index = _env_int(env, "RANK", expected=f"an integer in [0, WORLD_SIZE={count})")
    if not 0 <= index < count:
        raise ValueError(f"environment variable RANK must be an integer in [0, WORLD_SIZE={count}), got {rank!r}")
    return Shard(index, count, "torchrun")


def _slurm_shard(env: Mapping[str, str]) -> Shard:
    if _env(env, "SLURM_ARRAY_TASK_COUNT") is None:
        raise ValueError(
            "SLURM_ARRAY_TASK_ID is set but SLURM_ARRAY_TASK_COUNT is not (older Slurm): pass --shard i/n, "
            "e.g. --shard $SLURM_ARRAY_TASK_ID/16"
        )
    task = _env_int(env, "SLURM_ARRAY_TASK_ID", expected="a non-negative integer")
    count = _env_int(env, "SLURM_ARRAY_TASK_COUNT", expected="a positive integer")
    if count < 1:
        raise ValueError(f"environment variable SLURM_ARRAY_TASK_COUNT must be a positive integer, got {count}")
    first = 0
    if _env(env, "SLURM_ARRAY_TASK_MIN") is not None:
        first = _env_int(env, "SLURM_ARRAY_TASK_MIN", expected="a non-negative integer")
    if _env(env, "SLURM_ARRAY_TASK_MAX") is not None:
        last = _env_int(env, "SLURM_ARRAY_TASK_MAX", expected="a non-negative integer")
        # A stepped or listed array (--array=0-15:2, --array=1,5,9) leaves gaps between task ids:
        # id - min would skip shards and leave images unprocessed, so refuse it in every task.
        if last - first + 1 != count:
            raise ValueError(
                f"the Slurm array is not a contiguous range (SLURM_ARRAY_TASK_MIN={first}, "
                f"SLURM_ARRAY_TASK_MAX={last}, SLURM_ARRAY_TASK_COUNT={count}): submit --array=A-B "
                "without a step or list, or pass --shard i/n"
            )
    index = task - first
    if not 0 <= index < count:
        raise ValueError(
            f"environment variable SLURM_ARRAY_TASK_ID must lie in [SLURM_ARRAY_TASK_MIN={first}, "
            f"{first + count}) for an array of SLURM_ARRAY_TASK_COUNT={count} tasks, got {task}"
        )
    return Shard(index, count, "slurm")


def resolve_shard(option: str | None, env: Mapping[str, str] = os.environ) -> Shard:
    """The shard of this process: the ``--shard`` option, else torchrun's, else a Slurm array's.

    Precedence:

    1. ``option`` (``"i/n"``, from ``--shard``), with ``0 <= i < n``;
    2. torchrun: ``RANK`` and ``WORLD_SIZE`` (global rank and number of workers);
    3. a Slurm array: index ``SLURM_ARRAY_TASK_ID - SLURM_ARRAY_TASK_MIN`` (the offset is 0 when
       ``SLURM_ARRAY_TASK_MIN`` is unset) of ``SLURM_ARRAY_TASK_COUNT``; the array must be a
       contiguous range (``--array=0-15`` or ``--array=1-16``, not ``0-15:2`` or ``1,5,9``);
    4. otherwise the single shard ``0/1``.

    Empty variables count as unset.

    Args:
        option: ``"i/n"`` or None.
        env: The environment to read (default: this process's).

    Raises:
        ValueError: A malformed option, or a malformed or incomplete set of variables of the
            engine in use (the message names the variable).
    """
    if option is not None:
        match = _SHARD_OPTION.match(str(option))
        if match is None or not int(match.group(1)) < int(match.group(2)):
            raise ValueError(f"--shard must look like i/n with 0 <= i < n, got {option}")
        return Shard(int(match.group(1)), int(match.group(2)), "option")
    if _env(env, "RANK") is not None or _env(env, "WORLD_SIZE") is not None:
        return _torchrun_shard(env)
    if _env(env, "SLURM_ARRAY_TASK_ID") is not None:
        return _slurm_shard(env)
    return Shard(0, 1, "single")


def select(items: Sequence[T], shard: Shard) -> list[T]:
    """The items of ``shard``: ``items[shard.index::shard.count]`` (round-robin).

    ``items`` must be in the same order in every shard (as :func:`discover_inputs` returns them);
    then the shards of one count are disjoint and together hold every item exactly once.
    """
    if not isinstance(shard, Shard):
        raise ValueError(f"shard must be a Shard, got {type(shard).__name__}")
    return list(items)[shard.index :: shard.count]


# --------------------------------------------------------------------------------------------------
# output names


def output_names(inputs: Iterable[Path | str]) -> dict[Path, str]:
    """The output subfolder name of every input: its stem, unless that is ambiguous.

    The rule depends only on the set of inputs (not on their order nor on the shard), so every
    shard derives the same names:

    1. an input's folder is its stem: ``cat.png -> cat``;
    2. inputs whose stems are equal ignoring case (``a.png``, ``a.npy``, ``A.jpg``) all use their
       full file names instead: ``a.png -> a.png``, ``a.npy -> a.npy``. Case is ignored so that the
       names stay distinct on case-insensitive file systems (macOS, Windows shares); a stem that
       reads like a manifest file (``manifest-0-of-4.jsonl.png``) also uses the full name;
    3. should a name still be shared (a full name equal to another input's stem, such as
       ``a.png`` and ``a.png.npy``), the inputs with the shorter form in that group move on to the
       next form, the last being the full name followed by ``-`` and 8 hex digits of its sha1
       (for full names equal ignoring case: ``A.png`` and ``a.png``).

    Adding an input to the folder can change the names of inputs that share its stem (``a.png``
    becomes ``a.png`` once ``a.npy`` arrives); a finished ``a`` folder is then not recognised.

    Args:
        inputs: Input paths with distinct file names.

    Returns:
        Mapping input path (as ``Path``) -> folder name.

    Raises:
        ValueError: Two inputs with the same file name.
    """
    paths = sorted({Path(p) for p in inputs}, key=_sort_key)
    by_name: dict[str, Path] = {}
    for path in paths:
        if path.name in by_name:
            raise ValueError(f"inputs must have distinct file names, got {by_name[path.name]} and {path}")
        by_name[path.name] = path

    def form(path: Path, level: int) -> str:
        if level == 0:
            return path.stem
        if level == 1:
            return path.name
        return f"{path.name}-{hashlib.sha1(path.name.encode('utf-8', 'surrogateescape')).hexdigest()[:8]}"

    level = dict.fromkeys(paths, 0)
    while True:
        groups: dict[str, list[Path]] = {}
        for path in paths:
            groups.setdefault(form(path, level[path]).casefold(), []).append(path)
        bumped = False
        for key, members in groups.items():
            if len(members) > 1 or _MANIFEST.match(key):
                lowest = min(level[p] for p in members)
                for p in members:
                    if level[p] == lowest and lowest < 2:
                        level[p] += 1
                        bumped = True
        if not bumped:
            break
    names = {path: form(path, level[path]) for path in paths}
    if len({n.casefold() for n in names.values()}) != len(names):  # only a sha1 clash could get here
        raise ValueError("cannot give the inputs distinct output folder names: rename the inputs")
    return names


def output_name(path: Path | str, inputs: Iterable[Path | str]) -> str:
    """The output subfolder name of ``path`` among all the batch's ``inputs`` (see :func:`output_names`).

    ``inputs`` must be the whole batch (every shard's inputs), not one shard's share.

    Raises:
        ValueError: ``path`` is not among ``inputs``; or as :func:`output_names`.
    """
    names = output_names(inputs)
    try:
        return names[Path(path)]
    except KeyError:
        raise ValueError(f"{path} is not among the batch's inputs") from None


# --------------------------------------------------------------------------------------------------
# manifests


def manifest_path(out_dir: Path | str, shard: Shard) -> Path:
    """The shard's manifest file: ``out_dir/manifest-<index>-of-<count>.jsonl``."""
    return Path(out_dir) / f"manifest-{shard.index}-of-{shard.count}.jsonl"


def _manifest_files(out_dir: Path) -> list[Path]:
    try:
        with os.scandir(out_dir) as it:
            names = [e.name for e in it if _MANIFEST.match(e.name) and e.is_file()]
    except OSError:
        return []
    return [out_dir / name for name in sorted(names, key=lambda n: tuple(int(g) for g in _MANIFEST.match(n).groups()))]


def read_manifests(out_dir: Path | str) -> list[dict[str, Any]]:
    """Merge the manifests of all shards (and earlier runs) in ``out_dir``: one record per input.

    Where an input has several lines (a rerun, or runs with other shard counts), the one with the
    latest ``time`` wins (ties: the later file, then the later line). A line that is not a JSON
    object with ``input`` and ``time`` (a line cut short by a crash) is skipped with a warning.

    Returns:
        The records, sorted by input name; an empty list when there is no manifest.
    """
    latest: dict[str, tuple[tuple[str, int, int], dict[str, Any]]] = {}
    for file_no, path in enumerate(_manifest_files(Path(out_dir))):
        try:
            lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError as exc:
            logger.warning("cannot read manifest %s: %s", path, exc.strerror or exc)
            continue
        for line_no, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError:
                record = None
            if not (isinstance(record, dict) and isinstance(record.get("input"), str) and isinstance(record.get("time"), str)):
                logger.warning("%s line %d is not a manifest record; skipped", path.name, line_no)
                continue
            key = (record["time"], file_no, line_no)
            if record["input"] not in latest or key >= latest[record["input"]][0]:
                latest[record["input"]] = (key, record)
    return [latest[name][1] for name in sorted(latest)]


def _open_manifest(path: Path) -> None:
    """Create the manifest if missing; end a line cut short by a crash so the next line stays whole."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o666)  # the umask decides
        try:
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                os.write(fd, b"\n")
                os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        raise OutputDirError(f"cannot write manifest {path}: {exc.strerror or exc}") from None


def _append_line(path: Path, record: Mapping[str, Any]) -> None:
    """Append ``record`` (plain JSON types) as one line, and fsync."""
    data = (json.dumps(record, allow_nan=False, ensure_ascii=False) + "\n").encode("utf-8")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o666)
        try:
            # One write call: with O_APPEND the line lands whole at the end of the file.
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        raise OutputDirError(f"cannot write manifest {path}: {exc.strerror or exc}") from None


# --------------------------------------------------------------------------------------------------
# the batch


@dataclasses.dataclass(frozen=True)
class BatchResult:
    """What one shard of a batch did.

    Attributes:
        ok: Images processed in this run.
        skipped: Images found complete and not redone.
        error: Images whose processing failed (their messages are in ``records``).
        seconds: Wall-clock time of the run.
        manifest: The shard's manifest file.
        shard: The shard that ran.
        records: One manifest record per image of the shard, in processing order.
    """

    ok: int
    skipped: int
    error: int
    seconds: float
    manifest: Path
    shard: Shard
    records: tuple[dict[str, Any], ...]


def check_batch_dir(out_dir: Path | str, *, overwrite: bool, inputs: Iterable[Path | str] = ()) -> Path:
    """Check, without creating anything, that ``out_dir`` can receive a batch (call it before any work).

    The folder may be missing, empty, or hold a batch's output (manifests, result folders, temporary
    folders); with ``overwrite`` it may hold other files too (they are never touched). It may not be,
    nor contain, one of ``inputs`` (the input folder, a mask).

    Returns:
        The resolved folder.

    Raises:
        OutputDirError: As above, or the root or home folder, or a file.
    """
    folder = check_not_an_input(out_dir, inputs)
    if folder == Path(folder.anchor) or folder == Path(os.path.realpath(os.path.expanduser("~"))):
        # Each image's folder may replace a folder of the same name: never inside / or ~.
        raise OutputDirError(f"refusing to use {folder} as a batch output folder: choose a folder of its own")
    if folder.exists() and not folder.is_dir():
        raise OutputDirError(f"output folder {folder} exists and is a file: expected a folder or a path that does not exist")
    if folder.is_dir() and not overwrite:
        try:
            with os.scandir(folder) as it:
                entries = [(e.name, e.is_dir()) for e in it]
        except OSError as exc:
            raise OutputDirError(f"cannot read output folder {folder}: {exc.strerror or exc}") from None
        ours = any(
            _MANIFEST.match(name) or (is_dir and (_TEMPORARY.match(name) or is_complete(folder / name)))
            for name, is_dir in entries
        )
        if entries and not ours:
            raise OutputDirError(
                f"output folder {folder} exists and holds neither batch manifests nor hvp-explore results; "
                "pass --overwrite to write into it anyway"
            )
    return folder


def _create_batch_dir(out_dir: Path | str, *, overwrite: bool) -> Path:
    """Create ``out_dir`` after :func:`check_batch_dir`."""
    folder = check_batch_dir(out_dir, overwrite=overwrite)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputDirError(f"cannot create output folder {folder}: {exc.strerror or exc}") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputDirError(f"cannot write into output folder {folder}: permission denied")
    return folder


def _lock(path: Path, *, exclusive: bool, shard: Shard, folder: Path) -> int | None:
    """Take an advisory lock (``flock``) on the file or folder ``path``; the kernel releases it when the process ends,
    even killed, so a lock never outlives its batch.

    Returns:
        The open descriptor holding it (close it to release), or None where there are no such locks (Windows, or a
        file system that refuses them).

    Raises:
        OutputDirError: Another live batch holds it.
    """
    try:
        import fcntl
    except ImportError:  # Windows: concurrent batches are the user's to avoid
        return None
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        if exc.errno not in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES):
            return None  # no locks on this file system
        raise OutputDirError(f"another live batch is writing into {folder} (shard {shard} or the whole folder), so this batch "
                             "stops: wait for it to end, or give this one another --out (shards of one batch take "
                             "--shard i/n)") from None
    return fd


def _claim(folder: Path, shard: Shard) -> list[int | None]:
    """Hold ``folder`` for this shard: two batches of the same shard (or an unsharded one beside any other) would
    compute every image twice and each record the other's complete folders as errors.

    The folder itself is locked, exclusively by an unsharded batch and shared by shards; the shard's manifest
    exclusively. No lock file is added to the folder.
    """
    fds = [_lock(folder, exclusive=shard.count == 1, shard=shard, folder=folder)]
    try:
        manifest = manifest_path(folder, shard)
        _open_manifest(manifest)
        fds.append(_lock(manifest, exclusive=True, shard=shard, folder=folder))
    except BaseException:
        _release(fds)
        raise
    return fds


def _release(fds: list[int | None]) -> None:
    for fd in fds:
        if fd is not None:
            os.close(fd)


def _bad_name(path: Path) -> str | None:
    """Why ``path``'s name cannot be processed (not UTF-8, a control character), or None."""
    try:
        check_path_text(path.name, "input")
    except ValueError as exc:
        return str(exc)
    return None


def run_batch(
    inputs: Sequence[Path | str],
    out_dir: Path | str,
    process: Callable[[Path, Path], Mapping[str, Any] | None],
    *,
    shard: Shard,
    quiet: bool | None = None,
    overwrite: bool = False,
    redo: bool = False,
) -> BatchResult:
    """Run ``process`` on this shard's inputs, one output subfolder each, skipping finished ones.

    For each input of ``select(sorted inputs, shard)``, the target is ``out_dir / name`` with the
    name from :func:`output_names` over **all** ``inputs``. If the target is complete
    (:func:`~hvp_explore.io.atomic.is_complete`) it is skipped; otherwise ``process(input, target)``
    runs. It must write the target atomically (:func:`~hvp_explore.io.atomic.atomic_output_dir`) and
    return a mapping of summary figures for the manifest (JSON-serialisable; NaN becomes null).

    Each image appends one line to the shard's manifest (:func:`manifest_path`): ``input`` (file
    name), ``output`` (subfolder name), ``status`` (``"ok"``, ``"skipped"``, ``"error"``),
    ``seconds`` (the time ``process`` took), ``message`` (the error, else null), ``summary`` (from
    ``process``). A skipped image's line repeats the ``seconds`` and ``summary`` of the earlier line
    that recorded its result (null and ``{}`` when no manifest has it), so that the latest line of
    each image describes its result.
    ``shard`` (``"i/n"``), ``host`` and ``time`` (UTC, ISO 8601).

    Failures: a ``ValueError``, ``OSError`` or ``FloatingPointError`` raised by ``process`` is
    recorded as an ``"error"`` with its one-line message and the batch goes on. So is an input whose
    file name is not valid UTF-8 or holds a control character (it cannot be written to the manifest as
    it is): it is recorded under its escaped name (``\xff``) without calling ``process``, every time,
    so it never blocks the shard. Any other exception
    (a bug, ``KeyboardInterrupt``) stops the batch at once and propagates; nothing is recorded for
    that image, and its folder does not appear since it is written atomically. Running the same
    batch again resumes it.

    Args:
        inputs: All the batch's inputs (every shard's), e.g. :func:`discover_inputs`; their file
            names must be distinct.
        out_dir: Output folder, created if missing.
        process: ``process(input_path, target) -> summary``.
        shard: This process's share (:func:`resolve_shard`).
        quiet: No progress bar (it is drawn only on a terminal anyway).
        overwrite: Accept an existing non-empty ``out_dir`` that holds neither manifests nor
            results of this tool (its files are left alone).
        redo: Process the images whose folder is complete too (``process`` must then replace it:
            the command line's ``--overwrite``); by default they are skipped, which resumes a batch.

    Returns:
        :class:`BatchResult`.

    Raises:
        ValueError: Duplicate input file names; ``shard`` not a :class:`Shard`.
        OutputDirError: ``out_dir`` cannot be used (see ``overwrite``) or the manifest cannot be written.
    """
    if not isinstance(shard, Shard):
        raise ValueError(f"shard must be a Shard, got {type(shard).__name__}")
    names = output_names(inputs)
    mine = select(sorted(names, key=_sort_key), shard)
    folder = _create_batch_dir(out_dir, overwrite=overwrite)
    locks = _claim(folder, shard)
    try:
        return _run_shard(folder, names, mine, process, shard=shard, quiet=quiet, redo=redo)
    finally:
        _release(locks)


def _run_shard(folder: Path, names: dict[Path, str], mine: list[Path], process, *, shard: Shard, quiet: bool | None,
               redo: bool) -> BatchResult:
    """:func:`run_batch` once the folder is held."""
    manifest = manifest_path(folder, shard)
    _open_manifest(manifest)
    earlier = {record["input"]: record for record in read_manifests(folder)}
    host = socket.gethostname()
    start = time.perf_counter()
    records: list[dict[str, Any]] = []
    counts = dict.fromkeys(STATUSES, 0)
    with progress_bar(f"batch {shard}", len(mine), quiet=quiet) as bar:
        for path in mine:
            target = folder / names[path]
            tic = time.perf_counter()
            message = _bad_name(path)
            if message is not None:
                status, summary, seconds = "error", {}, None
            elif is_complete(target) and not redo:
                # The line stands for the finished result (the latest line wins in read_manifests),
                # so it repeats the time and figures of the line that made the folder, if known.
                status, summary, seconds = "skipped", {}, None
                previous = earlier.get(path.name)
                if previous is not None and previous.get("status") in ("ok", "skipped"):
                    if isinstance(previous.get("summary"), dict):
                        summary = previous["summary"]
                    if isinstance(previous.get("seconds"), (int, float)):
                        seconds = previous["seconds"]
            else:
                try:
                    summary = process(path, target)
                    status = "ok"
                except CAUGHT_ERRORS as exc:
                    status, summary, message = "error", {}, one_line(exc)
                seconds = time.perf_counter() - tic
                if summary is None:
                    summary = {}
                if not isinstance(summary, Mapping):
                    raise TypeError(f"process must return a mapping of summary figures or None, got {type(summary).__name__}")
            record_name = display_path(path.name)
            record = to_jsonable({
                "input": record_name,
                "output": display_path(names[path]),
                "status": status,
                "seconds": seconds,
                "message": message,
                "summary": dict(summary),
                "shard": str(shard),
                "host": host,
                "time": datetime.now(timezone.utc).isoformat(timespec="microseconds"),
            }, where=f"summary of {record_name}")
            _append_line(manifest, record)
            records.append(record)
            counts[status] += 1
            bar.advance(status=f"{record['input']}: {status}")
    return BatchResult(
        ok=counts["ok"],
        skipped=counts["skipped"],
        error=counts["error"],
        seconds=time.perf_counter() - start,
        manifest=manifest,
        shard=shard,
        records=tuple(records),
    )


def batch_summary_table(records: Sequence[Mapping[str, Any]], *, title: str | None = None):
    """A ``rich.table.Table`` of batch records (from :class:`BatchResult` or :func:`read_manifests`).

    Columns: input, output, status, seconds, then every scalar entry of the records' ``summary``
    (in order of first appearance), then ``message`` when an image failed. The default title counts
    the statuses, e.g. ``"batch: 14 ok, 2 skipped, 1 error"``.
    """
    keys: list[str] = []
    rows = []
    for i, record in enumerate(records):
        if not isinstance(record, Mapping):
            raise ValueError(f"records[{i}] must be a mapping (a manifest record), got {type(record).__name__}")
        summary = record.get("summary") if isinstance(record.get("summary"), Mapping) else {}
        scalars = {k: v for k, v in summary.items() if not isinstance(v, (Mapping, list, tuple))}
        for key in scalars:
            if key not in keys and key not in ("input", "output", "status", "seconds", "message"):
                keys.append(key)
        rows.append({**scalars, **{k: record.get(k) for k in ("input", "output", "status", "seconds", "message")}})
    columns = ["input", "output", "status", "seconds", *keys]
    if any(row["message"] is not None for row in rows):
        columns.append("message")
    if title is None:
        counts = {s: sum(row["status"] == s for row in rows) for s in STATUSES}
        title = "batch: " + ", ".join(f"{counts[s]} {s}" for s in STATUSES)
    return summary_table(rows, columns, title=title)


__all__ = [
    "BatchResult",
    "CAUGHT_ERRORS",
    "INPUT_EXTENSIONS",
    "Shard",
    "batch_summary_table",
    "check_batch_dir",
    "discover_inputs",
    "manifest_path",
    "output_name",
    "output_names",
    "read_manifests",
    "resolve_shard",
    "run_batch",
    "select",
]

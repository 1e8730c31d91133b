"""Atomic output: files and whole output folders that are either complete or absent.

A run writes into a hidden temporary folder BESIDE its target (same parent, so the final move is a
``rename`` on one file system, never a copy) and moves it into place only when everything is
written. A marker file (``.hvp-explore.json``: tool, version, command, time) is written last, so a
folder holding it is a complete run of this tool: the batch command skips such folders
(:func:`is_complete`), and a later run replaces one only with ``--overwrite``. A non-empty folder
without the marker is never replaced, ``--overwrite`` or not, and no output folder may contain an
input of the run. Files and folders get the permissions the umask gives (``tempfile`` would make
them private: 0600 and 0700), so results can be shared as any other file.

Replacing an existing folder takes two renames (old folder aside, new folder in place), because
POSIX ``rename`` cannot put a folder over a non-empty one:

1. ``target -> .<name>.hvp-old-<host>-<pid>-<token>``
2. ``.<name>.hvp-new-<host>-<pid>-<token> -> target``
3. delete the old folder.

What an interruption leaves behind, at each moment:

- before step 1: the old folder at the target (the new one is in its temporary folder);
- between steps 1 and 2: if the second rename raises (an ``OSError``, a Ctrl-C), the old folder is
  renamed back at once, so the target again holds the old complete folder. If the process is killed
  outright there, the target is briefly absent and the old complete folder sits at the
  ``.hvp-old-`` name: the next :func:`check_output_dir` or :func:`atomic_output_dir` on that target
  renames it back (:func:`recover_output_dir`) — the interrupted run's new output is discarded, the
  previous state is restored;
- after step 2: the new complete folder at the target; a leftover ``.hvp-old-`` folder is deleted.

Temporary folders left by killed processes are deleted by the next run on the same target, once the
process that owned them (named by host and pid in the folder's name) is known to be gone: only
folders of processes of the same host can be checked, so on a shared file system a folder left by a
process killed on another machine stays until removed by hand (it is hidden and never read).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import re
import secrets
import shlex
import shutil
import socket
import sys
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any


logger = logging.getLogger(__name__)

TOOL_NAME = "hvp-explore"
MARKER_NAME = ".hvp-explore.json"
"""File written last into every output folder of this tool; its presence means the folder is complete."""

_KINDS = ("new", "old")
_MAX_NAME_PART = 100  # keeps temporary names below NAME_MAX (255 bytes) for long target names


class OutputDirError(ValueError):
    """The output folder cannot be written or must not be replaced (one-line message)."""


# --------------------------------------------------------------------------------------------------
# files


def write_bytes_atomic(path: Path | str, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same folder and ``os.replace``.

    A reader never sees a half-written file; the folder is created if needed.

    Returns:
        The path written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        if hasattr(os, "fchmod"):
            os.fchmod(fd, 0o666 & ~current_umask())  # mkstemp makes 0600; a plain open() would follow the umask
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())  # data on disk before the rename makes it visible
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.filename is None:  # "No space left on device" alone names no file
            raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from None
        raise
    return path


def save_tensors(obj: Any, path: Path | str) -> Path:
    """``torch.save(obj, path)``, with a failed write (a full disk, a quota) as a one-line ``OSError`` naming the file.

    torch reports a failed write as a ``RuntimeError`` from its C++ zip writer ("enforce fail at
    inline_container.cc"), which names neither the file nor the cause.
    """
    import torch

    path = Path(path)
    try:
        torch.save(obj, path)
    except RuntimeError as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if "inline_container" not in message and "write" not in message.lower():
            raise  # not a failed write: a bug keeps its traceback
        try:
            free = shutil.disk_usage(path.parent).free
        except OSError:
            free = None
        cause = f"the disk is full ({free} bytes free)" if free is not None and free < (1 << 20) else message
        raise OSError(f"cannot write {path}: {cause}; free some space (or choose another --out) and rerun") from None
    return path


def current_umask() -> int:
    """The process's umask (read by setting it and putting it back: POSIX has no read-only call)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def to_jsonable(obj: Any, *, where: str = "payload") -> Any:
    """Convert ``obj`` to plain JSON types: NaN and infinities become ``None``.

    Converted: numpy and torch scalars and arrays (to numbers and nested lists), tuples, paths (to
    strings), dataclass instances (to objects of their fields) and mappings (keys must be strings,
    numbers, booleans or None, as JSON allows).

    Raises:
        TypeError: A value of another type; the message names where it sits (``payload['a'][2]``).
    """
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    # numpy and torch are looked up, not imported: a value of theirs exists only if they are loaded, and the
    # command line writes folders without loading torch when it need not.
    np, torch = sys.modules.get("numpy"), sys.modules.get("torch")
    if np is not None and isinstance(obj, np.generic):
        obj = obj.item()  # numpy bool/int/float -> Python; np.float64 is also a float, so check first
        if isinstance(obj, (complex, bytes)):
            raise TypeError(f"{where}: cannot write a {type(obj).__name__} value to JSON")
        return to_jsonable(obj, where=where)
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, float):
        return float(obj) if math.isfinite(obj) else None
    if torch is not None and isinstance(obj, torch.Tensor):
        if obj.is_complex():
            raise TypeError(f"{where}: cannot write a complex tensor to JSON")
        obj = obj.detach().cpu()
        return to_jsonable(obj.item() if obj.dim() == 0 else obj.tolist(), where=where)
    if np is not None and isinstance(obj, np.ndarray):
        if obj.dtype.kind not in "biuf":
            raise TypeError(f"{where}: cannot write a numpy array of dtype {obj.dtype} to JSON")
        return to_jsonable(obj.tolist(), where=where)
    if isinstance(obj, Path):
        return str(obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        # Not dataclasses.asdict: it deep-copies every field (tensors included) before we convert them.
        obj = {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        out = {}
        for key, value in obj.items():
            if np is not None and isinstance(key, np.generic):
                key = key.item()
            if not (key is None or isinstance(key, (str, int, float, bool))):
                raise TypeError(f"{where}: mapping key {key!r} of type {type(key).__name__} is not valid in JSON")
            out[key] = to_jsonable(value, where=f"{where}[{key!r}]")
        return out
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v, where=f"{where}[{i}]") for i, v in enumerate(obj)]
    raise TypeError(f"{where}: cannot write a value of type {type(obj).__name__} to JSON")


def write_json_atomic(path: Path | str, payload: Any) -> Path:
    """Write ``payload`` as strict JSON (indent 2, keys in their given order), atomically.

    Values are converted by :func:`to_jsonable` first, so NaN and infinities become ``null`` and
    the file is valid for every JSON parser (``allow_nan=False`` guarantees it).

    Returns:
        The path written.
    """
    text = json.dumps(to_jsonable(payload), indent=2, sort_keys=False, allow_nan=False, ensure_ascii=False)
    return write_bytes_atomic(path, (text + "\n").encode("utf-8"))


# --------------------------------------------------------------------------------------------------
# folders


def is_complete(folder: Path | str, *, marker_name: str = MARKER_NAME) -> bool:
    """Whether ``folder`` holds this tool's marker: a JSON object with ``"tool": "hvp-explore"``.

    The marker is written last, so its presence means the run that wrote the folder finished.
    """
    return _read_marker(Path(folder), marker_name) is not None


def _read_marker(folder: Path, marker_name: str = MARKER_NAME) -> dict | None:
    """The marker of ``folder`` as a dict, or None when there is none or it is not this tool's."""
    marker = folder / marker_name
    try:
        if not marker.is_file():
            return None
        content = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):  # unreadable or not JSON: not ours
        return None
    return content if isinstance(content, dict) and content.get("tool") == TOOL_NAME else None


def _files_in(folder: Path) -> list[str]:
    """Every file (and link) under ``folder``, as sorted relative POSIX paths."""
    found = []
    for root, dirs, files in os.walk(folder):
        base = Path(root).relative_to(folder)
        found += [(base / name).as_posix() for name in files]
        found += [(base / name).as_posix() for name in dirs if os.path.islink(os.path.join(root, name))]
    return sorted(found)


def foreign_files(folder: Path | str, *, marker_name: str = MARKER_NAME) -> list[str]:
    """The files of a complete output folder that hvp-explore did not write there (a user's NOTES.txt).

    The marker lists the files the run wrote; for a marker of an older version without that list, the files
    changed after the marker was written count as foreign (the marker is written last).

    Returns:
        Relative paths, sorted; empty when the folder holds only what the tool wrote (or is not complete).
    """
    folder = Path(folder)
    marker = _read_marker(folder, marker_name)
    if marker is None:
        return []
    present = [name for name in _files_in(folder) if name != marker_name]
    written = marker.get("files")
    if isinstance(written, list):
        return [name for name in present if name not in set(written)]
    written_at = (folder / marker_name).stat().st_mtime
    return [name for name in present if os.lstat(folder / name).st_mtime > written_at + 1]


def _resolve(target: Path | str) -> Path:
    # The real path: for a symlinked output folder, the outputs go where the link points, and the
    # temporary folder sits beside the real folder (same file system, so rename stays atomic).
    return Path(os.path.realpath(os.path.expanduser(os.fspath(target))))


def _name_part(target: Path) -> str:
    name = target.name
    if len(name) > _MAX_NAME_PART:
        name = name[:80] + "~" + hashlib.sha1(name.encode()).hexdigest()[:12]
    return name


def _host_tag() -> str:
    return hashlib.sha1(socket.gethostname().encode()).hexdigest()[:8]


def _temp_prefix(target: Path, kind: str) -> str:
    return f".{_name_part(target)}.hvp-{kind}-{_host_tag()}-{os.getpid()}-"


def _temporaries(target: Path, kind: str) -> Iterator[tuple[Path, str, int]]:
    """Siblings of ``target`` that are this tool's temporary folders of ``kind``: (path, host, pid)."""
    prefix = f".{_name_part(target)}.hvp-{kind}-"
    pattern = re.compile(re.escape(prefix) + r"([0-9a-f]{8})-(\d+)-[^/]+\Z")
    try:
        # scandir + a prefix test: cheap even in a batch folder with many thousands of entries.
        with os.scandir(target.parent) as it:
            names = sorted(e.name for e in it if e.name.startswith(prefix) and e.is_dir(follow_symlinks=False))
    except OSError:
        return
    for name in names:
        match = pattern.match(name)
        if match:
            yield target.parent / name, match.group(1), int(match.group(2))


def _pid_alive(pid: int) -> bool:
    if os.name != "posix":
        return True  # no safe liveness probe (os.kill would terminate on Windows): assume alive
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by another user
    return True


def _owned_by_live_other(host: str, pid: int) -> bool:
    return host == _host_tag() and pid != os.getpid() and _pid_alive(pid)


def temporary_prefix(prefix: str) -> str:
    """``prefix`` followed by this host's tag and this process's id, for a temporary folder that
    :func:`remove_stale_temporaries` can delete once the process is gone."""
    return f"{prefix}{_host_tag()}-{os.getpid()}-"


def remove_stale_temporaries(parent: Path | str, prefix: str) -> list[Path]:
    """Delete the folders ``parent/<prefix><host>-<pid>-*`` of processes of this host that are gone (killed outright).

    Folders of live processes, of other hosts, or named otherwise are left alone.

    Returns:
        The folders deleted.
    """
    pattern = re.compile(re.escape(prefix) + r"([0-9a-f]{8})-(\d+)-[^/]+\Z")
    removed = []
    try:
        with os.scandir(parent) as it:
            names = sorted(e.name for e in it if e.name.startswith(prefix) and e.is_dir(follow_symlinks=False))
    except OSError:
        return removed
    for name in names:
        match = pattern.match(name)
        if match and match.group(1) == _host_tag() and int(match.group(2)) != os.getpid() and not _pid_alive(int(match.group(2))):
            shutil.rmtree(Path(parent) / name, ignore_errors=True)
            removed.append(Path(parent) / name)
    return removed


def recover_output_dir(target: Path | str, *, marker_name: str = MARKER_NAME) -> Path | None:
    """Restore a previous complete folder that an interrupted swap left aside; return it, or None.

    Only acts when ``target`` is absent and a complete ``.<name>.hvp-old-...`` sibling exists that
    no other live process on this host owns (that process may be in the middle of its own swap).
    """
    target = _resolve(target)
    if target.exists() or target.is_symlink():
        return None
    candidates = [
        path
        for path, host, pid in _temporaries(target, "old")
        if not _owned_by_live_other(host, pid) and is_complete(path, marker_name=marker_name)
    ]
    if not candidates:
        return None
    newest = max(candidates, key=lambda p: (p.stat().st_mtime, p.name))
    os.rename(newest, target)
    logger.warning("restored the previous output folder %s, left aside by an interrupted run", target)
    return target


def _remove_stale(target: Path) -> None:
    """Delete temporary folders of ``target`` left by processes of this host that are gone."""
    for kind in _KINDS:
        if kind == "old" and not target.exists():
            continue  # the only copy of the previous output: recover_output_dir's business, never delete
        for path, host, pid in _temporaries(target, kind):
            if host == _host_tag() and pid != os.getpid() and not _pid_alive(pid):
                shutil.rmtree(path, ignore_errors=True)


def _nearest_existing(path: Path) -> Path:
    while not (path.exists() or path.is_symlink()) and path.parent != path:
        path = path.parent
    return path


def _protected(target: Path) -> str | None:
    cwd = Path(os.path.realpath(os.getcwd()))
    home = _resolve("~")
    if target == Path(target.anchor):
        return "it is the root of the file system"
    if target == home:
        return "it is the home folder"
    if target == cwd or target in cwd.parents:
        return "it is or contains the current folder"
    return None


def check_not_an_input(target: Path | str, inputs: Iterable[Path | str]) -> Path:
    """The resolved ``target``, after checking that it neither is nor contains one of ``inputs`` (symbolic links resolved).

    Replacing such a folder would delete the input; writing into it would mix results with data.

    Raises:
        OutputDirError: The target is an input or holds one.
    """
    target = _resolve(target)
    for item in inputs:
        resolved = _resolve(item)
        if resolved == target or target in resolved.parents:
            raise OutputDirError(f"output folder {target} would contain the input {item}: choose an --out outside the inputs")
    return target


def check_output_dir(target: Path | str, *, overwrite: bool = False, inputs: Iterable[Path | str] = (),
                     marker_name: str = MARKER_NAME) -> Path:
    """Check, before any work, that ``target`` can receive this tool's output folder.

    Call it before long work so that a bad ``--out`` fails at once. It first restores a previous
    output that an interrupted run left aside (:func:`recover_output_dir`).

    Args:
        target: The output folder.
        overwrite: Allow replacing an existing folder that this tool wrote (it holds the marker).
        inputs: The run's input files and folders: the target may not be one of them nor contain one.
        marker_name: Name of the marker file.

    Returns:
        The resolved target path.

    Raises:
        OutputDirError: The target is a file; it is or contains an input; a non-empty folder
            without the marker (never replaced); a folder with the marker and ``overwrite`` is
            False; a folder that holds files hvp-explore did not write (:func:`foreign_files`, named); the root,
            home or current folder, or a mount point (never replaced); or its parent folder cannot be created or written.
    """
    target = check_not_an_input(target, inputs)
    recover_output_dir(target, marker_name=marker_name)
    if target.exists() and not target.is_dir():
        raise OutputDirError(f"output folder {target} exists and is a file: expected a folder or a path that does not exist")
    if target.is_dir():
        reason = _protected(target)
        if reason is not None:
            raise OutputDirError(f"refusing to use {target} as the output folder: {reason}, and it would be replaced")
        try:
            non_empty = any(target.iterdir())
        except OSError as exc:
            raise OutputDirError(f"cannot read output folder {target}: {exc.strerror or exc}") from None
        if non_empty and not is_complete(target, marker_name=marker_name):
            raise OutputDirError(f"output folder {target} exists and was not written by hvp-explore: choose another --out "
                                 "(only folders hvp-explore wrote are ever replaced)")
        foreign = foreign_files(target, marker_name=marker_name) if non_empty else []
        if foreign:  # replacing the folder would delete them: a user's notes are never collateral
            shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
            raise OutputDirError(f"output folder {target} holds files hvp-explore did not write ({shown}): move them out of "
                                 "it, or choose another --out (replacing the folder would delete them)")
        if non_empty and not overwrite:
            raise OutputDirError(f"output folder {target} holds an earlier hvp-explore run: pass --overwrite to replace it")
        if os.path.ismount(target):  # the outputs are renamed into place, and a mount point cannot be renamed over
            raise OutputDirError(f"output folder {target} is a mount point, which hvp-explore cannot replace by renaming: "
                                 f"use a folder inside it, e.g. --out {target / 'run'}")
    check_parent_writable(target, "output folder")
    return target


def check_parent_writable(target: Path | str, what: str = "output") -> Path:
    """Check that ``target`` (a folder or a file) can be created: its nearest existing parent is a folder that accepts one.

    A probe folder is created and removed, since ``access()`` trusts the mode bits only: ``/proc``, a read-only
    mount or a full quota are found before any work, not after it.

    Raises:
        OutputDirError: The nearest existing parent is a file, or refuses new entries.
    """
    target = Path(target)
    existing = _nearest_existing(target.parent)
    if not existing.is_dir():
        raise OutputDirError(f"cannot create {what} {target}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise OutputDirError(f"cannot create {what} {target}: {existing} is not writable")
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".hvp-probe-", dir=existing))
    except OSError as exc:
        raise OutputDirError(f"cannot create {what} {target}: {existing} does not accept new folders "
                             f"({exc.strerror or exc})") from None
    return existing


def check_output_file(path: Path | str, what: str = "output file") -> Path:
    """Check, before any work, that the file ``path`` can be written (it is not a folder; its folder accepts files).

    Raises:
        OutputDirError: ``path`` is a folder, or it cannot be created (:func:`check_parent_writable`).
    """
    path = _resolve(path)
    if path.is_dir():
        raise OutputDirError(f"{what} {path} is a folder: expected a file name")
    check_parent_writable(path, what)
    return path


def _marker_payload(extra: Mapping[str, Any] | None) -> dict[str, Any]:
    from hvp_explore._version import __version__  # late: the package imports this module

    payload: dict[str, Any] = {
        "tool": TOOL_NAME,
        "version": __version__,
        "command": shlex.join(sys.argv),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    payload.update(extra or {})
    payload["tool"] = TOOL_NAME  # the identification cannot be overridden
    return payload


def _install(tmp: Path, target: Path) -> None:
    """Move the complete folder ``tmp`` to ``target``, swapping out an existing folder safely."""
    if not (target.exists() or target.is_symlink()):
        os.rename(tmp, target)
        return
    old = target.parent / (_temp_prefix(target, "old") + secrets.token_hex(4))
    os.rename(target, old)
    try:
        os.rename(tmp, target)
    except BaseException:
        # Put the old folder back so the target stays complete. If even this fails, the old folder
        # waits at the .hvp-old- name for recover_output_dir.
        try:
            os.rename(old, target)
        except OSError:
            logger.warning("could not restore %s; the previous output is kept at %s", target, old)
        raise
    shutil.rmtree(old, ignore_errors=True)


@contextmanager
def atomic_output_dir(
    target: Path | str,
    *,
    overwrite: bool = False,
    inputs: Iterable[Path | str] = (),
    marker_name: str = MARKER_NAME,
    marker: Mapping[str, Any] | None = None,
) -> Iterator[Path]:
    """Context manager: write a run's outputs into a temporary folder and move it to ``target`` at the end.

    Yields a hidden temporary folder beside ``target``. On normal exit the marker file (tool,
    version, command line, UTC time, plus the entries of ``marker``) is written into it and the
    folder is moved into place: a plain rename when ``target`` does not exist, otherwise the
    two-rename swap described in the module docstring, so an interruption at any moment leaves a
    complete folder (old or new) at ``target`` or the old one recoverable. On an exception
    (KeyboardInterrupt included) the temporary folder is deleted and ``target`` is untouched.

    Args:
        target: The output folder.
        overwrite: Allow replacing an existing folder written by this tool.
        inputs: The run's inputs, which the target may not contain (:func:`check_output_dir`).
        marker_name: Name of the marker file.
        marker: Extra JSON-serialisable entries for the marker.

    Raises:
        OutputDirError: As :func:`check_output_dir`, checked on entry and again before the move
            (the target may have changed during the run); or the move itself failed.
    """
    target = check_output_dir(target, overwrite=overwrite, inputs=inputs, marker_name=marker_name)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputDirError(f"cannot create folder {target.parent}: {exc.strerror or exc}") from None
    _remove_stale(target)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=_temp_prefix(target, "new"), dir=target.parent))
        os.chmod(tmp, 0o777 & ~current_umask())  # mkdtemp makes 0700; the folder is renamed into place as it is
    except OSError as exc:
        raise OutputDirError(f"cannot create a temporary folder in {target.parent}: {exc.strerror or exc}") from None
    try:
        yield tmp
        # the files the run wrote: --overwrite later replaces the folder only if it holds nothing else
        write_json_atomic(tmp / marker_name, {**_marker_payload(marker), "files": _files_in(tmp)})
        check_output_dir(target, overwrite=overwrite, marker_name=marker_name)
        try:
            _install(tmp, target)
        except OSError as exc:
            raise OutputDirError(f"cannot move the outputs into {target}: {exc.strerror or exc}") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise

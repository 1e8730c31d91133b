"""How many CPU threads torch may use: the cores this process may run on, not the machine's.

torch starts as many threads as the machine has cores, whatever share of them the process was given.
In a container with a CPU quota, under ``taskset``, or in a Slurm task with ``--cpus-per-task``, the extra
threads only wait for each other (on a shared 2-core machine, two threads ran the demo 5.6 times slower
than one). :func:`resolve_threads` chooses, in order: the ``--threads`` option, ``OMP_NUM_THREADS``, and
the fewest of the CPUs in the process's affinity mask, its cgroup quota (v2 ``cpu.max`` or v1
``cpu.cfs_quota_us``) and Slurm's ``SLURM_CPUS_PER_TASK``. Nothing here imports torch.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path

__all__ = ["available_cpus", "cgroup_cpu_limit", "resolve_threads", "apply_threads", "busy_notice"]


def _positive_int(text: str, name: str) -> int:
    """The positive integer ``text`` (OMP's list form ``4,2`` gives its first entry), or a one-line ValueError."""
    first = text.strip().split(",")[0].strip()
    try:
        value = int(first)
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(f"{name} must be a positive integer, got {text!r}: correct or unset it, or pass --threads")
    return value


def cgroup_cpu_limit(root: Path | str = "/sys/fs/cgroup", proc_cgroup: Path | str = "/proc/self/cgroup") -> int | None:
    """CPUs allowed by this process's cgroup quota, rounded up (None: no quota, or none readable).

    cgroup v2: ``cpu.max`` (``"<quota> <period>"`` or ``"max <period>"``) of the process's group and of
    each group above it; cgroup v1: ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us`` of the ``cpu`` controller.
    The tightest quota found wins.
    """
    root = Path(root)
    try:
        lines = Path(proc_cgroup).read_text().splitlines()
    except OSError:
        lines = []
    groups: list[Path] = []  # (controller folder, the process's group within it)
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if controllers == "":  # v2: one unified hierarchy
            groups.append(root / path.lstrip("/"))
        elif "cpu" in controllers.split(","):  # v1: the cpu controller (often mounted as cpu,cpuacct)
            for mount in ("cpu", "cpu,cpuacct", "cpuacct,cpu"):
                groups.append(root / mount / path.lstrip("/"))
    if not groups:
        groups = [root, root / "cpu", root / "cpu,cpuacct"]
    limits = []
    for group in groups:
        # the group and its ancestors, up to the mount: a quota anywhere above applies too
        for folder in (group, *group.parents):
            if folder != root and root not in folder.parents:
                break
            limits.append(_quota(folder))
    found = [x for x in limits if x is not None]
    return min(found) if found else None


def _quota(folder: Path) -> int | None:
    try:
        text = (folder / "cpu.max").read_text().split()
        if len(text) == 2 and text[0] != "max" and int(text[1]) > 0:
            return max(1, math.ceil(int(text[0]) / int(text[1])))
        return None
    except (OSError, ValueError):
        pass
    try:
        quota = int((folder / "cpu.cfs_quota_us").read_text())
        period = int((folder / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return max(1, math.ceil(quota / period)) if quota > 0 and period > 0 else None


def available_cpus(environ: Mapping[str, str] | None = None, *, cgroup_root: Path | str = "/sys/fs/cgroup",
                   proc_cgroup: Path | str = "/proc/self/cgroup") -> int:
    """CPUs this process may use: the fewest of its affinity mask, its cgroup quota and ``SLURM_CPUS_PER_TASK``."""
    environ = os.environ if environ is None else environ
    try:
        limits = [len(os.sched_getaffinity(0))]
    except (AttributeError, OSError):  # no affinity on macOS or Windows
        limits = [os.cpu_count() or 1]
    quota = cgroup_cpu_limit(cgroup_root, proc_cgroup)
    if quota is not None:
        limits.append(quota)
    slurm = environ.get("SLURM_CPUS_PER_TASK", "").strip()
    if slurm:
        try:
            limits.append(max(1, int(slurm)))
        except ValueError:
            pass  # Slurm writes an integer; anything else is not Slurm's and is ignored
    return max(1, min(limits))


def resolve_threads(requested: int | None = None, environ: Mapping[str, str] | None = None, **where) -> tuple[int, str]:
    """The number of torch threads and where it came from (for messages).

    Args:
        requested: ``--threads`` (None: not given).
        environ: The environment (default ``os.environ``).
        **where: ``cgroup_root`` and ``proc_cgroup`` of :func:`available_cpus` (for tests).

    Raises:
        ValueError: ``requested`` or ``OMP_NUM_THREADS`` is not a positive integer (one line).
    """
    environ = os.environ if environ is None else environ
    if requested is not None:
        if isinstance(requested, bool) or not isinstance(requested, int) or requested < 1:
            raise ValueError(f"--threads must be a positive integer, got {requested!r}")
        return requested, "--threads"
    omp = environ.get("OMP_NUM_THREADS", "").strip()
    if omp:
        return _positive_int(omp, "OMP_NUM_THREADS"), "OMP_NUM_THREADS"
    return available_cpus(environ, **where), "the CPUs this process may use"


def busy_notice(threads: int, source: str, load: float | None = None) -> str | None:
    """A notice when the default gave several threads on a machine that other jobs keep busy, else None.

    Affinity and quotas cannot see other jobs: on a 2-core machine with a load of 7, the demo took 51-59 s
    with one thread and 244-262 s with two (README). ``load`` is the 1-minute load average (default: the system's).
    """
    if source != "the CPUs this process may use" or threads < 2:
        return None
    if load is None:
        try:
            load = os.getloadavg()[0]
        except (AttributeError, OSError):
            return None
    if load < threads:
        return None
    return (f"this machine is busy (load average {load:.1f} on the {threads} CPUs this process may use): other jobs share its "
            "cores, and one thread (--threads 1, or OMP_NUM_THREADS=1) is often several times faster than two")


def apply_threads(threads: int) -> None:
    """Set torch's intra-op threads (loads torch)."""
    import torch

    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)

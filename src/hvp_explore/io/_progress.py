"""Progress on stderr: rich bars on a terminal, plain timestamped lines in a log, nothing when asked to be quiet.

When stderr is not a terminal (a Slurm or nohup log, a file, a pipe), a bar becomes lines such as::

    2026-12-08 14:02:11 CSGM inversion: started (1000 steps)
    2026-12-08 14:02:21 CSGM inversion: 38% (380/1000), best MSE 2.1e-03, 10 s, about 16 s left
    2026-12-08 14:02:37 CSGM inversion: done (1000/1000) in 26 s

each bar's start and end, and between them at most one line every :data:`LOG_INTERVAL` seconds, so a log
shows where a long run is without the redraws of a bar. A bar of at most :data:`STAGE_STEPS` steps (the
stages of ``explore``, a few PULSE runs) also writes a line whenever its status changes: each of its
steps is a stage worth seeing. ``quiet`` silences both forms.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

__all__ = ["LOG_INTERVAL", "STAGE_STEPS", "progress_bar", "progress_enabled", "progress_mode"]

#: Seconds between two progress lines of one bar in a log (its start and end are always written).
LOG_INTERVAL = 10.0
#: A bar with at most this many steps writes a line in a log whenever its status changes (its steps are stages).
STAGE_STEPS = 10
# the clock of the log's intervals (a test replaces it)
_clock = time.monotonic


def progress_mode(quiet: bool | None = None) -> str:
    """How progress shows: ``"off"`` (``quiet``, or stderr closed), ``"bar"`` (stderr is a terminal) or ``"log"`` (lines)."""
    if quiet:
        return "off"
    stream = sys.stderr
    try:
        return "bar" if stream.isatty() else "log"
    except (AttributeError, ValueError, OSError):  # stderr closed (None, or a closed file): nowhere to write
        return "off"


def progress_enabled(quiet: bool | None = None) -> bool:
    """Whether progress is shown at all (as a bar on a terminal or as lines in a log)."""
    return progress_mode(quiet) != "off"


@contextmanager
def progress_bar(description: str, total: int | None, *, quiet: bool | None = None) -> Iterator["_Bar"]:
    """Context manager yielding a bar with ``advance(n=1, status=None)``; a no-op when progress is off."""
    mode = progress_mode(quiet)
    if mode == "off":
        yield _Bar()
        return
    if mode == "log":
        bar = _LogBar(description, total)
        try:
            yield bar
        except BaseException:
            bar.finish(stopped=True)
            raise
        bar.finish()
        return
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=False,
    )
    with progress:
        task = progress.add_task(description, total=total, status="")
        yield _RichBar(progress, task)


class _Bar:
    """A bar that shows nothing."""

    def advance(self, n: int = 1, status: str | None = None) -> None:
        pass


class _RichBar(_Bar):
    def __init__(self, progress: Progress, task):
        self._progress, self._task = progress, task

    def advance(self, n: int = 1, status: str | None = None) -> None:
        kwargs = {} if status is None else {"status": status}
        self._progress.update(self._task, advance=n, **kwargs)


def _seconds(s: float) -> str:
    return f"{s:.1f} s" if s < 10 else f"{s:.0f} s" if s < 120 else f"{s / 60:.1f} min"


class _LogBar(_Bar):
    """Timestamped lines on stderr: the start, the end, and progress at most every :data:`LOG_INTERVAL` seconds."""

    def __init__(self, description: str, total: int | None):
        self.description, self.total = description, total
        self.done, self.status = 0, ""
        self.start = self.last = _clock()
        self._write("started" + (f" ({total} step{'' if total == 1 else 's'})" if total else ""))

    def _write(self, text: str) -> None:
        stream = sys.stderr  # looked up at each line: a test runner may swap it
        try:
            stream.write(f"{datetime.now():%Y-%m-%d %H:%M:%S} {self.description}: {text}\n")
            stream.flush()
        except (AttributeError, ValueError, OSError):  # a log that went away must not stop the run
            pass

    def _count(self) -> str:
        if not self.total:
            return f"{self.done} done"
        return f"{100 * self.done // self.total}% ({self.done}/{self.total})"

    def advance(self, n: int = 1, status: str | None = None) -> None:
        self.done += n
        changed = status is not None and status != self.status
        if status is not None:
            self.status = status
        if self.total and self.done >= self.total:
            return  # the end line follows
        now = _clock()
        if not (now - self.last >= LOG_INTERVAL or (changed and self.total is not None and self.total <= STAGE_STEPS)):
            return
        self.last = now
        elapsed = now - self.start
        parts = [self._count()] + ([self.status] if self.status else []) + [_seconds(elapsed)]
        # a time left only for many equal steps: the steps of a short bar are stages of different lengths
        if self.total and self.total > STAGE_STEPS and 0 < self.done < self.total and elapsed > 0:
            parts.append(f"about {_seconds(elapsed * (self.total - self.done) / self.done)} left")
        self._write(", ".join(parts))

    def finish(self, stopped: bool = False) -> None:
        elapsed = _seconds(_clock() - self.start)
        count = f"{self.done}/{self.total}" if self.total else f"{self.done}"
        self._write(f"stopped at {self._count()} after {elapsed}" if stopped else f"done ({count}) in {elapsed}")

"""Rich progress bars that show on a terminal and stay silent when piped or asked to be quiet."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


def progress_enabled(quiet: bool | None = None) -> bool:
    """Whether to draw progress bars: never when ``quiet``, only on a terminal otherwise."""
    if quiet:
        return False
    return sys.stderr.isatty()


@contextmanager
def progress_bar(description: str, total: int | None, *, quiet: bool | None = None) -> Iterator["_Bar"]:
    """Context manager yielding a bar with ``advance(n=1, **fields)``; a no-op when disabled."""
    if not progress_enabled(quiet):
        yield _Bar(None, None)
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
        yield _Bar(progress, task)


class _Bar:
    def __init__(self, progress: Progress | None, task):
        self._progress, self._task = progress, task

    def advance(self, n: int = 1, status: str | None = None) -> None:
        if self._progress is not None:
            kwargs = {} if status is None else {"status": status}
            self._progress.update(self._task, advance=n, **kwargs)

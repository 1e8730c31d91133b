"""The ``hvp-explore`` command line: a thin Click layer over the library (no numerics and no defaults here).

Every command validates its options (through the settings dataclasses of :mod:`hvp_explore.settings`,
from which the options are generated), checks the output folder before any long work, runs the
library, writes its folder atomically and prints a summary table. Bad input ends with a one-line
``Error: ...`` and exit status 2, never a traceback. Command groups: :mod:`~hvp_explore.cli.solve`
(from an observation), :mod:`~hvp_explore.cli.stages` (composable stages), :mod:`~hvp_explore.cli.tools`;
:mod:`~hvp_explore.cli.commands` assembles them into :data:`cli`.

This module imports nothing but the standard library, so that :func:`main` handles Ctrl-C and
SIGTERM (what ``kill`` and Slurm's time limit send) from its first instant; importing the package
loads neither torch nor the library's numerical modules.
"""

from __future__ import annotations

import os
import signal
import sys

__all__ = ["Terminated", "cli", "interruption", "main"]


class Terminated(BaseException):
    """SIGTERM, raised where the program is, so that the same cleanup runs as for Ctrl-C (exit status 143).

    A ``BaseException`` as ``KeyboardInterrupt``: code that turns a user's errors into messages does not catch it.
    """


def interruption(exc: BaseException) -> tuple[str, int]:
    """The one-line message and exit status of a run stopped by Ctrl-C (130) or SIGTERM (143)."""
    what, code = ("terminated (SIGTERM)", 143) if isinstance(exc, Terminated) else ("interrupted", 130)
    return f"{what}: no partial output was written (finished images of a batch are kept; rerun to resume)", code


def _ignore_signals() -> None:
    """Ignore Ctrl-C and SIGTERM from now on: what remains is cleanup, which a second signal would break
    (a traceback, "Exception ignored in atexit callback", a temporary folder left behind)."""
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.SIG_IGN)


def _raise_terminated(signum, frame) -> None:
    _ignore_signals()  # a second SIGTERM, or a Ctrl-C, must not break the cleanup of the first
    raise Terminated


def _raise_interrupted(signum, frame) -> None:
    _ignore_signals()  # Ctrl-C twice quickly: the second must not break the cleanup of the first
    raise KeyboardInterrupt


def _check_working_folder() -> None:
    """Exit with one line (status 2) when the current folder was deleted: oneMKL aborts with a FATAL ERROR at import."""
    try:
        os.getcwd()
    except OSError as exc:
        sys.stderr.write(f"Error: the current folder cannot be found ({exc.strerror or exc}; it was probably deleted): "
                         "cd to an existing folder and rerun\n")
        sys.exit(2)


def __getattr__(name: str):
    if name == "cli":  # the Click group, loaded on first use
        from hvp_explore.cli.commands import cli

        return cli
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _reopen_closed_streams() -> None:
    """Reopen a standard stream the caller closed (``2>&-``) on the null device.

    Python starts with ``sys.stderr = None`` then, and the first message or progress line would fail (exit 1,
    silently); worse, the next file opened would take descriptor 2 and receive whatever C code writes to stderr.
    """
    for fd, name in ((0, "stdin"), (1, "stdout"), (2, "stderr")):
        try:
            os.fstat(fd)
        except OSError:
            null = os.open(os.devnull, os.O_RDONLY if fd == 0 else os.O_WRONLY)
            if null != fd:
                os.dup2(null, fd)
                os.close(null)
        if getattr(sys, name) is None:
            setattr(sys, name, open(fd, "r" if fd == 0 else "w", closefd=False))


def main() -> None:
    """Console-script entry point: closed standard streams reopened, SIGTERM handled like Ctrl-C, then the Click group."""
    _reopen_closed_streams()
    signal.signal(signal.SIGTERM, _raise_terminated)
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:  # not where the caller ignores it (nohup, &)
        signal.signal(signal.SIGINT, _raise_interrupted)
    _check_working_folder()
    try:
        from hvp_explore.cli.commands import cli

        cli(prog_name="hvp-explore")
    except (KeyboardInterrupt, Terminated) as exc:  # during start-up, before a command's own handling
        message, code = interruption(exc)
        sys.stderr.write(message + "\n")
        sys.exit(code)
    finally:
        _ignore_signals()  # the command is over; what remains (atexit: the temporary torch cache) must not be broken

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


def _raise_terminated(signum, frame) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM must not break the cleanup of the first
    raise Terminated


def __getattr__(name: str):
    if name == "cli":  # the Click group, loaded on first use
        from hvp_explore.cli.commands import cli

        return cli
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def main() -> None:
    """Console-script entry point: SIGTERM handled like Ctrl-C, then the Click group."""
    signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        from hvp_explore.cli.commands import cli

        cli(prog_name="hvp-explore")
    except (KeyboardInterrupt, Terminated) as exc:  # during start-up, before a command's own handling
        message, code = interruption(exc)
        sys.stderr.write(message + "\n")
        sys.exit(code)

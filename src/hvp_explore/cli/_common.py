"""Plumbing shared by the command groups: the error policy, output, and options generated from the settings.

Nothing here imports torch: ``hvp-explore --help`` and every usage error answer before the numerical
libraries load. Options are generated from the fields of :mod:`hvp_explore.settings` (name, default,
type, choices, help), so no default or choice list is written in the command line.
"""

from __future__ import annotations

import logging
import shlex
import sys
from dataclasses import MISSING, fields
from pathlib import Path

import click
from rich.console import Console

from hvp_explore.settings import flag_of

console = Console(stderr=True, highlight=False)

# Errors a user can cause (bad files, bad options, numerical faults): one line, exit status 2.
USER_ERRORS = (ValueError, FileNotFoundError, IsADirectoryError, PermissionError, FloatingPointError, OSError)


class UserError(click.ClickException):
    exit_code = 2


class Group(click.Group):
    """Turns library exceptions into one-line errors (exit 2) and Ctrl-C into a clean exit (130)."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except KeyboardInterrupt:
            console.print("interrupted: no partial output was written (finished images of a batch are kept; rerun to resume)")
            raise click.exceptions.Exit(130) from None
        except USER_ERRORS as exc:
            message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise UserError(message) from None


def command_line() -> str:
    """The command as typed, for reports."""
    return "hvp-explore " + " ".join(shlex.quote(a) for a in sys.argv[1:])


def setup(quiet: bool, seed: int) -> None:
    """Seed torch's global generator and route the library's notices to stderr (silenced by --quiet)."""
    import torch

    torch.manual_seed(seed)
    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO, format="%(message)s", stream=sys.stderr, force=True)
    for noisy in ("PIL", "matplotlib"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def say(quiet: bool, message: str) -> None:
    if not quiet:
        console.print(message)


def finish(quiet: bool, out: Path, title: str, rows: list[dict], columns) -> None:
    """The end-of-run summary table and where the outputs are."""
    from hvp_explore.io.tables import summary_table

    if not quiet:
        console.print(summary_table(rows, columns, title=title))
        console.print(f"outputs in [bold]{out}[/]")


def write_folder(out: Path, overwrite: bool, write) -> dict:
    """Write an output folder atomically with ``write(tmp) -> report``, marking it as written by this command."""
    from hvp_explore.io.atomic import atomic_output_dir

    with atomic_output_dir(out, overwrite=overwrite, marker={"command": command_line()}) as tmp:
        return write(tmp)


def stack(*decorators):
    """Several Click decorators as one."""
    def apply(f):
        for d in reversed(decorators):
            f = d(f)
        return f
    return apply


_TYPES = {"int": int, "float": float, "str": str}


def settings_options(cls, *, only: tuple[str, ...] | None = None, exclude: tuple[str, ...] = ()):
    """Click options for the fields of a settings dataclass: ``--field-name``, its default, type, choices and help.

    A bool field becomes a flag, a field with ``choices`` a ``click.Choice``, a field marked ``path`` a
    ``click.Path``; optional fields (``int | None``) default to None. The option's parameter name is the
    field's name, so ``cls.pick(kwargs)`` rebuilds the settings from the command's keyword arguments.
    """
    decorators = []
    for f in fields(cls):
        if (only is not None and f.name not in only) or f.name in exclude:
            continue
        meta, default = f.metadata, f.default
        if default is MISSING:
            raise TypeError(f"settings field {cls.__name__}.{f.name} has no default")
        base = str(f.type).split("|")[0].strip()
        kwargs: dict = {"default": default, "help": meta["help"], "show_default": default not in (None, False)}
        if base == "bool":
            kwargs.update(is_flag=True, show_default=False)
        elif meta.get("choices"):
            kwargs["type"] = click.Choice(list(meta["choices"]))
        elif meta.get("path"):
            kwargs["type"] = click.Path(path_type=Path)
        else:
            kwargs["type"] = _TYPES[base]
        decorators.append(click.option(flag_of(cls, f.name), f.name, **kwargs))
    return stack(*decorators)


output_options = stack(
    click.option("--out", "out", type=click.Path(path_type=Path), required=True, help="Output folder (written atomically)."),
    click.option("--overwrite", is_flag=True, help="Replace an existing folder that was not written by hvp-explore."),
    click.option("--quiet", is_flag=True, help="No progress bars or messages."),
)

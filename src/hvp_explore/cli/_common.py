"""Plumbing shared by the command groups: the error policy, output, and options generated from the settings.

Nothing here imports torch: ``hvp-explore --help`` and every usage error answer before the numerical
libraries load. Options are generated from the fields of :mod:`hvp_explore.settings` (name, default,
type, choices, help), so no default or choice list is written in the command line.
"""

from __future__ import annotations

import atexit
import logging
import os
import shlex
import shutil
import sys
import tempfile
import warnings
from collections.abc import Iterable
from dataclasses import MISSING, fields
from pathlib import Path

import click
from rich.console import Console

from hvp_explore.cli import Terminated, interruption
from hvp_explore.settings import RunSettings, flag_of

# Diagnostics (progress, notices, warnings, errors) go to stderr; results (tables, lists, the end-of-run summary, --json)
# to stdout, so that a pipe or a redirection gets them whole and nothing else.
# soft_wrap: long lines (paths) are not broken by rich; tables are printed at their own width when piped (print_table)
console = Console(stderr=True, highlight=False, soft_wrap=True)
results = Console(highlight=False, soft_wrap=True)

# Errors a user can cause (bad files, bad options, numerical faults, a memory budget too small): one line, exit status 2.
USER_ERRORS = (ValueError, FileNotFoundError, IsADirectoryError, PermissionError, FloatingPointError, OSError, MemoryError)


class UserError(click.ClickException):
    exit_code = 2


def _stopped(exc: BaseException) -> click.exceptions.Exit:
    message, code = interruption(exc)
    console.print(message)
    return click.exceptions.Exit(code)


class Group(click.Group):
    """Turns library exceptions into one-line errors (exit 2), Ctrl-C into a clean exit (130) and SIGTERM into 143."""

    def make_context(self, *args, **kwargs):
        try:
            return super().make_context(*args, **kwargs)
        except (KeyboardInterrupt, Terminated) as exc:
            raise _stopped(exc) from None

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except (KeyboardInterrupt, Terminated) as exc:
            raise _stopped(exc) from None
        except USER_ERRORS as exc:
            message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise UserError(message) from None


def command_line() -> str:
    """The command as typed, for reports."""
    return "hvp-explore " + " ".join(shlex.quote(a) for a in sys.argv[1:])


def _private_torch_cache() -> None:
    """Keep torch's compiler cache out of $TMPDIR.

    Importing ``torch._dynamo`` (the torch profiler behind the memory budgets does) creates
    ``$TMPDIR/torchinductor_<user>``, left behind for good. Unless the user chose a folder
    (``TORCHINDUCTOR_CACHE_DIR``), it goes to a temporary folder deleted when the command ends.
    """
    if os.environ.get("TORCHINDUCTOR_CACHE_DIR"):
        return
    from hvp_explore.io.atomic import remove_stale_temporaries, temporary_prefix

    # the folders of runs killed outright (kill -9, a lost node) on this host, whose atexit never ran
    remove_stale_temporaries(tempfile.gettempdir(), "hvp-explore-torch-")
    folder = tempfile.mkdtemp(prefix=temporary_prefix("hvp-explore-torch-"))
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = folder
    atexit.register(shutil.rmtree, folder, True)


def setup(quiet: bool, seed: int, device: str | None = None) -> None:
    """Check the device, set torch's threads (--threads), seed torch's global generator and route the library's
    notices and Python's warnings to stderr, one line each (silenced by --quiet).

    Raises:
        ValueError: ``device`` is not a device kind hvp-explore runs on, or this machine does not have it;
            ``OMP_NUM_THREADS`` is not a positive integer.
    """
    from hvp_explore.io._threads import apply_threads, busy_notice, resolve_threads

    if device is not None:
        RunSettings(device=device, seed=seed)  # the form, before torch loads
    threads, source = resolve_threads(_meta().get("threads"))
    notice = busy_notice(threads, source)
    if notice:
        say(quiet, f"[yellow]notice:[/] {notice}")
    from hvp_explore.io.files import check_temp_space

    check_temp_space()  # before any work: torch's profiler needs room in $TMPDIR after the inversion
    _private_torch_cache()
    import torch

    apply_threads(threads)

    from hvp_explore.generators import check_device_available

    if device is not None:
        check_device_available(device)
    torch.manual_seed(seed)
    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO, format="%(message)s", stream=sys.stderr, force=True)
    for noisy in ("PIL", "matplotlib"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    def one_line(message, category, filename, lineno, file=None, line=None):
        # Python's own form is two lines with a line of this project's source, and ignores --quiet
        say(quiet, f"[yellow]warning:[/] {message}")

    warnings.showwarning = one_line


def check_output(out: Path, overwrite: bool, inputs: Iterable[Path | str | None] = ()) -> None:
    """The output folder's checks, before any work (torch-free): a printable name, not an input's folder, writable."""
    from hvp_explore.io.atomic import check_output_dir
    from hvp_explore.io.files import check_path_text

    check_path_text(out, "output folder")
    check_output_dir(out, overwrite=overwrite, inputs=[p for p in inputs if p is not None])


def say(quiet: bool, message: str) -> None:
    if not quiet:
        console.print(message)


def print_table(table) -> None:
    """Print a rich table on stdout, whole: at its natural width when stdout is not a terminal (a file, a pipe), never cut."""
    if results.is_terminal:
        results.print(table)  # on a terminal, cells too wide wrap (summary_table folds them)
        return
    natural = results.measure(table, options=results.options.update_width(1 << 16)).maximum
    Console(highlight=False, width=max(results.width, natural)).print(table)


def result_line(message: str) -> None:
    """A line of the results (stdout): where the outputs are, a batch's counts, a list."""
    results.print(message)


def _meta() -> dict:
    """The options stored by :data:`output_flags`' callbacks (``json``, ``threads``) for the running command."""
    ctx = click.get_current_context(silent=True)
    return ctx.meta if ctx is not None else {}


def json_requested() -> bool:
    """Whether the command was given ``--json``."""
    return bool(_meta().get("json"))


def print_json(payload) -> None:
    """``payload`` as one strict JSON document on stdout (NaN as null, as report.json)."""
    import json

    from hvp_explore.io.atomic import to_jsonable

    sys.stdout.write(json.dumps(to_jsonable(payload), indent=2, allow_nan=False, ensure_ascii=False) + "\n")
    sys.stdout.flush()


#: The columns of a solutions table, as in report.json: one vocabulary for explore and render.
SOLUTION_COLUMNS = ("file", "direction", "eta", "measurement_mse", "feasible", "perceptual_distance")
#: The largest number of rows of an end-of-run table (every row is in report.json or the manifest).
MAX_TABLE_ROWS = 50


def print_solutions(solutions: list[dict], title: str) -> None:
    """The solutions table (report.json's names), at most :data:`MAX_TABLE_ROWS` rows."""
    from hvp_explore.io.tables import summary_table

    shown = solutions[:MAX_TABLE_ROWS]
    if len(solutions) > len(shown):
        title = f"{title} (the first {len(shown)} of {len(solutions)}; all in report.json)"
    print_table(summary_table(shown, SOLUTION_COLUMNS, title=title))


def finish(quiet: bool, out: Path, title: str, rows: list[dict], columns, *, report: dict | None = None) -> None:
    """The end-of-run summary table and where the outputs are (stdout); with --json, ``report`` (or the rows) as JSON.

    --json prints even under --quiet: it was asked for, and --quiet silences diagnostics, not results.
    """
    from hvp_explore.io.tables import summary_table

    if json_requested():
        print_json({"out": str(out), **(report if report is not None else {"rows": rows})})
    elif not quiet:
        print_table(summary_table(rows, columns, title=title))
        result_line(f"outputs in [bold]{out}[/]")


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
        if default is MISSING or not meta.get("help"):
            raise TypeError(f"settings field {cls.__name__}.{f.name} needs a default and a help text")
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


def _store(ctx: click.Context, param: click.Parameter, value):
    # kept in the context, not passed to the command: every command reads them through setup() and finish()
    if value is not None and value is not False:
        ctx.meta[param.name] = value
    return value


#: ``--json``: the results as one JSON document on stdout instead of tables (read by :func:`finish`).
json_flag = click.option("--json", "json", is_flag=True, expose_value=False, callback=_store,
                         help="Print the results as one JSON document on stdout (the report and the output folder) "
                              "instead of tables.")
#: ``--json`` and ``--threads`` (torch's CPU threads, read by :func:`setup`).
run_flags = stack(
    json_flag,
    click.option("--threads", "threads", type=click.IntRange(min=1), default=None, expose_value=False, callback=_store,
                 help="CPU threads torch uses [default: OMP_NUM_THREADS if set, else the CPUs this process may use: "
                      "affinity, cgroup quota, SLURM_CPUS_PER_TASK]."),
)

#: ``--overwrite``, ``--quiet``, ``--json`` and ``--threads``, shared by every command that writes a folder.
output_flags = stack(
    click.option("--overwrite", is_flag=True, help="Replace the folder of an earlier hvp-explore run at --out (a folder "
                                                   "hvp-explore did not write is never replaced)."),
    click.option("--quiet", is_flag=True, help="No progress (bars on a terminal, timestamped lines in "
                                               "a log), messages or summary table; errors and --json still print."),
    run_flags,
)
output_options = stack(
    click.option("--out", "out", type=click.Path(path_type=Path), required=True, help="Output folder (written atomically)."),
    output_flags,
)

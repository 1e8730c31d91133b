"""The end-of-run summary tables of the command line (rich), free of torch so that they load at once."""

from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["summary_table"]


def _cell(value: Any) -> tuple[str, bool]:
    """Text of a table cell and whether it is a number."""
    if hasattr(value, "item") and (getattr(value, "ndim", None) == 0 or getattr(value, "numel", lambda: 0)() == 1):
        value = value.item()  # a one-element torch tensor or a NumPy scalar
    if value is None:
        return "-", False
    if isinstance(value, bool):
        return ("yes" if value else "no"), False
    if isinstance(value, numbers.Integral):
        return str(int(value)), True
    if isinstance(value, numbers.Real):
        return f"{float(value):.4g}", True
    return str(value), False


def summary_table(
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[str] | Mapping[str, str],
    *,
    title: str | None = None,
):
    """A ``rich.table.Table`` of ``rows`` for the end-of-run summary.

    Numbers are shown with 4 significant digits (``3.1e-05``, ``8.2``), booleans as yes/no, missing
    entries and ``None`` as ``-``; columns holding only numbers are right-aligned. A cell too wide
    for the console wraps (never an ellipsis); printed with ``hvp_explore.cli._common.print_table``, a
    table that is not shown on a terminal keeps its natural width. Cell text is
    literal (no rich markup), so file names with brackets show as they are.

    Args:
        rows: One mapping per row.
        columns: Keys to show, in order; or a mapping key -> column header.
        title: Optional table title.

    Raises:
        ValueError: No columns, or a row that is not a mapping.
    """
    from rich.table import Table
    from rich.text import Text

    if isinstance(columns, str):
        raise ValueError("columns must be a sequence of keys or a mapping key -> header, not a single string")
    keys = list(columns)
    headers = [str(columns[k]) for k in keys] if isinstance(columns, Mapping) else [str(k) for k in keys]
    if not keys:
        raise ValueError("columns is empty: expected at least one column")
    for i, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise ValueError(f"rows[{i}] must be a mapping column -> value, got {type(row).__name__}")
    cells = [[_cell(row.get(key)) for key in keys] for row in rows]
    table = Table(title=title)
    for j, header in enumerate(headers):
        present = [row[j] for row, raw in zip(cells, rows) if raw.get(keys[j]) is not None]
        numeric = bool(present) and all(is_number for _, is_number in present)
        # fold, never an ellipsis: a narrow terminal wraps a value onto more lines instead of cutting it
        table.add_column(Text(header), justify="right" if numeric else "left", overflow="fold")
    for row in cells:
        table.add_row(*(Text(text) for text, _ in row))
    return table

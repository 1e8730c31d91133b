"""The Python examples in README.md and docs/operators.md run as written (from the repository root)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def python_blocks(path: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.S)


@pytest.mark.parametrize("doc", ["README.md", "docs/operators.md"])
def test_examples_run(doc, monkeypatch, capsys):
    blocks = python_blocks(ROOT / doc)
    runnable = [b for b in blocks if "print(" in b]  # API listings without output are not examples
    assert runnable, f"{doc} has no runnable example"
    monkeypatch.chdir(ROOT)
    for code in runnable:
        exec(compile(code, doc, "exec"), {"__name__": "__doc_example__"})
    out = capsys.readouterr().out
    assert out.strip(), "the examples print their results"

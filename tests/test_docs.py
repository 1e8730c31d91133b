"""The examples in README.md and docs/ run as written (from the repository root).

Python examples that print are executed. Every ``hvp-explore`` command of a bash block is parsed by
the command line and its option values are checked by the settings, as the command would before any
work (the files it names need not exist). docs/generators.md's factory example is run end to end.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import fields
from pathlib import Path

import click
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from hvp_explore import settings
from hvp_explore.cli import cli

ROOT = Path(__file__).resolve().parents[1]
DOCS = ["README.md", *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs").glob("*.md"))]


def python_blocks(path: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.S)


@pytest.mark.parametrize("doc", ["README.md", "docs/operators.md"])
def test_examples_run(doc, monkeypatch, capsys):
    blocks = python_blocks(ROOT / doc)
    runnable = [b for b in blocks if "print(" in b]  # API listings without output are not examples
    assert runnable, f"{doc} has no runnable example"
    monkeypatch.chdir(ROOT)
    namespace = {"__name__": "__doc_example__"}  # one session per page: a guide's examples build on each other
    for code in runnable:
        exec(compile(code, doc, "exec"), namespace)
    out = capsys.readouterr().out
    assert out.strip(), "the examples print their results"


def shell_blocks(path: Path) -> list[str]:
    """The code blocks of ``path`` tagged bash, sh or console, or untagged (fences paired in order)."""
    blocks, current, language = [], None, None
    for line in path.read_text().splitlines():
        if line.startswith("```"):
            if current is None:
                current, language = [], line[3:].strip()
            else:
                if language in ("", "bash", "sh", "console"):
                    blocks.append("\n".join(current) + "\n")
                current = None
        elif current is not None:
            current.append(line)
    return blocks


def command_lines(path: Path) -> list[str]:
    """The ``hvp-explore ...`` commands of the bash blocks of ``path``: continuations joined, comments dropped.

    Lines that need the shell (variables, substitutions) or a launcher (torchrun, parallel, ssh) are left out.
    """
    commands = []
    for block in shell_blocks(path):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.strip()
            if not line.startswith("hvp-explore ") or "$" in line or "{}" in line:
                continue
            commands.append(line)
    return commands


def _settings_classes():
    return [c for c in vars(settings).values() if isinstance(c, type) and hasattr(c, "__dataclass_fields__")]


def dry_run(line: str) -> None:
    """Parse ``line`` as the command line would, and check its option values against every settings class."""
    name, *rest = shlex.split(line, comments=True)[1:]
    parent = click.Context(cli, info_name="hvp-explore")
    command = cli.get_command(parent, name)
    if command is None:
        raise click.UsageError(f"no command {name!r}")
    with command.make_context(name, rest, parent=parent) as ctx:
        params = ctx.params
    for cls in _settings_classes():
        names = {f.name for f in fields(cls)}
        if names & set(params) and names <= set(params) | set(cls.defaults()):
            values = {k: v for k, v in params.items() if k in names}
            try:
                cls(**values)
            except TypeError:
                continue  # another command's settings with the same field names


@pytest.mark.parametrize("doc", DOCS)
def test_every_command_line_in_the_docs_parses(doc):
    for line in command_lines(ROOT / doc):
        try:
            dry_run(line)
        except (click.ClickException, ValueError) as exc:
            pytest.fail(f"{doc}: {line!r} does not parse: {exc}")


def test_there_are_command_lines_to_check():
    counted = {doc: len(command_lines(ROOT / doc)) for doc in DOCS}
    assert counted["README.md"] >= 10 and counted["docs/generators.md"] >= 3 and sum(counted.values()) >= 17, counted


def test_the_factory_example_of_docs_generators_runs(tmp_path, monkeypatch):
    """docs/generators.md: the module it shows, saved as mypackage/models.py, and its command line (plus speed options)."""
    text = (ROOT / "docs/generators.md").read_text()
    (module,) = [b for b in python_blocks(ROOT / "docs/generators.md") if b.startswith("# mypackage/models.py")]
    (tmp_path / "mypackage").mkdir()
    (tmp_path / "mypackage" / "__init__.py").write_text("")
    (tmp_path / "mypackage" / "models.py").write_text(module)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    from hvp_explore import SuperResolution, load_generator, save_image

    G = load_generator("mypackage.models:make_generator")
    with torch.no_grad():  # an observation the generator can explain: 16x16, x4 below its 64x64 images
        clean = G(torch.randn(1, G.latent_dim, generator=torch.Generator().manual_seed(0)))
    save_image(SuperResolution((3, 64, 64), 4)(clean).reshape(3, 16, 16), tmp_path / "obs.png")
    (line,) = [c for c in command_lines(ROOT / "docs/generators.md")
               if "make_generator" in c and c.startswith("hvp-explore explore")]
    assert line in text
    fast = ["--restarts", "1", "--steps", "60", "--iagan", "off", "--tau", "0.01", "--solutions", "2", "--k", "2",
            "--metric", "pixel", "--quiet"]
    result = CliRunner().invoke(cli, shlex.split(line)[1:] + fast)
    assert result.exit_code == 0, result.output
    report = (tmp_path / "run-mine" / "report.json").read_text()
    assert '"generator": "mypackage.models:make_generator"' in report
    assert np.load(tmp_path / "run-mine" / "solutions.npz")["latents"].shape == (2, 128)

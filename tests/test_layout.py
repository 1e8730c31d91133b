"""The package's shape: the public API, lazy heavy imports, and one source of truth for defaults and choices."""

from __future__ import annotations

import inspect
import subprocess
import sys
from dataclasses import fields

import click
import pytest

import hvp_explore
from hvp_explore import settings
from hvp_explore.cli import cli


def run_python(code: str) -> str:
    """Run ``code`` in a fresh interpreter (nothing imported yet) and return its stdout."""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_spec_names_are_importable_from_the_package():
    from hvp_explore import coupling_matrix, explore, invert, load_generator, pulse  # noqa: F401 - the issue's line

    for name in hvp_explore.__all__:
        assert getattr(hvp_explore, name) is not None, name
    assert set(dir(hvp_explore)) >= set(hvp_explore.__all__)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        hvp_explore.nope  # noqa: B018
    # the function, not a module of the same name
    assert callable(hvp_explore.explore) and callable(hvp_explore.pulse) and callable(hvp_explore.invert)


def test_importing_the_package_loads_no_lpips_and_the_command_line_no_torch():
    out = run_python("import sys, hvp_explore; print('lpips' in sys.modules, 'torchvision' in sys.modules)")
    assert out.split() == ["False", "False"]
    # --help and a usage error answer without torch: they cost a fraction of a second (docs/layout.md)
    out = run_python(
        "import sys\n"
        "from click.testing import CliRunner\n"
        "from hvp_explore.cli import cli\n"
        "r = CliRunner()\n"
        "a = r.invoke(cli, ['--help']); b = r.invoke(cli, ['explore', 'missing.png', '--out', 'x'])\n"
        "c = r.invoke(cli, ['explore', 'missing.png', '--tau', '-1', '--out', 'x'])\n"
        "print(a.exit_code, b.exit_code, c.exit_code, 'torch' in sys.modules)\n"
        "print(b.output.strip()); print(c.output.strip())\n")
    lines = out.splitlines()
    assert lines[0] == "0 2 2 False"
    assert lines[1] == "Error: missing.png not found: expected an image (PNG or JPEG) file"
    assert lines[2] == "Error: --tau must be a positive finite number, got -1.0"
    # an LPIPS metric still loads lpips when asked for
    out = run_python("import sys\nfrom hvp_explore.metrics import LPIPSMetric\nLPIPSMetric('squeeze', pnet_rand=True)\n"
                     "print('lpips' in sys.modules)")
    assert out.strip() == "True"


def _generated_from(param: click.Option):
    """The settings field a Click option was generated from (same name, flag and help), or None."""
    classes = [c for c in vars(settings).values() if isinstance(c, type) and hasattr(c, "__dataclass_fields__")]
    for cls in classes:
        for field in fields(cls):
            if field.name == param.name and settings.flag_of(cls, field.name) in param.opts and field.metadata["help"] == param.help:
                return field
    return None


def test_command_line_defaults_and_choices_are_the_settings():
    generated = 0
    for command_name, command in cli.commands.items():
        for param in command.params:
            field = _generated_from(param) if isinstance(param, click.Option) else None
            if field is None:
                continue
            generated += 1
            assert param.default == field.default, (command_name, param.name)
            choices = field.metadata.get("choices")
            if choices:
                assert isinstance(param.type, click.Choice) and tuple(param.type.choices) == tuple(choices), (command_name, param.name)
    assert generated >= 60  # every exploration option, in explore and batch, and the stage commands' own
    # the options a command line would most likely hard-code are generated, not written
    explore = {p.name: p for p in cli.commands["explore"].params}
    for name in ("tau", "solver", "mode", "k", "tol", "threshold", "restarts", "problem", "kernel"):
        assert _generated_from(explore[name]) is not None, name


@pytest.mark.parametrize("function, cls, renames", [
    ("hvp_explore.inversion:invert", "InversionSettings", {}),
    ("hvp_explore.inversion:pulse", "PulseSettings", {"solutions": None, "batch": "batch"}),
    ("hvp_explore.exploration:explore", "DirectionSettings", {"solutions": "num_solutions"}),
    ("hvp_explore.exploration:explore", "StepSettings", {}),
    ("hvp_explore.exploration:explore", "EigenSettings", {"k": "K", "metric": None, "max_memory": None}),
    ("hvp_explore.problems:make_problem", "ProblemSettings", {"problem": None, "from_clean": None, "noise": None, "resize": None,
                                                              "face": None}),
    ("hvp_explore.problems:load_observation", "ProblemSettings", {}),
    ("hvp_explore.eigen:top_eigenpairs", "EigenSettings", {"tol": None, "k": None}),
    ("hvp_explore.geometry:latent_geometry", "GeometrySettings", {"metric": None}),
])
def test_library_defaults_are_the_settings(function, cls, renames):
    import importlib

    module, name = function.split(":")
    signature = inspect.signature(getattr(importlib.import_module(module), name))
    klass = getattr(settings, cls)
    for field in fields(klass):
        target = renames.get(field.name, field.name)
        if target is None or target not in signature.parameters:
            continue
        default = signature.parameters[target].default
        if field.name in ("gauss_newton", "iagan"):
            default = {v: k for k, v in settings.SWITCHES.items()}[default]
        assert default == field.default, (function, field.name)


def test_choice_lists_are_written_once():
    from hvp_explore.eigen.solvers import SOLVERS
    from hvp_explore.exploration.directions import MODES
    from hvp_explore.inversion.priors import PRIORS
    from hvp_explore.problems import PROBLEM_KINDS, SR_KERNELS

    assert SOLVERS is settings.SOLVERS and MODES is settings.MODES and PRIORS is settings.PRIORS
    assert PROBLEM_KINDS is settings.PROBLEM_KINDS and SR_KERNELS is settings.SR_KERNELS


def test_settings_refuse_bad_values_naming_the_option():
    with pytest.raises(ValueError, match="--solutions must be a positive integer, got 0"):
        settings.DirectionSettings(solutions=0)
    with pytest.raises(ValueError, match="--k-y must be a positive integer"):
        settings.EigenSettings(k_y=1.5)
    with pytest.raises(ValueError, match="--eta-max must be a positive finite number"):
        settings.StepSettings(eta_max=float("inf"))
    assert settings.InversionSettings.pick({"restarts": 3, "unrelated": 1}).restarts == 3

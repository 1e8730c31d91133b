"""The ``hvp-explore`` command line: a thin Click layer over the library (no numerics and no defaults here).

Every command validates its options (through the settings dataclasses of :mod:`hvp_explore.settings`,
from which the options are generated), checks the output folder before any long work, runs the
library, writes its folder atomically and prints a summary table. Bad input ends with a one-line
``Error: ...`` and exit status 2, never a traceback. Command groups: :mod:`~hvp_explore.cli.solve`
(from an observation), :mod:`~hvp_explore.cli.stages` (composable stages), :mod:`~hvp_explore.cli.tools`.
Importing this package loads neither torch nor the library's numerical modules.
"""

from __future__ import annotations

import click

from hvp_explore._version import __version__
from hvp_explore.cli._common import Group
from hvp_explore.cli.solve import batch, demo, explore_cmd, invert, pulse
from hvp_explore.cli.stages import couple, eig, project, render
from hvp_explore.cli.tools import bench, generators_cmd, train

__all__ = ["cli", "main"]


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="hvp-explore")
def cli():
    """Explore the many solutions of an inverse problem with the latent geometry of a GAN (e-GLASS)."""


for _command in (generators_cmd, invert, pulse, eig, couple, project, render, explore_cmd, demo, batch, bench, train):
    cli.add_command(_command)


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="hvp-explore")

"""The ``hvp-explore`` Click group with every command (see :mod:`hvp_explore.cli`)."""

from __future__ import annotations

import click

from hvp_explore._version import __version__
from hvp_explore.cli._common import Group
from hvp_explore.cli.solve import batch, demo, explore_cmd, invert, pulse
from hvp_explore.cli.stages import couple, eig, project, render
from hvp_explore.cli.tools import bench, generators_cmd, geometry, train

__all__ = ["cli"]


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="hvp-explore")
def cli():
    """Explore the many solutions of an inverse problem with the latent geometry of a GAN (e-GLASS)."""


for _command in (generators_cmd, invert, pulse, eig, couple, project, render, explore_cmd, demo, batch, geometry, bench, train):
    cli.add_command(_command)

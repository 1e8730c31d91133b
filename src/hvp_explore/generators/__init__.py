"""Generators: the embedded default DCGAN and loaders for BigGAN, PGGAN, StyleGAN2-ADA and user models.

See :func:`load_generator` and ``docs/generators.md``.
"""

from hvp_explore.generators._biggan import BigGANGenerator, biggan_from_config
from hvp_explore.generators._common import GeneratorError
from hvp_explore.generators._pggan import PGGANGenerator
from hvp_explore.generators._stylegan import StyleGANGenerator
from hvp_explore.generators.dcgan import DCGANGenerator
from hvp_explore.generators.faces import FaceDCGANGenerator
from hvp_explore.generators.registry import GENERATOR_FORMS, available_generators, load_generator

__all__ = [
    "GENERATOR_FORMS",
    "BigGANGenerator",
    "DCGANGenerator",
    "FaceDCGANGenerator",
    "GeneratorError",
    "PGGANGenerator",
    "StyleGANGenerator",
    "available_generators",
    "biggan_from_config",
    "load_generator",
]

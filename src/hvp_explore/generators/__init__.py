"""Generators: the embedded default DCGAN and loaders for BigGAN, PGGAN, StyleGAN2-ADA and user models.

See :func:`load_generator` and ``docs/generators.md``.
"""

from ._biggan import BigGANGenerator, biggan_from_config
from ._common import GeneratorError
from ._pggan import PGGANGenerator
from ._stylegan import StyleGANGenerator
from .dcgan import DCGANGenerator
from .faces import FaceDCGANGenerator
from .registry import GENERATOR_FORMS, available_generators, load_generator

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

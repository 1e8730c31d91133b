"""Generators: the embedded default DCGAN and loaders for BigGAN, PGGAN, StyleGAN2-ADA and user models.

See :func:`load_generator` and ``docs/generators.md``.
"""

from hvp_explore.generators._biggan import BigGANGenerator, biggan_from_config
from hvp_explore.generators._common import GeneratorError, check_device_available
from hvp_explore.generators._pggan import PGGANGenerator
from hvp_explore.generators._stylegan import StyleGANGenerator
from hvp_explore.generators.dcgan import DCGANGenerator
from hvp_explore.generators.faces import FaceDCGANGenerator
from hvp_explore.generators.registry import (
    GENERATOR_EXAMPLES,
    GENERATOR_FORMS,
    available_generators,
    is_registered,
    load_generator,
)

__all__ = [
    "GENERATOR_EXAMPLES",
    "GENERATOR_FORMS",
    "BigGANGenerator",
    "DCGANGenerator",
    "FaceDCGANGenerator",
    "GeneratorError",
    "PGGANGenerator",
    "StyleGANGenerator",
    "available_generators",
    "biggan_from_config",
    "check_device_available",
    "is_registered",
    "load_generator",
]

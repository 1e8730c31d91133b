"""The first solution of an inverse problem by GAN inversion, and the PULSE baseline.

:func:`invert` (:mod:`~hvp_explore.inversion.first_solution`) runs CSGM with batched restarts
(:mod:`~hvp_explore.inversion.csgm`), a Gauss-Newton finish (:mod:`~hvp_explore.inversion.gauss_newton`)
and, when needed, IAGAN's fine-tuning (:mod:`~hvp_explore.inversion.iagan`); :func:`pulse`
(:mod:`~hvp_explore.inversion.pulse_baseline`) re-runs inversion from random latents, one solution per
run. Latent priors are in :mod:`~hvp_explore.inversion.priors`. See ``docs/inversion.md``.
"""

from hvp_explore.inversion.first_solution import InversionResult, invert
from hvp_explore.inversion.priors import PRIORS, project_latents, sample_latents
from hvp_explore.inversion.pulse_baseline import PulseResult, pulse, schedule_factor

__all__ = ["invert", "InversionResult", "pulse", "PulseResult", "schedule_factor", "sample_latents", "project_latents", "PRIORS"]

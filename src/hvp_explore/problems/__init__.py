"""Inverse problems: linear forward operators y = A x + n, observations on disk, and feasibility.

One module per operator (:class:`SuperResolution`, :class:`Inpainting`, :class:`CompressedSensing`,
:class:`LinearCallable`), the contract they share (:class:`ForwardOperator`, :func:`measurement_mse`),
the factory the command line uses (:func:`make_problem`, :func:`observe`) and the observation files
(:func:`load_observation`). See ``docs/problems.md``.
"""

from hvp_explore.problems.base import ForwardOperator, describe_tau, lr_psnr, measurement_mse, resolve_tau, tau_from_noise
from hvp_explore.problems.compressed_sensing import CompressedSensing
from hvp_explore.problems.factory import add_noise, make_problem, observe
from hvp_explore.problems.inpainting import Inpainting
from hvp_explore.problems.linear_callable import LinearCallable
from hvp_explore.problems.observation import Observation, load_observation
from hvp_explore.problems.super_resolution import SuperResolution, keys_cubic
from hvp_explore.settings import DEFAULT_TAU, PROBLEM_KINDS, SR_KERNELS

__all__ = ["ForwardOperator", "SuperResolution", "Inpainting", "CompressedSensing", "LinearCallable", "make_problem", "observe",
           "add_noise", "measurement_mse", "lr_psnr", "tau_from_noise", "resolve_tau", "describe_tau", "keys_cubic", "Observation", "load_observation", "DEFAULT_TAU",
           "PROBLEM_KINDS", "SR_KERNELS"]

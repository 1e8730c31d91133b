"""Issue acceptance: on every shipped sample, super-resolution x4 and central-box inpainting with the
embedded default reach measurement MSE below tau = 2e-3, deterministically for a fixed seed."""

from __future__ import annotations

import pytest
import torch

from hvp_explore import Inpainting, SuperResolution, load_image, observe
from hvp_explore.data import sample_paths
from hvp_explore.generators import load_generator
from hvp_explore.inversion import invert

PROBLEMS = {"sr": SuperResolution((1, 32, 32), 4), "inpaint": Inpainting.from_box((1, 32, 32), 8, 8, 16, 16)}


@pytest.fixture(scope="module")
def generator():
    return load_generator("default")


@pytest.mark.parametrize("problem", list(PROBLEMS))
@pytest.mark.parametrize("sample", sample_paths(), ids=lambda p: p.stem)
def test_shipped_samples_reach_tau(generator, sample, problem):
    forward = PROBLEMS[problem]
    y = observe(forward, load_image(sample))[None]
    result = invert(generator, forward, y, seed=0, quiet=True)
    assert result.measurement_mse < 2e-3
    if problem == "sr" or sample == sample_paths()[0]:  # determinism: rerun the cheap cases
        again = invert(generator, forward, y, seed=0, quiet=True)
        assert torch.equal(again.latent, result.latent) and again.measurement_mse == result.measurement_mse

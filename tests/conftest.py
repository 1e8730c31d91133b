"""Shared small problems for dense-reference tests (float64 throughout, so tolerances can be tight)."""

from __future__ import annotations

import os

import pytest
import torch
from torch import nn

torch.set_num_threads(1)
# the commands run in-process set torch's threads from OMP_NUM_THREADS (cli/_common.setup): keep them at one too
os.environ.setdefault("OMP_NUM_THREADS", "1")


class TinyMLPGenerator(nn.Module):
    """An MLP generator R^n -> (1, 4, 4) in [-1, 1] with smooth activations."""

    def __init__(self, latent_dim: int = 8, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.latent_dim = latent_dim
        self.image_shape = (1, 4, 4)
        self.net = nn.Sequential(nn.Linear(latent_dim, 32), nn.Tanh(), nn.Linear(32, 16), nn.Tanh())
        self.double()
        self.eval()

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z).view(-1, *self.image_shape)


class TinyConvGenerator(nn.Module):
    """A DCGAN-shaped generator R^n -> (1, 8, 8) with batch norm (used in eval mode).

    The batch-norm running statistics are set to non-trivial values so that eval mode matters.
    """

    def __init__(self, latent_dim: int = 16, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.latent_dim = latent_dim
        self.image_shape = (1, 8, 8)
        self.fc = nn.Linear(latent_dim, 8 * 2 * 2)
        self.net = nn.Sequential(
            nn.BatchNorm2d(8),
            nn.Softplus(),
            nn.ConvTranspose2d(8, 6, 4, 2, 1),
            nn.BatchNorm2d(6),
            nn.Softplus(),
            nn.ConvTranspose2d(6, 1, 4, 2, 1),
            nn.Tanh(),
        )
        for m in self.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.data.uniform_(0.5, 1.5)
                m.bias.data.uniform_(-0.2, 0.2)
        self.double()
        self.eval()

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(self.fc(z).view(-1, 8, 2, 2))


def skip_or_fail(reason: str) -> None:
    """Skip a test whose environment is missing (a browser, permission to mount), or fail it under CI.

    ``.ci/run`` installs everything those tests need and sets ``HVP_EXPLORE_CI=1``: there a missing piece is a
    broken CI set-up, not a user's machine, and must not pass as a skip.
    """
    if os.environ.get("HVP_EXPLORE_CI") == "1":
        pytest.fail(f"CI must run this test: {reason}")
    pytest.skip(reason)


@pytest.fixture
def mlp_generator() -> TinyMLPGenerator:
    return TinyMLPGenerator()


@pytest.fixture
def conv_generator() -> TinyConvGenerator:
    return TinyConvGenerator()


# --------------------------------------------------------------------------------------------------
# Shared dense-reference cases for the curvature operators and eigensolvers (curvlinops style).


def _forward_cases(image_shape):
    from hvp_explore.problems import CompressedSensing, Inpainting, SuperResolution

    _, h, w = image_shape
    return {
        "sr2": SuperResolution(image_shape, 2, kernel="area").double(),
        "inpaint": Inpainting.from_box(image_shape, 1, 1, w // 2, h // 2).double(),
        "cs": CompressedSensing(image_shape, m=h * w // 3, seed=0).double(),
    }


GENERATORS = {"mlp": TinyMLPGenerator, "conv": TinyConvGenerator}
FORWARDS = ("sr2", "inpaint", "cs")


@pytest.fixture(params=[(g, f) for g in GENERATORS for f in FORWARDS], ids=lambda p: f"{p[0]}-{p[1]}")
def inverse_case(request):
    """(generator, forward operator, z0) for every generator x forward-operator combination, float64."""
    gen_name, fwd_name = request.param
    generator = GENERATORS[gen_name]()
    forward = _forward_cases(generator.image_shape)[fwd_name]
    z0 = torch.randn(generator.latent_dim, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    return generator, forward, z0


def dense_reference_hessian(generator, forward, z0):
    """1/2 d^2/dz^2 ||A G(z) - A G(z0)||^2 at z0 by torch.autograd.functional.hessian, and J^T J by jacobian."""
    y0 = forward(generator(z0[None])).detach()
    f = lambda z: 0.5 * (forward(generator(z[None])) - y0).pow(2).sum()  # noqa: E731
    H = torch.autograd.functional.hessian(f, z0)
    J = torch.autograd.functional.jacobian(lambda z: forward(generator(z[None])).reshape(-1), z0)
    return H, J


class MatrixOperator:
    """Factory of a CurvatureOperator from an explicit symmetric matrix (known spectrum)."""

    @staticmethod
    def make(matrix: torch.Tensor):
        from hvp_explore.operators.base import CurvatureOperator

        class _Matrix(CurvatureOperator):
            name = "matrix"

            def _matmat(self, V):
                return matrix @ V

        return _Matrix(matrix.shape[0], dtype=matrix.dtype, device=matrix.device)


def spectrum_matrix(values: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """Q diag(values) Q^T with a seeded random orthogonal Q (float64)."""
    n = values.numel()
    Q, _ = torch.linalg.qr(torch.randn(n, n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64))
    return (Q * values) @ Q.T


@pytest.fixture
def matrix_pair():
    """Two float64 matrix operators of size 9 with their dense matrices: one PSD, one indefinite (for the algebra)."""
    n = 9
    P = spectrum_matrix(torch.logspace(0, -3, n, dtype=torch.float64), seed=1)
    S = spectrum_matrix(torch.linspace(-2.0, 3.0, n, dtype=torch.float64), seed=2)
    return (MatrixOperator.make(P), P), (MatrixOperator.make(S), S)

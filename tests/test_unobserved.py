"""Diversity where the data is missing: the null-space projector, the share of change there, H_U and its pencil.

Every value is checked against a dense float64 reference: the projector against ``I - pinv(A) A`` of A's dense
matrix, the share against its brute-force definition over pairs, H_U against ``torch.autograd.functional.hessian``,
and the dense pencil against ``scipy.linalg.eigh(H_U, H_Y + eps I)``.
"""

from __future__ import annotations

import itertools

import pytest
import scipy.linalg
import torch
from conftest import FORWARDS, GENERATORS, _forward_cases

from hvp_explore import measurement_hessian, perceptual_hessian, top_generalized_eigenpairs, unobserved_hessian, unobserved_share
from hvp_explore.eigen import generalized
from hvp_explore.metrics import PixelMetric
from hvp_explore.problems import Inpainting


def dense_matrix(forward, image_shape):
    """A as an (m, N) float64 matrix, column by column."""
    N = torch.Size(image_shape).numel()
    basis = torch.eye(N, dtype=torch.float64).reshape(N, *image_shape)
    return forward(basis).reshape(N, -1).T


@pytest.mark.parametrize("name", FORWARDS)
def test_unobserved_is_the_null_space_projector(name):
    image_shape = GENERATORS["conv"]().image_shape
    forward = _forward_cases(image_shape)[name]
    A = dense_matrix(forward, image_shape)
    P = torch.eye(A.shape[1], dtype=torch.float64) - torch.linalg.pinv(A) @ A
    x = torch.randn(3, *image_shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    got = forward.unobserved(x).reshape(3, -1)
    # the pseudo-inverses are exact (area kernel: A A^T = I / 4; masking; CS by its R factor): rounding only
    assert torch.allclose(got, x.reshape(3, -1) @ P.T, atol=1e-12)
    assert float(forward(forward.unobserved(x)).abs().max()) < 1e-12  # the measurements do not see it
    assert forward.unobserved_dim == round(float(torch.trace(P)))


def test_unobserved_of_inpainting_is_the_hole():
    forward = Inpainting.from_box((2, 6, 6), 1, 2, 3, 2).double()
    x = torch.randn(1, 2, 6, 6, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    assert torch.equal(forward.unobserved(x), x * forward.missing.to(x.dtype))
    assert forward.unobserved_dim == 2 * 6


def test_unobserved_share_against_its_definition():
    forward = Inpainting.from_box((1, 4, 4), 0, 0, 2, 2).double()  # the hole: 4 of 16 pixels
    gen = torch.Generator().manual_seed(2)
    x0 = 0.5 * torch.rand(1, 1, 4, 4, generator=gen, dtype=torch.float64)  # images stay inside [-1, 1]
    images = x0 + 0.1 * torch.randn(5, 1, 4, 4, generator=gen, dtype=torch.float64).clamp(-3, 3)
    hole = forward.missing.to(torch.float64)
    share = unobserved_share(forward, images, x0)
    delta = images - x0
    assert share["from_first"] == pytest.approx(float((delta * hole).pow(2).sum() / delta.pow(2).sum()), rel=1e-12)
    pairs = list(itertools.combinations(range(5), 2))
    inside = sum(float(((images[i] - images[j]) * hole).pow(2).sum()) for i, j in pairs)
    total = sum(float((images[i] - images[j]).pow(2).sum()) for i, j in pairs)
    assert share["pairwise"] == pytest.approx(inside / total, rel=1e-12)
    assert share["per_solution"][2] == pytest.approx(float((delta[2] * hole).pow(2).sum() / delta[2].pow(2).sum()), rel=1e-12)
    assert share["dimension_share"] == 0.25
    # a change only inside the hole is all unobserved; only outside, none
    only_hole = unobserved_share(forward, x0 + delta * hole, x0)
    assert only_hole["from_first"] == pytest.approx(1.0) and only_hole["pairwise"] == pytest.approx(1.0)
    assert unobserved_share(forward, x0 + delta * (1 - hole), x0)["from_first"] == pytest.approx(0.0, abs=1e-15)
    # the perceptual diversity of the unobserved part: pairwise distances of x0 + P(x_i - x0)
    with_metric = unobserved_share(forward, images, x0, metric=PixelMetric())
    composites = x0 + delta * hole
    dist = [float(PixelMetric()(composites[i : i + 1], composites[j : j + 1])) for i, j in pairs]
    assert with_metric["perceptual_pairwise_mean"] == pytest.approx(sum(dist) / len(dist), rel=1e-9)
    # no change at all: nothing to share
    assert unobserved_share(forward, x0.expand(3, -1, -1, -1), x0)["pairwise"] is None


@pytest.mark.parametrize("name", FORWARDS)
def test_unobserved_hessian_matches_dense_reference(name):
    """H_U = 1/2 d^2/dz^2 d(x0 + P(G(z) - x0), x0) at z0, by double backprop in float64, against the GGN operator."""
    generator = GENERATORS["mlp"]()
    forward = _forward_cases(generator.image_shape)[name]
    metric = PixelMetric()
    z0 = torch.randn(generator.latent_dim, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    x0 = generator(z0[None]).detach()
    f = lambda z: 0.5 * metric(x0 + forward.unobserved(generator(z[None]) - x0), x0).sum()  # noqa: E731
    H = torch.autograd.functional.hessian(f, z0)
    op = unobserved_hessian(generator, forward, metric, z0)
    assert op.name.startswith("H_U")
    # float64 products, a Hessian of size ~1: agreement to rounding
    assert torch.allclose(op.dense(), H, atol=1e-10)
    # the double-backprop route agrees at z0 (the residual vanishes there)
    assert torch.allclose(unobserved_hessian(generator, forward, metric, z0, method="double-backprop").dense(), H, atol=1e-10)
    # it counts only the unobserved part: H_U <= H_X for the pixel metric (P is an orthogonal projector)
    gap = perceptual_hessian(generator, metric, z0).dense() - H
    assert float(torch.linalg.eigvalsh(gap).min()) > -1e-10


def test_dense_pencil_of_gauss_newton_operators_matches_lapack_and_reuses_the_jacobian():
    """m > 4n (no whitening): ``auto`` solves the pencil densely from the operators' kept J^T J."""
    generator = GENERATORS["conv"](latent_dim=6)  # images 1 x 8 x 8
    forward = _forward_cases(generator.image_shape)["inpaint"]  # m = 48 kept pixels > 4n
    z0 = torch.randn(generator.latent_dim, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    HY = measurement_hessian(generator, forward, z0)
    HU = unobserved_hessian(generator, forward, PixelMetric(), z0)
    n, eps, k = generator.latent_dim, 1e-3, 4
    assert HY.residual_dim > 4 * n
    ref = scipy.linalg.eigh(HU.dense().numpy(), HY.dense().numpy() + eps * torch.eye(n, dtype=torch.float64).numpy())
    ref_values = torch.from_numpy(ref[0][::-1][:k].copy())
    ref_vectors = torch.from_numpy(ref[1][:, ::-1][:, :k].copy())
    HY.gram(), HU.gram()  # as after the Jacobian eigensolve: the pencil takes no more products
    before = HY.num_matvecs + HU.num_matvecs
    result = top_generalized_eigenpairs(HU, HY, k, eps=eps, solver="auto")
    assert result.solver == "dense"
    assert result.matvecs == 0 and result.check_matvecs == 0 and HY.num_matvecs + HU.num_matvecs == before
    assert torch.allclose(result.values, ref_values, rtol=1e-9)
    unit = ref_vectors / ref_vectors.norm(dim=0)
    assert torch.allclose((result.vectors * unit).sum(0).abs(), torch.ones(k, dtype=torch.float64), atol=1e-8)
    assert result.all_converged
    # the residuals are those of the pencil on the operators' dense matrices
    A, B = HU.dense(), HY.dense() + eps * torch.eye(n, dtype=torch.float64)
    true = (A @ result.vectors - (B @ result.vectors) * result.values).norm(dim=0)
    assert torch.allclose(result.residuals, true, atol=1e-12)


def test_dense_pencil_gives_way_to_lobpcg_above_its_limits(monkeypatch):
    generator = GENERATORS["conv"](latent_dim=6)
    forward = _forward_cases(generator.image_shape)["inpaint"]
    z0 = torch.randn(generator.latent_dim, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    HY, HX = measurement_hessian(generator, forward, z0), perceptual_hessian(generator, PixelMetric(), z0)
    monkeypatch.setattr(generalized, "DENSE_PENCIL_MAX_N", generator.latent_dim - 1)
    assert top_generalized_eigenpairs(HX, HY, 2, eps=1e-2, tol=1e-6, warn=False).solver == "lobpcg"


def test_tau_from_noise_and_its_floor():
    from hvp_explore import describe_tau, resolve_tau, tau_from_noise
    from hvp_explore.settings import StepSettings

    # the truth's MSE sigma^2 chi2_m / m: tau two standard deviations above its mean
    assert tau_from_noise(0.02, 800) == pytest.approx(0.02**2 * (1 + 2 * (2 / 800) ** 0.5))
    gen = torch.Generator().manual_seed(0)
    truth_mse = (0.02 * torch.randn(2000, 800, generator=gen, dtype=torch.float64)).pow(2).mean(1)
    accepted = float((truth_mse <= tau_from_noise(0.02, 800)).double().mean())
    assert 0.96 < accepted < 0.995  # ~97.7% for a normal approximation of chi2
    assert resolve_tau(2e-3, None, 800) == 2e-3
    assert resolve_tau(2e-3, 0.02, 800, floor=1e-2) == 1e-2  # never below the first solution's own MSE
    assert describe_tau(2e-3) == "RMS error <= 0.0447 per measurement on [0, 1], about 11 grey levels"
    with pytest.raises(ValueError, match="positive number"):
        tau_from_noise(0.0, 10)
    with pytest.raises(ValueError, match="not both"):
        StepSettings(tau=1e-3, noise_sigma=0.01)


def test_explore_command_with_the_unobserved_mode_and_a_noise_level(tmp_path):
    """--mode unobserved and --noise-sigma end to end: report.json's tau, directions and share, on the saved PNGs."""
    import json

    import numpy as np
    from click.testing import CliRunner
    from PIL import Image

    from hvp_explore import Inpainting, describe_tau, tau_from_noise
    from hvp_explore.cli import cli
    from hvp_explore.data import sample_paths

    out = tmp_path / "run"
    result = CliRunner().invoke(cli, ["explore", str(sample_paths()[0]), "--from-clean", "--problem", "inpaint", "--box", "8,8,16,16",
                                      "--mode", "unobserved", "--noise-sigma", "0.02", "--solutions", "4", "--restarts", "2",
                                      "--no-html", "--quiet", "--out", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    noise = report["settings"]["tau_from_noise"]
    assert noise["noise_tau"] == pytest.approx(tau_from_noise(0.02, 32 * 32 - 16 * 16))
    assert report["tau"] == pytest.approx(max(noise["noise_tau"], noise["first_solution_mse"]))
    assert [d["label"] for d in report["directions"]] == ["u1", "u2"] and report["eigen"]["pencil"]["k"] == 2
    # the share of the change in the hole, recomputed from the PNGs
    forward = Inpainting.from_box((1, 32, 32), 8, 8, 16, 16).double()

    def image(name):
        return torch.from_numpy(np.asarray(Image.open(out / name), dtype=np.float64) / 127.5 - 1)[None, None]

    first = image("first_solution.png")
    solutions = torch.cat([image(f"solutions/{s['file'].split('/')[-1]}") for s in report["solutions"]])
    expected = unobserved_share(forward, solutions, first)
    assert report["unobserved"]["pairwise"] == pytest.approx(expected["pairwise"], rel=1e-6)
    assert report["unobserved"]["from_first"] == pytest.approx(expected["from_first"], rel=1e-6)
    assert report["unobserved"]["dimension_share"] == 0.25
    assert describe_tau(report["tau"]).startswith("RMS error <=")

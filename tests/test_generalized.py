"""The generalized pencil H_X d = mu (H_Y + eps I) d against LAPACK's dense symmetric-definite solver."""

from __future__ import annotations

import pytest
import scipy.linalg
import torch
from conftest import MatrixOperator, TinyConvGenerator

from hvp_explore import measurement_hessian, perceptual_hessian, subspace_cosines, top_generalized_eigenpairs
from hvp_explore.metrics import PixelMetric


def pencil_case(latent_dim=24, pool=4):
    gen = TinyConvGenerator(latent_dim=latent_dim)
    z0 = torch.randn(latent_dim, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    HY = measurement_hessian(gen, torch.nn.AvgPool2d(pool), z0)  # m = (8 / pool)^2: rank-deficient
    HX = perceptual_hessian(gen, PixelMetric(), z0)
    return HX, HY


def dense_pencil(HX, HY, eps, k):
    A, B = HX.dense().numpy(), HY.dense().numpy()
    values, vectors = scipy.linalg.eigh(A, B + eps * torch.eye(A.shape[0], dtype=torch.float64).numpy())
    return torch.from_numpy(values[::-1][:k].copy()), torch.from_numpy(vectors[:, ::-1][:, :k].copy())


@pytest.mark.parametrize("solver", ["whitened", "lobpcg", "dense", "auto"])
@pytest.mark.parametrize("eps", [1e-1, 1e-3])
def test_pencil_matches_lapack(solver, eps):
    HX, HY = pencil_case()
    k = 5
    ref_values, ref_vectors = dense_pencil(HX, HY, eps, k)
    result = top_generalized_eigenpairs(HX, HY, k, eps=eps, solver=solver, tol=1e-10)
    assert result.solver == ("whitened" if solver == "auto" else solver)
    # Eigenvalues to 1e-8 relative (solver tolerance 1e-10 times the pencil's conditioning ~1/eps)
    assert torch.allclose(result.values, ref_values, rtol=1e-8)
    assert torch.allclose(result.vectors.norm(dim=0), torch.ones(k, dtype=torch.float64))
    # Directions agree up to sign with LAPACK's (distinct eigenvalues), compared as unit vectors
    ref_unit = ref_vectors / ref_vectors.norm(dim=0)
    assert torch.allclose((result.vectors * ref_unit).sum(0).abs(), torch.ones(k, dtype=torch.float64), atol=1e-7)
    assert result.all_converged
    # Residuals are those of the pencil, for unit directions
    A, B = HX.dense(), HY.dense() + eps * torch.eye(24, dtype=torch.float64)
    true = (A @ result.vectors - (B @ result.vectors) * result.values).norm(dim=0)
    assert torch.allclose(result.residuals, true, rtol=1e-6, atol=1e-14)


def test_small_eps_limit_is_projected_perceptual_metric():
    """As eps -> 0 the top pencil directions span the top eigenvectors of P H_X P, P = I - proj(range H_Y)."""
    HX, HY = pencil_case()
    J = HY.jacobian()
    _, _, Vh = torch.linalg.svd(J, full_matrices=False)
    P = torch.eye(24, dtype=torch.float64) - Vh.T @ Vh
    evals, evecs = torch.linalg.eigh(P @ HX.dense() @ P)
    result = top_generalized_eigenpairs(HX, HY, 3, eps=1e-9, solver="whitened", tol=1e-6)
    Q, _ = torch.linalg.qr(result.vectors)
    assert float(subspace_cosines(Q, evecs.flip(1)[:, :3]).min()) > 1 - 1e-6
    # mu ~ eigenvalue of P H_X P / eps in that limit
    assert torch.allclose(result.values * 1e-9, evals.flip(0)[:3], rtol=1e-4)


def test_generalized_errors():
    HX, HY = pencil_case()
    plain = MatrixOperator.make(HY.dense())
    with pytest.raises(ValueError, match="needs B as a Gauss-Newton operator"):
        top_generalized_eigenpairs(HX, plain, 3, solver="whitened")
    with pytest.raises(ValueError, match="eps must be positive"):
        top_generalized_eigenpairs(HX, HY, 3, eps=0)
    with pytest.raises(ValueError, match="unknown generalized solver"):
        top_generalized_eigenpairs(HX, HY, 3, solver="qz")
    with pytest.raises(ValueError, match="k must be between"):
        top_generalized_eigenpairs(HX, HY, 0)
    # B without a Jacobian falls back to LOBPCG under auto
    assert top_generalized_eigenpairs(HX, plain, 3, eps=1e-2, tol=1e-8).solver == "lobpcg"


def test_generalized_solvers_come_from_settings():
    from hvp_explore import settings
    from hvp_explore.eigen import generalized

    assert generalized.GENERALIZED_SOLVERS is settings.GENERALIZED_SOLVERS


@pytest.mark.parametrize("eps", [1e-1, 1e-3])
def test_lobpcg_pencil_with_an_operator_b_iterates_to_lapack(eps):
    """n = 64 >= 5 x the LOBPCG block, so scipy iterates (below that it solves densely): B is any operator.

    The pencil runs one LOBPCG pass at scipy's own tolerance (eigen/_methods.py): the pairs agree with
    LAPACK's to about 1e-6 (eigenvalues, relative) and 1e-5 (cosines), within ``tol = 1e-4`` (the default).
    At eps = 1e-3, B + eps I has condition number 2,000 and LOBPCG needs more than its default 200 iterations:
    with them it stops at relative residuals of 1e-4 to 3e-4 whatever the seed (flagged unconverged, as the
    last line checks; in the environment of earlier runs seed 0 happened to pass), so the test gives it a budget of 20,000
    products, which it uses up to about 13,400.
    """
    tol = 1e-4
    n, k = 64, 5
    gen = torch.Generator().manual_seed(5)
    QA, _ = torch.linalg.qr(torch.randn(n, n, generator=gen, dtype=torch.float64))
    QB, _ = torch.linalg.qr(torch.randn(n, n, generator=gen, dtype=torch.float64))
    A_dense = (QA * torch.arange(1, n + 1, dtype=torch.float64).pow(-1.5)) @ QA.T
    B_dense = (QB[:, :8] * torch.linspace(1.0, 2.0, 8, dtype=torch.float64)) @ QB[:, :8].T  # rank 8, PSD
    A, B = MatrixOperator.make(A_dense), MatrixOperator.make(B_dense)
    ref_values, ref_vectors = scipy.linalg.eigh(A_dense.numpy(), (B_dense + eps * torch.eye(n, dtype=torch.float64)).numpy())
    ref_values, ref_vectors = torch.from_numpy(ref_values[::-1][:k].copy()), torch.from_numpy(ref_vectors[:, ::-1][:, :k].copy())
    result = top_generalized_eigenpairs(A, B, k, eps=eps, solver="lobpcg", tol=tol, max_matvecs=20_000)
    assert result.solver == "lobpcg" and result.all_converged and result.matvecs <= 20_000
    assert torch.allclose(result.values, ref_values, rtol=1e-5)
    ref_unit = ref_vectors / ref_vectors.norm(dim=0)
    assert torch.allclose((result.vectors * ref_unit).sum(0).abs(), torch.ones(k, dtype=torch.float64), atol=1e-5)
    # products of B + eps I count as products of B
    assert result.matvecs + result.check_matvecs == A.num_matvecs + B.num_matvecs
    short = top_generalized_eigenpairs(A, B, k, eps=eps, solver="lobpcg", tol=tol, warn=False)  # 200 iterations at most
    assert torch.equal(short.converged, short.residuals <= tol * short.info["residual_scale"])


def test_pencil_relative_residual_is_measured_as_its_convergence_is():
    """A pencil pair is judged against tol * (||A d_1|| + mu_1 ||(B + eps I) d_1||); its reported relative residual (the
    CLI's warning prints it) is relative to that same scale, not to mu. Here the whitened solve converges in its own
    norm, the pencil test does not, and r / mu (9.5e-4) sat below tol while the pair was reported unconverged."""
    from hvp_explore import gauss_newton_operator

    g = torch.Generator().manual_seed(10)
    n, m = 200, 20
    J = torch.randn(m, n, generator=g, dtype=torch.float64)
    M = torch.randn(n, n, generator=g, dtype=torch.float64) * torch.linspace(1, 0.01, n, dtype=torch.float64)
    z0 = torch.zeros(n, dtype=torch.float64)
    B, A = gauss_newton_operator(lambda z: J @ z, z0), gauss_newton_operator(lambda z: M @ z, z0)
    eps = 1e-3 * float(torch.linalg.eigvalsh(J.T @ J).max())
    result = top_generalized_eigenpairs(A, B, 1, eps=eps, solver="whitened", tol=1e-3, warn=False, inner_solver="block-krylov")
    Ad, Bd = M.T @ M, J.T @ J + eps * torch.eye(n, dtype=torch.float64)
    d, mu = result.vectors[:, 0], result.values[0]
    r = (Ad @ d - mu * (Bd @ d)).norm()
    scale = (Ad @ d).norm() + mu.abs() * (Bd @ d).norm()
    assert torch.isclose(result.residuals[0], r, rtol=1e-8)
    assert result.info["residual_scale"] == pytest.approx(float(scale), rel=1e-8)
    assert result.max_relative_residual == pytest.approx(float(r / scale), rel=1e-8)
    assert bool(result.converged[0]) == (result.max_relative_residual <= result.tol)
    assert not result.all_converged and float(r / mu) < result.tol  # the case that read as a contradiction

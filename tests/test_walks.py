"""Feasible walks, the geometric step caps, H_Y at its numerical rank, and diversity selection (values, dense references)."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import TinyConvGenerator

from hvp_explore import PixelMetric, SuperResolution, explore, measurement_mse, perceptual_hessian
from hvp_explore.eigen import EigenResult
from hvp_explore.exploration import Direction
from hvp_explore.exploration.explorer import farthest_first, numerical_rank_part, step_caps
from hvp_explore.exploration.steps import geometric_eta_max, perceptual_budget
from hvp_explore.exploration.walks import feasible_walks
from hvp_explore.io.images import quantize

F64 = torch.float64


def problem():
    """A DCGAN-shaped generator R^24 -> 1x8x8 under 2x2 super-resolution (m = 16 < n = 24), float64."""
    G = TinyConvGenerator(latent_dim=24)
    forward = SuperResolution((1, 8, 8), 2).double()
    z_true = torch.randn(24, generator=torch.Generator().manual_seed(0), dtype=F64)
    y = forward(G(z_true[None])).detach()
    return G, forward, y, z_true


class Affine(torch.nn.Module):
    """G(z) = W z + b: the measurements are affine in z, so a Gauss-Newton correction lands on them exactly."""

    def __init__(self, n: int = 10):
        super().__init__()
        g = torch.Generator().manual_seed(3)
        self.latent_dim = n
        self.W = torch.nn.Parameter(torch.randn(16, n, generator=g, dtype=F64) / math.sqrt(n))
        self.b = torch.nn.Parameter(torch.randn(16, generator=g, dtype=F64) * 0.1)

    def forward(self, z):
        return torch.tanh(0 * z[:, :1]).reshape(-1, 1, 1, 1) + (z @ self.W.T + self.b).reshape(-1, 1, 4, 4)


def test_every_walk_point_is_feasible_as_saved_and_the_walkers_move_away():
    G, forward, y, z0 = problem()
    tau = 1e-3
    starts = z0 + 0.05 * torch.randn(3, 24, generator=torch.Generator().manual_seed(1), dtype=F64)
    found = G(z0[None]).detach()
    result = feasible_walks(G, forward, y, starts, metric=PixelMetric(), found=found, steps=4, tau=tau, quiet=True)
    assert result.paths.shape == (3, 5, 24) and torch.equal(result.paths[:, 0], starts)
    assert len(result.points) + result.stuck == 3 * 4 and len(result.points) >= 6
    for p in result.points:
        x = G(p.latent[None]).detach()
        assert torch.equal(quantize(x)[0], p.image)  # the image is the 8-bit one...
        assert float(measurement_mse(forward, p.image[None], y)) == pytest.approx(p.measurement_mse, rel=1e-12)
        assert p.measurement_mse <= tau and p.feasible  # ...and it meets tau
        assert torch.equal(result.paths[p.walker, p.step], p.latent)
    # pushed away from the solutions found: the walkers end farther from the first solution than they started
    start_d = PixelMetric()(G(starts), found)
    end_d = PixelMetric()(G(result.paths[:, -1]), found)
    assert bool((end_d > start_d).all())
    # deterministic
    again = feasible_walks(G, forward, y, starts, metric=PixelMetric(), found=found, steps=4, tau=tau, quiet=True)
    assert torch.equal(again.paths, result.paths)


def test_a_walk_step_on_an_affine_generator_follows_the_generalized_direction():
    """With A G affine and m = 4 < n = 10: the step is eta (J^T J + eps I)^{-1} g, the pull-back moves only in J's row space.

    Every Gauss-Newton correction is J^T (...), so the null-space part of the displacement, P step with
    P = I - J^+ J, is exactly eta P delta: a direction fixed by the dense J and g alone.
    """
    G = Affine()
    forward = SuperResolution((1, 4, 4), 2).double()  # m = 4
    z0 = torch.randn(10, generator=torch.Generator().manual_seed(2), dtype=F64)
    y = forward(G(z0[None])).detach()
    other = G(torch.randn(1, 10, generator=torch.Generator().manual_seed(5), dtype=F64)).detach()
    metric = PixelMetric()
    result = feasible_walks(G, forward, y, z0[None], metric=metric, found=other, steps=1, tau=1e-3, overshoot=50.0, quiet=True)
    (point,) = result.points
    step = point.latent - z0
    # dense reference: J, the repulsion gradient (one solution found: w = 1) and the projector
    J = torch.autograd.functional.jacobian(lambda z: forward(G(z[None])).reshape(-1), z0)
    g = torch.autograd.functional.jacobian(lambda z: metric(G(z[None]), other).sum(), z0)
    gram = J.T @ J
    eps = 1e-2 * float(torch.linalg.eigvalsh(gram)[-1])
    delta = torch.linalg.solve(gram + eps * torch.eye(10, dtype=F64), g)
    P = torch.eye(10, dtype=F64) - torch.linalg.pinv(J) @ J
    moved, expected = P @ step, P @ delta
    cosine = float(moved @ expected / (moved.norm() * expected.norm()))
    assert cosine > 1 - 1e-10
    assert point.measurement_mse <= 1e-3  # pulled back: the 8-bit image meets tau


def test_feasible_walks_refuse_metrics_without_a_residual():
    G, forward, y, z0 = problem()
    with pytest.raises(ValueError, match="residual form"):
        feasible_walks(G, forward, y, z0[None], metric=lambda a, b: (a - b).abs().sum((1, 2, 3)), found=G(z0[None]), steps=1)
    with pytest.raises(ValueError, match="steps must be"):
        feasible_walks(G, forward, y, z0[None], metric=PixelMetric(), found=G(z0[None]), steps=-1)


def test_explore_with_walks_returns_the_most_diverse_feasible_set():
    G, forward, y, _ = problem()
    tau = 2e-3
    options = dict(metric=PixelMetric(), num_solutions=6, K=6, tau=tau, quiet=True, invert_options={"restarts": 2, "steps": 200})
    plain = explore(G, forward, y, **options)
    walked = explore(G, forward, y, inversion=plain.inversion, walk_steps=3, walkers=2, **options)
    assert walked.walk is not None and len(walked.solutions) == 6
    assert any(s.status == "walk" for s in walked.solutions)
    for s in walked.solutions:
        assert float(measurement_mse(forward, s.image[None], y)) <= tau and s.feasible
    iu = torch.triu_indices(6, 6, 1)
    assert float(walked.pairwise[iu[0], iu[1]].mean()) > float(plain.pairwise[iu[0], iu[1]].mean())
    assert walked.settings["walk_steps"] == 3 and "walks" in walked.timings


def test_farthest_first_is_the_greedy_farthest_point_order():
    pts = torch.tensor([[0.0], [1.0], [10.0], [4.0], [7.0]], dtype=F64)
    D = (pts - pts.T).abs()
    assert farthest_first(D, 5, 0) == [0, 2, 3, 4, 1]  # 10; then 4 (4 from {0, 10}); then 7 (3 from {0, 4, 10}); then 1
    assert farthest_first(D, 2, 3) == [3, 2]


def test_geometric_caps_are_where_the_quadratic_model_reaches_the_budget():
    c = torch.tensor([4.0, 1.0, 0.0], dtype=F64)
    caps = geometric_eta_max(c, 0.25)
    torch.testing.assert_close(caps, torch.tensor([0.25, 0.5, 0.5], dtype=F64))  # a flat direction gets the largest cap
    G, forward, y, z0 = problem()
    metric = PixelMetric()
    D = torch.linalg.qr(torch.randn(24, 3, generator=torch.Generator().manual_seed(4), dtype=F64))[0]
    directions = [Direction(D[:, i], "raw", f"v{i + 1}", i + 1) for i in range(3)]
    H_X = perceptual_hessian(G, metric, z0)
    caps, budget = step_caps(G, metric, z0, directions, H_X)
    dense = H_X.dense()
    expected = torch.sqrt(budget / torch.einsum("ip,ij,jp->p", D, dense, D))
    torch.testing.assert_close(caps, expected, rtol=1e-10, atol=0)
    assert budget == pytest.approx(perceptual_budget(G, metric, z0))
    fixed, none = step_caps(G, metric, z0, directions, H_X, eta_max=2.5)
    assert none is None and torch.equal(fixed, torch.full((3,), 2.5, dtype=F64))


@pytest.mark.parametrize("rank", [4, 12])
def test_direction_curvatures_take_one_product_per_dimension_of_their_span(rank):
    # 12 directions in a span of `rank` dimensions (combinations, as beyond 2K solutions): the curvatures
    # d^T H d match the dense ones, from `rank` products (12 when they are independent).
    from conftest import MatrixOperator, spectrum_matrix

    from hvp_explore.exploration.explorer import direction_curvatures

    g = torch.Generator().manual_seed(6)
    M = spectrum_matrix(torch.logspace(1, -4, 20, dtype=F64), seed=3)
    H = MatrixOperator.make(M)
    products = []
    real = H._matmat
    H._matmat = lambda V: products.append(V.shape[1]) or real(V)
    D = torch.randn(20, rank, generator=g, dtype=F64) @ torch.randn(rank, 12, generator=g, dtype=F64)
    D = D / D.norm(dim=0)
    curvatures = direction_curvatures(H, D)
    torch.testing.assert_close(curvatures, torch.einsum("ip,ij,jp->p", D, M, D), rtol=1e-10, atol=1e-12)
    assert sum(products) == rank


def test_h_y_is_cut_at_its_numerical_rank():
    values = torch.tensor([2.0, 1e-3, 1e-5, 1e-9, -1e-12], dtype=F64)  # cut below 1e-6 * 2
    result = EigenResult(values=values, vectors=torch.eye(5, dtype=F64), residuals=torch.zeros(5, dtype=F64),
                         converged=torch.ones(5, dtype=torch.bool), matvecs=0, check_matvecs=0, seconds=0.0, solver="dense", tol=1e-4,
                         requested=5)
    cut = numerical_rank_part(result)
    assert cut.k == 3 and torch.equal(cut.values, values[:3]) and cut.vectors.shape == (5, 3)
    assert cut.info["numerical_rank"] == 3 and cut.info["dropped"] == 2

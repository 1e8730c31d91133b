"""e-GLASS exploration: coupling, Algorithm 1, the feasible step search, distances, and the pipeline."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import TinyConvGenerator

from hvp_explore import PixelMetric, SuperResolution, measurement_mse, subspace_cosines
from hvp_explore.exploration import (
    Direction,
    combine_directions,
    coupling_matrix,
    default_k_y,
    eglass_projection,
    ellipsoid_steps,
    explore,
    feasible_steps,
    pairwise_distances,
    predicted_steps,
    significant_couplings,
)
from hvp_explore.generators.dcgan import FashionClassifier
from hvp_explore.io.images import quantize
from hvp_explore.metrics import ClassifierMetric


def orthonormal(n, k, seed):
    return torch.linalg.qr(torch.randn(n, k, generator=torch.Generator().manual_seed(seed), dtype=torch.float64))[0]


def test_default_k_y():
    """The whole range of H_Y when m < n; n / 16 when H_Y has full rank (docs/results.md, k_y sweep)."""
    assert default_k_y(64, 512) == 64  # super-resolution x4 of 32x32
    assert default_k_y(768, 512) == 32  # central-box inpainting of 32x32
    assert default_k_y(512, 512) == 32
    assert default_k_y(20, 8) == 1  # never zero


def test_coupling_matrix_is_the_cosine_table():
    U, V = orthonormal(12, 3, 0), orthonormal(12, 4, 1)
    C = coupling_matrix(U, V)
    assert C.shape == (3, 4)
    for i in range(3):
        for j in range(4):
            assert float(C[i, j]) == pytest.approx(float(torch.dot(U[:, i], V[:, j])), abs=1e-15)
    assert torch.equal(significant_couplings(C, 0.3), C.abs() > 0.3)
    with pytest.raises(ValueError, match="same n"):
        coupling_matrix(U, orthonormal(11, 2, 0))
    with pytest.raises(ValueError, match=r"threshold must be in \[0, 1\)"):
        significant_couplings(C, 1.0)


def test_projection_with_zero_threshold_is_the_orthogonal_projector():
    U = orthonormal(20, 6, 0)
    v = torch.randn(20, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    proj = eglass_projection(v, U, threshold=0.0)
    expected = v - U @ (U.T @ v)
    expected = expected / expected.norm()
    assert torch.allclose(proj.direction, expected, atol=1e-12)
    assert float(proj.cosines_after.abs().max()) < 1e-12
    assert torch.allclose(proj.cosines_before, U.T @ (v / v.norm()))
    assert sorted(proj.removed) == list(range(1, 7)) and proj.passes == 1


def test_projection_removes_only_significant_couplings():
    U = orthonormal(30, 5, 1)
    # v strongly coupled with u1 and u3, weakly with the others
    w = orthonormal(30, 1, 9)[:, 0]
    w = (w - U @ (U.T @ w)) / (w - U @ (U.T @ w)).norm()  # orthogonal to every u^j
    v = 0.6 * U[:, 0] + 0.5 * U[:, 2] + 0.01 * U[:, 4] + 0.6 * w
    proj = eglass_projection(v, U, threshold=0.1)
    assert set(proj.removed) == {1, 3}
    assert float(proj.cosines_after.abs().max()) <= 0.1
    # the weak coupling is kept (only renormalised)
    assert float(proj.cosines_after[4].abs()) > 0
    assert proj.direction.norm().item() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="whole direction"):
        eglass_projection(U[:, 0] + U[:, 1], U, threshold=0.0)


def tiny_problem():
    G = TinyConvGenerator(latent_dim=24)
    forward = SuperResolution((1, 8, 8), 2).double()
    z_true = torch.randn(24, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    y = forward(G(z_true[None])).detach()
    return G, forward, y, z_true


@torch.no_grad()
def test_feasible_steps_bracket_the_boundary():
    G, forward, y, z0 = tiny_problem()
    D = orthonormal(24, 4, 2)
    tau = 1e-3
    steps, images = feasible_steps(G, forward, y, z0, D, tau=tau, eta_max=8.0, rel_tol=0.02, max_rounds=20)
    for p, step in enumerate(steps):
        x = G((z0 + step.eta * D[:, p])[None])
        # the returned image and MSE are those of the returned step, and it is feasible
        assert torch.allclose(images[p], x[0])
        assert float(measurement_mse(forward, x, y)) == pytest.approx(step.measurement_mse, rel=1e-12)
        assert step.feasible and step.measurement_mse <= tau
        if step.status == "ok":
            beyond = G((z0 + step.eta_infeasible * D[:, p])[None])
            assert float(measurement_mse(forward, beyond, y)) > tau
            assert step.eta_infeasible - step.eta <= 0.02 * step.eta_infeasible
    assert {s.status for s in steps} <= {"ok", "capped"}


def test_feasible_steps_capped_and_no_step():
    G, forward, y, z0 = tiny_problem()
    D = orthonormal(24, 2, 4)
    capped, _ = feasible_steps(G, forward, y, z0, D, tau=1.0, eta_max=0.5)
    assert all(s.status == "capped" and s.eta == 0.5 for s in capped)
    z_off = z0 + 0.5 * D[:, 0]  # a start that is already infeasible for a tiny tau
    none, images = feasible_steps(G, forward, y, z_off, D, tau=1e-12, eta_max=1.0)
    assert all(s.status == "no-step" and s.eta == 0.0 and not s.feasible for s in none)
    assert torch.allclose(images[0], G(z_off[None])[0])
    with pytest.raises(ValueError, match="tau must be positive"):
        feasible_steps(G, forward, y, z0, D, tau=0, eta_max=1.0)


def test_ellipsoid_steps_land_on_the_model_boundary():
    g = torch.Generator().manual_seed(5)
    eta_plus, eta_minus = torch.rand(4, generator=g, dtype=torch.float64) + 0.5, torch.rand(4, generator=g, dtype=torch.float64) + 0.5
    C = torch.randn(4, 7, generator=g, dtype=torch.float64)
    eta = ellipsoid_steps(C, eta_plus, eta_minus)
    A = eta * C  # the predicted points, in base coordinates
    level = torch.where(A >= 0, A / eta_plus[:, None], A / eta_minus[:, None]).pow(2).sum(0)
    assert torch.allclose(level, torch.ones(7, dtype=torch.float64), atol=1e-14)
    # a base direction predicts its own step, with the sign's own boundary
    I4 = torch.eye(4, dtype=torch.float64)
    assert torch.allclose(ellipsoid_steps(I4, eta_plus, eta_minus), eta_plus)
    assert torch.allclose(ellipsoid_steps(-I4, eta_plus, eta_minus), eta_minus)
    with pytest.raises(ValueError, match="positive"):
        ellipsoid_steps(C, eta_plus, torch.zeros(4, dtype=torch.float64))


@torch.no_grad()
def test_ellipsoid_steps_are_exact_for_a_linear_generator():
    # G(z) = W z with orthogonal measurement images of the base directions: MSE(z0 + a) is a diagonal
    # quadratic form in the base coordinates, so the predicted step lies exactly on MSE = tau.
    n, tau = 6, 1e-2
    forward = SuperResolution((1, 4, 4), 2).double()  # m = 4
    Q = orthonormal(n, n, 8)
    scales = torch.tensor([1.0, 2.0, 0.5, 3.0, 1.0, 1.0], dtype=torch.float64)
    M = torch.zeros(4, n, dtype=torch.float64)
    M[:, :4] = torch.diag(scales[:4])
    # W maps latent coordinates in the basis Q to images whose 2x2 area means are M @ (Q^T z)
    W = forward.pinv(M.T.reshape(n, 1, 2, 2)).reshape(n, 16).T @ Q.T

    def G(z):
        return (z @ W.T).reshape(-1, 1, 4, 4)

    z0 = torch.zeros(n, dtype=torch.float64)
    y = forward(G(z0[None]))
    base = Q[:, :3]  # three directions with diagonal measurement curvature
    steps, _ = feasible_steps(G, forward, y, z0, torch.cat([base, -base], 1), tau=tau, eta_max=50.0, rel_tol=1e-9, max_rounds=200)
    eta_plus = torch.tensor([s.eta for s in steps[:3]], dtype=torch.float64)
    eta_minus = torch.tensor([s.eta for s in steps[3:]], dtype=torch.float64)
    C = torch.randn(3, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    C = C / (base @ C).norm(dim=0)
    eta = ellipsoid_steps(C, eta_plus, eta_minus)
    mse = measurement_mse(forward, G(z0 + (eta * C).T @ base.T), y)
    assert torch.allclose(mse.to(torch.float64), torch.full((5,), tau, dtype=torch.float64), rtol=1e-6)


@torch.no_grad()
def test_predicted_steps_accept_or_backtrack_and_stay_feasible():
    G, forward, y, z0 = tiny_problem()
    D = orthonormal(24, 4, 2)
    tau = 1e-5
    exact, _ = feasible_steps(G, forward, y, z0, D, tau=tau, eta_max=20.0, rel_tol=1e-3, max_rounds=40)
    assert {s.status for s in exact} == {"ok"}
    boundary = torch.tensor([s.eta for s in exact], dtype=torch.float64)
    # under the boundary: kept as predicted, one evaluation; beyond it: shrunk until feasible
    guesses = torch.cat([0.5 * boundary[:2], 3.0 * boundary[2:]])
    steps, images = predicted_steps(G, forward, y, z0, D, guesses, tau=tau, eta_max=20.0)
    for p, step in enumerate(steps):
        x = G((z0 + step.eta * D[:, p])[None])
        assert torch.allclose(images[p], x[0])
        assert float(measurement_mse(forward, x, y)) == pytest.approx(step.measurement_mse, rel=1e-12)
        assert step.feasible and step.measurement_mse <= tau and 0 < step.eta <= boundary[p] * (1 + 1e-3)
    assert [s.status for s in steps[:2]] == ["predicted"] * 2 and [s.evaluations for s in steps[:2]] == [1, 1]
    assert [s.eta for s in steps[:2]] == pytest.approx((0.5 * boundary[:2]).tolist(), rel=1e-15)
    assert {s.status for s in steps[2:]} == {"backtracked"} and all(s.eta_infeasible > s.eta for s in steps[2:])
    # guesses beyond eta_max (inf: a zero combination) start at eta_max, which is feasible well inside the boundary
    cap = 0.25 * float(boundary.min())
    capped, _ = predicted_steps(G, forward, y, z0, D, torch.tensor([math.inf, 1e6, 1.0, 1.0], dtype=torch.float64) * boundary.max(),
                                tau=tau, eta_max=cap)
    assert [s.eta for s in capped] == pytest.approx([cap] * 4, rel=1e-15) and {s.status for s in capped} == {"predicted"}
    # an infeasible start gives no step
    z_off = z0 + 0.5 * D[:, 0]
    none, _ = predicted_steps(G, forward, y, z_off, D, guesses, tau=1e-12, eta_max=1.0, max_rounds=2)
    assert all(s.status == "no-step" and s.eta == 0.0 and s.evaluations == 3 for s in none)
    with pytest.raises(ValueError, match="positive steps"):
        predicted_steps(G, forward, y, z0, D, torch.zeros(4, dtype=torch.float64), tau=tau, eta_max=1.0)


def test_combine_directions_are_seeded_projected_combinations():
    U = orthonormal(30, 5, 1)
    base = [Direction(orthonormal(30, 1, 10 + i)[:, 0], "eglass", f"v{10 - i}", 10 - i) for i in range(3)]
    combos = combine_directions(base, 4, U=U, threshold=0.05, seed=3)
    again = combine_directions(base, 4, U=U, threshold=0.05, seed=3)
    B = torch.stack([d.vector for d in base], 1)
    for c, c2 in zip(combos, again):
        assert torch.equal(c.vector, c2.vector) and c.combination == c2.combination
        coef = torch.tensor(c.combination, dtype=torch.float64)
        v = B @ coef
        assert float(v.norm()) == pytest.approx(1.0, abs=1e-12)  # coefficients scaled to a unit combination
        assert torch.allclose(c.vector, eglass_projection(v, U, threshold=0.05).direction, atol=1e-14)
        assert float((U.T @ c.vector).abs().max()) <= 0.05 and c.index == 0 and c.mode == "eglass"
    assert [c.label for c in combos] == ["c1", "c2", "c3", "c4"]
    raw = combine_directions(base, 2, seed=3)
    assert torch.allclose(raw[0].vector, B @ torch.tensor(raw[0].combination, dtype=torch.float64), atol=1e-14)
    assert not torch.equal(combine_directions(base, 1, seed=4)[0].vector, raw[0].vector)


@torch.no_grad()
def test_explore_beyond_2K_solutions_combines_the_eigenvector_directions():
    G, forward, y, _ = tiny_problem()
    tau = 2e-3
    result = explore(G, forward, y, metric=PixelMetric(), num_solutions=12, K=2, tau=tau, eta_max=4.0, quiet=True,
                     invert_options={"restarts": 2, "steps": 200}, mode="eglass")
    assert result.eig_x.k == 2  # the eigensolve does not grow with N
    assert [d.label for d in result.directions] == ["v2", "v1", "c1", "c2", "c3", "c4"]
    assert len(result.solutions) == 12 and [s.direction for s in result.solutions][:6] == ["+v2", "-v2", "+v1", "-v1", "+c1", "-c1"]
    for s in result.solutions:
        x = G(s.latent[None])
        # the image is the 8-bit one that is saved, and it is that image that meets tau
        assert torch.equal(quantize(x[0]), s.image) and float(measurement_mse(forward, s.image[None], y)) <= tau and s.feasible
    combo_status = {s.status for s in result.solutions if "c" in s.direction}
    assert combo_status <= {"predicted", "backtracked", "capped", "shrunk"} and combo_status
    distinct = result.pairwise + torch.eye(12, dtype=torch.float64)
    assert float(distinct.min()) > 0  # twelve different images


@pytest.mark.parametrize("metric_kind", ["pixel", "classifier", "callable"])
def test_pairwise_distances_match_direct_evaluation(metric_kind):
    torch.manual_seed(0)
    if metric_kind == "pixel":
        metric = PixelMetric()
        images = torch.rand(5, 1, 8, 8, dtype=torch.float64) * 2 - 1
    elif metric_kind == "classifier":
        metric = ClassifierMetric(FashionClassifier()).double()
        images = torch.rand(5, 1, 32, 32, dtype=torch.float64) * 2 - 1
    else:
        metric = lambda a, b: (a - b).abs().flatten(1).sum(1)  # noqa: E731 - no residual form
        images = torch.rand(5, 1, 8, 8, dtype=torch.float64) * 2 - 1
    D = pairwise_distances(metric, images)
    for i in range(5):
        for j in range(5):
            direct = float(metric(images[i : i + 1], images[j : j + 1])) if i != j else 0.0
            assert float(D[i, j]) == pytest.approx(direct, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("mode", ["eglass", "raw", "generalized"])
def test_explore_end_to_end_on_a_tiny_generator(mode):
    G, forward, y, _ = tiny_problem()
    metric = PixelMetric()
    tau = 2e-3
    result = explore(G, forward, y, metric=metric, num_solutions=6, mode=mode, K=8, tau=tau, eta_max=4.0, quiet=True,
                     invert_options={"restarts": 2, "steps": 200})
    assert result.inversion.measurement_mse < tau
    assert len(result.solutions) == 6
    x0 = quantize(result.inversion.image)
    assert torch.equal(result.first_image, x0[0])
    assert result.first_mse == pytest.approx(float(measurement_mse(forward, x0, y)), rel=1e-12)
    for s in result.solutions:
        with torch.no_grad():
            x = G(s.latent[None])
        assert torch.equal(quantize(x[0]), s.image)  # what is saved
        assert s.feasible and float(measurement_mse(forward, s.image[None], y)) <= tau
        assert s.measurement_mse == pytest.approx(float(measurement_mse(forward, s.image[None], y)), rel=1e-12)
        assert s.perceptual_distance == pytest.approx(float(metric(s.image[None], x0)), rel=1e-9)
        assert s.perceptual_distance > 0
    assert result.pairwise.shape == (6, 6) and float(result.pairwise.max()) > 0
    m = result.settings["m"]
    assert result.settings["k_y"] == m  # m = 16 < n = 24: the whole range of H_Y
    U = result.eig_y.vectors
    for d in result.directions:
        if mode == "eglass":
            assert float((U.T @ d.vector).abs().max()) <= 0.05
            assert d.projection is not None and d.label == f"v{d.index}"
        elif mode == "raw":
            v = result.eig_x.vectors[:, d.index - 1]
            assert float(subspace_cosines(d.vector[:, None], v[:, None])[0]) == pytest.approx(1.0)
    if mode == "generalized":
        assert result.pencil is not None and result.pencil.k == 3
    assert set(result.timings) >= {"inversion", "eigen_y", "eigen_x", "directions", "steps", "distances", "total"}
    assert result.settings["block_sizes"] == {"H_Y": 256, "H_X": 256}  # batch_limit of 8 x 8 images on a CPU


def test_explore_is_deterministic_and_validates():
    G, forward, y, _ = tiny_problem()
    runs = [explore(G, forward, y, metric=PixelMetric(), num_solutions=4, K=6, eta_max=3.0, quiet=True,
                    invert_options={"restarts": 2, "steps": 100}) for _ in range(2)]
    assert [s.eta for s in runs[0].solutions] == [s.eta for s in runs[1].solutions]
    assert torch.equal(runs[0].inversion.latent, runs[1].inversion.latent)
    with pytest.raises(ValueError, match="mode must be one of"):
        explore(G, forward, y, metric=PixelMetric(), mode="random")
    for K in (0, 24):
        with pytest.raises(ValueError, match="K must be an integer between 1 and n - 1 = 23"):
            explore(G, forward, y, metric=PixelMetric(), num_solutions=10, K=K, inversion=runs[0].inversion)
    with pytest.raises(ValueError, match="positive integer"):
        explore(G, forward, y, metric=PixelMetric(), num_solutions=0)
    assert math.isfinite(runs[0].timings["total"])


@torch.no_grad()
def test_combination_guesses_come_from_the_base_steps_even_when_they_are_short(monkeypatch):
    # Steps far below eta_max (as on BigGAN, where every boundary sits near 0.37 of eta_max = 16) must not be
    # floored: the guess is the ellipsoid prediction from the steps actually found.
    import hvp_explore.exploration.explorer as E

    G, forward, y, z0 = tiny_problem()
    base = [Direction(v, "raw", f"v{i}", i) for i, v in enumerate(orthonormal(24, 2, 6).T, start=1)]
    directions = base + combine_directions(base, 3, seed=1)
    seen = {}
    originals = E.predicted_steps, E.feasible_steps

    def spy_predicted(*args, **kwargs):
        seen["guesses"] = args[5].clone()
        return originals[0](*args, **kwargs)

    def spy_feasible(*args, **kwargs):
        seen["base"] = originals[1](*args, **kwargs)
        return seen["base"]

    monkeypatch.setattr(E, "predicted_steps", spy_predicted)
    monkeypatch.setattr(E, "feasible_steps", spy_feasible)
    eta_max, tau = 64.0, 1e-6
    E.render_solutions(G, forward, y, z0, G(z0[None]), directions, metric=PixelMetric(), num_solutions=10, tau=tau, eta_max=eta_max)
    base_steps = [st.eta for st in seen["base"][0]]  # columns +v1, +v2, -v1, -v2
    eta_plus = torch.tensor(base_steps[:2], dtype=torch.float64)
    eta_minus = torch.tensor(base_steps[2:], dtype=torch.float64)
    assert float(eta_plus.max()) < eta_max / 16  # short steps: the case the floor used to distort
    C = torch.tensor([d.combination for d in directions[2:]], dtype=torch.float64).T
    expected = torch.cat([ellipsoid_steps(C, eta_plus, eta_minus), ellipsoid_steps(-C, eta_plus, eta_minus)])
    torch.testing.assert_close(seen["guesses"], expected, rtol=1e-12, atol=0)

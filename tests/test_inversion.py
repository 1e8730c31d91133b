"""Latent priors, CSGM inversion (batched restarts, early stop), IAGAN and back-projection."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from hvp_explore.inversion import InversionResult, invert
from hvp_explore.inversion.priors import project_latents, sample_latents
from hvp_explore.problems import measurement_mse

TAU = 2e-3


class AreaDown2:
    """2x2 area downsampling A (linear) with its pseudo-inverse A^+ = nearest-neighbour upsampling.

    A A^T = I / 4 (each measurement averages 4 disjoint pixels), so A^+ = A^T (A A^T)^{-1} = 4 A^T, which
    copies each measurement into its 2x2 block.
    """

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(x, 2)

    def pinv(self, y: torch.Tensor) -> torch.Tensor:
        return F.interpolate(y, scale_factor=2, mode="nearest")


def _problem(generator, seed: int = 5):
    """An observation of the generator's own image, so that an exact solution exists."""
    z_true = torch.randn(1, generator.latent_dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    with torch.no_grad():
        y = AreaDown2()(generator(z_true))
    return AreaDown2(), y


# ----------------------------------------------------------------------------------------------------
# Priors


def test_normal_prior_is_the_seeded_float64_gaussian_cast_to_dtype():
    z = sample_latents("normal", 3, 7, generator=torch.Generator().manual_seed(4), dtype=torch.float32)
    ref = torch.randn(3, 7, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    assert z.dtype == torch.float32
    assert torch.equal(z, ref.float())


def test_sphere_prior_rows_have_norm_sqrt_n_and_projection_is_idempotent():
    n = 33
    z = sample_latents("sphere", 50, n, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    torch.testing.assert_close(z.norm(dim=1), torch.full((50,), math.sqrt(n), dtype=torch.float64), rtol=1e-13, atol=0)
    # The projection rescales rows without turning them, and projecting twice changes nothing.
    w = 3.0 * torch.randn(4, n, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    p = project_latents("sphere", w)
    torch.testing.assert_close(p.norm(dim=1), torch.full((4,), math.sqrt(n), dtype=torch.float64), rtol=1e-13, atol=0)
    torch.testing.assert_close(p / p.norm(dim=1, keepdim=True), w / w.norm(dim=1, keepdim=True), rtol=1e-13, atol=1e-15)
    torch.testing.assert_close(project_latents("sphere", p), p, rtol=1e-14, atol=0)


def test_truncated_prior_is_within_threshold_and_has_the_truncated_normal_variance():
    t = 0.5
    z = sample_latents("truncated", 400, 100, generator=torch.Generator().manual_seed(2), truncation=t, dtype=torch.float64)
    assert float(z.abs().max()) <= t
    # Var of N(0, 1) conditioned on |z| <= t: 1 - 2 t phi(t) / (2 Phi(t) - 1). With 40,000 draws the
    # standard error of the sample mean of z^2 is below 1e-3; 5e-3 is more than 5 standard errors.
    phi = math.exp(-t * t / 2) / math.sqrt(2 * math.pi)
    var = 1 - 2 * t * phi / math.erf(t / math.sqrt(2))
    assert abs(float(z.pow(2).mean()) - var) < 5e-3
    assert abs(float(z.mean())) < 5e-3  # symmetric; standard error sqrt(var / 40000) < 1.5e-3
    w = torch.tensor([[-2.0, -0.3, 0.0, 0.4, 1.5]], dtype=torch.float64)
    clamped = torch.tensor([[-0.5, -0.3, 0.0, 0.4, 0.5]], dtype=torch.float64)
    assert torch.equal(project_latents("truncated", w, truncation=t), clamped)
    assert torch.equal(project_latents("normal", w), w)


def test_priors_are_deterministic_and_reject_unknown_names():
    a = sample_latents("truncated", 5, 6, generator=torch.Generator().manual_seed(9), truncation=0.3)
    b = sample_latents("truncated", 5, 6, generator=torch.Generator().manual_seed(9), truncation=0.3)
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="unknown latent prior 'uniform'"):
        sample_latents("uniform", 1, 2, generator=torch.Generator())
    with pytest.raises(ValueError, match="unknown latent prior"):
        project_latents("cube", torch.zeros(2))
    with pytest.raises(ValueError, match="truncation must be a positive"):
        sample_latents("truncated", 1, 2, generator=torch.Generator(), truncation=0.0)


# ----------------------------------------------------------------------------------------------------
# CSGM


def test_csgm_reaches_tau_deterministically(mlp_generator):
    forward, y = _problem(mlp_generator)
    a = invert(mlp_generator, forward, y, seed=3, quiet=True, gauss_newton=False)
    b = invert(mlp_generator, forward, y, seed=3, quiet=True, gauss_newton=False)
    assert isinstance(a, InversionResult)
    assert a.measurement_mse < TAU
    assert torch.equal(a.latent, b.latent) and a.loss_history == b.loss_history
    # The reported image and MSE are those of the returned latent through the returned generator.
    assert a.generator is mlp_generator and not a.fine_tuned and not a.back_projected
    with torch.no_grad():
        image = mlp_generator(a.latent.unsqueeze(0))
    torch.testing.assert_close(a.image, image, rtol=0, atol=1e-14)
    assert a.measurement_mse == pytest.approx(float(measurement_mse(forward, image, y)[0]), rel=1e-10, abs=1e-20)
    assert a.measurement_mse == pytest.approx(min(a.restart_mses), rel=1e-10, abs=1e-20)
    assert a.latent.shape == (mlp_generator.latent_dim,) and a.image.shape == (1, 1, 4, 4)
    assert set(a.timings) == {"csgm"} and a.seconds >= a.timings["csgm"] > 0


def test_batched_restarts_equal_restarts_run_one_by_one(mlp_generator):
    forward, y = _problem(mlp_generator)
    n, seed, restarts = mlp_generator.latent_dim, 11, 3
    batched = invert(mlp_generator, forward, y, restarts=restarts, steps=60, lr=0.05, stop_factor=0.0, seed=seed, quiet=True,
                     gauss_newton=False, halving=0)
    # The documented starts: the seeded prior draws, one row per restart.
    starts = sample_latents("normal", restarts, n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    with torch.no_grad():
        first = measurement_mse(forward, mlp_generator(starts), y)
    assert batched.loss_history[0] == pytest.approx(float(first.min()), rel=1e-12)
    alone = [
        invert(mlp_generator, forward, y, init=starts[i], steps=60, lr=0.05, stop_factor=0.0, quiet=True, gauss_newton=False)
        for i in range(restarts)
    ]
    # Rows interact only through floating-point summation order (batched vs single matmuls, float64),
    # so the per-restart results agree far below any optimisation-relevant scale.
    torch.testing.assert_close(
        torch.tensor(batched.restart_mses), torch.tensor([r.restart_mses[0] for r in alone]), rtol=1e-8, atol=1e-20
    )
    best = min(range(restarts), key=lambda i: alone[i].measurement_mse)
    torch.testing.assert_close(batched.latent, alone[best].latent, rtol=1e-8, atol=1e-10)
    # The restarts end in different places (they are genuinely different runs).
    assert len({round(m, 30) for m in batched.restart_mses}) == restarts


def test_successive_halving_drops_the_worse_half_and_keeps_the_survivors_trajectories(mlp_generator):
    # 8 restarts, halving every 10 steps down to 2: the generator sees batches of 8 for iterates 0..10, 4 for
    # 11..20, 2 for 21..40. The survivors are the rows with the lowest MSE so far at each halving (from the
    # restarts run alone), and every row's result is what it reaches alone in the steps it ran.
    from hvp_explore.settings import HALVING_SURVIVORS

    forward, y = _problem(mlp_generator)
    n, seed, steps = mlp_generator.latent_dim, 11, 40
    sizes = []

    def G(z):
        sizes.append(z.shape[0])
        return mlp_generator(z)

    options = {"steps": steps, "lr": 0.05, "stop_factor": 0.0, "quiet": True, "gauss_newton": False, "latent_dim": n}
    halved = invert(G, forward, y, restarts=8, seed=seed, halving=10, **options)
    # first the probe of the problem's shapes, last the returned image
    assert HALVING_SURVIVORS == 2 and sizes == [1] + [8] * 11 + [4] * 10 + [2] * 20 + [1]
    starts = sample_latents("normal", 8, n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)

    def alone(i, t):  # restart i's lowest MSE over its iterates 0..t, run by itself
        return invert(mlp_generator, forward, y, init=starts[i], **{**options, "steps": t}).restart_mses[0]

    at10 = {i: alone(i, 10) for i in range(8)}
    kept10 = sorted(at10, key=at10.get)[:4]
    at20 = {i: alone(i, 20) for i in kept10}
    kept20 = sorted(at20, key=at20.get)[:2]
    expected = [alone(i, steps) if i in kept20 else at20[i] if i in kept10 else at10[i] for i in range(8)]
    torch.testing.assert_close(torch.tensor(halved.restart_mses), torch.tensor(expected), rtol=1e-8, atol=1e-20)
    best = min(kept20, key=lambda i: expected[i])  # a survivor: the others stopped above the survivors' MSE
    ran_alone = invert(mlp_generator, forward, y, init=starts[best], **options)
    torch.testing.assert_close(halved.latent, ran_alone.latent, rtol=1e-8, atol=1e-10)
    # without halving every restart runs all its steps (here another restart, dropped above, ends best)
    full = invert(mlp_generator, forward, y, restarts=8, seed=seed, halving=0, **options)
    torch.testing.assert_close(torch.tensor(full.restart_mses), torch.tensor([alone(i, steps) for i in range(8)]), rtol=1e-8, atol=1e-20)
    with pytest.raises(ValueError, match="halving"):
        invert(mlp_generator, forward, y, halving=-1, quiet=True)


def test_early_stop_stops_at_the_first_iterate_under_tau_times_stop_factor(mlp_generator):
    forward, y = _problem(mlp_generator)
    full = invert(mlp_generator, forward, y, steps=400, lr=0.05, stop_factor=0.0, quiet=True, gauss_newton=False)
    assert full.steps_run == 400 and not full.stopped_early and len(full.loss_history) == 401
    stop = invert(mlp_generator, forward, y, steps=400, lr=0.05, stop_factor=0.05, quiet=True, gauss_newton=False)
    threshold = TAU * 0.05
    assert stop.stopped_early and stop.steps_run < 400 and len(stop.loss_history) == stop.steps_run + 1
    assert stop.measurement_mse < threshold <= min(stop.loss_history[:-1])
    # Up to the stop both runs are the same optimisation.
    assert stop.loss_history == full.loss_history[: stop.steps_run + 1]


def test_gauss_newton_step_is_the_minimum_norm_correction_of_an_affine_generator():
    # G(z) = W z + b: the measurements are affine in z, so Levenberg-Marquardt converges to the point
    # closest to the start with A G(z) = y (every step lies in the row space of J = A W).
    from hvp_explore.inversion.gauss_newton import levenberg_marquardt

    g = torch.Generator().manual_seed(2)
    n = 12
    W, b = torch.randn(16, n, generator=g, dtype=torch.float64), torch.randn(16, generator=g, dtype=torch.float64)

    def G(z):
        return (z @ W.T + b).reshape(-1, 1, 4, 4)

    forward = AreaDown2()  # m = 4 <= n = 12
    y = forward(G(torch.randn(1, n, generator=g, dtype=torch.float64)))
    start = torch.randn(n, generator=g, dtype=torch.float64)
    z, mse, history, accepted = levenberg_marquardt(G, forward, y, start, target=1e-28, trials=10, prior="normal", truncation=1.0)
    A = forward(torch.eye(16, dtype=torch.float64).view(16, 1, 4, 4)).reshape(16, 4).T  # dense A (4, 16)
    J = A @ W
    r = (forward(G(start[None])) - y).reshape(-1)
    expected = start - J.T @ torch.linalg.solve(J @ J.T, r)
    torch.testing.assert_close(z, expected, rtol=1e-9, atol=1e-9)
    assert mse < 1e-20 and accepted == len(history) >= 1 and history == sorted(history, reverse=True)


@pytest.mark.parametrize("solve, target, tolerance", [("exact", 1e-28, 1e-9), ("cg", 1e-24, 1e-7)])
def test_levenberg_marquardt_with_more_measurements_than_latents_reaches_the_least_squares_point(solve, target, tolerance):
    # m = 16 > n = 4, G affine, y in its range: J = A W has full column rank, and both the damped n x n
    # steps (J^T J + mu s I) delta = -J^T r ("exact") and conjugate gradients on J^T J products ("cg",
    # CG is exact in n = 4 iterations up to rounding, hence the looser tolerance) reach the unique solution.
    from hvp_explore.inversion.gauss_newton import levenberg_marquardt

    g = torch.Generator().manual_seed(4)
    W, b = torch.randn(16, 4, generator=g, dtype=torch.float64), torch.randn(16, generator=g, dtype=torch.float64)

    def G(z):
        return (z @ W.T + b).reshape(-1, 1, 4, 4)

    z_true = torch.randn(4, generator=g, dtype=torch.float64)
    z, mse, history, accepted = levenberg_marquardt(G, lambda x: x, G(z_true[None]), torch.zeros(4, dtype=torch.float64),
                                                    target=target, trials=20, prior="normal", truncation=1.0, solve=solve)
    torch.testing.assert_close(z, z_true, rtol=tolerance, atol=tolerance)
    assert mse < target * 1e4 and accepted >= 1 and history == sorted(history, reverse=True)


def test_broyden_update_is_the_smallest_correction_that_meets_the_secant_condition():
    # J+ = J + (dr - J d) d^T / d^T d: J+ d = dr exactly, and J+ v = J v for every v orthogonal to d.
    from hvp_explore.inversion.gauss_newton import _ExactStep

    g = torch.Generator().manual_seed(8)
    J, r, r_new = (torch.randn(*s, generator=g, dtype=torch.float64) for s in ((6, 4), (6,), (6,)))
    d = torch.randn(4, generator=g, dtype=torch.float64)
    step = _ExactStep(J.clone(), r)
    step.update(d, r_new)
    torch.testing.assert_close(step.J @ d, r_new - r, rtol=1e-12, atol=1e-12)
    v = torch.randn(4, generator=g, dtype=torch.float64)
    v = v - (v @ d) / (d @ d) * d
    torch.testing.assert_close(step.J @ v, J @ v, rtol=1e-12, atol=1e-12)
    assert not step.fresh and torch.equal(step.r, r_new)


@pytest.mark.parametrize("shape", [(4, 1, 8, 8), (16, 1, 2, 2)], ids=["m>n", "m<n"])
def test_broyden_levenberg_marquardt_reaches_the_target_with_fewer_jacobians(monkeypatch, shape):
    # A nonlinear generator (tanh of an affine map), observed at one of its own images: both variants reach
    # the target; the secant updates replace Jacobians, so Broyden's forms at most as many (and fewer here).
    from hvp_explore.inversion import gauss_newton

    g = torch.Generator().manual_seed(9)
    n, pixels = shape[0], shape[2] * shape[3]
    W = torch.randn(pixels, n, generator=g, dtype=torch.float64) / n**0.5

    def G(z):
        return torch.tanh(z @ W.T).reshape(-1, 1, shape[2], shape[3])

    forward = AreaDown2() if shape[2] == 8 else (lambda x: x)  # m = 16 > n = 4, or m = 4 < n = 16
    z_true = torch.randn(n, generator=g, dtype=torch.float64)
    y = forward(G(z_true[None]))
    start = z_true + 0.3 * torch.randn(n, generator=g, dtype=torch.float64)
    calls = []
    real = gauss_newton.measurement_jacobian
    monkeypatch.setattr(gauss_newton, "measurement_jacobian", lambda *a: calls.append(1) or real(*a))
    results = {}
    for broyden in (False, True):
        calls.clear()
        z, mse, history, accepted = gauss_newton.levenberg_marquardt(G, forward, y, start, target=1e-16, trials=40, prior="normal",
                                                                     truncation=1.0, broyden=broyden)
        results[broyden] = (mse, len(calls), accepted)
        assert mse < 1e-16 and history == sorted(history, reverse=True)
    assert results[True][1] < results[False][1]


def test_a_feasible_stalled_refinement_resumes_csgm_for_at_most_handover_steps(mlp_generator, monkeypatch):
    # Levenberg-Marquardt replaced by one that returns its feasible start unchanged (a stall above the
    # margin): CSGM resumes for `handover` more steps, not for every step left (a polish, not a search).
    from hvp_explore.inversion import first_solution

    forward, y = _problem(mlp_generator)
    monkeypatch.setattr(first_solution, "levenberg_marquardt", lambda G, A, y, z, **_: (z, float(measurement_mse(A, G(z[None]), y)[0]), [], 0))
    stalled = invert(mlp_generator, forward, y, seed=3, restarts=4, steps=300, handover=7, stop_factor=1e-9, iagan=False, quiet=True)
    first_feasible = next(i for i, v in enumerate(stalled.loss_history) if v < TAU)
    assert stalled.measurement_mse < TAU and stalled.steps_run == first_feasible + 7


def test_conjugate_gradient_solves_the_shifted_system():
    from hvp_explore.inversion.gauss_newton import conjugate_gradient

    g = torch.Generator().manual_seed(7)
    M = torch.randn(12, 9, generator=g, dtype=torch.float64)
    H, b = M.T @ M, torch.randn(9, generator=g, dtype=torch.float64)
    x, used = conjugate_gradient(lambda v: H @ v, b, shift=0.3, iterations=50, rtol=1e-12)
    torch.testing.assert_close(x, torch.linalg.solve(H + 0.3 * torch.eye(9, dtype=torch.float64), b), rtol=1e-9, atol=1e-12)
    assert used <= 9 + 1  # CG is exact in n steps (up to rounding)
    _, used = conjugate_gradient(lambda v: H @ v, b, shift=0.3, iterations=3)
    assert used == 3


def test_gauss_newton_refinement_takes_over_once_csgm_is_feasible(mlp_generator):
    forward, y = _problem(mlp_generator)  # m = 4 measurements <= n = 8: on by default
    ref = invert(mlp_generator, forward, y, seed=3, restarts=4, quiet=True, gauss_newton=False)
    gn = invert(mlp_generator, forward, y, seed=3, restarts=4, quiet=True)
    again = invert(mlp_generator, forward, y, seed=3, restarts=4, quiet=True)
    assert torch.equal(gn.latent, again.latent) and gn.loss_history == again.loss_history
    assert set(gn.timings) == {"csgm", "gauss_newton"} and gn.gauss_newton_steps >= 1 and ref.gauss_newton_steps == 0
    assert gn.measurement_mse < TAU * 0.25 and gn.stopped_early
    # CSGM handed over at its first feasible iterate: the same optimisation as without, cut short
    assert gn.steps_run < ref.steps_run and gn.loss_history[: gn.steps_run + 1] == ref.loss_history[: gn.steps_run + 1]
    assert min(gn.loss_history[: gn.steps_run]) >= TAU > gn.loss_history[gn.steps_run]
    with torch.no_grad():
        assert gn.measurement_mse == pytest.approx(float(measurement_mse(forward, mlp_generator(gn.latent[None]), y)[0]), rel=1e-10)
    # more measurements than latent dimensions (the identity on 4 x 4 images: m = 16 > n = 8): used, since n <= 128
    denoise = invert(mlp_generator, lambda x: x, mlp_generator(torch.ones(1, 8, dtype=torch.float64)).detach(), steps=5,
                     quiet=True)
    assert "gauss_newton" in denoise.timings and denoise.gauss_newton_steps >= 1
    # min(m, n) = 300 > GAUSS_NEWTON_EXACT_MAX: the matrix-free route, only when its worst case (10 trials x 22
    # products) fits in CSGM's budget of restarts x steps single-latent passes: not in 8 x 3 = 24 ...
    W = torch.randn(400, 300, generator=torch.Generator().manual_seed(0), dtype=torch.float64) / 300**0.5
    big = lambda z: torch.tanh(z @ W.T).reshape(-1, 1, 20, 20)  # noqa: E731
    target = big(torch.randn(1, 300, generator=torch.Generator().manual_seed(1), dtype=torch.float64))
    wide = invert(big, lambda x: x, target, steps=3, latent_dim=300, iagan=False, quiet=True)
    assert "gauss_newton" not in wide.timings and wide.gauss_newton_steps == 0
    # ... but in 8 x 30 = 240, where it takes the inversion below the margin that CSGM alone misses
    alone = invert(big, lambda x: x, target, steps=30, latent_dim=300, iagan=False, gauss_newton=False, quiet=True)
    refined = invert(big, lambda x: x, target, steps=30, latent_dim=300, iagan=False, quiet=True)
    assert refined.gauss_newton_steps >= 1 and refined.measurement_mse < TAU * 0.25 < alone.measurement_mse
    with pytest.raises(ValueError, match="gauss_newton must be"):
        invert(mlp_generator, forward, y, gauss_newton="yes", quiet=True)


def test_projected_csgm_keeps_latents_in_the_priors_support(mlp_generator):
    forward, y = _problem(mlp_generator)
    r = invert(mlp_generator, forward, y, prior="sphere", lr=0.05, steps=100, stop_factor=0.0, quiet=True)
    assert float(r.latent.norm()) == pytest.approx(math.sqrt(mlp_generator.latent_dim), rel=1e-13)
    assert r.measurement_mse < TAU
    # Truncated: the iterates are clamped into the box, and some coordinates sit on its boundary.
    t = 0.3
    r = invert(mlp_generator, forward, y, prior="truncated", truncation=t, lr=0.05, steps=100, stop_factor=0.0, quiet=True)
    assert float(r.latent.abs().max()) == t


def test_generator_state_is_restored_and_no_gradients_leak(conv_generator):
    forward, y = _problem(conv_generator)
    conv_generator.train()
    conv_generator.fc.weight.requires_grad_(False)
    flags = [p.requires_grad for p in conv_generator.parameters()]
    buffers = {k: v.clone() for k, v in conv_generator.state_dict().items()}
    invert(conv_generator, forward, y, steps=20, quiet=True)
    assert all(m.training for m in conv_generator.modules())
    assert [p.requires_grad for p in conv_generator.parameters()] == flags
    assert all(p.grad is None for p in conv_generator.parameters())
    # Batch norm ran in eval mode: its running statistics did not move.
    assert all(torch.equal(v, buffers[k]) for k, v in conv_generator.state_dict().items())


# ----------------------------------------------------------------------------------------------------
# IAGAN and back-projection


def test_iagan_lowers_the_loss_and_leaves_the_generator_untouched(conv_generator):
    forward, y = _problem(conv_generator, seed=7)
    conv_generator.net[2].weight.requires_grad_(False)  # a frozen layer must stay frozen in the original
    flags = [p.requires_grad for p in conv_generator.parameters()]
    state = copy.deepcopy(conv_generator.state_dict())
    csgm = invert(conv_generator, forward, y, restarts=2, steps=15, stop_factor=0.0, quiet=True, gauss_newton=False)
    tuned = invert(conv_generator, forward, y, restarts=2, steps=15, stop_factor=0.0, iagan=True, iagan_steps=300, quiet=True,
                   gauss_newton=False)
    assert tuned.fine_tuned and set(tuned.timings) == {"csgm", "iagan"}
    assert tuned.measurement_mse < 0.5 * csgm.measurement_mse
    # History: CSGM's iterates, then IAGAN's steps, bounded by steps (15, not iagan_steps), and the final point.
    assert tuned.loss_history[: len(csgm.loss_history)] == csgm.loss_history
    assert len(tuned.loss_history) == len(csgm.loss_history) + 15 + 1
    assert tuned.loss_history[-1] == tuned.measurement_mse
    # The original: same values, flags and mode; the copy: new weights, same flags and mode.
    assert all(torch.equal(v, state[k]) for k, v in conv_generator.state_dict().items())
    assert [p.requires_grad for p in conv_generator.parameters()] == flags
    assert not conv_generator.training
    g = tuned.generator
    assert g is not conv_generator and not g.training
    assert [p.requires_grad for p in g.parameters()] == flags
    assert all(p.grad is None for p in g.parameters())
    assert not torch.equal(g.net[2].weight, conv_generator.net[2].weight)  # fine-tuned although frozen in G
    # Batch norm stayed in eval mode during fine-tuning: running statistics unchanged in the copy.
    for k, v in g.state_dict().items():
        if "running" in k:
            assert torch.equal(v, state[k])
    with torch.no_grad():
        image = g(tuned.latent.unsqueeze(0))
    torch.testing.assert_close(tuned.image, image, rtol=0, atol=1e-14)
    assert tuned.measurement_mse == pytest.approx(float(measurement_mse(forward, image, y)[0]), rel=1e-10)


def test_back_projection_makes_measurements_exact(mlp_generator):
    forward = AreaDown2()
    # The test operator's pinv is the Moore-Penrose pseudo-inverse of its dense matrix.
    eye = torch.eye(16, dtype=torch.float64).view(16, 1, 4, 4)
    dense = forward(eye).reshape(16, 4).T  # (4, 16)
    pinv_dense = forward.pinv(torch.eye(4, dtype=torch.float64).view(4, 1, 2, 2)).reshape(4, 16).T
    torch.testing.assert_close(pinv_dense, torch.linalg.pinv(dense), rtol=0, atol=1e-14)
    # An observation outside the generator's range, so that the back-projection has work to do.
    y = torch.rand(1, 1, 2, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 2 - 1
    r = invert(mlp_generator, forward, y, steps=30, back_projection=True, iagan=False, quiet=True)
    assert r.back_projected and "back_projection" in r.timings
    with torch.no_grad():
        x = mlp_generator(r.latent.unsqueeze(0))
    assert float(measurement_mse(forward, x, y)[0]) > 1e-6  # G(z) alone does not fit y
    torch.testing.assert_close(forward(r.image), y, rtol=0, atol=1e-14)
    assert r.measurement_mse < 1e-28
    # x_bp - x = A^+(y - A x) lies in the row space of A: constant on each 2x2 block.
    d = r.image - x
    torch.testing.assert_close(d, F.interpolate(F.avg_pool2d(d, 2), scale_factor=2, mode="nearest"), rtol=0, atol=1e-14)


def test_back_projection_with_compressed_sensing_and_iagan(mlp_generator):
    from hvp_explore.problems import CompressedSensing

    forward = CompressedSensing((1, 4, 4), 10, seed=1)
    y = torch.randn(1, 10, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    r = invert(mlp_generator, forward, y, restarts=2, steps=30, iagan=True, iagan_steps=20, back_projection=True, gauss_newton=False,
               quiet=True)
    with torch.no_grad():
        x = r.generator(r.latent.unsqueeze(0))
    # x_bp = x + A^+(y - A x) with the dense pseudo-inverse as the reference; A has full row rank, so A x_bp = y.
    a = forward.matrix
    ref = x.flatten(1) + (y - x.flatten(1) @ a.T) @ torch.linalg.pinv(a).T
    torch.testing.assert_close(r.image.flatten(1), ref, rtol=0, atol=1e-12)
    torch.testing.assert_close(forward(r.image), y, rtol=0, atol=1e-12)
    assert set(r.timings) == {"csgm", "iagan", "back_projection"}


def test_invalid_options_raise_clear_errors(mlp_generator):
    forward, y = _problem(mlp_generator)
    with pytest.raises(ValueError, match="pinv"):
        invert(mlp_generator, lambda x: F.avg_pool2d(x, 2), y, back_projection=True, quiet=True)
    with pytest.raises(ValueError, match="nn.Module with parameters"):
        invert(lambda z: mlp_generator(z), forward, y, iagan=True, latent_dim=8, quiet=True)
    with pytest.raises(ValueError, match="latent_dim"):
        invert(lambda z: mlp_generator(z), forward, y, quiet=True)
    with pytest.raises(ValueError, match=r"observation y has shape \(1, 1, 3, 3\)"):
        invert(mlp_generator, forward, torch.zeros(1, 1, 3, 3), quiet=True)
    with pytest.raises(ValueError, match="unknown latent prior"):
        invert(mlp_generator, forward, y, prior="laplace", quiet=True)
    with pytest.raises(ValueError, match="stop_factor"):
        invert(mlp_generator, forward, y, stop_factor=2.0, quiet=True)
    with pytest.raises(ValueError, match="restarts must be an integer >= 1"):
        invert(mlp_generator, forward, y, restarts=0, quiet=True)
    with pytest.raises(ValueError, match=r"init must have shape \(R, 8\)"):
        invert(mlp_generator, forward, y, init=torch.zeros(2, 5), quiet=True)
    # A plain callable works when the latent size is given, and y may omit its batch dimension.
    r = invert(lambda z: mlp_generator(z), forward, y[0], latent_dim=8, quiet=True)
    assert r.measurement_mse < TAU


def test_default_dcgan_super_resolution_x4_reaches_tau():
    from hvp_explore.generators.dcgan import DCGANGenerator

    torch.manual_seed(0)
    generator = DCGANGenerator()
    # Batch-norm statistics of the random network: with PyTorch's default initialisation its images
    # barely depend on z (any start would already be feasible); calibrated, they vary like a trained GAN's.
    with torch.no_grad():
        for m in generator.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.momentum = None
        generator.train()(torch.randn(256, 512, generator=torch.Generator().manual_seed(0)))
    generator.eval()

    def forward(x):  # super-resolution x4 by 4x4 area averaging, 32x32 -> 8x8
        return F.avg_pool2d(x, 4)

    with torch.no_grad():
        y = forward(generator(torch.randn(1, 512, generator=torch.Generator().manual_seed(1))))
    r = invert(generator, forward, y, quiet=True)
    assert r.loss_history[0] > TAU  # the starts are not solutions
    assert r.measurement_mse < TAU and r.stopped_early
    # Bounded cost: 3 to 5 Adam steps of the 4 restarts on this network for five observations (measured),
    # far inside the 300-step budget; the time bound is loose because the CPU may be shared.
    assert r.steps_run <= 30
    assert r.seconds < 30


def test_iagan_auto_runs_only_when_csgm_is_infeasible(mlp_generator):
    forward = AreaDown2()
    z_true = torch.randn(mlp_generator.latent_dim, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    with torch.no_grad():
        reachable = forward(mlp_generator(z_true[None]))
    easy = invert(mlp_generator, forward, reachable, quiet=True)  # iagan="auto" by default
    assert easy.measurement_mse < 2e-3 and not easy.fine_tuned and easy.generator is mlp_generator
    outside = torch.full_like(reachable, 0.99)  # a flat bright observation the tanh MLP cannot reach well
    hard = invert(mlp_generator, forward, outside, steps=20, quiet=True)
    csgm_only = invert(mlp_generator, forward, outside, steps=20, iagan=False, quiet=True)
    assert csgm_only.measurement_mse > 2e-3
    assert hard.fine_tuned and hard.generator is not mlp_generator
    # IAGAN keeps its best iterate: never worse than the CSGM start
    assert hard.measurement_mse <= csgm_only.measurement_mse
    with pytest.raises(ValueError, match="iagan must be"):
        invert(mlp_generator, forward, reachable, iagan="sometimes", quiet=True)

"""The PULSE baseline: schedule, spherical Adam, eps stopping, batching and bookkeeping."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hvp_explore.inversion.priors import sample_latents
from hvp_explore.problems import measurement_mse
from hvp_explore.inversion.pulse_baseline import PulseResult, spherical_project, pulse, schedule_factor

EPS = 2e-3


def forward(x: torch.Tensor) -> torch.Tensor:  # 2x2 area downsampling, (B, 1, H, W) -> (B, 1, H / 2, W / 2)
    return F.avg_pool2d(x, 2)


def _observation(generator, seed: int = 5) -> torch.Tensor:
    z_true = torch.randn(1, generator.latent_dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    with torch.no_grad():
        return forward(generator(z_true))


def _reference_pulse_run(generator, y, z0, *, steps=100, lr=0.4, eps=EPS):
    """PULSE's loop as in its published code (PULSE.py, SphericalOptimizer.py), written out independently:
    all ``steps`` run, and the per-step L2 values are returned with the latents they were computed at."""
    schedule = {  # PULSE's lambda, verbatim in form
        "linear1cycledrop": lambda x: (9 * (1 - np.abs(x / (0.9 * steps) - 1 / 2) * 2) + 1) / 10
        if x < 0.9 * steps
        else 1 / 10 + (x - 0.9 * steps) / (0.1 * steps) * (1 / 1000 - 1 / 10),
    }["linear1cycledrop"]
    latent = z0.clone().unsqueeze(0).requires_grad_(True)
    radius = latent.detach().norm(dim=1, keepdim=True)
    opt = torch.optim.Adam([latent], lr=lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
    l2s, latents = [], []
    for _ in range(steps):
        opt.zero_grad()
        l2 = ((forward((generator(latent) + 1) / 2) - (y + 1) / 2) ** 2).mean((1, 2, 3))
        l2s.append(float(l2.detach()))
        latents.append(latent.detach()[0].clone())
        (100 * l2.clamp(min=eps).sum()).backward()
        opt.step()
        scheduler.step()
        with torch.no_grad():
            latent.div_(latent.norm(dim=1, keepdim=True)).mul_(radius)
    return l2s, latents


def test_linear1cycledrop_schedule_values():
    # 0.1 at the start, 1 at 45%, 0.1 at 90%, 0.001 at 100% (SPEC section 3), linear in between.
    for s, v in [(0, 0.1), (45, 1.0), (90, 0.1), (100, 0.001), (20, (9 * (1 - 2 * abs(20 / 90 - 0.5)) + 1) / 10), (95, 0.0505)]:
        assert schedule_factor("linear1cycledrop", s, 100) == pytest.approx(v, abs=1e-15)
    assert schedule_factor("linear1cycledrop", 450, 1000) == pytest.approx(1.0, abs=1e-15)
    assert schedule_factor("linear1cycle", 50, 100) == pytest.approx(1.0, abs=1e-15)
    assert schedule_factor("linear1cycle", 0, 100) == pytest.approx(0.1, abs=1e-15)
    assert schedule_factor("fixed", 37, 100) == 1.0
    with pytest.raises(ValueError, match="unknown PULSE schedule 'cosine'"):
        schedule_factor("cosine", 0, 100)


def test_spherical_rescaling_restores_each_rows_initial_norm():
    z0 = torch.randn(5, 12, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    radii = z0.norm(dim=1, keepdim=True)
    z = z0 + 0.7 * torch.randn(5, 12, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    direction = z / z.norm(dim=1, keepdim=True)
    spherical_project(z, radii)
    torch.testing.assert_close(z.norm(dim=1, keepdim=True), radii, rtol=1e-14, atol=0)
    torch.testing.assert_close(z / radii, direction, rtol=1e-14, atol=1e-16)


def test_single_runs_match_pulses_published_loop(mlp_generator):
    y = _observation(mlp_generator)
    result = pulse(mlp_generator, forward, y, 4, seed=2, quiet=True)
    n = mlp_generator.latent_dim
    starts = sample_latents("sphere", 4, n, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    for i in range(4):
        l2s, latents = _reference_pulse_run(mlp_generator, y, starts[i])
        # PULSE accepts a run when some iterate has L2 <= eps; ours stops at the first one.
        first = next(k for k, v in enumerate(l2s) if v <= EPS)
        assert int(result.steps_run[i]) == first > 0
        assert float(result.measurement_mse[i]) == pytest.approx(l2s[first], rel=1e-10)
        torch.testing.assert_close(result.latents[i], latents[first], rtol=1e-10, atol=1e-12)
    sqrt_n = torch.full((4,), math.sqrt(n), dtype=torch.float64)
    torch.testing.assert_close(result.latents.norm(dim=1), sqrt_n, rtol=1e-13, atol=0)


def test_result_bookkeeping_is_consistent(mlp_generator):
    y = _observation(mlp_generator)
    r = pulse(mlp_generator, forward, y, 6, seed=0, quiet=True)
    assert isinstance(r, PulseResult) and r.runs == 6 and r.batch == 1 and r.eps == EPS
    assert r.latents.shape == (6, 8) and r.images.shape == (6, 1, 4, 4) and r.seconds_per_run.shape == (6,)
    with torch.no_grad():
        images = mlp_generator(r.latents)
    torch.testing.assert_close(r.images, images, rtol=0, atol=1e-14)
    torch.testing.assert_close(r.measurement_mse, measurement_mse(forward, images, y), rtol=1e-12, atol=0)
    assert torch.equal(r.feasible, r.measurement_mse <= EPS)
    assert r.feasibility_rate == pytest.approx(float(r.feasible.double().mean())) and r.num_feasible == int(r.feasible.sum())
    assert bool((r.seconds_per_run > 0).all()) and float(r.seconds_per_run.sum()) <= r.seconds


def test_batched_runs_equal_sequential_runs(mlp_generator):
    y = _observation(mlp_generator)
    seq = pulse(mlp_generator, forward, y, 7, eps=5e-4, seed=4, quiet=True)
    bat = pulse(mlp_generator, forward, y, 7, eps=5e-4, batch=3, seed=4, quiet=True)  # chunks 3, 3, 1
    assert bat.batch == 3
    assert torch.equal(bat.steps_run, seq.steps_run) and len(set(seq.steps_run.tolist())) > 1  # rows stop at different steps
    # Rows differ only in floating-point summation order of the batched float64 matmuls.
    torch.testing.assert_close(bat.latents, seq.latents, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(bat.measurement_mse, seq.measurement_mse, rtol=1e-9, atol=1e-20)
    assert torch.equal(bat.feasible, seq.feasible)


def test_running_all_steps_as_published_returns_the_same_solutions(mlp_generator):
    y = _observation(mlp_generator)
    early = pulse(mlp_generator, forward, y, 3, seed=6, quiet=True)
    full = pulse(mlp_generator, forward, y, 3, seed=6, stop_at_eps=False, quiet=True)
    assert bool(early.feasible.all()) and bool((early.steps_run < 100).all())
    assert torch.equal(full.steps_run, early.steps_run)
    torch.testing.assert_close(full.latents, early.latents, rtol=0, atol=0)
    torch.testing.assert_close(full.measurement_mse, early.measurement_mse, rtol=0, atol=0)


def test_deterministic_for_a_seed_and_different_across_seeds(mlp_generator):
    y = _observation(mlp_generator)
    a = pulse(mlp_generator, forward, y, 3, seed=8, quiet=True)
    b = pulse(mlp_generator, forward, y, 3, seed=8, quiet=True)
    c = pulse(mlp_generator, forward, y, 3, seed=9, quiet=True)
    assert torch.equal(a.latents, b.latents) and torch.equal(a.steps_run, b.steps_run)
    assert not torch.allclose(a.latents, c.latents)


def test_unreachable_eps_runs_all_steps_and_reports_failure(conv_generator):
    y = _observation(conv_generator)
    conv_generator.train()
    r = pulse(conv_generator, forward, y, 2, steps=30, eps=1e-30, batch=2, quiet=True)
    assert r.steps_run.tolist() == [30, 30]
    assert not bool(r.feasible.any()) and r.feasibility_rate == 0.0
    torch.testing.assert_close(r.latents.norm(dim=1), torch.full((2,), 4.0, dtype=torch.float64), rtol=1e-13, atol=0)
    with torch.no_grad():
        conv_generator.eval()
        torch.testing.assert_close(r.images, conv_generator(r.latents), rtol=0, atol=1e-14)
        conv_generator.train()
    # The generator's mode and flags are restored, and no gradient was left on its parameters.
    assert conv_generator.training
    assert all(p.requires_grad and p.grad is None for p in conv_generator.parameters())


def test_invalid_options_raise_clear_errors(mlp_generator):
    y = _observation(mlp_generator)
    with pytest.raises(ValueError, match="unknown PULSE schedule"):
        pulse(mlp_generator, forward, y, 1, schedule="step", quiet=True)
    with pytest.raises(ValueError, match=r"n \(number of runs\) must be an integer >= 1"):
        pulse(mlp_generator, forward, y, 0, quiet=True)
    with pytest.raises(ValueError, match="batch must be an integer >= 1"):
        pulse(mlp_generator, forward, y, 2, batch=0, quiet=True)
    with pytest.raises(ValueError, match="eps must be a positive"):
        pulse(mlp_generator, forward, y, 2, eps=0.0, quiet=True)

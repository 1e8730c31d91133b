"""Trace, diagonal and spectral-density estimates against dense float64 matrices.

Stochastic estimates are checked where they are exact (a sketch that spans the operator; the Lanczos
quadrature's moments up to degree 2m - 1; m = n steps reproduce the eigenvalues) and, where they are
random, by their own error bars: over 40 seeds the 95% intervals must contain the true trace at least 34
times (the binomial(40, 0.95) probability of 33 or fewer is 1.4%), and the mean error is a few standard
errors at most.
"""

from __future__ import annotations

import math

import pytest
import torch
from conftest import MatrixOperator, spectrum_matrix

from hvp_explore import estimate_diagonal, estimate_trace, spectral_density


def spiky_operator(n=300, seed=0):
    """An indefinite spectrum like a network's Hessian: a few large outliers over a bulk around zero."""
    g = torch.Generator().manual_seed(seed)
    bulk = 0.05 * torch.randn(n - 6, generator=g, dtype=torch.float64) + 0.02
    values = torch.cat([torch.tensor([60.0, 35.0, 20.0, 11.0, 7.0, 4.0], dtype=torch.float64), bulk])
    M = spectrum_matrix(values, seed)
    return MatrixOperator.make(M), M


@pytest.mark.parametrize("method", ["hutch++", "hutchinson"])
def test_trace_intervals_cover_the_truth(method):
    op, M = spiky_operator()
    true = float(M.trace())
    results = [estimate_trace(op, method=method, rtol=0.02, seed=s, max_matvecs=8000) for s in range(40)]
    covered = sum(r.contains(true) for r in results)
    assert covered >= 34, f"{covered}/40 intervals contain the trace"
    errors = torch.tensor([r.estimate - true for r in results])
    stderr = torch.tensor([r.stderr for r in results])
    assert float(errors.abs().mean()) <= 3 * float(stderr.mean())
    # the samples set their own count (re-estimated as they come): the final standard error lands near the tolerance
    relative = sorted(r.stderr / abs(r.estimate) for r in results)
    assert all(r.converged for r in results) and relative[len(relative) // 2] <= 0.02 and relative[-1] <= 0.04
    assert sum(r.matvecs for r in results) == op.num_matvecs


def test_hutchpp_needs_far_fewer_products_than_hutchinson_on_a_spiky_spectrum():
    op, _ = spiky_operator()
    pp = estimate_trace(op, method="hutch++", rtol=0.02, seed=1, max_matvecs=20000)
    plain = estimate_trace(op, method="hutchinson", rtol=0.02, seed=1, max_matvecs=20000)
    assert pp.converged and plain.converged
    assert pp.matvecs * 10 < plain.matvecs, (pp.matvecs, plain.matvecs)
    assert pp.exact_part == pytest.approx(137.0, rel=0.05)  # the six outliers, exactly, up to the sketch's reach


def test_a_sketch_that_spans_the_operator_gives_the_exact_trace_and_diagonal():
    n, r = 60, 5
    g = torch.Generator().manual_seed(3)
    B = torch.randn(n, r, generator=g, dtype=torch.float64)
    M = B @ B.T  # rank 5 < sketch 8
    op = MatrixOperator.make(M)
    result = estimate_diagonal(op, sketch=8, rtol=1e-3, seed=0)
    assert result.sketch == 5  # the sketch's range is the operator's: extra columns are dropped
    assert result.estimate == pytest.approx(float(M.trace()), rel=1e-12) and result.stderr < 1e-10 * float(M.trace())
    assert torch.allclose(result.diagonal, M.diagonal(), rtol=1e-10, atol=1e-12)


def test_diagonal_estimate_is_unbiased_and_sums_to_the_trace():
    op, M = spiky_operator(n=80, seed=2)
    runs = [estimate_diagonal(op, sketch=4, rtol=1e-3, max_matvecs=200, seed=s) for s in range(30)]
    for r in runs:
        assert float(r.diagonal.sum()) == pytest.approx(r.estimate, rel=1e-10)
    mean = torch.stack([r.diagonal for r in runs]).mean(0)
    err = torch.stack([r.diagonal_stderr for r in runs]).mean(0) / math.sqrt(len(runs))
    z = (mean - M.diagonal()) / err
    assert float(z.abs().max()) < 5.0 and float(z.pow(2).mean()) < 2.0  # unbiased: errors match their standard errors


def test_trace_options_and_errors():
    op, M = spiky_operator(n=50)
    a = estimate_trace(op, seed=5, rtol=1e-3)
    b = estimate_trace(op, seed=5, rtol=1e-3)
    assert a.estimate == b.estimate and a.matvecs == b.matvecs  # deterministic
    capped = estimate_trace(op, method="hutchinson", rtol=1e-9, max_matvecs=20)
    assert not capped.converged and capped.matvecs == 20 and capped.probes == 20
    normal = estimate_trace(op, distribution="normal", rtol=0.05, seed=1)
    assert normal.contains(float(M.trace())) or abs(normal.estimate - float(M.trace())) < 4 * normal.stderr
    for kwargs, message in (({"method": "xtrace"}, "method must be one of"), ({"distribution": "uniform"}, "distribution"),
                            ({"rtol": 0, "atol": 0}, "not both zero"), ({"block": 0}, "block must be a positive integer"),
                            ({"max_matvecs": 10, "sketch": 8}, "leaves no probe")):
        with pytest.raises(ValueError, match=message):
            estimate_trace(op, **kwargs)


def test_lanczos_quadrature_reproduces_the_moments():
    """Each probe's quadrature is exact for p <= 2m - 1: sum_j tau_j theta_j^p = q^T H^p q (float64, 1e-9)."""
    op, M = spiky_operator(n=120, seed=4)
    steps = 6
    density = spectral_density(op, num_probes=5, steps=steps, seed=0)
    gen = torch.Generator().manual_seed(0)
    from hvp_explore.eigen.trace import probe_vectors

    Q = probe_vectors(120, 5, gen, "rademacher", torch.device("cpu"))
    Q = Q / Q.norm(dim=0)
    for p in range(2 * steps):
        exact = float((Q * (torch.linalg.matrix_power(M, p) @ Q)).sum(0).mean())
        assert density.moment(p) == pytest.approx(exact, rel=1e-9, abs=1e-9 * 60.0**p)
    assert density.trace == pytest.approx(120 * float((Q * (M @ Q)).sum(0).mean()), rel=1e-12)
    assert density.matvecs == 5 * steps and torch.allclose(density.weights.sum(1), torch.ones(5, dtype=torch.float64))


def test_a_full_lanczos_run_recovers_the_spectrum():
    """With m = n steps the nodes of every probe are the eigenvalues and its weights the squared components of
    the probe on the eigenvectors; the smoothed density integrates to 1 and equals the mixture it defines."""
    values = torch.linspace(-2.0, 3.0, 40, dtype=torch.float64)
    M = spectrum_matrix(values, seed=5)
    density = spectral_density(MatrixOperator.make(M), num_probes=3, steps=40, sigma=0.05, grid=2000)
    from hvp_explore.eigen.trace import probe_vectors

    Q = probe_vectors(40, 3, torch.Generator().manual_seed(0), "rademacher", torch.device("cpu"))
    Q = Q / Q.norm(dim=0)
    w, U = torch.linalg.eigh(M)
    for p in range(3):
        order = density.nodes[p].argsort()
        assert torch.allclose(density.nodes[p][order], w, atol=1e-9)
        assert torch.allclose(density.weights[p][order], (U.T @ Q[:, p]).pow(2), atol=1e-9)
    dx = float(density.grid[1] - density.grid[0])
    assert float(density.density.sum()) * dx == pytest.approx(1.0, abs=1e-3)
    t = torch.tensor([0.3, 1.7], dtype=torch.float64)
    mixture = sum((U.T @ Q[:, p]).pow(2) @ torch.exp(-0.5 * ((t[None] - w[:, None]) / 0.05) ** 2) for p in range(3))
    assert torch.allclose(density.evaluate(t), mixture / (3 * math.sqrt(2 * math.pi) * 0.05), rtol=1e-9)


def test_an_invariant_subspace_closes_a_probe_early():
    M = torch.diag(torch.tensor([1.0, 1.0, 2.0, 2.0, 3.0, 3.0], dtype=torch.float64))  # 3 distinct values: 3 steps
    density = spectral_density(MatrixOperator.make(M), num_probes=2, steps=6, seed=0)
    assert density.steps.tolist() == [3, 3] and density.info["breakdowns"] == 2
    assert density.moment(2) == pytest.approx(float((M @ M).trace()) / 6, rel=0.5)  # a 2-probe estimate of tr(H^2)/n
    with pytest.raises(ValueError, match="num_probes must be a positive integer"):
        spectral_density(MatrixOperator.make(M), num_probes=0)


def test_a_control_variate_samples_only_the_difference():
    """tr H = tr C + tr(H - C) with C's diagonal exact: when C is close to H, few products reach the tolerance."""
    op, M = spiky_operator(n=200, seed=6)
    g = torch.Generator().manual_seed(7)
    E = 0.002 * torch.randn(200, 200, generator=g, dtype=torch.float64)
    C = M + 0.5 * (E + E.T)  # a close, symmetric control

    class Control(type(op)):
        def diagonal(self):
            return C.diagonal()

    control = Control(200, dtype=torch.float64, device=torch.device("cpu"))
    control._matmat = lambda V: C @ V
    true = float(M.trace())
    with_control = [estimate_trace(op, control=control, method="hutchinson", rtol=0.002, seed=s) for s in range(20)]
    assert sum(r.contains(true) for r in with_control) >= 17
    plain = estimate_trace(op, method="hutchinson", rtol=1e-9, seed=0, max_matvecs=64)
    spread = [torch.tensor(r.info["samples"]).std() for r in (plain, with_control[0])]
    assert float(spread[0]) > 100 * float(spread[1])  # the samples vary as H - C does, not as H
    assert max(r.matvecs for r in with_control) <= 64
    assert with_control[0].control_part == pytest.approx(float(C.trace()))

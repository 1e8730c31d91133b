"""Top-k eigensolvers against dense float64 eigendecompositions.

Each solver runs with tol = 1e-9 on float64 operators: a converged pair then has
||H v - lambda v|| <= 1e-9 lambda_1, so (Bauer-Fike) its eigenvalue is within 1e-9 lambda_1 of the exact
one and (Davis-Kahan) its subspace angle is below residual / gap. The spectra below have relative
gaps >= 1e-2 at k, so principal-angle cosines must exceed 1 - 1e-12; we assert 1 - 1e-8.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from conftest import MatrixOperator, TinyConvGenerator, spectrum_matrix

from hvp_explore import (ConvergenceWarning, choose_solver, measurement_hessian, perceptual_hessian, subspace_cosines,
                         top_eigenpairs)
from hvp_explore.eigen.solvers import static_block
from hvp_explore.metrics import PixelMetric

ITERATIVE = ["arpack", "lanczos", "lobpcg", "block-krylov"]
TOL = 1e-9


def power_law_operator(n=150, alpha=1.5, seed=0):
    values = torch.arange(1, n + 1, dtype=torch.float64).pow(-alpha)
    return MatrixOperator.make(spectrum_matrix(values, seed)), values


def generator_operator():
    """H_X (pixel metric) of a conv generator with a 48-d latent: full rank, decaying spectrum."""
    gen = TinyConvGenerator(latent_dim=48)
    z0 = torch.randn(48, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    return perceptual_hessian(gen, PixelMetric(), z0)


def check_against_dense(result, H, k):
    evals, evecs = torch.linalg.eigh(H)
    ref_values, ref_vectors = evals.flip(0)[:k], evecs.flip(1)[:, :k]
    top = float(ref_values[0])
    assert result.values.shape == (k,) and result.vectors.shape == (H.shape[0], k)
    assert torch.all(result.values[:-1] >= result.values[1:])  # descending
    assert float((result.values - ref_values).abs().max()) <= 10 * TOL * top
    cosines = subspace_cosines(result.vectors, ref_vectors)
    assert float(cosines.min()) >= 1 - 1e-8, f"principal-angle cosines {cosines}"
    gram = result.vectors.T @ result.vectors
    assert float((gram - torch.eye(k, dtype=torch.float64)).abs().max()) < 1e-10
    true_residuals = (H @ result.vectors - result.vectors * result.values).norm(dim=0)
    assert torch.allclose(result.residuals, true_residuals, rtol=1e-6, atol=1e-12 * top)
    assert result.all_converged and result.max_relative_residual <= TOL
    return cosines


@pytest.mark.parametrize("solver", ["dense", *ITERATIVE, "auto"])
def test_power_law_spectrum(solver):
    op, values = power_law_operator()
    result = top_eigenpairs(op, 10, solver=solver, tol=TOL, seed=0)
    check_against_dense(result, op.dense(), 10)
    assert result.matvecs > 0 and result.seconds > 0


@pytest.mark.parametrize("solver", ["dense", "jacobian", *ITERATIVE, "auto"])
def test_generator_perceptual_hessian(solver):
    op = generator_operator()
    H = op.dense()
    op.reset_counters()
    result = top_eigenpairs(op, 8, solver=solver, tol=TOL, seed=0)
    check_against_dense(result, H, 8)
    assert result.matvecs + result.check_matvecs == op.num_matvecs


def test_single_vector_krylov_product_counts():
    """Lanczos and ARPACK stay within 3k products (plus k to verify) on a decaying spectrum."""
    op, _ = power_law_operator(n=400, alpha=2.0)
    for solver in ("lanczos", "arpack"):
        result = top_eigenpairs(op, 20, solver=solver, tol=1e-4)
        assert result.all_converged
        assert result.matvecs <= 3 * 20, (solver, result.matvecs)
        assert result.check_matvecs == 20


def test_lanczos_residual_estimates_are_true_residuals():
    op, _ = power_law_operator(n=200, alpha=1.0)
    result = top_eigenpairs(op, 10, solver="lanczos", tol=1e-3)
    estimates = result.info["residual_estimates"]
    assert torch.allclose(estimates, result.residuals, rtol=1e-5, atol=1e-13)


def test_rank_deficient_measurement_hessian():
    """m = 4 measurements, k = 6: the Jacobian solver pads exact zero pairs; Krylov solvers find the range."""
    gen = TinyConvGenerator(latent_dim=16)
    z0 = torch.randn(16, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    op = measurement_hessian(gen, torch.nn.AvgPool2d(4), z0)  # 8x8 -> 2x2: m = 4
    H = op.dense()
    ref = torch.linalg.eigvalsh(H).flip(0)
    jac = top_eigenpairs(op, 6, solver="jacobian", tol=TOL)
    assert torch.allclose(jac.values, ref[:6], atol=1e-12 * float(ref[0]))
    assert torch.equal(jac.values[4:], torch.zeros(2, dtype=torch.float64)) and jac.all_converged
    for solver in ("lanczos", "block-krylov", "dense"):
        res = top_eigenpairs(op, 4, solver=solver, tol=TOL)
        check_against_dense(res, H, 4)


def test_non_convergence_returns_flagged_partial_results():
    op, _ = power_law_operator(n=300, alpha=0.3)  # slow decay: hard
    for solver in ITERATIVE:
        with pytest.warns(ConvergenceWarning, match="did not reach"):
            result = top_eigenpairs(op, 10, solver=solver, tol=1e-12, max_matvecs=25)
        assert 0 < result.k <= 10
        assert not result.all_converged
        assert result.converged.dtype == torch.bool and result.residuals.shape == (result.k,)
        # what is flagged converged really is
        ok = result.converged
        assert torch.all(result.residuals[ok] <= 1e-12 * result.values[0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        top_eigenpairs(op, 10, solver="block-krylov", tol=1e-12, max_matvecs=25, warn=False)


@pytest.mark.parametrize("solver", ITERATIVE)
def test_same_seed_same_result(solver):
    op, _ = power_law_operator(n=100)
    a = top_eigenpairs(op, 5, solver=solver, tol=1e-8, seed=7)
    b = top_eigenpairs(op, 5, solver=solver, tol=1e-8, seed=7)
    assert torch.equal(a.values, b.values) and torch.equal(a.vectors, b.vectors)


def test_auto_picks_by_cost_and_records_its_choice():
    gen = TinyConvGenerator(latent_dim=48)
    z0 = torch.randn(48, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    short = measurement_hessian(gen, torch.nn.AvgPool2d(4), z0)  # m = 4: the Jacobian is cheapest
    assert choose_solver(short, 4)[0] == "jacobian"
    result = top_eigenpairs(short, 4, tol=TOL)
    assert result.solver == "jacobian" and "no more than block Krylov" in result.info["auto"]  # no probe needed
    assert result.matvecs == 4
    big, _ = power_law_operator(n=400)  # no residual form, n large: block Krylov (static model), blocks of about 0.4 k
    assert choose_solver(big, 10)[0] == "block-krylov:4" and choose_solver(big, 30)[0] == "block-krylov:8"
    static = top_eigenpairs(big, 10, tol=TOL, solver="block-krylov", block=static_block(10))
    assert static.info["block"] == 4 and static.all_converged  # what auto runs on a dear operator (see below)
    assert [static_block(k) for k in (1, 2, 5, 10, 20, 50)] == [1, 1, 2, 4, 8, 8]
    small, _ = power_law_operator(n=30)  # n small: the dense matrix is cheaper
    assert choose_solver(small, 10)[0] == "dense"
    tall = measurement_hessian(gen, lambda x: x, z0)  # m = every pixel > n = 48: the Jacobian's n columns
    assert tall.residual_dim > 48 and choose_solver(tall, 20)[1].startswith("cost in vjp units: jacobian ~48,")


def test_auto_with_measured_costs_chooses_the_block_size():
    """A product whose fixed cost per call dominates favours large blocks; one whose cost is per vector, small blocks."""
    from hvp_explore.eigen.solvers import ProductCost, krylov_products

    op, _ = power_law_operator(n=2000)
    per_call = ProductCost(single=1.0, pair=1.0, block=1.0, size=8)  # every call costs the same: fewest calls win
    per_vector = ProductCost(single=1.0, pair=2.0, block=8.0, size=8)  # cost proportional to the vectors: fewest products
    assert choose_solver(op, 20, cost=per_call)[0] == "block-krylov:24"
    assert choose_solver(op, 20, cost=per_vector)[0] == "block-krylov:1"
    # the solver's own work per iteration, paid once per call, pushes the same product cost to larger blocks:
    # 35 iterations of b = 1 cost 35 * (1 + 10) = 385 against 8 * (8 + 10) = 144 for b = 8
    overhead = ProductCost(single=1.0, pair=2.0, block=8.0, size=8, iteration=10.0)
    assert int(choose_solver(op, 20, cost=overhead)[0].split(":")[1]) >= 8
    assert krylov_products(20, 1) == 35 and krylov_products(20, 20) == pytest.approx(100)
    # a memory limit of 4 vectors per call makes a block of 8 cost two calls
    assert ProductCost(single=1.0, pair=1.0, block=1.0, size=8, limit=4).seconds(8) == 2.0


def test_invalid_arguments():
    op, _ = power_law_operator(n=20)
    with pytest.raises(ValueError, match="unknown solver"):
        top_eigenpairs(op, 3, solver="power")
    with pytest.raises(ValueError, match="positive integer"):
        top_eigenpairs(op, 0)
    with pytest.raises(ValueError, match="at most the latent dimension"):
        top_eigenpairs(op, 21)
    with pytest.raises(ValueError, match="needs k < n"):
        top_eigenpairs(op, 20, solver="arpack")
    with pytest.raises(ValueError, match="Gauss-Newton"):
        top_eigenpairs(op, 3, solver="jacobian")
    with pytest.raises(ValueError, match="tol must be positive"):
        top_eigenpairs(op, 3, tol=0)
    full = top_eigenpairs(op, 20, solver="dense")
    assert full.k == 20 and full.all_converged


def test_solver_registry_covers_the_settings_choices():
    import hvp_explore.eigen
    from hvp_explore import settings
    from hvp_explore.eigen.solvers import SOLVER_REGISTRY

    assert hvp_explore.eigen.SOLVERS is settings.SOLVERS  # one source of truth
    assert tuple(SOLVER_REGISTRY) == tuple(name for name in settings.SOLVERS if name != "auto")
    assert all(callable(fn) for fn in SOLVER_REGISTRY.values())


@pytest.mark.parametrize("solver", ["dense", "lanczos", "block-krylov", "lobpcg"])
def test_eigenpairs_of_a_shifted_combination(solver):
    """(2 H + H) + s I has the eigenvectors of H and eigenvalues 3 lambda + s: the algebra feeds every solver."""
    op, values = power_law_operator(n=120, alpha=1.5, seed=4)
    H = op.dense()
    combo = (2 * op + op).shifted(0.01)
    op.reset_counters()
    result = top_eigenpairs(combo, 6, solver=solver, tol=TOL, seed=0)
    check_against_dense(result, 3 * H + 0.01 * torch.eye(120, dtype=torch.float64), 6)
    assert torch.allclose(result.values, 3 * values[:6] + 0.01, rtol=1e-8)
    assert op.num_matvecs == 2 * combo.num_matvecs  # op occurs twice in the combination


@pytest.mark.parametrize("block", [1, 3, 8])
def test_block_krylov_with_any_block_size(block):
    """Blocks of 1 (Lanczos), 3 and 8 reach the same pairs; products and passes are recorded."""
    op, _ = power_law_operator(n=200, alpha=1.5, seed=5)
    H = op.dense()
    op.reset_counters()
    result = top_eigenpairs(op, 10, solver="block-krylov", block=block, tol=TOL, seed=0)
    check_against_dense(result, H, 10)
    assert result.info["block"] == block and result.info["products"] == result.matvecs
    assert result.info["passes"] == op.num_calls  # one batched call per block, one to verify
    with pytest.raises(ValueError, match="block must be a positive integer"):
        top_eigenpairs(op, 10, solver="block-krylov", block=0)


def test_auto_starts_block_krylov_from_its_probe():
    """auto's probe products are counted (and reused as the start of blocks of 4 or more); the cost is cached."""
    from hvp_explore.eigen.solvers import measure_cost

    op, _ = power_law_operator(n=300, alpha=1.5, seed=7)
    H = op.dense()
    op.reset_counters()
    result = top_eigenpairs(op, 10, solver="auto", tol=TOL, seed=0, probe=True)
    check_against_dense(result, H, 10)
    assert result.info["products"] == result.matvecs >= 11  # the probe's 11 products included
    cost = measure_cost(op)  # cached: no new products
    assert op.num_matvecs == result.matvecs + result.check_matvecs and cost.single > 0 and cost.block > 0
    gen_op = generator_operator()  # n = 48, m = 64, k = 8: the Jacobian needs no more products than blocks of 8
    jac = top_eigenpairs(gen_op, 8, tol=TOL)
    assert jac.solver == "jacobian" and "no more than block Krylov" in jac.info["auto"]


def test_convergence_is_honest_in_float32():
    """A float32 operator whose tail lies under the products' rounding: pairs that pass only by the floor are listed,
    and every other converged pair meets tol * |lambda_i| by its true (float64) residual."""
    values = torch.logspace(0, -26.55, 60, dtype=torch.float64)  # lambda_i = 10^(-0.45 (i - 1))
    M = spectrum_matrix(values, seed=6)
    op = MatrixOperator.make(M.float())
    tol = 1e-4
    for solver in ("block-krylov", "lanczos", "dense"):
        result = top_eigenpairs(op, 20, solver=solver, tol=tol, seed=0, warn=False)
        true = (M @ result.vectors - result.vectors * result.values).norm(dim=0)
        floor = torch.finfo(torch.float32).eps * float(result.values[0])
        floor_pairs = set(result.info.get("floor", {}).get("pairs", []))
        # lambda_20 = 3e-9 is far under eps32 * lambda_1 = 1.2e-7 (dense: residuals against its own float32 matrix)
        assert floor_pairs or solver == "dense", solver
        for i in range(result.k):
            if not result.converged[i]:
                continue
            bound = floor if i in floor_pairs else tol * float(result.values[i].abs())
            assert float(result.residuals[i]) <= bound, (solver, i)
            assert float(true[i]) <= bound + 4 * floor, (solver, i)  # reported residuals are true to the rounding
        assert not floor_pairs or result.info["floor"]["level"] == pytest.approx(floor)
        assert all(float(result.residuals[i]) > tol * float(result.values[i]) for i in floor_pairs)


# --- both ends of the spectrum (which) ---------------------------------------------------------------

def indefinite_operator(n=120, seed=8):
    """Eigenvalues spread over [-3, 2] with relative gaps >= 1e-2 at both ends (no exact ties, nonzero)."""
    values = torch.cat([torch.linspace(2.0, 0.05, n // 2), -torch.logspace(-1.2, 0.48, n - n // 2)]).double()
    return MatrixOperator.make(spectrum_matrix(values, seed)), values


def numpy_selection(H, k, which):
    """The reference: numpy.linalg.eigh, then the selection and order that ``which`` defines."""
    import numpy as np

    w, V = np.linalg.eigh(H.numpy())
    order = {"largest": np.argsort(-w)[:k], "smallest": np.argsort(w)[:k], "magnitude": np.argsort(-np.abs(w))[:k],
             "both": np.concatenate([np.argsort(-w)[: (k + 1) // 2], np.argsort(-w)[len(w) - k // 2:]])}[which]
    return torch.from_numpy(w[order].copy()), torch.from_numpy(V[:, order].copy())


@pytest.mark.parametrize("which", ["largest", "smallest", "magnitude", "both"])
@pytest.mark.parametrize("solver", ["dense", "arpack", "lanczos", "block-krylov", "lobpcg", "auto"])
def test_which_on_an_indefinite_operator_matches_numpy(solver, which):
    op, _ = indefinite_operator()
    H = op.dense()
    k = 7
    if solver == "lobpcg" and which in ("magnitude", "both"):
        with pytest.raises(ValueError, match="finds one end of the spectrum"):
            top_eigenpairs(op, k, solver=solver, which=which)
        return
    result = top_eigenpairs(op, k, solver=solver, tol=TOL, seed=0, which=which)
    ref_values, ref_vectors = numpy_selection(H, k, which)
    assert result.which == which and result.values.shape == (k,)
    assert float((result.values - ref_values).abs().max()) <= 10 * TOL * 3.0, (result.values, ref_values)
    # each pair is an eigenpair of a simple eigenvalue: its vector matches numpy's up to sign
    cosines = (result.vectors * ref_vectors).sum(0).abs()
    assert float(cosines.min()) >= 1 - 1e-8
    true = (H @ result.vectors - result.vectors * result.values).norm(dim=0)
    assert torch.allclose(result.residuals, true, rtol=1e-6, atol=1e-12) and result.all_converged


@pytest.mark.parametrize("alias, which", [("LA", "largest"), ("SA", "smallest"), ("LM", "magnitude"), ("BE", "both")])
def test_scipy_names_of_which(alias, which):
    op, _ = indefinite_operator(n=40)
    a = top_eigenpairs(op, 4, solver="dense", which=alias)
    b = top_eigenpairs(op, 4, solver="dense", which=which)
    assert a.which == which and torch.equal(a.values, b.values)
    with pytest.raises(ValueError, match="which must be one of largest, smallest, magnitude, both"):
        top_eigenpairs(op, 4, which="top")


def test_jacobian_solver_reaches_the_null_space_end():
    """H_Y with m = 4 < n = 16: its smallest eigenvalues are exact zeros, with null-space vectors of J."""
    gen = TinyConvGenerator(latent_dim=16)
    z0 = torch.randn(16, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    op = measurement_hessian(gen, torch.nn.AvgPool2d(4), z0)
    H = op.dense()
    small = top_eigenpairs(op, 5, solver="jacobian", which="smallest", tol=TOL)
    assert torch.equal(small.values, torch.zeros(5, dtype=torch.float64)) and small.all_converged
    assert float((H @ small.vectors).norm()) < 1e-12 * float(torch.linalg.eigvalsh(H)[-1])
    both = top_eigenpairs(op, 6, solver="jacobian", which="both", tol=TOL)
    ref = torch.linalg.eigvalsh(H).flip(0)
    assert torch.allclose(both.values[:3], ref[:3], rtol=1e-10) and torch.equal(both.values[3:], torch.zeros(3, dtype=torch.float64))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("solver", ["arpack", "lanczos", "block-krylov", "dense"])
def test_tiny_top_of_an_indefinite_operator(solver, dtype):
    """The top eigenvalues 3e-6, 2e-6, 1e-6 above a spectrum reaching -1: every solver returns them (ARPACK used to
    return none, Lanczos the wrong ones), judged converged against the rounding level of the far end (float32)."""
    values = torch.cat([torch.tensor([3e-6, 2e-6, 1e-6]), -torch.logspace(-3, 0, 197)]).double()
    M = spectrum_matrix(values, seed=0)
    op = MatrixOperator.make(M.to(dtype))
    result = top_eigenpairs(op, 3, solver=solver, tol=1e-3, seed=0)
    floor = torch.finfo(dtype).eps * 1.0  # ||H|| = 1
    assert result.k == 3 and result.all_converged, (result.values, result.residuals)
    assert torch.allclose(result.values, values[:3], rtol=0, atol=max(1e-3 * 1e-6, 10 * floor))
    if dtype == torch.float32 and solver != "dense":  # dense: residuals against its own (float32-rounded) matrix
        assert result.info["floor"]["level"] == pytest.approx(floor, rel=0.05)  # ||H||, not lambda_1, sets it


def _slow_operator(matrix: torch.Tensor, seconds: float):
    """A matrix operator whose every batched call takes at least ``seconds`` (a network's products, not a matrix's)."""
    import time

    from hvp_explore.operators.base import CurvatureOperator

    class _Slow(CurvatureOperator):
        name = "slow matrix"

        def _matmat(self, V):
            time.sleep(seconds)
            return matrix @ V

    return _Slow(matrix.shape[0], dtype=matrix.dtype, device=matrix.device)


def test_default_takes_a_cheaply_built_operator_to_arpack_without_a_first_block():
    """Issue #22: an operator whose own build (one pass of its function) took under CHEAP_BUILD_SECONDS is cheap before
    any product, and ARPACK starts at once from the seed's start vector; a slowly built one is timed on its first block
    as before. Both give the dense reference's pairs."""
    from hvp_explore import hessian_operator
    from hvp_explore.eigen.solvers import CHEAP_BUILD_SECONDS

    matrix, _ = power_law_operator(n=300)
    H = matrix.dense()
    z0 = torch.randn(300, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    cheap = hessian_operator(lambda z: 0.5 * z @ (H @ z), z0)
    cheap.build_seconds = 0.5 * CHEAP_BUILD_SECONDS  # as measured on a quiet machine; a timing is not asserted
    fast = top_eigenpairs(cheap, 10, tol=TOL)
    check_against_dense(fast, H, 10)
    assert fast.solver == "arpack" and "built in" in fast.info["auto"]
    assert fast.info["passes"] == fast.matvecs + 1 == cheap.num_calls  # single products, then one batched check
    assert torch.equal(fast.values, top_eigenpairs(cheap, 10, tol=TOL, solver="arpack").values)  # the same start
    slow = hessian_operator(lambda z: 0.5 * z @ (H @ z), z0)
    slow.build_seconds = 2 * CHEAP_BUILD_SECONDS
    timed = top_eigenpairs(slow, 10, tol=TOL)
    check_against_dense(timed, H, 10)
    assert "first call of 4 products" in timed.info["auto"]


def test_default_reuses_its_first_block_and_hands_cheap_operators_to_arpack():
    """Issue #22: the default takes no probe; its first block is timed and either starts block Krylov (no product
    taken twice) or, when the call was cheap, hands the solve to ARPACK; counted batched calls say which."""
    from hvp_explore.eigen.solvers import CHEAP_CALL_SECONDS

    cheap, _ = power_law_operator(n=400)
    H = cheap.dense()
    cheap.reset_counters()
    fast = top_eigenpairs(cheap, 10, tol=TOL)
    check_against_dense(fast, H, 10)
    assert fast.solver == "arpack" and "a cheap operator, ARPACK" in fast.info["auto"]
    # the timed block (4 products in 1 call), ARPACK's single products, and one batched call of its residual check
    assert fast.info["passes"] == 1 + (fast.matvecs - 4) + 1 == cheap.num_calls
    slow = _slow_operator(H, 2 * CHEAP_CALL_SECONDS)
    result = top_eigenpairs(slow, 10, tol=TOL)
    check_against_dense(result, H, 10)
    assert result.solver == "block-krylov" and result.info["block"] == 4 and "ms" in result.info["auto"]
    # one batched call per iteration, the first block's included (it is not recomputed); the residuals come free
    assert result.info["passes"] == result.info["iterations"] == slow.num_calls
    assert result.matvecs == 4 * result.info["iterations"]

"""Curvature operators against dense float64 references (autograd Hessians and full Jacobians).

Tolerances: everything runs in float64, the GGN and double-backprop products evaluate the same
derivatives through different autograd paths, so they agree to rounding (~1e-15 relative); we
allow 1e-10 to stay far from flakiness while catching any real mistake (which would be O(1)).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import MatrixOperator, TinyConvGenerator, dense_reference_hessian, spectrum_matrix

from hvp_explore import (NonFiniteError, gauss_newton_operator, hessian_operator, mean_operator, measurement_hessian,
                         perceptual_hessian, subspace_cosines, unobserved_hessian)
from hvp_explore.metrics import ClassifierMetric, PixelMetric
from hvp_explore.generators.dcgan import FashionClassifier

RTOL = 1e-10


def rel(a, b):
    return float((a - b).norm() / b.norm().clamp_min(1e-300))


def rng(seed=0):
    return torch.Generator().manual_seed(seed)


# --- generic operators ----------------------------------------------------------------------------

def test_hessian_of_quadratic_is_its_matrix():
    n = 7
    M = torch.randn(n, n, generator=rng(), dtype=torch.float64)
    A, b = M @ M.T, torch.randn(n, generator=rng(1), dtype=torch.float64)
    op = hessian_operator(lambda z: 0.5 * z @ A @ z + b @ z, torch.randn(n, generator=rng(2), dtype=torch.float64))
    assert rel(op.dense(), A) < RTOL


def test_hessian_of_nonquadratic_matches_autograd():
    n = 6
    W = torch.randn(4, n, generator=rng(), dtype=torch.float64)
    f = lambda z: torch.sin(W @ z).sum() + (z**4).sum() / 12  # noqa: E731
    z0 = torch.randn(n, generator=rng(1), dtype=torch.float64)
    ref = torch.autograd.functional.hessian(f, z0)
    assert rel(hessian_operator(f, z0).dense(), ref) < RTOL


def test_hessian_of_affine_function_is_zero():
    op = hessian_operator(lambda z: 3.0 * z.sum(), torch.ones(4, dtype=torch.float64))
    assert torch.equal(op.dense(), torch.zeros(4, 4, dtype=torch.float64))


def test_hessian_single_products_run_no_python_hooks(monkeypatch):
    """Issue #22: the kept first-order graph is built without saved-tensor hooks (whose Python unpack would run on
    every saved tensor of every product, a sixth of a cheap product); its size is measured on a second, discarded
    build, and only when a batch needs it. Products stay those of the dense Hessian."""
    import contextlib

    import hvp_explore.operators.hessian as hessian_module
    from hvp_explore.operators.memory import SavedBytes

    unpacked = [0]

    def unpack(t):
        unpacked[0] += 1
        return t

    @contextlib.contextmanager
    def counting(modules=()):  # saved_tensor_bytes with an unpack hook that counts its calls
        saved = SavedBytes(set())
        with torch.autograd.graph.saved_tensors_hooks(saved.pack, unpack):
            yield saved

    monkeypatch.setattr(hessian_module, "saved_tensor_bytes", counting)
    n = 6
    W = torch.randn(4, n, generator=rng(), dtype=torch.float64)
    f = lambda z: torch.sin(W @ z).sum() + (z**4).sum() / 12  # noqa: E731
    z0 = torch.randn(n, generator=rng(1), dtype=torch.float64)
    op = hessian_operator(f, z0)
    assert op.build_seconds > 0
    ref = torch.autograd.functional.hessian(f, z0)
    v = torch.randn(n, generator=rng(2), dtype=torch.float64)
    assert rel(op.matvec(v), ref @ v) < RTOL and unpacked[0] == 0  # built and applied: no hook ran
    assert op.saved_bytes > 0 and unpacked[0] > 0  # the measuring build ran under the hooks
    before = unpacked[0]
    assert rel(op.dense(), ref) < RTOL and unpacked[0] == before  # products still run none


def test_retained_vjp_is_autograd_grad():
    from hvp_explore.operators._autograd import retained_vjp

    z = torch.randn(5, generator=rng(), dtype=torch.float64, requires_grad=True)
    other = torch.randn(3, dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad((z.sin() ** 2).sum(), z, create_graph=True)
    v = torch.randn(5, generator=rng(1), dtype=torch.float64)
    assert torch.equal(retained_vjp(g, z, v), torch.autograd.grad(g, z, v, retain_graph=True)[0])
    assert torch.equal(retained_vjp(g, z, v), torch.autograd.grad(g, z, v, retain_graph=True)[0])  # the graph is kept
    assert retained_vjp(g, other, v) is None  # not reached


def test_gauss_newton_is_jt_j_even_away_from_a_zero_residual():
    n = 5
    W = torch.randn(9, n, generator=rng(), dtype=torch.float64)
    r = lambda z: torch.tanh(W @ z) + 0.3  # noqa: E731 - a residual that does not vanish at z0
    z0 = torch.randn(n, generator=rng(1), dtype=torch.float64)
    J = torch.autograd.functional.jacobian(r, z0)
    op = gauss_newton_operator(r, z0)
    assert rel(op.dense(), J.T @ J) < RTOL
    assert rel(op.jacobian(), J) < RTOL
    assert op.residual_dim == 9 and op.residual_norm == pytest.approx(float(r(z0).norm()))


def test_matrix_valued_residual_is_flattened():
    n = 4
    W = torch.randn(3, 2, n, generator=rng(), dtype=torch.float64)
    op = gauss_newton_operator(lambda z: torch.einsum("abn,n->ab", W, z), torch.zeros(n, dtype=torch.float64))
    Jf = W.reshape(6, n)
    assert rel(op.dense(), Jf.T @ Jf) < RTOL


# --- H_Y over every generator x forward-operator case ----------------------------------------------

def test_measurement_hessian_matches_dense_references(inverse_case):
    generator, forward, z0 = inverse_case
    H_ref, J_ref = dense_reference_hessian(generator, forward, z0)
    ggn = measurement_hessian(generator, forward, z0, method="ggn")
    dbp = measurement_hessian(generator, forward, z0, method="double-backprop")
    H_ggn, H_dbp = ggn.dense(), dbp.dense()
    # At z0 the residual vanishes, so the full Hessian equals J^T J: all four agree.
    assert rel(H_ref, J_ref.T @ J_ref) < RTOL
    assert rel(H_ggn, H_ref) < RTOL
    assert rel(H_dbp, H_ref) < RTOL
    assert rel(ggn.jacobian(), J_ref) < RTOL
    assert ggn.residual_dim == forward.num_measurements


def test_operators_are_symmetric_psd_and_consistent(inverse_case):
    generator, forward, z0 = inverse_case
    for method in ("ggn", "double-backprop"):
        op = measurement_hessian(generator, forward, z0, method=method)
        H = op.dense()
        assert rel(H, H.T) < 1e-12
        eig = torch.linalg.eigvalsh(H)
        assert eig.min() >= -1e-12 * eig.max()
        V = torch.randn(op.shape[0], 3, generator=rng(3), dtype=torch.float64)
        stacked = torch.stack([op.matvec(V[:, i]) for i in range(3)], dim=1)
        assert rel(op.matmat(V), stacked) < RTOL


def test_to_scipy_round_trips_and_numpy_in_numpy_out(conv_generator):
    forward = torch.nn.AvgPool2d(2)
    z0 = torch.randn(16, generator=rng(), dtype=torch.float64)
    op = measurement_hessian(conv_generator, forward, z0)
    sp = op.to_scipy()
    assert sp.shape == (16, 16) and sp.dtype == np.float64
    V = np.random.default_rng(0).standard_normal((16, 4))
    ref = op.matmat(torch.from_numpy(V)).numpy()
    np.testing.assert_allclose(sp.matmat(V), ref, rtol=1e-12)
    np.testing.assert_allclose(sp.matvec(V[:, 0]), ref[:, 0], rtol=1e-12)
    np.testing.assert_allclose(sp @ V[:, 1], ref[:, 1], rtol=1e-12)
    out = op.matvec(V[:, 0])
    assert isinstance(out, np.ndarray) and out.dtype == np.float64
    np.testing.assert_allclose(out, ref[:, 0], rtol=1e-12)


@pytest.mark.parametrize("kind", ["hessian", "gauss-newton"])
def test_a_vector_takes_the_single_vector_route_without_a_block(kind, monkeypatch):
    """Issue #22: ``matvec`` and the scipy bridge's vectors ((n,) and (n, 1), as ARPACK passes them) go to the
    operator's ``_matvec``, with no block of one column around the product (a tenth of a cheap product), and give
    the dense reference's products; blocks still go to ``_matmat``."""
    n = 6
    W = torch.randn(5, n, generator=rng(), dtype=torch.float64)
    z0 = torch.randn(n, generator=rng(1), dtype=torch.float64)
    if kind == "hessian":
        f = lambda z: torch.sin(W @ z).sum() + (z**4).sum() / 12  # noqa: E731
        op, ref = hessian_operator(f, z0), torch.autograd.functional.hessian(f, z0)
    else:
        r = lambda z: torch.tanh(W @ z)  # noqa: E731
        op = gauss_newton_operator(r, z0)
        J = torch.autograd.functional.jacobian(r, z0)
        ref = J.T @ J
    blocks = []
    matmat = type(op)._matmat
    monkeypatch.setattr(type(op), "_matmat", lambda self, V: blocks.append(V.shape[1]) or matmat(self, V))
    v = torch.randn(n, generator=rng(2), dtype=torch.float64)
    sp = op.to_scipy()
    assert rel(op.matvec(v), ref @ v) < RTOL
    np.testing.assert_allclose(op.matvec(v.numpy()), (ref @ v).numpy(), rtol=1e-12)
    np.testing.assert_allclose(sp.matvec(v.numpy()), (ref @ v).numpy(), rtol=1e-12)
    column = sp.matvec(v.numpy()[:, None])
    assert column.shape == (n, 1)
    np.testing.assert_allclose(column[:, 0], (ref @ v).numpy(), rtol=1e-12)
    np.testing.assert_allclose(sp.matmat(v.numpy()[:, None]), column, rtol=0, atol=0)
    assert blocks == [] and (op.num_matvecs, op.num_calls) == (5, 5)
    V = torch.randn(n, 3, generator=rng(3), dtype=torch.float64)
    assert rel(op.matmat(V), ref @ V) < RTOL and blocks == [3]


def test_an_operator_with_only_matmat_has_a_matvec(matrix_pair):
    """The subclass contract stays ``_matmat``: the default single-vector route is a block of one column."""
    (A, MA), _ = matrix_pair
    v = torch.randn(9, generator=rng(), dtype=torch.float64)
    assert rel(A.matvec(v), MA @ v) < RTOL
    np.testing.assert_allclose(A.to_scipy().matvec(v.numpy()), (MA @ v).numpy(), rtol=1e-13)
    assert (A.num_matvecs, A.num_calls) == (2, 2)


def test_float32_operator_feeds_float64_scipy(conv_generator):
    g32 = TinyConvGenerator().float()
    z0 = torch.randn(16, generator=rng())
    op32 = measurement_hessian(g32, torch.nn.AvgPool2d(2), z0)
    op64 = measurement_hessian(conv_generator, torch.nn.AvgPool2d(2), z0.double())
    assert op32.dtype == torch.float32
    V = np.random.default_rng(0).standard_normal((16, 2))
    # float32 products: relative error ~1e-6 of the result
    np.testing.assert_allclose(op32.to_scipy().matmat(V), op64.matmat(torch.from_numpy(V)).numpy(), rtol=1e-4, atol=1e-6)


def test_product_counter_and_block_size(conv_generator):
    z0 = torch.randn(16, generator=rng(), dtype=torch.float64)
    op = measurement_hessian(conv_generator, torch.nn.AvgPool2d(2), z0, block_size=3)
    V = torch.randn(16, 7, generator=rng(1), dtype=torch.float64)
    full = measurement_hessian(conv_generator, torch.nn.AvgPool2d(2), z0).matmat(V)
    assert rel(op.matmat(V), full) < RTOL
    assert (op.num_matvecs, op.num_calls) == (7, 3)  # blocks of 3 + 3 + 1
    op.matvec(V[:, 0])
    assert (op.num_matvecs, op.num_calls) == (8, 4)
    op.reset_counters()
    assert op.num_matvecs == 0


def test_latent_shapes(conv_generator):
    z0 = torch.randn(16, generator=rng(), dtype=torch.float64)
    a = measurement_hessian(conv_generator, torch.nn.AvgPool2d(2), z0).dense()
    b = measurement_hessian(conv_generator, torch.nn.AvgPool2d(2), z0[None]).dense()
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match=r"shape \(n,\) or \(1, n\)"):
        measurement_hessian(conv_generator, torch.nn.AvgPool2d(2), z0.expand(2, 16))
    with pytest.raises(ValueError, match="matvec expects a vector of shape"):
        measurement_hessian(conv_generator, torch.nn.AvgPool2d(2), z0).matvec(torch.ones(3, dtype=torch.float64))


def test_eval_mode_no_parameter_gradients_and_state_restored():
    gen = TinyConvGenerator()
    gen.train()  # batch norm would use batch statistics (and fail on a batch of one 2x2 map)
    z0 = torch.randn(16, generator=rng(), dtype=torch.float64)
    op = measurement_hessian(gen, torch.nn.AvgPool2d(2), z0)
    H = op.dense()
    assert gen.training and all(m.training for m in gen.modules())
    assert all(p.requires_grad and p.grad is None for p in gen.parameters())
    ref_gen = TinyConvGenerator().eval()
    H_ref, _ = dense_reference_hessian(ref_gen, torch.nn.AvgPool2d(2), z0)
    assert rel(H, H_ref) < RTOL
    out = op.matvec(torch.ones(16, dtype=torch.float64))
    assert not out.requires_grad and out.grad_fn is None


def test_determinism_check(conv_generator):
    z0 = torch.randn(16, generator=rng(), dtype=torch.float64)
    op = measurement_hessian(conv_generator, torch.nn.AvgPool2d(2), z0)
    assert op.check_deterministic() == 0.0
    noise = torch.Generator().manual_seed(0)
    # like a generator left with active dropout: every forward pass draws new noise
    noisy = lambda z: z * (1 + torch.rand(z.shape, generator=noise, dtype=z.dtype))  # noqa: E731
    # forward mode recomputes the forward pass in every product; the reverse single-vector route differentiates one
    # graph built once, so it cannot see the noise (a block under vmap refuses random operations outright)
    with pytest.raises(RuntimeError, match="two identical products differ"):
        gauss_newton_operator(noisy, z0, jvp_mode="forward").check_deterministic(num_vectors=1)


@pytest.mark.parametrize("kind", ["numpy", "torch32", "torch64"])
def test_all_finite_sees_nan_and_inf_and_survives_overflow(kind):
    from hvp_explore.operators.base import all_finite

    big = {"numpy": 1e200, "torch32": 3e38, "torch64": 1e308}[kind]  # a sum (of squares) of these overflows
    wrap = (lambda a: a) if kind == "numpy" else (lambda a: torch.from_numpy(a).to(torch.float32 if kind == "torch32" else torch.float64))
    assert all_finite(wrap(np.full((50, 2), big)))  # finite entries whose reduction overflows: the full check decides
    for bad in (np.nan, np.inf, -np.inf):
        a = np.ones((50, 2))
        a[7, 1] = bad
        assert not all_finite(wrap(a))


def test_non_finite_products_stop_with_the_stage_name():
    z0 = torch.zeros(3, dtype=torch.float64)
    with pytest.raises(NonFiniteError, match="residual at z0"):
        gauss_newton_operator(lambda z: torch.log(z), z0)
    op = gauss_newton_operator(torch.sqrt, z0)  # finite value, infinite derivative at 0
    with pytest.raises(NonFiniteError, match="Gauss-Newton"):
        op.matvec(torch.ones(3, dtype=torch.float64))
    with pytest.raises(NonFiniteError, match="Gauss-Newton"):  # the scipy bridge guards its NumPy copy
        op.to_scipy().matvec(np.ones(3))
    with pytest.raises(NonFiniteError, match="NaN or inf"):
        measurement_hessian(TinyConvGenerator(), torch.nn.AvgPool2d(2), torch.full((16,), float("nan"), dtype=torch.float64))


# --- H_X -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("metric_name", ["pixel", "classifier"])
def test_perceptual_hessian_ggn_equals_double_backprop(metric_name):
    gen, metric = metric_case(metric_name)
    z0 = torch.randn(16, generator=rng(), dtype=torch.float64)
    ggn = perceptual_hessian(gen, metric, z0)
    dbp = perceptual_hessian(gen, metric, z0, method="double-backprop")
    f = lambda z: 0.5 * metric(gen(z[None]), gen(z0[None]).detach()).sum()  # noqa: E731
    H_ref = torch.autograd.functional.hessian(f, z0)
    assert rel(ggn.dense(), H_ref) < 1e-9
    assert rel(dbp.dense(), H_ref) < 1e-9


def metric_case(name: str):
    """(generator, metric) in float64: the test generator with the pixel metric, or upsampled to 32 x 32 with the
    Fashion-MNIST classifier's features (a network metric with a residual form)."""
    gen = TinyConvGenerator()
    if name == "pixel":
        return gen, PixelMetric()
    torch.manual_seed(0)
    return _Pad32(gen), ClassifierMetric(FashionClassifier(), resize_to=None).double()


class _Pad32(torch.nn.Module):
    """The 8x8 test generator upsampled to 32x32 so the Fashion-MNIST trunk applies."""

    def __init__(self, gen):
        super().__init__()
        self.gen, self.latent_dim = gen, gen.latent_dim

    def forward(self, z):
        return torch.nn.functional.interpolate(self.gen(z), size=32, mode="bilinear", align_corners=False)


def test_plain_callable_metric_uses_double_backprop(conv_generator):
    metric = lambda x, x0: (x - x0).pow(2).flatten(1).sum(1) + (x - x0).pow(4).flatten(1).sum(1)  # noqa: E731
    z0 = torch.randn(16, generator=rng(), dtype=torch.float64)
    op = perceptual_hessian(conv_generator, metric, z0)
    J = torch.autograd.functional.jacobian(lambda z: conv_generator(z[None]).reshape(-1), z0)
    assert rel(op.dense(), J.T @ J) < RTOL  # the quartic term has zero Hessian at x = x0
    with pytest.raises(ValueError, match="residual"):
        perceptual_hessian(conv_generator, metric, z0, method="ggn")
    with pytest.raises(ValueError, match="method must be one of"):
        perceptual_hessian(conv_generator, metric, z0, method="newton")


def test_module_dtype_device_finds_the_module_behind_a_callable(conv_generator):
    from hvp_explore.operators.base import module_dtype_device

    assert module_dtype_device(conv_generator) == (torch.float64, torch.device("cpu"))
    assert module_dtype_device(conv_generator.forward) == (torch.float64, torch.device("cpu"))  # bound method
    assert module_dtype_device(lambda z: z) is None


# --- the operator algebra ---------------------------------------------------------------------------

def test_linear_combinations_match_their_dense_matrices(matrix_pair):
    (A, MA), (B, MB) = matrix_pair
    eye = torch.eye(9, dtype=torch.float64)
    cases = {
        "A + B": (A + B, MA + MB),
        "A - B": (A - B, MA - MB),
        "-A": (-A, -MA),
        "c * A": (2.5 * A, 2.5 * MA),
        "A * c": (A * -0.75, -0.75 * MA),
        "numpy scalar": (np.float32(0.5) * B, 0.5 * MB),
        "0-d tensor": (torch.tensor(3.0) * A, 3.0 * MA),
        "shifted": (A.shifted(0.25), MA + 0.25 * eye),
        "nested": ((2 * (A + B)).shifted(-1.0) - 0.5 * A, 2 * (MA + MB) - eye - 0.5 * MA),
    }
    for label, (op, ref) in cases.items():
        assert op.shape == (9, 9) and op.dtype == torch.float64 and op.self_adjoint, label
        assert rel(op.dense(), ref) < 1e-14, label
    assert (A - 0.5 * B.shifted(1e-3)).name == "matrix - 0.5 * (matrix + 0.001 I)"


def test_combination_counters_and_block_sizes(matrix_pair):
    (A, MA), (B, MB) = matrix_pair
    A.block_size = 2
    S = A + 3 * B
    V = torch.randn(9, 5, generator=rng(), dtype=torch.float64)
    assert rel(S.matmat(V), (MA + 3 * MB) @ V) < 1e-14
    # the combination counts its own products; each term counts the products it applied, in its own blocks
    assert (S.num_matvecs, S.num_calls) == (5, 1)
    assert (A.num_matvecs, A.num_calls) == (5, 3)  # blocks of 2 + 2 + 1
    assert (B.num_matvecs, B.num_calls) == (5, 1)
    S.matvec(V[:, 0])
    assert (S.num_matvecs, A.num_matvecs, B.num_matvecs) == (6, 6, 6)
    (A + A).matmat(V)
    assert A.num_matvecs == 16  # a term that occurs twice applies its products twice


def test_to_scipy_dtypes_and_adjoints(matrix_pair):
    (A, MA), (B, MB) = matrix_pair
    S = (A - 2 * B).shifted(0.5)
    ref = (MA - 2 * MB + 0.5 * torch.eye(9, dtype=torch.float64)).numpy()
    X = np.random.default_rng(0).standard_normal((9, 3))
    sp64 = S.to_scipy()
    assert sp64.dtype == np.float64 and sp64.shape == (9, 9)
    np.testing.assert_allclose(sp64.matmat(X), ref @ X, rtol=1e-13, atol=1e-14)
    np.testing.assert_allclose(sp64.rmatvec(X[:, 0]), ref @ X[:, 0], rtol=1e-13, atol=1e-14)  # self-adjoint
    sp32 = S.to_scipy(np.float32)
    out = sp32.matmat(X.astype(np.float32))
    assert sp32.dtype == np.float32 and out.dtype == np.float32 and sp32.matvec(X[:, 1]).dtype == np.float32
    # float32 inputs, float64 products, float32 outputs: the input rounding (~6e-8) dominates
    np.testing.assert_allclose(out, ref @ X, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(sp32.rmatmat(X.astype(np.float32)), out, rtol=0, atol=0)
    with pytest.raises(ValueError, match="float16, float32 or float64"):
        S.to_scipy(np.int64)


def test_an_operator_that_is_not_self_adjoint_has_no_scipy_adjoint(matrix_pair):
    (A, MA), _ = matrix_pair
    N = torch.triu(MA)
    op = MatrixOperator.make(N)
    op.self_adjoint = False
    assert not (op + A).self_adjoint and (2 * A).self_adjoint
    sp = (op + A).to_scipy()
    np.testing.assert_allclose(sp.matvec(np.ones(9)), ((N + MA) @ torch.ones(9, dtype=torch.float64)).numpy(), rtol=1e-13)
    with pytest.raises(NotImplementedError):
        sp.rmatvec(np.ones(9))


def test_algebra_errors(matrix_pair):
    (A, MA), (B, _) = matrix_pair
    with pytest.raises(ValueError, match=r"cannot combine .*size, dtype and device must agree"):
        A + MatrixOperator.make(MA[:5, :5])
    with pytest.raises(ValueError, match="torch.float32"):
        A - MatrixOperator.make(MA.float())
    with pytest.raises(ValueError, match=r"a coefficient must be a real scalar, got an array of shape \(9,\)"):
        torch.ones(9) * A
    with pytest.raises(ValueError, match=r"array of shape \(2, 2\)"):
        A * np.eye(2)
    with pytest.raises(ValueError, match="must be finite"):
        A * float("inf")
    with pytest.raises(ValueError, match="the shift must be finite"):
        A.shifted(float("nan"))
    with pytest.raises(TypeError, match="use A.shifted"):
        A + 1.0
    with pytest.raises(TypeError, match="use A.shifted"):
        1.0 + A
    with pytest.raises(TypeError, match="real scalar, got _Matrix"):
        A * B
    with pytest.raises(TypeError, match="got bool"):
        True * A
    with pytest.raises(TypeError, match="the shift must be a real scalar, got complex"):
        A.shifted(1j)


def test_combination_of_generator_operators_freezes_every_module():
    """H_Y of one generator plus H_X of another, both in train mode: products see both in eval mode, no grads."""
    gen_y, gen_x = TinyConvGenerator(seed=0).train(), TinyConvGenerator(seed=1).train()
    z0 = torch.randn(16, generator=rng(), dtype=torch.float64)
    H_Y = measurement_hessian(gen_y, torch.nn.AvgPool2d(2), z0)
    H_X = perceptual_hessian(gen_x, PixelMetric(), z0)
    # Products run the operators' folded copies of the generators (batch norm as an affine map), which
    # share the generators' parameters: record (training, any parameter requiring grad) of every layer
    # with parameters that any forward pass runs.
    states = []

    def record(m, args):
        if any(True for _ in m.parameters(recurse=False)):
            states.append((m.training, any(p.requires_grad for p in m.parameters(recurse=False))))

    S = (H_Y + 0.5 * H_X).shifted(1e-2)
    handle = torch.nn.modules.module.register_module_forward_pre_hook(record)
    try:
        H = S.dense()
    finally:
        handle.remove()
    assert states and not any(training or grads for training, grads in states)
    for gen in (gen_y, gen_x):
        assert gen.training and all(m.training for m in gen.modules())
        assert all(p.requires_grad and p.grad is None for p in gen.parameters())
    H_Y_ref, _ = dense_reference_hessian(TinyConvGenerator(seed=0).eval(), torch.nn.AvgPool2d(2), z0)
    ref_x = TinyConvGenerator(seed=1).eval()
    J_x = torch.autograd.functional.jacobian(lambda z: ref_x(z[None]).reshape(-1), z0)
    ref = H_Y_ref + 0.5 * (J_x.T @ J_x) / J_x.shape[0] + 1e-2 * torch.eye(16, dtype=torch.float64)
    assert rel(H, ref) < RTOL
    assert not S.matvec(torch.ones(16, dtype=torch.float64)).requires_grad


def test_sum_and_mean_of_operators(matrix_pair):
    """sum(ops) starts from 0 + A; a sum stays one flat combination; mean_operator weights and normalises."""
    (A, MA), (B, MB) = matrix_pair
    ops = [A, B, A, 2 * B]
    S = sum(ops)
    assert rel(S.dense(), 2 * MA + 3 * MB) < 1e-14 and len(S.terms) == 4  # flat, not a nest of depth 4
    many = sum([A] * 300)  # deeper than any reasonable recursion would allow if nested
    assert rel(many.matvec(torch.ones(9, dtype=torch.float64)), 300 * MA @ torch.ones(9, dtype=torch.float64)) < 1e-13
    assert rel(mean_operator([A, B]).dense(), 0.5 * (MA + MB)) < 1e-14
    assert rel(mean_operator([A, B], weights=[3, 1]).dense(), 0.75 * MA + 0.25 * MB) < 1e-14
    for args, message in ((([],), "at least one"), (([A, B], [1.0]), "2 operators and 1 weights"),
                          (([A, B], [1.0, -1.0]), "non-negative and not all zero")):
        with pytest.raises(ValueError, match=message):
            mean_operator(*args)
    with pytest.raises(TypeError, match="use A.shifted"):
        2 + A  # only 0 starts a sum


def test_product_of_two_operators_is_a_one_line_type_error(matrix_pair):
    (A, _), (B, _) = matrix_pair
    with pytest.raises(TypeError, match=r"the product of two operators is not a curvature operator .* A @ \(B @ V\)"):
        A @ B
    with pytest.raises(TypeError, match="needs a tensor or an array"):
        A @ [1.0] * 9
    V = torch.ones(9, 2, dtype=torch.float64)
    assert torch.equal(A @ (B @ V), A.matmat(B.matmat(V)))


def test_to_linear_operator_enters_gpytorch_routines():
    """Solve (CG), root decomposition (Lanczos), log-determinant (SLQ) and the exact diagonal, against dense float64."""
    import linear_operator

    n = 900  # above linear_operator's Cholesky size (800): its iterative paths run
    values = torch.logspace(0, -1, n, dtype=torch.float64)
    M = spectrum_matrix(values, seed=3)
    op = MatrixOperator.make(M)
    L = op.to_linear_operator()
    assert L.shape == (n, n) and L.dtype == torch.float64
    b = torch.randn(n, 2, generator=rng(), dtype=torch.float64)
    # linear_operator's CG stops improving near a relative residual of 1e-5 (its safe division treats
    # p^T A p < 1e-10 as zero): it is built for Gaussian-process accuracy
    with linear_operator.settings.cg_tolerance(1e-4), linear_operator.settings.max_cg_iterations(500):
        x = L.solve(b)
    assert rel(x, torch.linalg.solve(M, b)) < 1e-3
    assert rel(L.diagonal(), M.diagonal()) < 1e-14
    with linear_operator.settings.max_root_decomposition_size(n):
        R = L.root_decomposition().root.to_dense()
    assert rel(R @ R.T, M) < 1e-6
    with linear_operator.settings.num_trace_samples(64), linear_operator.settings.max_lanczos_quadrature_iterations(60):
        logdet = float(L.logdet())
    exact = float(values.log().sum())
    assert abs(logdet - exact) < 0.05 * abs(exact)  # stochastic Lanczos quadrature: a few percent
    assert op.num_matvecs > 0
    assert rel(L.matmul(b[:, 0]), M @ b[:, 0]) < 1e-14 and rel(L @ b[None], (M @ b)[None]) < 1e-14  # vectors, batches


def test_quadratic_forms_match_the_dense_matrices(matrix_pair):
    """v^T A v of each column: by products for any operator, by ||J v||^2 (forward mode only) for Gauss-Newton ones,
    term by term for combinations."""
    (A, MA), (B, MB) = matrix_pair
    V = torch.randn(9, 4, generator=rng(), dtype=torch.float64)
    combo = (A - 0.5 * B).shifted(0.3)
    M = MA - 0.5 * MB + 0.3 * torch.eye(9, dtype=torch.float64)
    assert rel(combo.quadratic_forms(V), (V * (M @ V)).sum(0)) < 1e-14
    assert combo.num_matvecs == 4 and A.num_matvecs == 4
    gen = TinyConvGenerator()
    z0 = torch.randn(16, generator=rng(), dtype=torch.float64)
    H_Y = measurement_hessian(gen, torch.nn.AvgPool2d(2), z0)
    J = torch.autograd.functional.jacobian(lambda z: torch.nn.AvgPool2d(2)(gen(z[None])).reshape(-1), z0)
    W = torch.randn(16, 5, generator=rng(1), dtype=torch.float64)
    assert rel(H_Y.quadratic_forms(W), (J @ W).pow(2).sum(0)) < 1e-12
    assert rel(H_Y.quadratic_forms(W[:, :1]), (J @ W[:, :1]).pow(2).sum(0)) < 1e-12  # the single-vector route
    assert isinstance(A.quadratic_forms(V.numpy()), np.ndarray)
    with pytest.raises(ValueError, match="quadratic_forms expects a block"):
        A.quadratic_forms(V[:5])


def test_projections_match_the_dense_matrices(matrix_pair):
    """Q^T A Q: by products for any operator, by the Gram matrix of J Q (forward mode only, never a reverse pass) for
    Gauss-Newton ones, term by term for combinations; symmetric, counted as b products."""
    (A, MA), (B, MB) = matrix_pair
    Q = torch.randn(9, 4, generator=rng(), dtype=torch.float64)
    combo = (A - 0.5 * B).shifted(0.3)
    M = MA - 0.5 * MB + 0.3 * torch.eye(9, dtype=torch.float64)
    P = combo.projected(Q)
    assert rel(P, Q.T @ M @ Q) < 1e-14 and torch.equal(P, P.T)
    assert combo.num_matvecs == 4 and A.num_matvecs == 4 and B.num_matvecs == 4
    gen = TinyConvGenerator()
    z0 = torch.randn(16, generator=rng(), dtype=torch.float64)
    H_Y = measurement_hessian(gen, torch.nn.AvgPool2d(2), z0)
    J = torch.autograd.functional.jacobian(lambda z: torch.nn.AvgPool2d(2)(gen(z[None])).reshape(-1), z0)
    H_Y.block_size = 2  # chunks of the block: the Gram matrix is still of all its columns
    H_Y._batched_vjp = lambda *_: pytest.fail("a projection of a Gauss-Newton operator takes no reverse pass")
    W = torch.randn(16, 5, generator=rng(1), dtype=torch.float64)
    assert rel(H_Y.projected(W), W.T @ J.T @ J @ W) < 1e-12
    assert rel(H_Y.projected(W[:, :1]), W[:, :1].T @ J.T @ J @ W[:, :1]) < 1e-12  # one column
    assert (H_Y.num_matvecs, H_Y.num_calls) == (6, 4)
    out = A.projected(Q.numpy())
    assert isinstance(out, np.ndarray) and out.shape == (4, 4)
    with pytest.raises(ValueError, match="projected expects a block"):
        A.projected(Q[:5])


# --- the generator's first-order model, shared by both metrics -------------------------------------

def test_linearized_generator_is_the_first_order_model_at_z0(conv_generator):
    """G_l(z) = G(z0) + J_G (z - z0) with J_G the dense float64 Jacobian; the user's generator keeps its batch norms."""
    from hvp_explore import LinearizedGenerator

    z0 = torch.randn(16, generator=rng(), dtype=torch.float64)
    lin = LinearizedGenerator(conv_generator, z0, block_size=5)  # 16 columns in batches of 5, 5, 5, 1
    J = torch.autograd.functional.jacobian(lambda z: conv_generator(z[None]).reshape(-1), z0)
    assert lin.jacobian.shape == (64, 16) and rel(lin.jacobian, J) < RTOL
    assert (lin.latent_dim, lin.image_shape, lin.num_matvecs) == (16, (1, 8, 8), 16)
    D = torch.randn(3, 16, generator=rng(1), dtype=torch.float64)
    x0 = conv_generator(z0[None]).detach()
    assert torch.equal(lin(z0[None]), x0)
    assert rel(lin(z0 + D), x0 + (D @ J.T).reshape(3, 1, 8, 8)) < RTOL
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in conv_generator.modules())
    # under a memory budget (the eigen stage's --max-memory) the batches are fitted to it by a measured probe, whose
    # products count: the same Jacobian
    fitted = LinearizedGenerator(conv_generator, z0, block_size=8, max_memory=1 << 30)
    assert rel(fitted.jacobian, J) < RTOL and fitted.num_matvecs > 16


@pytest.mark.parametrize("metric_name", ["pixel", "classifier"])
def test_both_metrics_on_the_linearized_generator_are_the_same_matrices(metric_name):
    """H_Y and H_X depend on the generator only through J_G at z0 (Gauss-Newton forms): built on G_l they equal the
    dense float64 references J^T A^T A J and the Hessian of the distance through G itself."""
    from hvp_explore import LinearizedGenerator

    from hvp_explore.problems import SuperResolution

    gen, metric = metric_case(metric_name)
    z0 = torch.randn(16, generator=rng(), dtype=torch.float64)
    x0 = gen(z0[None]).detach()
    forward = SuperResolution(tuple(x0.shape[1:]), 2, kernel="area").double()
    lin = LinearizedGenerator(gen, z0)
    H_Y, J = dense_reference_hessian(gen, forward, z0)
    assert rel(measurement_hessian(lin, forward, z0).dense(), J.T @ J) < RTOL
    assert rel(measurement_hessian(lin, forward, z0).dense(), H_Y) < 1e-9  # r(z0) = 0: the Hessian is J^T J
    f = lambda z: 0.5 * metric(gen(z[None]), x0).sum()  # noqa: E731
    assert rel(perceptual_hessian(lin, metric, z0).dense(), torch.autograd.functional.hessian(f, z0)) < 1e-9
    # the metric of what A cannot see: x0 + P (G(z) - x0), P = I - A^+ A
    f_u = lambda z: 0.5 * metric(x0 + forward.unobserved(gen(z[None]) - x0), x0).sum()  # noqa: E731
    assert rel(unobserved_hessian(lin, forward, metric, z0).dense(), torch.autograd.functional.hessian(f_u, z0)) < 1e-9


def test_the_eigen_stage_linearizes_where_the_solves_would_pass_more_than_n_vectors():
    """``worth_linearizing`` by the static counts of ``auto``: the face generator's problem (n = 100, m = 768, top 10 and 6)
    passes 36 + 64 = 100 vectors, the embedded default's (n = 512, m = 64) 64 + 64, and a pencil after the solves more; a
    metric without a residual form is left on the generator (double backprop: the rule takes only Gauss-Newton
    operators). The stage's eigenpairs are those of the operators on the generator itself."""
    from hvp_explore import LinearizedGenerator
    from hvp_explore.exploration.explorer import eigenpairs, worth_linearizing
    from hvp_explore.problems import SuperResolution

    faces_sr = SuperResolution((3, 64, 64), 4, kernel="area")
    default_sr = SuperResolution((1, 32, 32), 4, kernel="area")
    assert faces_sr.num_measurements == 768 and default_sr.num_measurements == 64
    assert worth_linearizing(faces_sr, PixelMetric(), 100, k=10)
    assert not worth_linearizing(faces_sr, PixelMetric(), 100, k=4)  # 36 + 28
    # the default mode's pencil (H_U against H_Y) takes H_Y's Jacobian and at least the top k of H_U: 36 + 32 + 100 + 32
    assert worth_linearizing(faces_sr, PixelMetric(), 100, k=5, pencil=True) and not worth_linearizing(faces_sr, PixelMetric(), 100, k=5)
    assert not worth_linearizing(default_sr, PixelMetric(), 512, k=10)
    assert not worth_linearizing(default_sr, PixelMetric(), 512, k=5, pencil=True)  # 64 + 32 + 64 + 32
    assert not worth_linearizing(faces_sr, lambda x, x0: (x - x0).pow(2).flatten(1).sum(1), 100, k=10)

    gen = TinyConvGenerator()
    forward = SuperResolution(gen.image_shape, 2, kernel="area").double()  # m = n = 16: two Jacobians of 16 products
    z0 = torch.randn(16, generator=rng(), dtype=torch.float64)
    assert worth_linearizing(forward, PixelMetric(), 16, k=6, k_y=4)
    lin = eigenpairs(gen, forward, PixelMetric(), z0, k=6, k_y=4, tol=1e-10)
    plain = eigenpairs(gen, forward, PixelMetric(), z0, k=6, k_y=4, tol=1e-10, linearize=False)
    assert "linearize" in lin.timings and "linearize" not in plain.timings
    for a, b in ((lin.eig_y, plain.eig_y), (lin.eig_x, plain.eig_x)):
        assert rel(a.values, b.values) < 1e-9
        assert float(subspace_cosines(a.vectors, b.vectors).min()) > 1 - 1e-8
    assert isinstance(lin.generator, LinearizedGenerator) and plain.generator is gen


@pytest.mark.parametrize("mode", ["unobserved", "generalized", "eglass"])
def test_explore_gives_the_same_directions_through_the_generators_jacobian(mode, monkeypatch):
    """Every mode, with the eigen stage's Jacobian of the generator (H_U of the default mode on it too) or without,
    finds the same directions and the same pencil: the operators are the same matrices."""
    import hvp_explore.exploration.explorer as explorer
    from hvp_explore import explore
    from hvp_explore.problems import SuperResolution

    gen = TinyConvGenerator()
    forward = SuperResolution(gen.image_shape, 2, kernel="area").double()
    z_true = torch.randn(16, generator=rng(5), dtype=torch.float64)
    with torch.no_grad():
        y = forward(gen(z_true[None]))
    runs = {}
    for linearize in (True, False):
        monkeypatch.setattr(explorer, "worth_linearizing", lambda *a, linearize=linearize, **k: linearize)
        runs[linearize] = explore(gen, forward, y, metric=PixelMetric(), num_solutions=6, K=4, mode=mode, tol=1e-10, seed=0, quiet=True,
                                  invert_options={"restarts": 2, "steps": 30})
    a, b = runs[True], runs[False]
    assert "linearize" in a.timings and "linearize" not in b.timings
    assert [d.label for d in a.directions] == [d.label for d in b.directions]
    for da, db in zip(a.directions, b.directions):
        assert abs(float(da.vector @ db.vector)) > 1 - 1e-6
    if mode != "eglass":
        assert rel(a.pencil.values, b.pencil.values) < 1e-8

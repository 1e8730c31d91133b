"""Cheaper products, unchanged values: batch norm folded in the operators' copy, the two routes to J v, memory-sized batches.

References are dense float64 matrices from ``torch.autograd.functional`` on the user's (unfolded) modules.
Folding replaces ``(x - mu) / sqrt(var + eps) * gamma + beta`` by ``x * s + t`` (or scales a layer's weights by
``s``): the same map, so float64 products agree to rounding (1e-12 relative) and float32 ones to a few float32
epsilons (1e-6 relative).
"""

from __future__ import annotations

import pytest
import torch
from conftest import TinyConvGenerator, TinyMLPGenerator
from torch import nn

from hvp_explore import gauss_newton_operator, measurement_hessian, perceptual_hessian, top_eigenpairs
from hvp_explore.metrics import PixelMetric
from hvp_explore.operators._folding import ChannelAffine, folded_callable, folded_module


def rel(a, b):
    return float((a - b).norm() / b.norm())


def spread(*batch_norms):
    """Statistics and affine parameters away from the identity, so that eval mode matters."""
    for bn in batch_norms:
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.data.uniform_(0.5, 1.5)
        bn.bias.data.uniform_(-0.2, 0.2)


class AttributeBatchNorm(nn.Module):
    """Batch norm kept as attributes (not in a Sequential, as in EfficientNet's blocks) and a BatchNorm1d after a Linear."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(3)
        self.fc = nn.Linear(6, 12)
        self.bn1 = nn.BatchNorm1d(12)
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(4)
        spread(self.bn1, self.bn2)

    def forward(self, z):
        h = torch.tanh(self.bn1(self.fc(z)))
        return torch.tanh(self.bn2(self.conv(h.view(-1, 3, 2, 2))))


def test_folded_copy_equals_the_module_and_leaves_it_untouched():
    gen = TinyConvGenerator().train()  # train mode: the operators' semantics is eval mode all the same
    before = {k: v.clone() for k, v in gen.state_dict().items()}
    folded = folded_module(gen)
    assert folded is not gen and not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    # the BN after each ConvTranspose in the Sequential folds into it; the leading one (after fc's view) is an affine
    assert sum(isinstance(m, nn.Identity) for m in folded.modules()) == 1
    assert sum(isinstance(m, ChannelAffine) for m in folded.modules()) == 1
    assert gen.training and sum(isinstance(m, nn.BatchNorm2d) for m in gen.modules()) == 2
    assert all(torch.equal(before[k], v) for k, v in gen.state_dict().items())
    assert folded.fc.weight is gen.fc.weight  # parameters are shared, not copied
    z = torch.randn(5, 16, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    gen.eval()
    with torch.no_grad():
        assert rel(folded(z), gen(z)) < 1e-12
        g32, f32 = TinyConvGenerator().float().eval(), folded_module(TinyConvGenerator().float())
        assert rel(f32(z.float()), g32(z.float())) < 1e-6


def test_attribute_batch_norm_becomes_a_channel_affine():
    module = AttributeBatchNorm().double().eval()
    folded = folded_module(module)
    assert isinstance(folded.bn1, ChannelAffine) and isinstance(folded.bn2, ChannelAffine)
    z = torch.randn(4, 6, dtype=torch.float64)
    with torch.no_grad():
        assert rel(folded(z), module(z)) < 1e-12


class DeclaredBatchNorm(AttributeBatchNorm):
    """The same wiring, with its pairs declared: a depthwise convolution, and a linear layer viewed as 2 x 2 maps."""

    batch_norm_follows = {"bn1": "fc", "bn2": "conv", "missing_bn": "missing_layer"}

    def __init__(self):
        super().__init__()
        torch.manual_seed(4)
        self.bn1 = nn.BatchNorm2d(3)  # reads fc's 12 outputs as 3 channels of 2 x 2
        self.conv = nn.Conv2d(3, 3, 3, padding=1, groups=3)
        self.bn2 = nn.BatchNorm2d(3)
        spread(self.bn1, self.bn2)

    def forward(self, z):
        h = torch.tanh(self.bn1(self.fc(z).view(-1, 3, 2, 2)))
        return torch.tanh(self.bn2(self.conv(h)))


def test_declared_pairs_fold_into_their_layers():
    """``batch_norm_follows`` folds a batch norm into the layer a custom forward feeds it from: a depthwise convolution,
    and a linear layer viewed as maps (channel c = outputs 4c..4c+3); an absent pair is skipped."""
    module = DeclaredBatchNorm().double().eval()
    folded = folded_module(module)
    assert isinstance(folded.bn1, nn.Identity) and isinstance(folded.bn2, nn.Identity)
    assert not any(isinstance(m, ChannelAffine) for m in folded.modules())
    assert isinstance(module.bn1, nn.BatchNorm2d) and isinstance(module.bn2, nn.BatchNorm2d)  # the user's module keeps them
    assert folded.fc.weight is not module.fc.weight and folded.conv.weight is not module.conv.weight  # the copy's own
    z = torch.randn(4, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert rel(folded(z), module(z)) < 1e-12


def test_shipped_networks_fold_every_batch_norm():
    """The embedded DCGAN (its first batch norm after the linear layer's view) and EfficientNet-Lite0 (every block's
    three): no batch norm is left as a channel affine, and the folded copies compute the same maps in float64."""
    from hvp_explore.generators.dcgan import DCGANGenerator
    from hvp_explore.metrics._efficientnet import EfficientNetLite0

    for module, x in ((DCGANGenerator(latent_dim=8, width=16), torch.randn(3, 8)),
                      (EfficientNetLite0(), torch.randn(1, 3, 64, 64))):
        torch.manual_seed(0)
        with torch.no_grad():
            spread(*(m for m in module.modules() if isinstance(m, nn.BatchNorm2d)))
        module = module.double().eval()
        folded = folded_module(module)
        assert not any(isinstance(m, (ChannelAffine, nn.BatchNorm2d)) for m in folded.modules())
        with torch.no_grad():
            assert rel(folded(x.double()), module(x.double())) < 1e-12


def test_forward_mode_products_of_the_shipped_metrics_run_no_python_kernels():
    """In forward mode an elementwise operation between a dual tensor and a constant (a channel affine's scale, a
    number passed as a 0-d tensor) makes torch compute the zero tangent's shape with its Python reference kernels,
    0.3-0.5 ms a call: a third of a batched product of the faces' H_X before folding. A batched product of H_X (the
    embedded DCGAN, both shipped feature metrics) runs at most two (the reference subtraction, the linear layer's
    bias); the values match the double-backprop operator."""
    import sys

    from hvp_explore import load_metric
    from hvp_explore.generators.dcgan import DCGANGenerator

    class RGB(nn.Module):  # the gray DCGAN's images as three channels, for effnet
        def __init__(self, gray):
            super().__init__()
            self.gray = gray

        def forward(self, z):
            return self.gray(z).repeat(1, 3, 1, 1)

    gen = DCGANGenerator(latent_dim=8, width=16).eval()
    z0 = torch.randn(8, generator=torch.Generator().manual_seed(0))
    for name, g in (("fmnist", gen), ("effnet", RGB(gen))):
        metric = load_metric(name)
        op = perceptual_hessian(g, metric, z0, method="ggn")
        V = torch.randn(8, 3, generator=torch.Generator().manual_seed(1))
        op.matmat(V)  # warm: the first call loads torch's forward-mode helpers
        calls = []

        def count(frame, event, arg):
            if event == "call" and frame.f_code.co_filename.endswith("_prims_common/wrappers.py") and frame.f_code.co_name == "_fn":
                calls.append(frame.f_code.co_name)

        sys.setprofile(count)
        try:
            products = op.matmat(V)
        finally:
            sys.setprofile(None)
        # each Python kernel enters two wrappers of that module
        assert len(calls) <= 2 * 2, (name, len(calls))
        reference = perceptual_hessian(g, metric, z0, method="double-backprop").matmat(V)
        assert rel(products, reference) < 1e-4  # float32 products, two routes


def test_folded_copy_follows_changes_of_the_module():
    gen = TinyConvGenerator()
    first = folded_module(gen)
    assert folded_module(gen) is first  # cached
    with torch.no_grad():
        gen.net[0].running_var.mul_(3.0)  # an in-place change of a statistic invalidates the copy
    second = folded_module(gen)
    assert second is not first
    z = torch.randn(2, 16, dtype=torch.float64)
    with torch.no_grad():
        assert rel(second(z), gen.eval()(z)) < 1e-12


def test_plain_callables_and_modules_without_batch_norm_are_returned_as_they_are():
    mlp = TinyMLPGenerator()
    assert folded_module(mlp) is mlp
    fn = lambda z: z  # noqa: E731
    assert folded_callable(fn) is fn
    metric = PixelMetric()
    assert folded_callable(metric.residual) == metric.residual


@pytest.mark.parametrize("dtype, tolerance", [(torch.float64, 1e-12), (torch.float32, 1e-6)])
def test_folded_operators_match_the_unfolded_products(dtype, tolerance):
    """H_Y and H_X built on the folded copy against the same products through the user's module."""
    gen = TinyConvGenerator(latent_dim=12).to(dtype)
    forward = nn.AvgPool2d(2)
    z0 = torch.randn(12, generator=torch.Generator().manual_seed(2), dtype=dtype)
    V = torch.randn(12, 5, generator=torch.Generator().manual_seed(3), dtype=dtype)
    with torch.no_grad():
        y0, x0 = forward(gen(z0[None])), gen(z0[None])
    unfolded_y = gauss_newton_operator(lambda z: forward(gen(z[None])) - y0, z0, modules=(gen,))
    unfolded_x = gauss_newton_operator(lambda z: PixelMetric().residual(gen(z[None]), x0), z0, modules=(gen,))
    assert rel(measurement_hessian(gen, forward, z0).matmat(V), unfolded_y.matmat(V)) < tolerance
    assert rel(perceptual_hessian(gen, PixelMetric(), z0).matmat(V), unfolded_x.matmat(V)) < tolerance
    dbp = measurement_hessian(gen, forward, z0, method="double-backprop")
    assert rel(dbp.matmat(V), unfolded_y.matmat(V)) < 10 * tolerance


@pytest.mark.parametrize("mode", ["forward", "reverse", "auto"])
def test_single_vector_jacobian_routes_agree_with_the_dense_gauss_newton(mode):
    gen = TinyConvGenerator(latent_dim=10)
    z0 = torch.randn(10, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    residual = lambda z: gen(z[None]).reshape(-1)  # noqa: E731
    J = torch.autograd.functional.jacobian(residual, z0)
    op = gauss_newton_operator(residual, z0, modules=(gen,), jvp_mode=mode)
    for v in torch.eye(10, dtype=torch.float64)[:3]:
        assert rel(op.matvec(v), J.T @ (J @ v)) < 1e-12
    assert rel(op.matmat(torch.eye(10, dtype=torch.float64)), J.T @ J) < 1e-12
    if mode == "auto":
        assert set(op.single_jvp_seconds) == {"forward", "reverse"}
    with pytest.raises(ValueError, match="jvp_mode"):
        gauss_newton_operator(residual, z0, jvp_mode="sideways")


@pytest.mark.parametrize("durations, kept", [((5.0, 2.0, 1.0), "reverse"), ((2.0, 5.0, 1.5), "forward")])
def test_auto_route_probe_times_both_routes_warm(monkeypatch, durations, kept):
    """The reverse route's graph is built before its timing, the loser runs once more (its best time counts), and the
    faster route is kept. The timer is scripted: reverse, forward, then the loser again."""
    import hvp_explore.operators.ggn as ggn_module

    gen = TinyConvGenerator(latent_dim=10)
    z0 = torch.randn(10, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    residual = lambda z: gen(z[None]).reshape(-1)  # noqa: E731
    op = gauss_newton_operator(residual, z0, modules=(gen,))
    timed = []
    build, forward = op._reverse_jvp, op._jvp
    monkeypatch.setattr(op, "_reverse_jvp", lambda v: timed.append(("reverse", op._reverse_graph is not None)) or build(v))
    monkeypatch.setattr(op, "_jvp", lambda v: timed.append(("forward", True)) or forward(v))
    script = list(durations)
    monkeypatch.setattr(ggn_module, "seconds_since", lambda t0, device: script.pop(0))
    v = torch.eye(10, dtype=torch.float64)[0]
    J = torch.autograd.functional.jacobian(residual, z0)
    assert rel(op.matvec(v), J.T @ (J @ v)) < 1e-12
    loser = "reverse" if durations[0] > durations[1] else "forward"
    # one untimed call builds the graph; then reverse, forward, and the loser once more, all warm
    assert timed == [("reverse", False), ("reverse", True), ("forward", True), (loser, True)] and not script
    other = "forward" if loser == "reverse" else "reverse"
    assert op.single_jvp_seconds == {loser: durations[2], other: durations[1] if loser == "reverse" else durations[0]}
    assert (op._reverse_graph is None) == (kept == "forward")
    assert rel(op.matvec(v), J.T @ (J @ v)) < 1e-12  # the kept route gives the same product


def test_reverse_route_of_a_residual_that_does_not_depend_on_z():
    op = gauss_newton_operator(lambda z: torch.ones(3, dtype=torch.float64), torch.zeros(4, dtype=torch.float64),
                               jvp_mode="reverse")
    assert torch.equal(op.matvec(torch.ones(4, dtype=torch.float64)), torch.zeros(4, dtype=torch.float64))


def test_jacobian_route_batches_by_the_memory_budget():
    """H_X of a conv generator with the pixel metric: m = 64 > n = 16, so the Jacobian is 16 jvp columns."""
    gen = TinyConvGenerator()
    z0 = torch.randn(16, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    op = perceptual_hessian(gen, PixelMetric(), z0)
    assert op.saved_bytes > 0 and op.per_vector_bytes() > op.saved_bytes
    J_all = op.jacobian(block_size=16)
    op.memory_budget = 5 * op.per_vector_bytes() + 1  # room for 5 vectors a batch
    assert op.memory_block() == 5
    op.reset_counters()
    J = op.jacobian()
    assert op.num_calls == 4 and op.num_matvecs == 16  # 5 + 5 + 5 + 1 columns
    assert torch.allclose(J, J_all, rtol=1e-12, atol=1e-14)
    op.reset_counters()
    op.matmat(torch.eye(16, dtype=torch.float64))  # products without a block_size are split the same way
    assert op.num_calls == 4
    result = top_eigenpairs(op, 4, solver="jacobian", tol=1e-9)
    assert result.info["passes"] == 4 and result.check_matvecs == 0 and result.all_converged  # residuals from J itself
    ref = torch.linalg.eigvalsh(J_all.T @ J_all).flip(0)[:4]
    assert torch.allclose(result.values, ref, rtol=1e-10)


def test_weights_do_not_count_as_activations():
    """A wide linear layer saves its (large) weight for backward; only the activations are per-vector memory."""
    layer = nn.Linear(16, 20_000).double()
    op = gauss_newton_operator(lambda z: torch.tanh(layer(z)), torch.zeros(16, dtype=torch.float64), modules=(layer,))
    weight_bytes = layer.weight.numel() * 8
    assert op.saved_bytes < weight_bytes / 4  # the tanh output (and input) only

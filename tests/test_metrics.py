"""Perceptual metrics: values against the lpips package and direct formulas, residual form, torch.func."""

from __future__ import annotations

import warnings
from pathlib import Path

import lpips
import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch.func import jvp, vjp, vmap

import hvp_explore.metrics.fmnist as metrics_module
from hvp_explore.io.weights import ChecksumError, sha256_file
from hvp_explore.generators.dcgan import FashionClassifier
from hvp_explore.metrics import (
    ClassifierMetric,
    LPIPSMetric,
    MetricError,
    PerceptualMetric,
    PixelMetric,
    available_metrics,
    backbone_weights_path,
    load_fmnist_classifier,
    load_metric,
)

F64 = torch.float64
# float64 throughout: the metric and the reference run the same operations, so values agree to
# rounding (~1e-16 relative); 1e-12 leaves room for different summation orders.
RTOL = 1e-12


def _images(seed: int, shape: tuple[int, ...]) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(shape, generator=g, dtype=F64) * 2 - 1)


def _reference_lpips(net: str, metric: LPIPSMetric) -> lpips.LPIPS:
    """The package's own LPIPS with the metric's (random) trunk."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = lpips.LPIPS(net=net, pnet_rand=True, verbose=False)
    ref.net.load_state_dict(metric.trunk.state_dict())
    return ref.double().eval()


@pytest.fixture(scope="module")
def lpips_squeeze() -> LPIPSMetric:
    return LPIPSMetric("squeeze", pnet_rand=True).double()


@pytest.fixture(scope="module")
def lpips_alex() -> LPIPSMetric:
    return LPIPSMetric("alex", pnet_rand=True).double()


def _random_classifier(seed: int = 0) -> FashionClassifier:
    torch.manual_seed(seed)
    return FashionClassifier().double()


@pytest.fixture(scope="module")
def fmnist_metric() -> ClassifierMetric:
    return ClassifierMetric(_random_classifier())


@pytest.fixture
def empty_hub(tmp_path, monkeypatch) -> Path:
    """A torch hub cache with nothing in it."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    assert Path(torch.hub.get_dir()) == tmp_path / "hub"
    return tmp_path / "hub" / "checkpoints"


# ---------------------------------------------------------------------------------------------
# LPIPS against the lpips package


@pytest.mark.parametrize(
    ("net", "side"),
    # vgg at 32 pixels (its deepest layer is then 2 x 2) keeps the test fast; alex and squeeze at
    # LPIPS's native 64.
    [("alex", 64), ("squeeze", 64), ("vgg", 32)],
)
def test_lpips_equals_package(net, side):
    metric = LPIPSMetric(net, pnet_rand=True, resize_to=None).double()
    ref = _reference_lpips(net, metric)
    x, x0 = _images(0, (3, 3, side, side)), _images(1, (3, 3, side, side))
    with torch.no_grad():
        expected = ref(x, x0, normalize=False).reshape(-1)
        got = metric(x, x0)
        r = metric.residual(x, x0)
        # x0 with batch 1 is broadcast.
        expected_b = ref(x, x0[:1].expand(3, -1, -1, -1), normalize=False).reshape(-1)
        got_b = metric(x, x0[:1])
    assert expected.min() > 1e-3  # a non-trivial comparison
    torch.testing.assert_close(got, expected, rtol=RTOL, atol=0)
    torch.testing.assert_close(r.pow(2).sum(1), expected, rtol=RTOL, atol=0)
    torch.testing.assert_close(got_b, expected_b, rtol=RTOL, atol=0)
    assert r.shape[0] == 3 and r.dim() == 2


def test_lpips_uses_shipped_linear_weights(lpips_alex):
    path = Path(lpips.__file__).parent / "weights" / "v0.1" / "alex.pth"
    state = torch.load(path, map_location="cpu", weights_only=True)
    for i, w in enumerate(lpips_alex.channel_weights):
        torch.testing.assert_close(w, state[f"lin{i}.model.1.weight"].reshape(-1).to(F64), rtol=0, atol=0)
    assert lpips_alex.name == "lpips-alex"
    assert not lpips_alex.training
    assert not any(p.requires_grad for p in lpips_alex.parameters())


def test_lpips_from_package_instance_is_copied():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = lpips.LPIPS(net="squeeze", pnet_rand=True, verbose=False).double()
    metric = LPIPSMetric(ref)
    x, x0 = _images(2, (2, 3, 64, 64)), _images(3, (2, 3, 64, 64))
    with torch.no_grad():
        torch.testing.assert_close(metric(x, x0), ref(x, x0).reshape(-1), rtol=RTOL, atol=0)
    assert any(p.requires_grad for p in ref.lins.parameters())  # the caller's model is untouched
    assert metric.name == "lpips-squeeze"


def test_lpips_grayscale_equals_repeated_rgb(lpips_alex):
    # 32 x 32 grayscale: exercises the channel repeat and the resize to 64 together.
    x, x0 = _images(4, (2, 1, 32, 32)), _images(5, (1, 1, 32, 32))
    gray = lpips_alex(x, x0)
    rgb = lpips_alex(x.repeat(1, 3, 1, 1), x0.repeat(1, 3, 1, 1))
    torch.testing.assert_close(gray, rgb, rtol=RTOL, atol=0)


def test_lpips_resize_is_bilinear_upsampling_to_min_side():
    metric = LPIPSMetric("squeeze", pnet_rand=True, resize_to=40).double()
    raw = LPIPSMetric("squeeze", pnet_rand=True, resize_to=None).double()
    x, x0 = _images(6, (2, 3, 20, 30)), _images(7, (2, 3, 20, 30))
    # Shorter side 20 -> 40, aspect kept: 30 -> 60.
    up = lambda t: F.interpolate(t, size=(40, 60), mode="bilinear", align_corners=False)  # noqa: E731
    torch.testing.assert_close(metric(x, x0), raw(up(x), up(x0)), rtol=RTOL, atol=0)
    # Images already large enough pass unchanged.
    big, big0 = _images(8, (1, 3, 48, 41)), _images(9, (1, 3, 48, 41))
    torch.testing.assert_close(metric(big, big0), raw(big, big0), rtol=0, atol=0)


@pytest.mark.parametrize(("net", "side"), [("alex", 31), ("squeeze", 17), ("vgg", 16)])
def test_lpips_minimum_image_side(net, side):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trunk = lpips.LPIPS(net=net, pnet_rand=True, verbose=False)
    metric = LPIPSMetric(trunk, resize_to=None)
    x = torch.zeros(1, 3, side, side)
    assert torch.isfinite(metric(x, x)).all()
    with pytest.raises(MetricError, match=f"at least {side} pixels a side"):
        metric(x[..., 1:, 1:], x[..., 1:, 1:])
    with pytest.raises(MetricError, match=f"resize_to must be None or an integer >= {side}"):
        LPIPSMetric(trunk, resize_to=side - 1)


def test_lpips_random_trunk_is_seeded_without_touching_global_rng():
    state = torch.get_rng_state()
    a = LPIPSMetric("squeeze", pnet_rand=True, seed=3)
    b = LPIPSMetric("squeeze", pnet_rand=True, seed=3)
    c = LPIPSMetric("squeeze", pnet_rand=True, seed=4)
    assert torch.equal(torch.get_rng_state(), state)
    for (ka, va), vb, vc in zip(a.trunk.state_dict().items(), b.trunk.state_dict().values(), c.trunk.state_dict().values()):
        assert torch.equal(va, vb), ka
    assert not all(torch.equal(va, vc) for va, vc in zip(a.trunk.state_dict().values(), c.trunk.state_dict().values()))


# ---------------------------------------------------------------------------------------------
# Offline behaviour of the pretrained trunks


@pytest.mark.parametrize(
    ("net", "file"),
    [("alex", "alexnet-owt-7be5be79.pth"), ("vgg", "vgg16-397923af.pth"), ("squeeze", "squeezenet1_1-b8a52dc0.pth")],
)
def test_missing_backbone_weights_message(empty_hub, net, file):
    assert backbone_weights_path(net) == empty_hub / file
    url = f"https://download.pytorch.org/models/{file}"
    expected = (
        f"LPIPS ({net}) needs the torchvision weights file {file} in {empty_hub} "
        f"(no download is attempted; copy it there from {url} or set TORCH_HOME)"
    )
    with pytest.raises(MetricError) as info:
        LPIPSMetric(net)
    assert str(info.value) == expected
    assert "\n" not in str(info.value)
    with pytest.raises(MetricError) as info:
        load_metric(f"lpips-{net}")
    assert str(info.value) == expected
    assert not empty_hub.exists() or not any(empty_hub.iterdir())  # nothing was downloaded


def test_backbone_weights_load_from_hub_cache(empty_hub):
    # A stand-in for the ImageNet file (random weights, same architecture and file name): the metric
    # must take its trunk from exactly this file.
    torch.manual_seed(5)
    fake = torchvision.models.squeezenet1_1(weights=None)
    empty_hub.mkdir(parents=True)
    torch.save(fake.state_dict(), empty_hub / "squeezenet1_1-b8a52dc0.pth")
    metric = load_metric("lpips-squeeze")
    assert isinstance(metric, LPIPSMetric) and metric.name == "lpips-squeeze"
    trunk = dict(metric.trunk.named_parameters())
    features = dict(fake.features.named_parameters())
    assert len(trunk) == len(features) > 0
    for name, p in trunk.items():
        # lpips names the trunk's modules "slice<k>.<index in features>".
        torch.testing.assert_close(p, features[name.split(".", 1)[1]], rtol=0, atol=0)
    assert not metric.training and not any(p.requires_grad for p in metric.parameters())


def test_unknown_trunk():
    with pytest.raises(MetricError, match="unknown LPIPS trunk 'resnet'; expected one of alex, vgg, squeeze"):
        LPIPSMetric("resnet", pnet_rand=True)


# ---------------------------------------------------------------------------------------------
# The classifier metric


def _classifier_reference(classifier: FashionClassifier, x: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
    """Direct formula: sum over stages of the mean of squared normalised-feature differences."""
    total = 0
    for f, f0 in zip(classifier.features(x), classifier.features(x0)):
        total = total + (lpips.normalize_tensor(f) - lpips.normalize_tensor(f0)).pow(2).mean(dim=(1, 2, 3))
    return total


def test_classifier_metric_values(fmnist_metric):
    classifier = _random_classifier()
    x, x0 = _images(10, (3, 1, 32, 32)), _images(11, (1, 1, 32, 32))
    with torch.no_grad():
        expected = _classifier_reference(classifier, x, x0)
        got = fmnist_metric(x, x0)
        r = fmnist_metric.residual(x, x0)
    assert expected.min() > 1e-3
    torch.testing.assert_close(got, expected, rtol=RTOL, atol=0)
    torch.testing.assert_close(r.pow(2).sum(1), expected, rtol=RTOL, atol=0)
    assert r.shape == (3, 32 * 32 * 32 + 64 * 16 * 16 + 128 * 8 * 8)
    for w, c in zip(fmnist_metric.channel_weights, FashionClassifier.stage_channels):
        torch.testing.assert_close(w, torch.full((c,), 1 / c, dtype=F64), rtol=0, atol=0)


def test_classifier_metric_resizes_small_images(fmnist_metric):
    classifier = _random_classifier()
    x, x0 = _images(12, (2, 1, 8, 8)), _images(13, (2, 1, 8, 8))
    up = lambda t: F.interpolate(t, size=(32, 32), mode="bilinear", align_corners=False)  # noqa: E731
    with torch.no_grad():
        torch.testing.assert_close(fmnist_metric(x, x0), _classifier_reference(classifier, up(x), up(x0)), rtol=RTOL, atol=0)


def test_classifier_metric_copies_and_freezes():
    classifier = _random_classifier().train()
    metric = ClassifierMetric(classifier)
    assert classifier.training and all(p.requires_grad for p in classifier.parameters())
    assert not metric.training and not any(p.requires_grad for p in metric.parameters())
    assert metric.weight0.dtype == F64  # follows the classifier's dtype
    with pytest.raises(MetricError, match="takes a FashionClassifier, got Linear"):
        ClassifierMetric(torch.nn.Linear(2, 2))


def test_classifier_metric_rejects_rgb(fmnist_metric):
    x = _images(14, (1, 3, 32, 32))
    with pytest.raises(MetricError, match="fmnist metric takes images with 1 channel\\(s\\), got 3"):
        fmnist_metric(x, x)


def test_dead_relu_locations_keep_derivatives_finite():
    # A last stage with a large negative bias is dead everywhere: its features are exactly zero, where
    # the plain sqrt(sum f^2) of LPIPS has an infinite derivative (and autograd gives 0 * inf = nan).
    classifier = _random_classifier(1)
    with torch.no_grad():
        classifier.stages[2][1].bias.fill_(-1e3)
    metric = ClassifierMetric(classifier)
    x, x0 = _images(15, (1, 1, 32, 32)), _images(16, (1, 1, 32, 32))
    assert all((f == 0).all() for f in classifier.features(x)[2:])
    with torch.no_grad():
        torch.testing.assert_close(metric(x, x0), _classifier_reference(classifier, x, x0), rtol=RTOL, atol=0)
    xg = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(metric(xg, x0).sum(), xg, create_graph=True)
    v = _images(17, x.shape)
    (hv,) = torch.autograd.grad((grad * v).sum(), xg)
    _, jv = jvp(lambda t: metric.residual(t, x0), (x,), (v,))
    assert torch.isfinite(grad).all() and torch.isfinite(hv).all() and torch.isfinite(jv).all()
    assert grad.abs().max() > 0


# ---------------------------------------------------------------------------------------------
# Properties shared by all metrics


@pytest.fixture(params=["lpips-squeeze", "fmnist", "pixel"])
def any_metric(request, lpips_squeeze, fmnist_metric) -> PerceptualMetric:
    return {"lpips-squeeze": lpips_squeeze, "fmnist": fmnist_metric, "pixel": PixelMetric()}[request.param]


def test_distance_to_itself_is_zero(any_metric):
    x = _images(20, (2, 1, 32, 32))
    assert torch.equal(any_metric(x, x), torch.zeros(2, dtype=F64))
    assert torch.equal(any_metric.residual(x, x), torch.zeros_like(any_metric.residual(x, x)))


def test_symmetry(any_metric):
    x, x0 = _images(21, (3, 1, 32, 32)), _images(22, (1, 1, 32, 32))
    d = any_metric(x, x0)
    assert d.shape == (3,) and (d > 0).all()
    torch.testing.assert_close(any_metric(x0, x), d, rtol=0, atol=0)


def test_residual_at_a_fixed_reference_is_the_residual(any_metric, monkeypatch):
    """residual_at(x0) gives bit-identical residuals and computes x0's features once, not per call."""
    x, x0 = _images(27, (3, 1, 32, 32)), _images(28, (1, 1, 32, 32))
    at = any_metric.residual_at(x0)
    assert torch.equal(at(x), any_metric.residual(x, x0))
    if hasattr(any_metric, "_features"):
        calls = []
        original = any_metric._features
        monkeypatch.setattr(any_metric, "_features", lambda t: calls.append(t.shape[0]) or original(t))
        at(x), at(x[:1])
        assert calls == [3, 1]  # only the images compared, never the reference again
    # the two-argument form stays differentiable in both images (residual_at treats x0 as a constant)
    x0g = x0.clone().requires_grad_(True)
    (g0,) = torch.autograd.grad(any_metric.residual(x, x0g).pow(2).sum(), x0g)
    assert g0.abs().max() > 0


def test_residual_jvp_under_vmap(any_metric):
    """vmap of jvp = a loop of single jvps = central finite differences; vmap of vjp is the adjoint."""
    x, x0 = _images(23, (1, 1, 20, 20)), _images(24, (1, 1, 20, 20))
    x = x0 + 0.3 * (x - x0)
    V = _images(25, (4, 1, 1, 20, 20))
    f = lambda t: any_metric.residual(t, x0)  # noqa: E731
    batched = vmap(lambda v: jvp(f, (x,), (v,))[1])(V)
    looped = torch.stack([jvp(f, (x,), (v,))[1] for v in V])
    # Same operations per vector; only the batched kernels' summation order differs.
    torch.testing.assert_close(batched, looped, rtol=1e-10, atol=1e-14)
    # Central differences in float64: truncation O(h^2) ~ 1e-12, rounding ~ 1e-16 / h ~ 1e-10. The
    # trunks are piecewise linear (ReLU, max-pool), and h must be small enough not to cross a kink
    # for any of the ~10^5 residual entries: h = 1e-5 already crosses a few with the random squeeze
    # trunk, h = 1e-6 crosses none.
    h = 1e-6
    fd = torch.stack([(f(x + h * v) - f(x - h * v)) / (2 * h) for v in V])
    torch.testing.assert_close(batched, fd, rtol=1e-6, atol=1e-8 * batched.abs().max().item())
    _, pull = vjp(f, x)
    U = torch.randn(batched.shape, generator=torch.Generator().manual_seed(26), dtype=F64)
    JtU = vmap(lambda u: pull(u)[0])(U)
    lhs = (U * batched).flatten(1).sum(1)
    rhs = (JtU * V).flatten(1).sum(1)
    torch.testing.assert_close(lhs, rhs, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", ["lpips-squeeze", "fmnist", "pixel"])
def test_gauss_newton_identity_at_reference(name, lpips_squeeze, fmnist_metric):
    """At x = x0, 1/2 Hess_x d (double backprop) = J^T J (jvp + vjp); elsewhere they differ."""
    metric = {"lpips-squeeze": lpips_squeeze, "fmnist": fmnist_metric, "pixel": PixelMetric()}[name]
    x0 = _images(30, (1, 1, 20, 20))
    V = _images(31, (3, 1, 1, 20, 20))

    def hvp_double_backprop(x, v):
        xg = x.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(metric(xg, x0).sum(), xg, create_graph=True)
        (hv,) = torch.autograd.grad((grad * v).sum(), xg)
        return hv

    def ggn(x, v):
        f = lambda t: metric.residual(t, x0)  # noqa: E731
        _, jv = jvp(f, (x,), (v,))
        _, pull = vjp(f, x)
        return pull(jv)[0]

    for v in V:
        half_hess = hvp_double_backprop(x0, v) / 2
        gn = ggn(x0, v)
        assert gn.abs().max() > 0
        torch.testing.assert_close(half_hess, gn, rtol=1e-9, atol=1e-12 * gn.abs().max().item())
    if name != "pixel":  # a quadratic has no second-order term anywhere
        x = x0 + 0.5 * _images(32, x0.shape)
        v = V[0]
        gap = (hvp_double_backprop(x, v) / 2 - ggn(x, v)).norm() / ggn(x, v).norm()
        assert gap > 1e-3


# ---------------------------------------------------------------------------------------------
# Pixel metric, checks, registry


def test_pixel_metric_values():
    x, x0 = _images(40, (2, 3, 5, 7)), _images(41, (1, 3, 5, 7))
    metric = PixelMetric()
    torch.testing.assert_close(metric(x, x0), (x - x0).pow(2).mean(dim=(1, 2, 3)), rtol=RTOL, atol=0)
    assert metric.residual(x, x0).shape == (2, 105)


def test_input_checks(fmnist_metric):
    x = _images(42, (2, 1, 32, 32))
    with pytest.raises(MetricError, match=r"x must be a 4-d image tensor \(B, C, H, W\), got \(1, 32, 32\)"):
        fmnist_metric(x[0], x)
    with pytest.raises(MetricError, match="expected the same \\(C, H, W\\) and batch sizes that are equal or 1"):
        fmnist_metric(x, x[:, :, :16])
    with pytest.raises(MetricError, match="expected the same"):
        PixelMetric()(x, torch.cat([x, x, x]))
    dtype_message = r"holds torch.float64 weights but got torch.float32 images; .*metric.to\(torch.float32\)"
    with pytest.raises(MetricError, match=dtype_message):
        fmnist_metric(x.float(), x.float())


def test_available_metrics_and_unknown_name():
    assert available_metrics() == ("default", "fmnist", "effnet", "lpips-alex", "lpips-vgg", "lpips-squeeze", "pixel")
    with pytest.raises(MetricError) as info:
        load_metric("ssim")
    names = "default, fmnist, effnet, lpips-alex, lpips-vgg, lpips-squeeze, pixel"
    assert str(info.value) == f"unknown metric 'ssim'; expected one of {names}"
    assert isinstance(load_metric("pixel"), PixelMetric)


# ---------------------------------------------------------------------------------------------
# Shipped classifier weights and their checksum


@pytest.fixture
def classifier_file(tmp_path) -> tuple[Path, str, FashionClassifier]:
    model = FashionClassifier()
    path = tmp_path / "fmnist-classifier.pt"
    torch.save(model.state_dict(), path)
    return path, sha256_file(path), model


def test_load_classifier_with_checksum(classifier_file):
    path, sha, model = classifier_file
    loaded = load_fmnist_classifier(path, sha256=sha)
    assert not loaded.training
    for (k, a), b in zip(model.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), k
    with pytest.raises(ChecksumError, match="corrupted or modified"):
        load_fmnist_classifier(path, sha256="0" * 64)


def test_load_classifier_errors(tmp_path):
    with pytest.raises(MetricError) as info:
        load_fmnist_classifier(tmp_path / "fmnist-classifier.pt")
    assert str(info.value) == (
        f"the fmnist metric needs the classifier weights fmnist-classifier.pt in {tmp_path}, which is missing "
        "(rebuild it with the training command in docs/model-card.md, or choose another --metric)"
    )
    other = tmp_path / "other.pt"
    torch.save({"weight": torch.zeros(3)}, other)
    with pytest.raises(MetricError, match="does not hold FashionClassifier weights: Error"):
        load_fmnist_classifier(other)


def test_default_metric_loads_shipped_classifier(classifier_file, monkeypatch):
    path, sha, model = classifier_file
    monkeypatch.setattr(metrics_module, "asset_path", lambda name: path.parent / name)
    monkeypatch.setattr(metrics_module, "FMNIST_CLASSIFIER_SHA256", sha)
    metric = load_metric("default")
    assert isinstance(metric, ClassifierMetric) and metric.name == "fmnist"
    assert not metric.training and not any(p.requires_grad for p in metric.parameters())
    torch.testing.assert_close(metric.classifier.stages[0][0].weight, model.stages[0][0].weight, rtol=0, atol=0)
    x, x0 = _images(50, (2, 1, 32, 32)).float(), _images(51, (1, 1, 32, 32)).float()
    with torch.no_grad():
        torch.testing.assert_close(metric(x, x0), _classifier_reference(model.eval(), x, x0), rtol=1e-5, atol=0)  # float32

    monkeypatch.setattr(metrics_module, "FMNIST_CLASSIFIER_SHA256", "f" * 64)
    with pytest.raises(ChecksumError):
        load_metric("fmnist")
    monkeypatch.setattr(metrics_module, "FMNIST_CLASSIFIER_SHA256", None)
    with pytest.raises(MetricError, match="no sha256 is recorded for the shipped fmnist-classifier.pt"):
        load_metric("fmnist")


def test_default_metric_missing_shipped_file(tmp_path, monkeypatch):
    monkeypatch.setattr(metrics_module, "asset_path", lambda name: tmp_path / name)
    with pytest.raises(MetricError, match="needs the classifier weights fmnist-classifier.pt in"):
        load_metric("default")

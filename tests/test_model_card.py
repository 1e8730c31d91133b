"""The model card's measurements: the Frechet distance against closed forms, and the judge's layer."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from hvp_explore.generators.dcgan import FashionClassifier

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "model_card.py"


@pytest.fixture(scope="module")
def card():
    spec = importlib.util.spec_from_file_location("model_card", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["model_card"] = module  # dataclasses look their module up while the file executes
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop("model_card", None)


def random_spd(d: int, rng: np.random.Generator, rank: int | None = None) -> np.ndarray:
    A = rng.standard_normal((d, rank or d))
    return A @ A.T / d + (0 if rank else 0.1 * np.eye(d))


# Tolerances: every closed form below is evaluated in float64 on matrices with entries O(1) and
# d <= 40; sqrtm's Schur-based root is accurate to ~1e-13 relative there, so 1e-9 leaves wide room.
RTOL = 1e-9


def test_identical_gaussians_are_at_distance_zero(card):
    rng = np.random.default_rng(0)
    mu, S = rng.standard_normal(30), random_spd(30, rng)
    d = card.frechet_distance_details(mu, S, mu, S)
    assert abs(d.distance) < RTOL * np.trace(S)
    assert d.mean_term == 0.0 and d.offset == 0.0


def test_identity_covariances_give_the_squared_mean_distance(card):
    rng = np.random.default_rng(1)
    m1, m2, eye = rng.standard_normal(25), rng.standard_normal(25), np.eye(25)
    assert card.frechet_distance(m1, eye, m2, eye) == pytest.approx(float(np.sum((m1 - m2) ** 2)), rel=RTOL)


def test_diagonal_covariances_match_the_one_dimensional_formula_summed(card):
    # W2^2(N(a, s^2), N(b, t^2)) = (a - b)^2 + (s - t)^2 per coordinate
    rng = np.random.default_rng(2)
    m1, m2 = rng.standard_normal(40), rng.standard_normal(40)
    v1, v2 = rng.uniform(0.1, 3.0, 40), rng.uniform(0.1, 3.0, 40)
    expected = float(np.sum((m1 - m2) ** 2 + (np.sqrt(v1) - np.sqrt(v2)) ** 2))
    assert card.frechet_distance(m1, np.diag(v1), m2, np.diag(v2)) == pytest.approx(expected, rel=RTOL)


def test_non_commuting_2x2_covariances_match_the_closed_form(card):
    # For a 2x2 matrix M with non-negative eigenvalues, tr M^{1/2} = sqrt(tr M + 2 sqrt(det M)).
    S1 = np.array([[2.0, 0.7], [0.7, 1.0]])
    S2 = np.array([[0.5, -0.3], [-0.3, 1.5]])
    assert not np.allclose(S1 @ S2, S2 @ S1)
    M = S1 @ S2
    tr_root = np.sqrt(np.trace(M) + 2 * np.sqrt(np.linalg.det(M)))
    mu1, mu2 = np.array([1.0, -2.0]), np.array([0.5, 0.0])
    expected = float(np.sum((mu1 - mu2) ** 2) + np.trace(S1) + np.trace(S2) - 2 * tr_root)
    assert card.frechet_distance(mu1, S1, mu2, S2) == pytest.approx(expected, rel=RTOL)
    assert card.trace_sqrt_product(S1, S2) == pytest.approx(tr_root, rel=RTOL)


def test_sqrtm_and_eigh_traces_agree_on_full_and_singular_covariances(card):
    rng = np.random.default_rng(3)
    S1, S2 = random_spd(30, rng), random_spd(30, rng)
    d = card.frechet_distance_details(np.zeros(30), S1, np.zeros(30), S2)
    assert d.trace_term == pytest.approx(np.trace(S1) + np.trace(S2) - 2 * card.trace_sqrt_product(S1, S2), rel=RTOL)
    assert d.max_imag <= 1e-10 and not d.singular
    # Rank 10 of 30, as covariances of features with dead units are: the square roots of the
    # round-off eigenvalues (~1e-16) of S1 S2 are ~1e-8, so sqrtm's result carries imaginary parts
    # and trace errors of that size (measured: 1.5e-8 and 9e-9 relative); 1e-6 bounds them.
    R1, R2 = random_spd(30, rng, rank=10), random_spd(30, rng, rank=10)
    d = card.frechet_distance_details(np.zeros(30), R1, np.zeros(30), R2)
    expected = np.trace(R1) + np.trace(R2) - 2 * card.trace_sqrt_product(R1, R2)
    assert d.trace_term == pytest.approx(expected, rel=1e-6)
    assert d.relative_imag < 1e-6


def test_gaussian_stats_are_the_mean_and_unbiased_covariance(card):
    rng = np.random.default_rng(4)
    X = rng.standard_normal((50, 6))
    mu, S = card.gaussian_stats(X)
    Xc = X - X.mean(0)
    np.testing.assert_allclose(mu, X.sum(0) / 50, rtol=1e-13)
    np.testing.assert_allclose(S, Xc.T @ Xc / 49, rtol=1e-12)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((np.zeros(3), np.eye(3), np.zeros(2), np.eye(2)), "same dimension"),
        ((np.zeros(3), np.eye(2), np.zeros(3), np.eye(3)), r"S1 must be a \(3, 3\) covariance"),
        ((np.zeros(2), np.array([[1.0, 0.5], [0.0, 1.0]]), np.zeros(2), np.eye(2)), "S1 must be a symmetric"),
        ((np.zeros(2), np.eye(2), np.array([np.nan, 0.0]), np.eye(2)), "must be finite"),
    ],
)
def test_frechet_distance_rejects_malformed_gaussians(card, args, message):
    with pytest.raises(ValueError, match=message):
        card.frechet_distance(*args)


def test_judge_features_are_the_input_of_the_final_linear_layer(card):
    torch.manual_seed(0)
    classifier = FashionClassifier().eval()
    x = torch.rand(7, 1, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    feats, probs = card.judge(classifier, x, batch_size=3)  # batches of 3, 3, 1
    assert feats.shape == (7, 2048) and feats.dtype == np.float64
    with torch.no_grad():
        # the linear layer applied to the features reproduces the network's logits
        logits = classifier.head[-1](torch.from_numpy(feats).float())
        np.testing.assert_allclose(logits.numpy(), classifier(x).numpy(), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(probs, torch.softmax(classifier(x).double(), 1).numpy(), rtol=1e-5, atol=1e-7)
    # a classifier in train mode is judged in eval mode (no dropout) and handed back in train mode
    classifier.train()
    again, _ = card.judge(classifier, x, batch_size=3)
    assert classifier.training
    np.testing.assert_array_equal(again, feats)


def test_class_summary_of_a_known_histogram(card):
    probs = np.zeros((10, 10))
    probs[np.arange(10), [0, 0, 0, 0, 0, 1, 1, 1, 1, 1]] = 1.0  # half class 0, half class 1, all certain
    s = card.class_summary(probs)
    assert s["counts"] == [5, 5, 0, 0, 0, 0, 0, 0, 0, 0]
    assert s["mean_confidence"] == 1.0 and s["fraction_confident_0.9"] == 1.0
    assert s["entropy_over_ln10"] == pytest.approx(np.log(2) / np.log(10), rel=1e-12)
    assert s["tv_from_uniform"] == pytest.approx(0.8, rel=1e-12)  # 2 x (0.5 - 0.1) / 2 + 8 x 0.1 / 2

"""Training of the embedded default: reproducible for a seed, and the loops do what they claim."""

from __future__ import annotations

import torch

from hvp_explore.training import recalibrate_batchnorm, train_classifier, train_gan


def synthetic_images(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 32, 32, generator=g) * 2 - 1


def test_gan_training_is_reproducible_for_a_seed():
    images = synthetic_images()
    a = train_gan(epochs=1, batch_size=16, images=images, seed=3, quiet=True)
    b = train_gan(epochs=1, batch_size=16, images=images, seed=3, quiet=True)
    c = train_gan(epochs=1, batch_size=16, images=images, seed=4, quiet=True)
    sa, sb, sc = a.model.state_dict(), b.model.state_dict(), c.model.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)
    assert len(a.history) == 1 and a.history[0]["loss_d"] > 0 and not a.model.training


def test_batchnorm_recalibration_matches_batch_statistics():
    images = synthetic_images()
    G = train_gan(epochs=1, batch_size=16, images=images, seed=0, quiet=True).model
    recalibrate_batchnorm(G, batches=4, batch_size=64, seed=1)
    bn = G.net[0]
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        h = torch.cat([G.fc(torch.randn(64, G.latent_dim, generator=g)) for _ in range(4)]).view(-1, G.width, 4, 4)
    # cumulative averaging of 4 equal-size batches: the mean of the batch means
    assert torch.allclose(bn.running_mean, h.mean(dim=(0, 2, 3)), atol=1e-5)


def test_classifier_learns_a_separable_problem():
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 10, (512,), generator=g)
    images = -torch.ones(512, 1, 32, 32)
    for c in range(10):  # class c lights up row block c: trivially separable
        images[labels == c, :, 3 * c : 3 * c + 3, :] = 1.0
    result = train_classifier(epochs=3, batch_size=32, lr=3e-3, data=(images, labels, images, labels), seed=0, quiet=True)
    assert result.history[-1]["test_accuracy"] > 0.95

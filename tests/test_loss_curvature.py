"""Parameter-space curvature (loss_hessian, loss_ggn) against dense float64 references.

References are built on the concatenated data set with ``torch.func``: the Hessian by
``torch.func.hessian`` of the whole data set's loss as a function of the flat parameters, the GGN as
``J^T H_f J`` from the full Jacobian of the outputs and the dense Hessian of the loss in output space.
Everything is float64, so products agree with the references to rounding (1e-10 relative).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.func import functional_call, hessian, jacrev

from hvp_explore import NonFiniteError, loss_ggn, loss_hessian, top_eigenpairs

RTOL = 1e-10


def rel(a, b):
    return float((a - b).detach().norm() / b.detach().norm())


class SmallNet(nn.Module):
    """A conv net with batch norm and dropout (in train mode when built, as a researcher's model often is)."""

    def __init__(self, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.conv = nn.Conv2d(1, 2, 3)
        self.bn = nn.BatchNorm2d(2)
        self.drop = nn.Dropout(0.5)
        self.fc = nn.Linear(2 * 4 * 4, 3)
        self.bn.running_mean.uniform_(-0.3, 0.3)
        self.bn.running_var.uniform_(0.5, 1.5)
        self.double().train()

    def forward(self, x):
        return self.fc(self.drop(torch.tanh(self.bn(self.conv(x)))).flatten(1))


def make_data(seed=1, sizes=(5, 7, 4)):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(sum(sizes), 1, 6, 6, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (sum(sizes),), generator=g)
    return list(zip(X.split(list(sizes)), y.split(list(sizes)))), X, y


def flat_params(model, params=None):
    named = dict(model.named_parameters())
    params = list(named.values()) if params is None else params
    names = [n for p in params for n, q in named.items() if q is p]
    theta = torch.cat([p.detach().reshape(-1) for p in params])
    sizes, shapes = [p.numel() for p in params], [p.shape for p in params]

    def unflatten(t):
        return {n: part.reshape(s) for n, part, s in zip(names, t.split(sizes), shapes)}

    return theta, unflatten


def dense_loss_hessian(model, loss, X, y, params=None):
    theta, unflatten = flat_params(model, params)
    model.eval()
    try:
        return hessian(lambda t: loss(functional_call(model, unflatten(t), (X,)), y))(theta)
    finally:
        model.train()


def dense_ggn(model, loss, X, y):
    theta, unflatten = flat_params(model)
    model.eval()
    try:
        f0 = model(X).detach()
        J = jacrev(lambda t: functional_call(model, unflatten(t), (X,)).reshape(-1))(theta)
        H_f = hessian(lambda f: loss(f.reshape(f0.shape), y))(f0.reshape(-1))
    finally:
        model.train()
    return J.T @ H_f @ J


@pytest.fixture
def problem():
    model = SmallNet()
    data, X, y = make_data()
    return model, data, X, y


def test_loss_hessian_is_the_dense_hessian_of_the_mean_loss(problem):
    model, data, X, y = problem
    loss = nn.CrossEntropyLoss()
    H = loss_hessian(model, loss, data)
    ref = dense_loss_hessian(model, loss, X, y)  # one batch of all 16 examples: batches weighted by their sizes
    assert H.shape == ref.shape == (sum(p.numel() for p in model.parameters()),) * 2
    assert rel(H.dense(), ref) < RTOL
    assert H.num_examples == 16 and H.batch_weights == pytest.approx([5 / 16, 7 / 16, 4 / 16])
    assert float(torch.linalg.eigvalsh(ref)[0]) < 0 < float(torch.linalg.eigvalsh(ref)[-1])  # indefinite: a real test
    assert H.loss() == pytest.approx(float(_eval_loss(model, loss, X, y)), rel=1e-12)


def _eval_loss(model, loss, X, y):
    model.eval()
    try:
        with torch.no_grad():
            return loss(model(X), y)
    finally:
        model.train()


def test_sum_reduction_weights_batches_by_one(problem):
    model, data, X, y = problem
    loss = nn.CrossEntropyLoss(reduction="sum")
    H = loss_hessian(model, loss, data)
    assert H.batch_weights == [1.0, 1.0, 1.0]
    assert rel(H.dense(), dense_loss_hessian(model, loss, X, y)) < RTOL


def test_loss_ggn_is_jt_hf_j(problem):
    model, data, X, y = problem
    loss = nn.CrossEntropyLoss()
    G = loss_ggn(model, loss, data)
    ref = dense_ggn(model, loss, X, y)
    assert rel(G.dense(), ref) < RTOL
    w = torch.linalg.eigvalsh(ref)
    assert float(w[0]) > -1e-12 * float(w[-1])  # convex loss: PSD


def test_ggn_equals_the_hessian_for_a_linear_model_with_mse():
    torch.manual_seed(0)
    model = nn.Linear(4, 3).double()
    g = torch.Generator().manual_seed(2)
    X, Y = torch.randn(10, 4, generator=g, dtype=torch.float64), torch.randn(10, 3, generator=g, dtype=torch.float64)
    data = [(X[:6], Y[:6]), (X[6:], Y[6:])]
    H, G = loss_hessian(model, nn.MSELoss(), data), loss_ggn(model, nn.MSELoss(), data)
    # MSE(mean) over N x 3 outputs: Hessian 2 / (3N) (I_3 kron X~^T X~), X~ = [X, 1]
    Xt = torch.cat([X, torch.ones(10, 1, dtype=torch.float64)], 1)
    A = 2 / 30 * Xt.T @ Xt  # per output unit, on (weight row, bias)
    ref = torch.zeros(15, 15, dtype=torch.float64)
    for c in range(3):  # flat order: weight (3 x 4) row-major, then bias (3)
        idx = [c * 4 + j for j in range(4)] + [12 + c]
        ref[np.ix_(idx, idx)] = A
    assert rel(H.dense(), ref) < RTOL and rel(G.dense(), ref) < RTOL


def test_a_subset_of_parameters_is_the_submatrix(problem):
    model, data, X, y = problem
    loss = nn.CrossEntropyLoss()
    params = [model.fc.weight, model.conv.bias]
    H = loss_hessian(model, loss, data, params)
    ref = dense_loss_hessian(model, loss, X, y, params)
    full = dense_loss_hessian(model, loss, X, y)
    offsets = {}
    start = 0
    for name, p in model.named_parameters():
        offsets[name] = range(start, start + p.numel())
        start += p.numel()
    idx = list(offsets["fc.weight"]) + list(offsets["conv.bias"])
    assert H.shape == (len(idx), len(idx)) and H.names == ["fc.weight", "conv.bias"]
    assert rel(H.dense(), ref) < RTOL and rel(ref, full[np.ix_(idx, idx)]) < RTOL


def test_vectors_to_and_from_parameter_shaped_lists(problem):
    model, data, _, _ = problem
    H = loss_hessian(model, nn.CrossEntropyLoss(), data, [model.fc.weight, model.fc.bias])
    v = torch.arange(H.shape[0], dtype=torch.float64)
    parts = H.to_params(v)
    assert [p.shape for p in parts] == [model.fc.weight.shape, model.fc.bias.shape]
    assert torch.equal(parts[0].reshape(-1), v[: model.fc.weight.numel()]) and torch.equal(H.from_params(parts), v)
    block = H.to_params(torch.stack([v, 2 * v], 1))
    assert block[1].shape == (*model.fc.bias.shape, 2) and torch.equal(block[1][:, 1], 2 * parts[1])
    with pytest.raises(ValueError, match="from_params expects tensors shaped"):
        H.from_params(parts[::-1])
    with pytest.raises(ValueError, match="to_params expects shape"):
        H.to_params(v[:-1])


def test_modes_restored_eval_during_products_and_deterministic(problem):
    """Dropout in train mode would make products random: they run in eval mode, and the user's modes come back."""
    model, data, X, y = problem
    H = loss_hessian(model, nn.CrossEntropyLoss(), data)
    assert H.check_deterministic(num_vectors=3) == 0.0
    assert model.training and model.drop.training and all(p.requires_grad for p in model.parameters())
    assert all(p.grad is None for p in model.parameters())
    before = [p.detach().clone() for p in model.parameters()], model.bn.running_mean.clone()
    H.dense()
    assert all(torch.equal(a, p) for a, p in zip(before[0], model.parameters()))
    assert torch.equal(before[1], model.bn.running_mean)  # eval mode: batch statistics never updated


def test_operator_contract_holds(problem):
    """Blocks split by block_size, counters, scipy, the algebra and the eigensolvers, against the dense matrices."""
    model, data, X, y = problem
    loss = nn.CrossEntropyLoss()
    H, G = loss_hessian(model, loss, data), loss_ggn(model, loss, data, block_size=3)
    Hd, Gd = dense_loss_hessian(model, loss, X, y), dense_ggn(model, loss, X, y)
    n = H.shape[0]
    V = torch.randn(n, 7, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    G.reset_counters()
    assert rel(G.matmat(V), Gd @ V) < RTOL and (G.num_matvecs, G.num_calls) == (7, 3)
    assert rel(torch.from_numpy(H.to_scipy().matmat(V.numpy())), Hd @ V) < RTOL
    assert rel((H - 0.5 * G).matmat(V), (Hd - 0.5 * Gd) @ V) < RTOL
    both = top_eigenpairs(H, 4, which="both", solver="block-krylov", tol=1e-9)
    w = torch.linalg.eigvalsh(Hd)
    assert torch.allclose(both.values, torch.cat([w.flip(0)[:2], w[:2].flip(0)]), atol=1e-8 * float(w.abs().max()))
    assert H.memory_block() >= 1 and H.saved_bytes > 0
    # quadratic forms: the GGN's take the forward-mode product and the output-space form only
    assert rel(G.quadratic_forms(V), (V * (Gd @ V)).sum(0)) < RTOL and rel(H.quadratic_forms(V), (V * (Hd @ V)).sum(0)) < RTOL
    assert rel(G.quadratic_forms(V[:, :1]), (V[:, :1] * (Gd @ V[:, :1])).sum(0)) < RTOL


def test_a_non_finite_loss_is_named():
    model = nn.Linear(2, 1).double()
    X = torch.tensor([[1.0, float("nan")]], dtype=torch.float64)
    H = loss_hessian(model, nn.MSELoss(), [(X, torch.zeros(1, 1, dtype=torch.float64))])
    with pytest.raises(NonFiniteError, match="loss Hessian"):
        H.matvec(torch.ones(3, dtype=torch.float64))


def test_an_iterator_is_read_once_and_kept(problem):
    model, data, X, y = problem
    H = loss_hessian(model, nn.CrossEntropyLoss(), iter(data))
    assert rel(H.dense(), dense_loss_hessian(model, nn.CrossEntropyLoss(), X, y)) < RTOL  # n products, same batches


def test_bad_arguments_are_one_line_errors(problem):
    model, data, _, _ = problem
    loss = nn.CrossEntropyLoss()
    cases = [
        (lambda: loss_hessian(lambda x: x, loss, data), "model must be a torch.nn.Module"),
        (lambda: loss_hessian(model, loss, data, [torch.zeros(3)]), r"params\[0\] .* is not a parameter of the model"),
        (lambda: loss_hessian(model, loss, data, [model.fc.bias, model.fc.bias]), "lists a parameter twice"),
        (lambda: loss_hessian(model, nn.CrossEntropyLoss(reduction="none"), data), "reduction must be 'mean' or 'sum'"),
        (lambda: loss_hessian(model, loss, []), "data holds no examples"),
        (lambda: loss_hessian(model, loss, [torch.zeros(2)]), r"data\[0\] must be an \(inputs, targets\) pair"),
        (lambda: loss_ggn(model, "mse", data), "loss_function must be callable"),
    ]
    for make, message in cases:
        with pytest.raises(ValueError, match=message):
            make()


def test_exact_ggn_diagonal_and_trace(problem):
    """The per-example diagonal equals the dense GGN's (mean and sum reductions, MSE too)."""
    model, data, X, y = problem
    for loss in (nn.CrossEntropyLoss(), nn.CrossEntropyLoss(reduction="sum")):
        G = loss_ggn(model, loss, data)
        ref = dense_ggn(model, loss, X, y)
        assert torch.allclose(G.diagonal(), ref.diagonal(), rtol=1e-10, atol=1e-14)
        assert G.trace() == pytest.approx(float(ref.trace()), rel=1e-10)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()
    g = torch.Generator().manual_seed(5)
    Xr, Yr = torch.randn(9, 3, generator=g, dtype=torch.float64), torch.randn(9, 2, generator=g, dtype=torch.float64)
    G = loss_ggn(net, nn.MSELoss(), [(Xr[:4], Yr[:4]), (Xr[4:], Yr[4:])], block_size=1)
    assert torch.allclose(G.diagonal(), dense_ggn(net, nn.MSELoss(), Xr, Yr).diagonal(), rtol=1e-10, atol=1e-14)


def test_exact_diagonal_refuses_a_loss_that_is_not_per_example(problem):
    model, data, _, _ = problem

    def batch_max_loss(outputs, targets):  # the worst example's loss: not a mean of per-example losses
        return nn.functional.cross_entropy(outputs, targets, reduction="none").max()

    with pytest.raises(ValueError, match="mean \\(or sum\\) of per-example losses"):
        loss_ggn(model, batch_max_loss, data).diagonal()


def test_the_ggn_as_control_variate_of_the_hessian_trace(problem):
    """tr H = tr G + tr(H - G): unbiased, its 95% intervals cover the dense trace (at this untrained point H is far from
    G: the budget, not the tolerance, ends most runs; benchmarks/curvature.py measures the gain near a minimum)."""
    from hvp_explore import estimate_trace

    model, data, X, y = problem
    loss = nn.CrossEntropyLoss()
    H, G = loss_hessian(model, loss, data), loss_ggn(model, loss, data)
    true = float(dense_loss_hessian(model, loss, X, y).trace())
    # 100 seeds: P(at most 89 of 100 intervals cover | 95% each) = 1.1%
    runs = [estimate_trace(H, control=G, method="hutchinson", rtol=0.05, max_matvecs=200, seed=s, diagonal=True)
            for s in range(100)]
    assert sum(r.contains(true) for r in runs) >= 90
    assert all(r.control_part == pytest.approx(G.trace()) for r in runs)
    assert all(float(r.diagonal.sum()) == pytest.approx(r.estimate, rel=1e-9) for r in runs)
    with pytest.raises(ValueError, match="control must have an exact diagonal"):
        estimate_trace(H, control=H)

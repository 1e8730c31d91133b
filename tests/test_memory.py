"""Memory budgets: sizes parse, measured peaks grow with the block, and fitted blocks respect the budget."""

from __future__ import annotations

import pytest
import torch

from hvp_explore import gauss_newton_operator
from hvp_explore.operators.memory import fit_block_size, measure_peak_bytes, parse_size, product_memory


def test_parse_size():
    assert parse_size("512MB") == 512 * 2**20
    assert parse_size("1.5GiB") == int(1.5 * 2**30)
    assert parse_size("4g") == 4 * 2**30
    assert parse_size("2097152") == 2 * 2**20
    for bad in ("lots", "5 parsecs", "-1GB", "100KB"):
        with pytest.raises(ValueError):
            parse_size(bad)


def test_measured_peak_of_a_known_allocation():
    n = 1 << 20  # 4 MiB of float32

    def allocate():
        a = torch.ones(n)
        b = a * 2  # two live tensors at once: 8 MiB
        return float(b[0])

    peak = measure_peak_bytes(allocate)
    assert 8 * 2**20 <= peak <= 9 * 2**20


def wide_operator():
    # r(z) = tanh(W z) with a long residual: each product's tangent and cotangent are m floats
    W = torch.randn(200_000, 16, generator=torch.Generator().manual_seed(0))
    return gauss_newton_operator(lambda z: torch.tanh(W @ z), torch.zeros(16))


def test_peak_grows_linearly_and_fit_respects_the_budget():
    op = wide_operator()
    mem = product_memory(op, probes=(2, 8))
    # every vector carries at least its m-long tangent (0.8 MB in float32)
    assert mem.per_vector >= 200_000 * 4
    budget = mem.peak(5) + mem.per_vector // 2
    block = fit_block_size(op, budget)
    assert block == 5
    V = torch.randn(16, 12)
    op.reset_counters()
    peak = measure_peak_bytes(lambda: op.matmat(V))
    assert op.num_calls == 3  # 5 + 5 + 2
    assert peak <= budget * 1.1  # within 10% of the prediction
    with pytest.raises(MemoryError, match="one product needs"):
        fit_block_size(op, mem.peak(1) // 2)


def test_cpu_batch_size_follows_the_image_size():
    from hvp_explore.operators.memory import CPU_BATCH_ELEMENTS, batch_limit, cpu_batch_size

    assert cpu_batch_size(32 * 32) == 256  # the embedded default: capped at `largest`
    assert cpu_batch_size(3 * 128 * 128) == 5  # BigGAN-deep-128: measured best at 4-5 on this CPU
    assert cpu_batch_size(CPU_BATCH_ELEMENTS * 4) == 1 and cpu_batch_size(1000, largest=7) == 7
    assert batch_limit(torch.zeros(1, 3, 128, 128)) == 5 == batch_limit(torch.zeros(3, 128, 128))
    with pytest.raises(ValueError, match="positive integer"):
        cpu_batch_size(0)

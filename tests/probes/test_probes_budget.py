"""eNTK under a memory budget: the chunk it picks gives the unchunked kernel, or a clear error."""

import numpy as np
import pytest
import torch
from probes_testlib import SEEDS, gen, mlp

import widthscan as ws
import widthscan.probes as probes
from widthscan.probes import ntk
from widthscan.probes.budget import GIB, MemoryBudgetError, chunk_for


def test_budget_of_two_examples_gives_the_unchunked_kernel(monkeypatch):
    x = torch.randn(7, 4, generator=gen(2), dtype=torch.float64)
    ens = ws.Ensemble(mlp, 8, 4, "mup", "sgd", SEEDS, precision="float64")
    whole = probes.entk(ens, x, method="jacobian")["entk"].values
    n = sum(p[0].numel() for p in ens.params.values())
    per_example = 2 * len(SEEDS) * 2 * n * 8  # two Jacobians, K members, C=2 outputs, float64
    chosen = []
    original = ntk.chunk_for

    def spy(*args):
        chosen.append(original(*args))
        return chosen[-1]

    monkeypatch.setattr(ntk, "chunk_for", spy)
    parts = probes.entk(ens, x, method="jacobian", memory_budget=2.5 * per_example / GIB)
    assert chosen == [2]
    np.testing.assert_allclose(parts["entk"].values, whole, rtol=1e-12, atol=1e-14)


def test_a_budget_below_one_example_names_the_sizes():
    ens = ws.Ensemble(mlp, 8, 4, "mup", "sgd", SEEDS, precision="float64")
    x = torch.randn(3, 4, generator=gen(1), dtype=torch.float64)
    with pytest.raises(MemoryBudgetError, match=r"K=2 members.*C=2 outputs.*n=\d+ parameters"):
        probes.entk(ens, x, method="jacobian", memory_budget=1e-9)


def test_chunk_for_checks_the_budget():
    assert chunk_for(None, 10, 5, "x", "") is None
    assert chunk_for(1.0, GIB // 3, 5, "x", "") == 3
    assert chunk_for(1.0, 1, 5, "x", "") == 5
    with pytest.raises(ValueError, match="memory_budget"):
        chunk_for(0.0, 1, 5, "x", "")

"""eNTK under a memory budget: the chunk it picks gives the unchunked kernel, or a clear error."""

import numpy as np
import pytest
import torch
from probes_testlib import SEEDS, gen, mlp

import widthscan as ws
import widthscan.probes as probes
from widthscan.probes import ntk
from widthscan.probes.budget import GIB, HEADROOM, MemoryBudgetError, chunk_for
from widthscan.probes.footprint import footprint


def test_budget_chunks_examples_and_units_and_keeps_the_kernel():
    """Budgets between the whole call's footprint and one item's: the plan fits, one more
    unit would not, and the kernel is the unchunked one."""
    x = torch.randn(7, 4, generator=gen(2), dtype=torch.float64)
    ens = ws.Ensemble(mlp, 8, 4, "mup", "sgd", SEEDS, precision="float64")
    fp = footprint(ens.net, x[:1], torch.float64)
    for trace in (True, False):
        whole = probes.entk(ens, x, trace=trace, method="jacobian")["entk"].values
        full = ntk.plan_entk(fp, 2, 7, 2, trace, False, 1.0)
        assert (full.examples, full.units) == (7, 2)
        for budget in (full.bytes * 0.99 / GIB, full.bytes * 0.3 / GIB):
            plan = ntk.plan_entk(fp, 2, 7, 2, trace, False, budget)
            assert plan.bytes <= budget * GIB
            assert (plan.examples, plan.units) != (7, 2)
            if plan.units < 2:
                bigger = ntk.plan_entk(fp, 2, 7, 2, trace, False, 1.0, plan.examples)
                assert bigger.units > plan.units
            parts = probes.entk(ens, x, trace=trace, method="jacobian", memory_budget=budget)
            np.testing.assert_allclose(parts["entk"].values, whole, rtol=1e-12, atol=1e-13)


def test_a_budget_below_one_example_names_the_sizes():
    ens = ws.Ensemble(mlp, 8, 4, "mup", "sgd", SEEDS, precision="float64")
    x = torch.randn(3, 4, generator=gen(1), dtype=torch.float64)
    with pytest.raises(MemoryBudgetError, match=r"K=2 members, P=3 examples, C=2 outputs, "
                                                r"n=\d+ parameters"):
        probes.entk(ens, x, method="jacobian", memory_budget=1e-9)


def test_chunk_for_checks_the_budget():
    assert chunk_for(None, 10, 5, "x", "") is None
    assert chunk_for(1.0, GIB // 3, 5, "x", "") == int(HEADROOM * 3) == 2
    assert chunk_for(1.0, GIB // 3, 5, "x", "", fixed=GIB // 3) == 1
    assert chunk_for(1.0, 1, 5, "x", "") == 5
    with pytest.raises(ValueError, match="memory_budget"):
        chunk_for(0.0, 1, 5, "x", "")

"""Probes at scale on a small transformer: every chunked probe equals its whole call
(float64), the chunked eNTK equals a dense Jacobian's Gram matrix, budgets that cannot
hold one chunk name the sizes, and a chunked call's measured peak stays under its budget
where the whole call's does not."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from probes_testlib import SEEDS, dense_entk, gen, transformer

import widthscan as ws
import widthscan.probes as probes
from widthscan.probes import features, hessian, ntk, plans
from widthscan.probes.budget import GIB, MemoryBudgetError, grid_chunks
from widthscan.probes.footprint import footprint
from widthscan.probes.hessian import chunked_hvp, make_hvp, member_loss_fn
from widthscan.probes.members import members

BIG = 4.0  # GiB: everything in one chunk at these sizes
P = 5


def ensemble() -> ws.Ensemble:
    return ws.Ensemble(transformer, 8, 4, "mup", "sgd", SEEDS, precision="float64", loss="ce")


def tokens(n: int = P, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 11, (n, 6), generator=gen(seed))


def spy(monkeypatch, module, name: str) -> list:
    """Record what ``module.name`` returns (or, for chunked_entk, the plan it gets)."""
    seen, original = [], getattr(module, name)

    def wrapper(*args, **kwargs):
        out = original(*args, **kwargs)
        seen.append(args[6] if name == "chunked_entk" else out)
        return out

    monkeypatch.setattr(module, name, wrapper)
    return seen


@pytest.mark.parametrize("method", ["structured", "jacobian"])
@pytest.mark.parametrize("trace", [True, False])
@pytest.mark.parametrize("position", [None, -1])
def test_entk_in_chunks_is_the_whole_kernel(monkeypatch, method, trace, position):
    ens, x = ensemble(), tokens()
    whole = probes.entk(ens, x, trace=trace, method=method, position=position,
                        memory_budget=BIG)["entk"].values
    fp = footprint(ens.net, x[:1], torch.float64)
    c = ntk.n_outputs(fp.output_shape, position)
    one = ntk.plan_entk(fp, 2, P, c, trace, method != "jacobian", BIG, chunk=2)
    budget = one.bytes / GIB / 0.9 * 0.3
    plans = spy(monkeypatch, ntk, "chunked_entk")
    parts = probes.entk(ens, x, trace=trace, method=method, position=position, chunk=2,
                        memory_budget=budget)["entk"].values
    assert plans[0].examples == 2 and plans[0].units < c
    np.testing.assert_allclose(parts, whole, rtol=1e-12, atol=1e-12 * np.abs(whole).max())


@pytest.mark.parametrize("position", [None, -1])
def test_chunked_transformer_entk_is_the_dense_jacobian_gram(position):
    """Against ``torch.func.jacrev`` of the flat parameters: J diag(lr scale) J^T."""
    p = ws.parametrize(transformer, 8, 4, "mup", "sgd", seed=1, dtype=torch.float64)
    x = tokens(4, seed=1)
    ref = dense_entk(p, x, position=position)
    scale = ref.abs().max()
    fp = footprint(p.net, x[:1], torch.float64)
    c = ntk.n_outputs(fp.output_shape, position)
    budget = ntk.plan_entk(fp, 1, 4, c, False, True, BIG, chunk=3).bytes / GIB * 0.4
    got = probes.entk(p, x, trace=False, chunk=3, position=position, memory_budget=budget)
    torch.testing.assert_close(torch.as_tensor(got["entk"].values), ref, rtol=1e-9,
                               atol=1e-12 * scale)
    traced = probes.entk(p, x, chunk=3, position=position, memory_budget=budget)
    torch.testing.assert_close(torch.as_tensor(traced["entk"].values),
                               torch.einsum("abcc->ab", ref) / ref.shape[-1], rtol=1e-9,
                               atol=1e-12 * scale)


@pytest.mark.parametrize("grid", [(1, 1), (1, 3), (2, 2)])
def test_feature_probes_in_chunks_are_the_whole_call(monkeypatch, grid):
    ens, x = ensemble(), tokens(7)
    whole = {"kernels": probes.kernels(ens, x, memory_budget=BIG)["kernel"].values,
             "preact": probes.preactivations(ens, x, memory_budget=BIG)["preact_hist"].values,
             "attention": probes.attention(ens, x[2], memory_budget=BIG)["attention"].values}
    assert grid != features.capture_chunks(ens.net, torch.float64, 2, x,
                                           features.kernel_layers(ens.net, None),
                                           features.pooled("mean"), BIG)
    monkeypatch.setattr(features, "capture_chunks", lambda *args: grid)
    parts = {"kernels": probes.kernels(ens, x)["kernel"].values,
             "preact": probes.preactivations(ens, x)["preact_hist"].values,
             "attention": probes.attention(ens, x[2])["attention"].values}
    np.testing.assert_allclose(parts["kernels"], whole["kernels"], rtol=1e-12, atol=1e-14)
    np.testing.assert_array_equal(parts["preact"], whole["preact"])
    np.testing.assert_allclose(parts["attention"], whole["attention"], rtol=1e-12, atol=1e-15)


def test_feature_chunks_fill_the_budget():
    """grid_chunks: all members and as many examples as fit, else one example and as many
    members; one cell over the budget names the sizes."""
    cell = GIB // 100
    assert grid_chunks(1.0, 0, cell, 4, 50, "x", "") == (4, 22)
    assert grid_chunks(1.0, 10 * cell, cell, 4, 50, "x", "") == (4, 20)
    assert grid_chunks(1.0, 0, 30 * cell, 4, 50, "x", "") == (3, 1)
    with pytest.raises(MemoryBudgetError, match=r"x needs .*sizes here"):
        grid_chunks(1.0, 85 * cell, 10 * cell, 4, 50, "x", "sizes here")


def test_sharpness_in_chunks_is_the_whole_batch(monkeypatch):
    """Chunk losses weighted by their share of the targets (some ignored) sum to the
    batch's mean: the same products and eigenvalues."""
    ens = ensemble()
    x, y = tokens(7, seed=2), tokens(7, seed=3)
    y[0, :4] = -100
    y[4] = -100
    m = members(ens)
    v = torch.randn(2, m.flat_size(), generator=gen(4), dtype=torch.float64)
    kept = make_hvp(m, member_loss_fn(m, x, y, "ce"))(v)
    for chunk in (1, 3):
        torch.testing.assert_close(chunked_hvp(m, x, y, "ce", chunk)(v), kept, rtol=1e-12,
                                   atol=1e-12 * kept.abs().max())
    whole = probes.sharpness(ens, x, y, k=2, memory_budget=BIG)["sharpness"].values
    fp = footprint(ens.net, x[:1], torch.float64, "ce")
    fixed = 8 * 2 * fp.n_params * (100 + 2 + 8) + 2 * fp.hessian_fixed
    budget = (fixed + 2 * 2 * (fp.hessian + 3 * fp.activations)) / 0.9 / GIB
    chunks = spy(monkeypatch, hessian, "plan_sharpness")
    parts = probes.sharpness(ens, x, y, k=2, memory_budget=budget)["sharpness"].values
    assert chunks == [2]
    np.testing.assert_allclose(parts, whole, rtol=1e-10)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_sharpness_of_members_in_turn_is_that_of_all_at_once(monkeypatch, optimizer):
    """A budget that holds one member's Lanczos vectors and batch but not two runs the
    members one at a time; each member's recurrence is its own, so the pairs (raw and
    preconditioned: SGD's shared lr scales, Adam's per-member moments) are the same."""
    ens = ws.Ensemble(transformer, 8, 4, "mup", optimizer, SEEDS, precision="float64",
                      loss="ce", lr=0.01)
    x, y = tokens(7, seed=2), tokens(7, seed=3)
    ens.step(x, y)
    fp = footprint(ens.net, x[:1], torch.float64, "ce")

    def need(g: int, examples: int) -> int:
        fixed = 8 * g * fp.n_params * (100 + 2 + 8) + g * fp.hessian_fixed
        return fixed + examples * g * (fp.hessian + 3 * fp.activations)

    assert need(2, 1) > need(1, 7)
    budget = need(1, 7) / 0.9 / GIB
    for preconditioned in (False, True):
        whole = hessian.eigenpairs(ens, x, y, k=2, memory_budget=BIG,
                                   preconditioned=preconditioned)
        plans_seen = spy(monkeypatch, hessian, "sharpness_plan")
        turn = hessian.eigenpairs(ens, x, y, k=2, memory_budget=budget,
                                  preconditioned=preconditioned)
        monkeypatch.undo()
        assert plans_seen == [(1, 7)]
        np.testing.assert_allclose(turn.values, whole.values, rtol=1e-10)
        np.testing.assert_array_equal(turn.hvps, whole.hvps)
        overlap = (turn.vectors * whole.vectors).sum(-1).abs()
        np.testing.assert_allclose(overlap, 1.0, atol=1e-8)


def test_budgets_below_one_chunk_name_the_sizes():
    ens, x = ensemble(), tokens()
    n = members(ens).flat_size()
    with pytest.raises(MemoryBudgetError, match=rf"K=2 members, P={P} examples, C=66 outputs, "
                                                rf"n={n} parameters"):
        probes.entk(ens, x, memory_budget=1e-7)
    with pytest.raises(MemoryBudgetError, match=rf"K=1 members, n={n} parameters.*max_iter=100"):
        probes.sharpness(ens, x, x, memory_budget=1e-4)
    with pytest.raises(MemoryBudgetError, match=rf"K=2 members x P={P} examples"):
        probes.kernels(ens, x, memory_budget=1e-7)
    with pytest.raises(ValueError, match="memory_budget"):
        probes.ProbeSuite({"sharpness": {"memory_budget": -1.0}})
    with pytest.raises(ValueError, match="position"):
        probes.ProbeSuite({"entk": {"position": "last"}})


def test_the_suite_passes_budgets_and_positions_on():
    ens, x = ensemble(), tokens()
    suite = probes.ProbeSuite({"entk": {"position": -1, "memory_budget": 0.01}})
    got = suite.measure(["entk"], ens, 0, x)["entk"]["entk"].values
    np.testing.assert_allclose(got, probes.entk(ens, x, position=-1)["entk"].values,
                               rtol=1e-12)
    with pytest.raises(MemoryBudgetError):
        probes.ProbeSuite({"entk": {"memory_budget": 1e-7}}).measure(["entk"], ens, 0, x)


CHILD = textwrap.dedent("""
    import json, sys
    import torch
    import widthscan as ws
    import widthscan.probes as probes
    torch.set_num_threads(1)
    net = lambda w: ws.models.transformer(w, vocab_size=16, seq_len=16, n_layers=1, n_heads=2)
    p = ws.parametrize(net, 32, 32, "mup", "sgd", seed=0, dtype=torch.float64)
    x = torch.randint(0, 16, (8, 16), generator=torch.Generator().manual_seed(0))
    probes.entk(p, x[:2], method="jacobian", outputs=torch.arange(2))
    def hwm():  # peak resident KiB of this process (ru_maxrss keeps the parent's peak)
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM"))
    before = hwm()
    probes.entk(p, x, method="jacobian", memory_budget=float(sys.argv[1]))
    after = hwm()
    print(json.dumps([before * 1024, after * 1024]))
""")


def peak_bytes(budget_gib: float) -> int:
    """Growth of the peak resident memory of a fresh process over one eNTK call."""
    src = str(Path(ws.__file__).parents[1])
    env = {**os.environ, "PYTHONPATH": src, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", CHILD, str(budget_gib)], env=env,
                         capture_output=True, text=True, timeout=600, check=True)
    before, after = json.loads(out.stdout.strip().splitlines()[-1])
    assert before > 0, out.stdout
    return after - before


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc (VmHWM)")
def test_a_chunked_call_peaks_under_its_budget_where_the_whole_call_does_not():
    """Width-32 transformer, 8 sequences of 16 tokens, 256 outputs each, per-example
    Jacobians of all 14k parameters: 0.25-0.4 GiB at once, in chunks under 0.1 GiB."""
    budget = 0.1
    chunked, whole = peak_bytes(budget), peak_bytes(BIG)
    assert chunked < budget * GIB < whole / 2, (chunked / GIB, whole / GIB)


def test_the_issue_sizes_plan_under_16_gib():
    """Planned on the meta device (nothing allocated): widthscan's transformer at width 1024
    (seq 128, vocab 256) with 64 probe sequences fits 16 GiB for all four probes with one
    member; the eNTK of the width-128 transformer on 8 sequences over all 32768 outputs,
    whose whole Jacobian alone is 8 x 32768 x n x 4 bytes > 32 GiB, too. With four members
    sharpness' 100 Lanczos vectors alone (4 x 25.8M parameters each) exceed it, so it runs
    fewer members at a time; at 4 GiB one member's vectors do not fit, and the error
    says so."""
    x1 = torch.zeros(1, 128, dtype=torch.long)
    with torch.device("meta"):
        wide = ws.models.transformer(1024)
        narrow = ws.models.transformer(128)
    for name in ("attention", "kernels", "sharpness", "entk"):
        plans.plan_probe(name, {"memory_budget": 16.0}, wide, x1, 1, torch.float32, "ce",
                         "cpu", 64, 64)
    n = sum(p.numel() for p in narrow.parameters())
    assert 8 * 32768 * n * 4 > 32 * GIB
    plans.plan_probe("entk", {"memory_budget": 16.0, "n_examples": 8}, narrow, x1, 1,
                     torch.float32, "ce", "cpu", 8, 8)
    with pytest.raises(MemoryBudgetError, match=r"sharpness needs .*K=4 members, n=25848064 "
                                                r"parameters, 109 vectors"):
        hessian.plan_sharpness(footprint(wide, x1, torch.float32, "ce"), 4, 64, 100, 1,
                               16.0)
    group, chunk = hessian.sharpness_plan(footprint(wide, x1, torch.float32, "ce"), 4, 64,
                                          100, 1, 16.0)
    assert 1 <= group < 4 and chunk >= 1
    plans.plan_probe("sharpness", {"memory_budget": 16.0}, wide, x1, 4, torch.float32, "ce",
                     "cpu", 64, 64)
    with pytest.raises(MemoryBudgetError, match=r"sharpness needs .*K=1 members"):
        plans.plan_probe("sharpness", {"memory_budget": 4.0}, wide, x1, 4, torch.float32,
                         "ce", "cpu", 64, 64)

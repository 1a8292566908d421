"""How an Ensemble runs its members: chosen per network, recorded for an exact resume."""

import pytest
import torch

import widthscan as ws
from widthscan.models.chain import chain_of
from widthscan.stack import core as core_module

SEEDS = [0, 1, 2]


def transformer(width):
    return ws.models.transformer(width, vocab_size=11, seq_len=6, n_layers=1, n_heads=2)


class Residual(torch.nn.Module):
    """A generic module: no batched backend knows it."""

    def __init__(self, width):
        super().__init__()
        self.inp, self.mid = torch.nn.Linear(5, width), torch.nn.Linear(width, width)
        self.norm, self.readout = torch.nn.LayerNorm(width), torch.nn.Linear(width, 2)

    def forward(self, x):
        h = torch.tanh(self.inp(x))
        return self.readout(self.norm(h + torch.relu(self.mid(h))))


def regression(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(6, 5, generator=g), torch.randn(6, 2, generator=g)) for _ in range(n)]


@pytest.mark.parametrize(("net", "expected"), [
    (torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2)),
     (("0", "2"), "relu", False)),
    (torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 8), torch.nn.GELU(),
                         torch.nn.Linear(8, 8), torch.nn.GELU(), torch.nn.Linear(8, 2)),
     (("1", "3", "5"), "gelu", True)),
    (torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 8),
                         torch.nn.Tanh(), torch.nn.Linear(8, 2)), None),
    (torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.GELU("tanh"), torch.nn.Linear(8, 2)),
     None),
    (torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU()), None),
    (torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(7, 2)), None),
])
def test_linear_chains_are_recognized_and_nothing_else(net, expected):
    chain = chain_of(net)
    got = None if chain is None else (chain.layers, chain.activation, chain.flatten)
    assert got == expected


def test_auto_measures_a_generic_module_and_a_resume_keeps_its_choice(monkeypatch):
    monkeypatch.setattr(core_module, "_CHOSEN", {})
    data = regression(6)
    ens = ws.Ensemble(Residual, 8, 4, "mup", "adam", SEEDS, 1e-3)
    assert ens.stacking == "auto"
    ens.step(*data[0])
    assert ens.stacking in core_module.MEASURED
    assert set(ens.timings) == set(core_module.MEASURED)
    other = next(s for s in core_module.MEASURED if s != ens.stacking)
    straight = ws.Ensemble(Residual, 8, 4, "mup", "adam", SEEDS, 1e-3, stacking=ens.stacking)
    for x, y in data:
        straight.step(x, y)
    for x, y in data[1:3]:
        ens.step(x, y)
    state = ens.state_dict()
    core_module._CHOSEN.clear()
    monkeypatch.setattr(core_module, "MEASURED", (other,))
    resumed = ws.Ensemble(Residual, 8, 4, "mup", "adam", SEEDS, 1e-3)
    resumed.load_state_dict(state)
    assert resumed.stacking == ens.stacking
    for x, y in data[3:]:
        resumed.step(x, y)
    for name, p in straight.params.items():
        assert torch.equal(p, resumed.params[name]), name


def test_batched_needs_a_batched_backend():
    with pytest.raises(ValueError, match=r"stacking='batched' needs .*'loop'"):
        ws.Ensemble(Residual, 8, 4, stacking="batched")


def test_auto_measures_the_transformer_backend_too(monkeypatch):
    monkeypatch.setattr(core_module, "_CHOSEN", {})
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 11, (4, 6), generator=g)
    ens = ws.Ensemble(transformer, 8, 4, "mup", "adam", SEEDS, 1e-3, loss="ce")
    ens.step(x, torch.roll(x, -1, 1))
    assert set(ens.timings) == {"batched", *core_module.MEASURED}
    assert ens.stacking == min(ens.timings, key=ens.timings.get)


def test_a_users_sequential_mlp_takes_the_batched_backend():
    def factory(width):
        return torch.nn.Sequential(torch.nn.Linear(5, width), torch.nn.ReLU(),
                                   torch.nn.Linear(width, 2))

    ens = ws.Ensemble(factory, 16, 8, "mup", "sgd", SEEDS, 0.1)
    x = torch.randn(7, 5)
    assert ens.stacking == "batched" and ens.stack.manual_backprop(x)
    assert not ens.stack.manual_backprop(torch.randn(7, 1, 5))
    reference = ws.Ensemble(factory, 16, 8, "mup", "sgd", SEEDS, 0.1, stacking="vmap")
    torch.testing.assert_close(ens(x), reference(x), rtol=1e-5, atol=1e-6)


def test_probes_through_the_transformer_backend_match_vmap():
    """The batched transformer's public apply is twice differentiable (sharpness HVPs)."""
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, 11, (4, 6), generator=g)
    y = torch.roll(x, -1, 1)
    values = []
    for stacking in ("batched", "vmap"):
        ens = ws.Ensemble(transformer, 8, 4, "mup", "sgd", SEEDS, 0.1, loss="ce",
                          precision="float64", stacking=stacking)
        ens.step(x, y)
        values.append(ws.probes.sharpness(ens, x, y, k=1)["sharpness"].values)
    torch.testing.assert_close(torch.as_tensor(values[0]), torch.as_tensor(values[1]),
                               rtol=1e-6, atol=1e-9)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("stacking", ["batched", "vmap", "loop"])
def test_transformer_strategies_on_cuda_equal_the_cpu(stacking):
    g = torch.Generator().manual_seed(2)
    x = torch.randint(0, 11, (4, 6), generator=g)
    y = torch.roll(x, -1, 1)
    runs = []
    for device in ("cpu", "cuda"):
        ens = ws.Ensemble(transformer, 8, 4, "mup", "adam", SEEDS, 1e-3, loss="ce",
                          precision="float64", stacking=stacking, device=device)
        runs.append(torch.stack([ens.step(x.to(device), y.to(device)).cpu() for _ in range(3)]))
    torch.testing.assert_close(runs[1], runs[0], rtol=1e-9, atol=1e-12)

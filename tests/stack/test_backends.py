"""The backend registry: which networks each backend takes, and a user's own backend."""

import pytest
import torch

import widthscan as ws
from widthscan.stack import backends


class Affine(torch.nn.Module):
    """y = tanh(x @ W^T) @ V^T: not a linear chain (functional tanh), so no built-in backend."""

    def __init__(self, width):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(width, 3))
        self.v = torch.nn.Parameter(torch.zeros(2, width))

    def forward(self, x):
        return torch.tanh(x @ self.w.t()) @ self.v.t()


def stacked_affine(plan, net, params, buffers, multipliers, x, fused):
    w = params["w"] * multipliers["w"]
    v = params["v"] * multipliers["v"]
    return torch.tanh(torch.einsum("bi,kwi->kbw", x, w)) @ v.transpose(1, 2)


@pytest.mark.parametrize(("net", "name", "provides"), [
    (ws.models.mlp(8), "chain", {"backward", "hvp"}),
    (torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1)),
     "chain", {"backward", "hvp"}),
    (ws.models.transformer(8, vocab_size=5, seq_len=4, n_layers=1, n_heads=2), "transformer",
     set()),
    (ws.models.resnet18(4, blocks=(1, 1, 1, 1)), None, None),
    (Affine(4), None, None),
])
def test_registry_recognizes_each_family(net, name, provides):
    buffers = dict(net.named_buffers())
    found = backends.find(net, buffers)
    if name is None:
        assert found is None
        return
    backend, plan = found
    assert backend.name == name and backend.provides(plan, net) == provides


def test_a_registered_backend_runs_the_ensemble_and_equals_vmap(monkeypatch):
    monkeypatch.setattr(backends, "BACKENDS", dict(backends.BACKENDS))
    backends.register(backends.Backend(
        name="affine", recognize=lambda net, buffers: True if type(net) is Affine else None,
        forward=stacked_affine, accepts=lambda plan, x: x.dim() == 2,
        provides=lambda plan, net: frozenset()))
    g = torch.Generator().manual_seed(0)
    data = [(torch.randn(5, 3, generator=g, dtype=torch.float64),
             torch.randn(5, 2, generator=g, dtype=torch.float64)) for _ in range(4)]
    runs = {}
    for stacking in ("batched", "vmap"):
        ens = ws.Ensemble(Affine, 16, 4, "mup", "adam", [0, 1, 2], 1e-2, precision="float64",
                          stacking=stacking)
        assert any(m != 1.0 for m in ens.multipliers.values())
        runs[stacking] = torch.stack([ens.step(x, y) for x, y in data])
    assert ens.backend.name == "affine"
    torch.testing.assert_close(runs["batched"], runs["vmap"], rtol=1e-12, atol=0)

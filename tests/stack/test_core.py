"""The stacked core: one object that training and probes share, and whose every strategy
equals K separate forward passes of the plain modules."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

import widthscan as ws
from widthscan.probes.hessian import hessian_product
from widthscan.probes.members import members
from widthscan.stack import Stack

SEEDS = [3, 5, 7]


def mlp(width):
    return ws.models.mlp(width, depth=3, d_in=6, d_out=3, activation="tanh")


def transformer(width):
    return ws.models.transformer(width, vocab_size=11, seq_len=6, n_layers=1, n_heads=2)


def resnet(width):
    return ws.models.resnet18(width, n_classes=3, in_channels=1, blocks=(1, 1, 1, 1))


def sequential(width):
    """A user's own MLP (widthscan knows it only as a linear chain)."""
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(6, width), torch.nn.GELU(),
                               torch.nn.Linear(width, width), torch.nn.GELU(),
                               torch.nn.Linear(width, 3))


def gen(seed):
    return torch.Generator().manual_seed(seed)


FAMILIES = {
    "mlp": (mlp, 16, 8, lambda: torch.randn(5, 6, generator=gen(1), dtype=torch.float64)),
    "transformer": (transformer, 8, 4, lambda: torch.randint(0, 11, (3, 6), generator=gen(1))),
    "resnet18": (resnet, 4, 2,
                 lambda: torch.randn(3, 1, 8, 8, generator=gen(1), dtype=torch.float64)),
    "sequential": (sequential, 16, 8,
                   lambda: torch.randn(5, 6, generator=gen(1), dtype=torch.float64)),
}


def separate(family, param="mup"):
    factory, width, base, _ = FAMILIES[family]
    return [ws.parametrize(factory, width, base, param, "sgd", seed=s, dtype=torch.float64)
            for s in SEEDS]


@pytest.mark.parametrize("stacking", ["batched", "vmap", "loop"])
@pytest.mark.parametrize("family", list(FAMILIES))
def test_apply_equals_separate_forward_passes(family, stacking):
    models = separate(family)
    assert any(m != 1.0 for m in models[0].multipliers.values())
    x = FAMILIES[family][3]()
    try:
        core = Stack.of(models, stacking=stacking, precision="float64")
    except ValueError as err:
        assert stacking == "batched" and "needs a batched backend" in str(err)
        return
    assert core.stacking == stacking and core.k == len(SEEDS)
    expected = torch.stack([m.module(x) for m in models])
    with torch.no_grad():
        got = core.apply(core.params, x)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_a_single_model_is_a_core_of_one(family):
    model = separate(family)[0]
    x = FAMILIES[family][3]()
    core = members(model)
    assert core.k == 1 and not core.stacked
    name, first = next(iter(model.net.named_parameters()))
    assert core.params[name].data_ptr() == first.data_ptr()
    with torch.no_grad():
        torch.testing.assert_close(core.apply(core.params, x)[0], model.module(x),
                                   rtol=1e-10, atol=1e-12)


def batches(family, steps):
    """(x, y) pairs: regression for the chains, next-token prediction for the transformer."""
    if family == "transformer":
        xs = [torch.randint(0, 11, (4, 6), generator=gen(10 + i)) for i in range(steps)]
        return [(x, torch.roll(x, -1, 1)) for x in xs]
    return [(torch.randn(8, 6, generator=gen(10 + i), dtype=torch.float64),
             torch.randn(8, 3, generator=gen(20 + i), dtype=torch.float64)) for i in range(steps)]


def probe_all(model, x, y):
    out = {}
    out.update(ws.probes.loss(model, x, y))
    out.update(ws.probes.logits(model, x))
    out.update(ws.probes.kernels(model, x))
    out.update(ws.probes.entk(model, x))
    out.update(ws.probes.sharpness(model, x, y, k=1))
    return {name: np.asarray(m.values) for name, m in out.items()}


@pytest.mark.parametrize("family", ["mlp", "sequential", "transformer"])
def test_the_probe_view_is_the_ensembles_own_core_after_training(family):
    """A view taken before training sees every step: probes on it equal probes on a core built
    independently from the trained stacked parameters, and differ from the initial ones."""
    factory, width, base, _ = FAMILIES[family]
    loss = "ce" if family == "transformer" else "mse"
    ens = ws.Ensemble(factory, width, base, "mup", "sgd", SEEDS, 0.2, momentum=0.9,
                      precision="float64", loss=loss)
    view = members(ens)
    assert view is ens.stack and view.params is ens.params and view.net is ens.net
    assert view.torch_optimizer is ens.optimizer and view.lr_scales == ens.lr_scale
    x, y = batches(family, 1)[0]
    before = probe_all(ens, x, y)
    for xb, yb in batches(family, 4)[1:]:
        ens.step(xb, yb)
    independent = Stack(ens.net, {n: p.detach().clone() for n, p in ens.params.items()},
                        ens.buffers, ens.multipliers, loss=ens.loss, precision="float64",
                        stacking=ens.stacking, lr_scales=ens.lr_scale, optimizer="sgd")
    after, reference = probe_all(view, x, y), probe_all(independent, x, y)
    assert after.keys() == reference.keys() == before.keys()
    for name in after:
        np.testing.assert_array_equal(after[name], reference[name], err_msg=name)
    assert not np.allclose(after["probe_loss"], before["probe_loss"])


def test_closed_form_hvp_serves_a_users_sequential_chain():
    """The backend declares "hvp" for every linear chain; its closed form equals each member's
    autograd Hessian-vector product through the plain module."""
    models = separate("sequential")
    core = Stack.of(models, precision="float64", loss="ce")
    assert core.provides("hvp") and core.provides("backward")
    x = torch.randn(7, 6, generator=gen(3), dtype=torch.float64)
    y = torch.randint(0, 3, (7,), generator=gen(4))
    v = torch.randn(len(SEEDS), core.flat_size(), generator=gen(5), dtype=torch.float64)
    hv = hessian_product(core, x, y, "ce", mode="closed")(v)
    names = list(core.params)
    for k, model in enumerate(models):
        raw = {n: p.detach() for n, p in model.net.named_parameters()}
        sizes = [raw[n].numel() for n in names]
        direction = dict(zip(names, torch.split(v[k], sizes)))

        def loss(*tensors, model=model, raw=raw):
            eff = {n: t * model.multipliers[n] for n, t in zip(names, tensors)}
            return F.cross_entropy(functional_call(model.net, eff, (x,)), y)

        _, ref = torch.autograd.functional.hvp(
            loss, tuple(raw[n] for n in names),
            tuple(direction[n].reshape(raw[n].shape) for n in names))
        torch.testing.assert_close(hv[k], torch.cat([r.flatten() for r in ref]),
                                   rtol=1e-10, atol=1e-12)


class Residual(torch.nn.Module):
    """A generic module: no backend knows it."""

    def __init__(self, width):
        super().__init__()
        self.inp, self.readout = torch.nn.Linear(6, width), torch.nn.Linear(width, 3)

    def forward(self, x):
        h = torch.tanh(self.inp(x))
        return self.readout(h + h.pow(2))


def test_no_backend_means_no_closed_form_and_a_clear_error():
    models = [ws.parametrize(Residual, 8, 4, seed=s, dtype=torch.float64) for s in SEEDS]
    core = Stack.of(models, precision="float64")
    assert core.backend is None and core.stacking == "auto"
    assert not core.provides("hvp") and not core.provides("backward")
    with pytest.raises(ValueError, match="no closed-form HVP for Residual"):
        core.hvp(torch.zeros(1, 6), torch.zeros(1, 3), "mse")
    with pytest.raises(ValueError, match=r"stacking='sideways'; allowed: \('auto'"):
        Stack.of(separate("mlp"), stacking="sideways")

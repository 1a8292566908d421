"""Stacked ensembles against separately trained models, resume and divergence."""

import json

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load, save

import widthscan as ws

SEEDS = [3, 5, 7, 11]


def mlp(width):
    return ws.models.mlp(width, depth=3, d_in=6, d_out=3)


def resnet(width):
    return ws.models.resnet18(width, n_classes=3, in_channels=1, blocks=(1, 1, 1, 1))


def transformer(width):
    return ws.models.transformer(width, vocab_size=11, seq_len=6, n_layers=1, n_heads=2)


def sequential(width):
    """A user's own MLP: a linear chain that widthscan's batched backend recognizes."""
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(6, width), torch.nn.Tanh(),
                               torch.nn.Linear(width, width), torch.nn.Tanh(),
                               torch.nn.Linear(width, 3))


FAMILIES = {
    "mlp": (mlp, 32, 16, "mse", lambda g: torch.randn(8, 6, generator=g, dtype=torch.float64),
            lambda g, x: torch.randn(8, 3, generator=g, dtype=torch.float64)),
    "resnet18": (resnet, 4, 2, "ce",
                 lambda g: torch.randn(4, 1, 8, 8, generator=g, dtype=torch.float64),
                 lambda g, x: torch.randint(0, 3, (4,), generator=g)),
    "transformer": (transformer, 8, 4, "ce", lambda g: torch.randint(0, 11, (4, 6), generator=g),
                    lambda g, x: torch.randint(0, 11, (4, 6), generator=g)),
    "sequential": (sequential, 32, 16, "ce",
                   lambda g: torch.randn(8, 6, generator=g, dtype=torch.float64),
                   lambda g, x: torch.randint(0, 3, (8,), generator=g)),
}
STRATEGIES = {"mlp": ("batched", "vmap", "loop"), "sequential": ("batched", "vmap", "loop"),
              "resnet18": ("batched", "vmap", "loop"), "transformer": ("batched", "vmap", "loop")}
CASES = [(f, s) for f in FAMILIES for s in STRATEGIES[f]]


def batches(family, n, seed=0):
    _, _, _, _, make_x, make_y = FAMILIES[family]
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        x = make_x(g)
        out.append((x, make_y(g, x)))
    return out


def reference_loss(out, y, loss):
    if loss == "mse":
        return F.mse_loss(out, y)
    return F.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1))


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
@pytest.mark.parametrize(("family", "stacking"), CASES)
def test_stacked_members_equal_separate_runs(family, stacking, optimizer):
    factory, width, base, loss, _, _ = FAMILIES[family]
    kw = {"momentum": 0.9, "nesterov": True} if optimizer == "sgd" else {}
    lr = 0.05 if optimizer == "sgd" else 1e-3
    ens = ws.Ensemble(factory, width, base, "mup", optimizer, SEEDS, lr, loss=loss,
                      weight_decay=1e-3, precision="float64", stacking=stacking, **kw)
    assert any(m != 1.0 for m in ens.multipliers.values())
    singles, opts = [], []
    for s in SEEDS:
        p = ws.parametrize(factory, width, base, "mup", optimizer, seed=s, dtype=torch.float64)
        groups = p.param_groups(lr, 1e-3, None if optimizer == "sgd" else 1e-8)
        opt = (torch.optim.SGD(groups, lr=lr, **kw) if optimizer == "sgd"
               else torch.optim.Adam(groups, lr=lr))
        singles.append(p)
        opts.append(opt)
    for x, y in batches(family, 6):
        stacked = ens.step(x, y)
        separate = []
        for p, opt in zip(singles, opts):
            opt.zero_grad()
            loss_value = reference_loss(p.module(x), y, loss)
            loss_value.backward()
            opt.step()
            separate.append(loss_value.item())
        torch.testing.assert_close(stacked.double(), torch.tensor(separate, dtype=torch.float64),
                                   rtol=1e-6, atol=1e-9)
    for k, p in enumerate(singles):
        for name, q in p.net.named_parameters():
            torch.testing.assert_close(ens.params[name][k], q, rtol=1e-6, atol=1e-9)


def test_vmap_and_batched_paths_agree():
    data = batches("mlp", 5)
    results = []
    for stacking in ("vmap", "batched"):
        ens = ws.Ensemble(mlp, 32, 16, "mup", "sgd", SEEDS, 0.1, momentum=0.9,
                          precision="float64", stacking=stacking)
        results.append(torch.stack([ens.step(x, y) for x, y in data]))
    torch.testing.assert_close(results[0], results[1], rtol=1e-12, atol=0)


def roundtrip(state):
    """Through a safetensors blob and a JSON string, as on disk."""
    tensors = load(save({k: v.contiguous() for k, v in state["tensors"].items()}))
    return {"tensors": tensors, "meta": json.loads(json.dumps(state["meta"]))}


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_resume_is_bit_identical(optimizer):
    data = batches("mlp", 20)
    sched = ws.train.make_schedule("cosine", total_steps=20, warmup_steps=3)

    def make():
        return ws.Ensemble(mlp, 32, 16, "mup", optimizer, SEEDS, 0.05, momentum=0.9,
                           schedule=sched)

    straight = make()
    for x, y in data:
        straight.step(x, y)
    first = make()
    for x, y in data[:10]:
        first.step(x, y)
    state = roundtrip(first.state_dict())
    resumed = make()
    resumed.load_state_dict(state)
    for x, y in data[10:]:
        resumed.step(x, y)
    assert resumed.step_count == 20
    for name, p in straight.params.items():
        assert torch.equal(p, resumed.params[name]), name


@pytest.mark.parametrize("stacking", ["batched", "vmap", "loop"])
def test_divergent_member_is_frozen_and_others_unchanged(stacking):
    data = batches("mlp", 15)
    ens = ws.Ensemble(mlp, 32, 16, "mup", "sgd", SEEDS, 0.2, momentum=0.9, precision="float64",
                      stacking=stacking)
    with torch.no_grad():
        for p in ens.params.values():
            if p.ndim > 1:
                p[2] *= 30.0
    ref = ws.Ensemble(mlp, 32, 16, "mup", "sgd", [s for i, s in enumerate(SEEDS) if i != 2], 0.2,
                      momentum=0.9, precision="float64")
    losses = torch.stack([ens.step(x, y) for x, y in data])
    ref_losses = torch.stack([ref.step(x, y) for x, y in data])
    t = ens.diverged_at[2]
    assert t is not None and ens.diverged_at[:2] == [None, None] and ens.diverged_at[3] is None
    assert torch.isnan(losses[t:, 2]).all() and torch.isfinite(losses[:t, 2]).all()
    torch.testing.assert_close(losses[:, [0, 1, 3]], ref_losses, rtol=1e-12, atol=0)
    frozen = {n: p[2].clone() for n, p in ens.params.items()}
    x, y = data[0]
    ens.step(x, y)
    for n, p in ens.params.items():
        assert torch.equal(frozen[n].nan_to_num(), p[2].nan_to_num()), n


def test_losses_ignore_masked_positions():
    out = torch.randn(2, 3, 4, 5)
    y = torch.randint(0, 5, (3, 4))
    y[:, :2] = -100
    base = ws.train.member_losses(out, y, "ce")
    changed = out.clone()
    changed[:, :, :2] += 10.0
    torch.testing.assert_close(ws.train.member_losses(changed, y, "ce"), base)
    for k in range(2):
        expected = F.cross_entropy(out[k].reshape(-1, 5), y.reshape(-1), ignore_index=-100)
        torch.testing.assert_close(base[k], expected)


def test_schedule_shapes():
    s = ws.train.make_schedule("cosine", total_steps=100, warmup_steps=10, final_factor=0.1)
    assert s(0) == pytest.approx(0.1) and s(9) == pytest.approx(1.0)
    assert s(10) == pytest.approx(1.0) and s(100) == pytest.approx(0.1)
    assert s(55) == pytest.approx(0.55)
    with pytest.raises(ValueError, match="schedule"):
        ws.train.make_schedule("linear")


def test_bad_arguments_name_the_field():
    with pytest.raises(ValueError, match="precision"):
        ws.Ensemble(mlp, 32, 16, precision="float16")
    with pytest.raises(ValueError, match=r"param=.*allowed"):
        ws.Ensemble(mlp, 32, 16, param="mu")
    with pytest.raises(ValueError, match="loss"):
        ens = ws.Ensemble(mlp, 32, 16, loss="l1")
        ens.step(torch.randn(2, 6), torch.randn(2, 3))



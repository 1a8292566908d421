"""The ResNet backend: K members as groups of grouped convolutions equal K separate nets."""

import json

import pytest
import torch
from safetensors.torch import load, save
from torch.func import functional_call

import widthscan as ws
from widthscan.models import resnet_stacked
from widthscan.parametrization import scale_params
from widthscan.stack import backends
from widthscan.train import ensemble as ensemble_module

SEEDS = [3, 5, 7]


def resnet(width):
    return ws.models.resnet18(width, n_classes=3, in_channels=2, blocks=(2, 1, 1, 1))


def variant(width):
    """Still widthscan's ResNet18 forward, with a biased stem, two-group and gain-free norms."""
    net = resnet(width)
    net.stem = torch.nn.Conv2d(2, width, 3, 1, 1, bias=True)
    net.stem_norm = torch.nn.GroupNorm(2, width)
    net.stages[1][0].norm1 = torch.nn.GroupNorm(1, 2 * width, affine=False)
    return net


class Pooled(ws.models.ResNet18):
    """A subclass with its own forward: the backend must not take it."""

    def forward(self, x):
        return self.readout(self.features(x).relu())


def images(n=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 2, 8, 8, generator=g, dtype=torch.float64)


@pytest.mark.parametrize("factory", [resnet, variant])
@pytest.mark.parametrize("param", ["mup", "sp", "ntp", "mf"])
def test_stacked_forward_equals_each_member_alone(factory, param):
    ens = ws.Ensemble(factory, 8, 4, param, "sgd", SEEDS, precision="float64",
                      stacking="batched")
    assert ens.backend.name == "resnet"
    if param != "sp":
        assert any(m != 1.0 for m in ens.multipliers.values())
    x = images()
    out = ens(x)
    assert out.shape == (len(SEEDS), 5, 3)
    for k, seed in enumerate(SEEDS):
        member = ws.parametrize(factory, 8, 4, param, "sgd", seed=seed, dtype=torch.float64)
        torch.testing.assert_close(out[k], member.module(x), rtol=1e-10, atol=1e-12)
        eff = scale_params({n: p[k] for n, p in ens.params.items()}, ens.multipliers)
        torch.testing.assert_close(out[k], functional_call(member.net, eff, (x,)),
                                   rtol=1e-10, atol=1e-12)


def test_features_are_each_members_penultimate_layer():
    ens = ws.Ensemble(resnet, 8, 4, "mup", "sgd", SEEDS, precision="float64")
    x = images()
    feats = resnet_stacked.features_stacked(ens.net, scale_params(ens.params, ens.multipliers),
                                            x)
    for k, seed in enumerate(SEEDS):
        member = ws.parametrize(resnet, 8, 4, "mup", "sgd", seed=seed, dtype=torch.float64)
        torch.testing.assert_close(feats[k], member.net.features(x), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(("net", "taken"), [
    (resnet(4), True),
    (variant(4), True),
    (Pooled(4, 3, 2, (1, 1, 1, 1)), False),
    (ws.models.resnet18(4, blocks=(1, 1, 1, 1)), True),
])
def test_only_resnets_with_widthscans_forward_are_taken(net, taken):
    found = backends.find(net, dict(net.named_buffers()))
    assert (found is not None and found[0].name == "resnet") == taken


def test_a_batch_norm_resnet_is_left_to_the_generic_path():
    assert not resnet_stacked.supports(_batch_norm(4))
    with pytest.raises(ValueError, match="stacking='batched'"):
        ws.Ensemble(_batch_norm, 8, 4, stacking="batched")


def _batch_norm(width):
    net = resnet(width)
    net.stem_norm = torch.nn.BatchNorm2d(width)
    return net


def test_inputs_of_another_shape_go_through_vmap():
    ens = ws.Ensemble(resnet, 8, 4, "mup", "sgd", SEEDS, precision="float64",
                      stacking="batched")
    assert ens.backend.accepts(ens._plan, images())
    assert not ens.backend.accepts(ens._plan, torch.randn(5, 3, 8, 8))
    assert not ens.backend.accepts(ens._plan, torch.randn(2, 8, 8))


def data(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(4, 2, 8, 8, generator=g), torch.randint(0, 3, (4,), generator=g))
            for _ in range(n)]


def roundtrip(state):
    """Through a safetensors blob and a JSON string, as on disk."""
    tensors = load(save({k: v.contiguous() for k, v in state["tensors"].items()}))
    return {"tensors": tensors, "meta": json.loads(json.dumps(state["meta"]))}


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_batched_resume_is_bit_identical(optimizer):
    batches = data(8)
    sched = ws.train.make_schedule("cosine", total_steps=8, warmup_steps=2)

    def make():
        return ws.Ensemble(resnet, 8, 4, "mup", optimizer, SEEDS, 0.05, momentum=0.9,
                           loss="ce", schedule=sched, stacking="batched")

    straight = make()
    for x, y in batches:
        straight.step(x, y)
    first = make()
    for x, y in batches[:4]:
        first.step(x, y)
    resumed = make()
    resumed.load_state_dict(roundtrip(first.state_dict()))
    for x, y in batches[4:]:
        resumed.step(x, y)
    for name, p in straight.params.items():
        assert torch.equal(p, resumed.params[name]), name


def test_auto_measures_the_batched_backend_and_takes_the_fastest(monkeypatch):
    monkeypatch.setattr(ensemble_module, "_CHOSEN", {})
    x, y = data(1)[0]
    ens = ws.Ensemble(resnet, 8, 4, "mup", "sgd", SEEDS, 0.05, loss="ce")
    ens.step(x, y)
    assert set(ens.timings) == {"batched", *ensemble_module.MEASURED}
    assert ens.stacking == min(ens.timings, key=ens.timings.get)


def test_bfloat16_members_match_each_member_under_autocast():
    ens = ws.Ensemble(resnet, 8, 4, "mup", "sgd", SEEDS, precision="bfloat16",
                      stacking="batched")
    x = images().float()
    out = ens(x)
    assert out.dtype == torch.bfloat16
    for k, seed in enumerate(SEEDS):
        member = ws.parametrize(resnet, 8, 4, "mup", "sgd", seed=seed)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            ref = member.module(x)
        torch.testing.assert_close(out[k].float(), ref.float(), rtol=0.05, atol=0.05)


def test_probes_through_the_backend_equal_the_generic_path():
    x = images(3)
    y = torch.tensor([0, 2, 1])
    got = {}
    for stacking in ("batched", "vmap"):
        ens = ws.Ensemble(resnet, 4, 2, "mup", "sgd", SEEDS, loss="ce", precision="float64",
                          stacking=stacking)
        got[stacking] = {**ws.probes.sharpness(ens, x, y, loss="ce", k=1, tol=1e-8,
                                               max_iter=8),
                         **ws.probes.entk(ens, x[:2])}
    for name in ("sharpness", "entk"):
        torch.testing.assert_close(torch.as_tensor(got["batched"][name].values),
                                   torch.as_tensor(got["vmap"][name].values),
                                   rtol=1e-8, atol=1e-12)


@pytest.fixture
def channels_last(monkeypatch):
    """The opt-in NHWC backend in place of the default, for this test only."""
    monkeypatch.setattr(backends, "BACKENDS", dict(backends.BACKENDS))
    backends.register(backends.resnet_backend(channels_last=True))
    assert list(backends.BACKENDS)[-1] == "resnet"
    layouts = []
    forward = resnet_stacked.forward_stacked

    def spy(net, eff, x, channels_last=False):
        layouts.append(channels_last)
        return forward(net, eff, x, channels_last)

    monkeypatch.setattr(resnet_stacked, "forward_stacked", spy)
    return layouts


def test_channels_last_members_equal_each_member_alone_and_train_like_vmap(channels_last):
    x = images()
    ens = ws.Ensemble(resnet, 8, 4, "mup", "sgd", SEEDS, precision="float64",
                      stacking="batched")
    out = ens(x)
    for k, seed in enumerate(SEEDS):
        member = ws.parametrize(resnet, 8, 4, "mup", "sgd", seed=seed, dtype=torch.float64)
        torch.testing.assert_close(out[k], member.module(x), rtol=1e-10, atol=1e-12)
    runs = {}
    for stacking in ("batched", "vmap"):
        ens = ws.Ensemble(resnet, 8, 4, "mup", "sgd", SEEDS, 0.05, momentum=0.9, loss="ce",
                          precision="float64", stacking=stacking)
        runs[stacking] = torch.stack([ens.step(x.double(), y) for x, y in data(4)])
        runs[f"{stacking} params"] = torch.cat([p.flatten() for p in ens.params.values()])
    torch.testing.assert_close(runs["batched"], runs["vmap"], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(runs["batched params"], runs["vmap params"], rtol=1e-10,
                               atol=1e-12)
    assert channels_last and all(channels_last)

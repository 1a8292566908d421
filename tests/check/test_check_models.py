"""``widthscan.check`` on whole models: planted mistakes are flagged naming their layer, by the
parameters' structure and by the activations; correct models pass; SP and NTP fail for the
reasons muP theory gives (features move faster / slower with width)."""

import functools

import check_models as cm
import pytest

import widthscan as ws
from widthscan.check import check

WIDTHS = (64, 128, 256)


def run(factory, widths=WIDTHS, **kw):
    kw.setdefault("dynamics_steps", 0)
    return check(factory, widths[0], widths, **kw)


PLANTED = [
    # factory, layer, finding kind (structure) or None, words the hint must contain
    (cm.mlp_readout_transposed, "4", "readout-role", "1/N"),
    (cm.lm_sqrt_attention, "attn:logits", None, "qk_scale 1/d_head"),
    (cm.lm_sdpa_default_scale, "attn:logits", None, "qk_scale 1/d_head"),
    (cm.mlp_fixed_hidden, "2", "ignores-width", "ignores the width"),
    (cm.lm_norm_as_matrix, "norm", "vector-as-matrix", "treated as a matrix"),
    (cm.lm_tied, "readout", "tied", "tying"),
]



@pytest.mark.parametrize("factory,layer,kind,words", PLANTED,
                         ids=[p[0].__name__ for p in PLANTED])
def test_planted_mistake_is_flagged_naming_its_layer(factory, layer, kind, words):
    result = run(factory)
    assert not result.ok
    assert layer in result.flagged()
    assert layer in result.cause() and words in result.cause(), result.cause()
    verdict = {v.layer: v for v in result.layers}[layer]
    assert verdict.measure == "init" and verdict.verdict in ("grows", "shrinks"), result.text()
    if kind is not None:
        assert kind in {f.kind for f in result.findings}
        assert any(layer in f.layers for f in result.findings if f.kind == kind)


def test_bare_position_table_is_flagged_from_the_parameters():
    """Visible in the parameters only: the table's share of the embedding sum has no module
    output of its own. Declared a vector, the same model passes."""
    result = run(cm.lm_bare_positions)
    assert not result.ok
    assert [f.kind for f in result.findings] == ["stray-output"]
    assert result.cause().startswith("pos (32, 256) got role 'output'")
    assert run(cm.lm_bare_positions, roles={"pos": "vector"}).ok


@pytest.mark.parametrize("factory,widths", [
    (cm.sequential_mlp, WIDTHS),
    (cm.conv_net, (32, 64, 128)),
    (cm.tiny_lm, WIDTHS),
    (cm.lm_sdpa_mup_scale, WIDTHS),
    (functools.partial(ws.models.mlp, depth=4), WIDTHS),
    (functools.partial(ws.models.transformer, n_layers=1, seq_len=16), WIDTHS),
    (functools.partial(ws.models.resnet18, in_channels=1), (8, 16, 32)),
], ids=["sequential_mlp", "conv_net", "tiny_lm", "lm_sdpa_mup_scale", "ws_mlp",
        "ws_transformer", "ws_resnet18"])
@pytest.mark.filterwarnings("ignore:There is a performance drop:UserWarning")  # vmap of SDPA
def test_correct_models_pass(factory, widths):
    result = run(factory, widths, dynamics_steps=4)
    assert result.ok, result.text()
    assert not result.findings


@pytest.mark.parametrize("optimizer,lr", [("sgd", 0.1), ("adam", 1e-3)])
def test_mup_passes_and_sp_grows_and_ntp_shrinks(optimizer, lr):
    """The same MLP: muP features move width-independently; SP's hidden features move faster
    with width (slope ~ +1 under SGD at a fixed lr), NTP's slower (lazy, ~ -1/2)."""
    factory = functools.partial(ws.models.mlp, depth=4)
    by = {p: {v.layer: v for v in run(factory, param=p, optimizer=optimizer, lr=lr).layers}
          for p in ("mup", "sp", "ntp")}
    assert all(v.ok for v in by["mup"].values())
    assert by["sp"]["hidden.0"].verdict == "grows"
    assert by["sp"]["hidden.0"].measure == "change"
    if optimizer == "sgd":
        assert by["ntp"]["hidden.0"].verdict == "shrinks"


def test_planted_twins_differ_only_by_the_mistake():
    """tiny_lm and lm_sqrt_attention differ only in the attention scale: the slope of the
    logits at init differs by the 1/2 that 1/d_head vs 1/sqrt(d_head) predicts."""
    good = {v.layer: v for v in run(cm.tiny_lm).layers}["attn:logits"]
    bad = {v.layer: v for v in run(cm.lm_sqrt_attention).layers}["attn:logits"]
    assert bad.init.value - good.init.value == pytest.approx(0.5, abs=0.1)
    assert good.ok and not bad.ok


def test_dynamics_distance_falls_for_mup_and_divergence_fails():
    """A muP transformer on text: the probe logits of narrower widths are further from the
    widest's (the distance falls with width); an absurd lr diverges and fails the check."""
    factory = functools.partial(ws.models.transformer, n_layers=1, seq_len=16)
    result = run(factory, dynamics_steps=6)
    assert result.dynamics.ok and result.dynamics.slope.high < 0
    dist = result.dynamics.distance.mean("seed")
    assert float(dist.sel(width=64)) > float(dist.sel(width=128)) > 0
    assert float(dist.sel(width=256)) == 0
    blown = run(functools.partial(ws.models.mlp, depth=3), lr=1e3, dynamics_steps=3)
    assert not blown.ok and "diverge" in blown.dynamics.summary()

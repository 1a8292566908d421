"""Role inference on every family, against tables written out by hand."""

import pytest
import torch
from torch import nn

import widthscan as ws
from widthscan.parametrization import WidthError, infer_roles


def test_mlp_roles():
    roles = infer_roles(lambda w: ws.models.mlp(w, depth=4, d_in=5, d_out=2), 8)
    assert roles == {
        "input.weight": "input", "input.bias": "vector",
        "hidden.0.weight": "hidden", "hidden.0.bias": "vector",
        "hidden.1.weight": "hidden", "hidden.1.bias": "vector",
        "readout.weight": "output", "readout.bias": "fixed",
    }


def test_resnet_roles():
    roles = infer_roles(lambda w: ws.models.resnet18(w, n_classes=10), 4)
    assert roles["stem.weight"] == "input"
    assert roles["stem_norm.weight"] == roles["stem_norm.bias"] == "vector"
    assert roles["stages.0.0.conv1.weight"] == "hidden"
    assert roles["stages.1.0.shortcut.0.weight"] == "hidden"
    assert roles["stages.3.1.norm2.weight"] == "vector"
    assert roles["readout.weight"] == "output" and roles["readout.bias"] == "fixed"
    convs = [n for n in roles if n.endswith("weight") and "conv" in n]
    assert len(convs) == 16 and all(roles[n] == "hidden" for n in convs)


def test_transformer_roles():
    roles = infer_roles(lambda w: ws.models.transformer(w, vocab_size=50, seq_len=8, n_layers=1), 8)
    expected = {
        "embed.weight": "input", "pos_embed.weight": "input",
        "blocks.0.norm1.weight": "vector", "blocks.0.norm1.bias": "vector",
        "blocks.0.attn.query.weight": "hidden", "blocks.0.attn.query.bias": "vector",
        "blocks.0.attn.key.weight": "hidden",
        "blocks.0.attn.value.weight": "hidden", "blocks.0.attn.value.bias": "vector",
        "blocks.0.attn.out.weight": "hidden", "blocks.0.attn.out.bias": "vector",
        "blocks.0.norm2.weight": "vector", "blocks.0.norm2.bias": "vector",
        "blocks.0.ffn_in.weight": "hidden", "blocks.0.ffn_in.bias": "vector",
        "blocks.0.ffn_out.weight": "hidden", "blocks.0.ffn_out.bias": "vector",
        "norm.weight": "vector", "norm.bias": "vector",
        "readout.weight": "output", "readout.bias": "fixed",
    }
    assert roles == expected


def test_fans_of_conv_count_receptive_field_and_embeddings_are_one_hot():
    shapes = ws.parametrization.infer_shapes(lambda w: ws.models.resnet18(w), 8, 4)
    conv = shapes["stages.0.0.conv1.weight"]
    assert (conv.fan_in, conv.fan_in_base) == (8 * 9, 4 * 9)
    emb = ws.parametrization.infer_shapes(
        lambda w: ws.models.transformer(w, seq_len=4, n_layers=1), 16, 8)["embed.weight"]
    assert emb.fan_in == 1 and emb.fan_out == 16 and emb.fan_out_mult == 2


def test_factory_ignoring_width_is_an_error():
    with pytest.raises(WidthError, match="must use its width"):
        infer_roles(lambda w: nn.Linear(4, 4), 8)


def test_three_growing_dims_is_an_error_naming_the_parameter():
    class Cube(nn.Module):
        def __init__(self, w):
            super().__init__()
            self.cube = nn.Parameter(torch.zeros(w, w, w))

    with pytest.raises(WidthError, match=r"'cube'.*3 dimensions"):
        infer_roles(Cube, 4)


def test_role_override_and_bad_override():
    class Bare(nn.Module):
        def __init__(self, w):
            super().__init__()
            self.table = nn.Parameter(torch.zeros(5, w))

    assert infer_roles(Bare, 4) == {"table": "output"}
    shapes = ws.parametrization.infer_shapes(Bare, 4, 4, overrides={"table": "input"})
    assert shapes["table"].role == "input"
    with pytest.raises(WidthError, match="roles must be one of"):
        ws.parametrization.infer_shapes(Bare, 4, 4, overrides={"table": "readout"})


def test_attention_scale_is_one_over_d_head_under_mup():
    def f(w):
        return ws.models.transformer(w, seq_len=4, n_layers=1, n_heads=2)

    for param, expected in [("mup", 8**0.5 / 32), ("sp", 32**-0.5), ("ntp", 32**-0.5)]:
        p = ws.parametrize(f, 64, 16, param)
        assert p.net.blocks[0].attn.qk_scale == pytest.approx(expected)
    base = ws.parametrize(f, 16, 16, "mup")
    assert base.net.blocks[0].attn.qk_scale == pytest.approx(8**-0.5)


def test_zero_init_readout_and_query():
    def f(w):
        return ws.models.transformer(w, seq_len=4, n_layers=1)

    p = ws.parametrize(f, 16, 8, zero_init=("readout", "query"))
    assert p.net.readout.weight.abs().sum() == 0
    assert p.net.blocks[0].attn.query.weight.abs().sum() == 0
    assert p.net.blocks[0].attn.value.weight.abs().sum() > 0
    with pytest.raises(ValueError, match="zero_init"):
        ws.parametrize(f, 16, 8, zero_init=("head",))

"""Feature kernels, preactivation histograms and attention maps."""

import numpy as np
import pytest
import scipy.stats as st
import torch
import torch.nn.functional as F
from probes_testlib import gen, mlp, sphere, transformer

import widthscan as ws
import widthscan.probes as probes
from widthscan.probes.features import histogram


def two_layer(width: int):
    return ws.models.mlp(width, depth=2, d_in=10, d_out=1)


def test_kernel_is_post_activation_gram_and_identical_for_identical_networks():
    x = torch.randn(6, 4, generator=gen(1), dtype=torch.float64)
    ens = ws.Ensemble(mlp, 32, 8, "mup", "sgd", [7, 7], precision="float64")
    k = ens_k = probes.kernels(ens, x)["kernel"]
    assert k.dims == ("layer", "example", "example2")
    assert list(k.coords["layer"]) == ["input", "hidden.0"]
    np.testing.assert_array_equal(k.values[0], k.values[1])
    p = ws.parametrize(mlp, 32, 8, "mup", "sgd", seed=7, dtype=torch.float64)
    single = probes.kernels(p, x)["kernel"].values
    np.testing.assert_allclose(single, ens_k.values[0], rtol=1e-12, atol=1e-14)
    net = p.net
    h1 = F.relu(net.input(x))
    h2 = F.relu(net.hidden[0](h1))
    expected = np.stack([(h1 @ h1.T / 32).detach().numpy(), (h2 @ h2.T / 32).detach().numpy()])
    np.testing.assert_allclose(single, expected, rtol=1e-12, atol=1e-14)
    other = probes.kernels(ws.parametrize(mlp, 32, 8, "mup", "sgd", seed=8,
                                          dtype=torch.float64), x)["kernel"].values
    assert not np.allclose(other, single)


def test_random_feature_kernel_concentrates_as_inverse_sqrt_width():
    x = sphere(8, 10, seed=1)
    widths = [64, 256, 1024, 4096]
    spread = []
    for w in widths:
        ens = ws.Ensemble(two_layer, w, 64, "mup", "sgd", list(range(8)), precision="float64")
        k = probes.kernels(ens, x, layers=["input"])["kernel"].values[:, 0]
        spread.append(k.std(0, ddof=1).mean() / np.abs(k.mean(0)).mean())
    slope = np.polyfit(np.log(widths), np.log(spread), 1)[0]
    assert -0.65 <= slope <= -0.35, (slope, spread)


def test_preactivations_are_gaussian_at_init_under_mup():
    x = sphere(10, 10, seed=2)
    factory = lambda w: ws.models.mlp(w, depth=3, d_in=10, d_out=1)  # noqa: E731
    ens = ws.Ensemble(factory, 4096, 64, "mup", "sgd", [0], precision="float64")
    r = probes.preactivations(ens, x, bins=40, range_std=4.0)
    total = 4096 * x.shape[0]
    assert list(r["preact_stats"].coords["stat"]) == ["mean", "std", "kurtosis"]
    for i, layer in enumerate(r["preact_hist"].coords["layer"]):
        counts = r["preact_hist"].values[0, i]
        edges = r["preact_edges"].values[0, i]
        mu, sd, kurt = r["preact_stats"].values[0, i]
        assert abs(kurt) < 0.1, layer
        np.testing.assert_allclose(edges[[0, -1]], [mu - 4 * sd, mu + 4 * sd], rtol=1e-9)
        expected = total * np.diff(st.norm.cdf(edges, mu, sd))
        chi2 = ((counts - expected) ** 2 / expected).mean()
        assert chi2 < 2.0, (layer, chi2)
        assert (np.abs(counts - expected) / np.sqrt(expected)).max() < 5.0, layer
        wrong = total * np.diff(st.norm.cdf(edges, mu, 1.1 * sd))
        assert ((counts - wrong) ** 2 / wrong).mean() > 5.0, "the test could not fail"


def test_histogram_matches_numpy_and_edges_are_kept():
    v = torch.randn(2, 1000, generator=gen(3), dtype=torch.float64)
    edges = torch.linspace(-2, 2, 9, dtype=torch.float64)
    v[0, :3] = torch.tensor([-2.0, 2.0, 0.5])
    v[1, 0] = float("nan")
    counts = histogram(v, edges)
    for k in range(2):
        row = v[k][torch.isfinite(v[k])].numpy()
        np.testing.assert_array_equal(counts[k].numpy(), np.histogram(row, edges.numpy())[0])
    x = torch.randn(5, 4, generator=gen(4), dtype=torch.float64)
    p = ws.parametrize(mlp, 16, 8, "mup", "sgd", seed=0, dtype=torch.float64)
    given = np.stack([np.linspace(-3, 3, 11), np.linspace(-1, 1, 11)])
    r = probes.preactivations(p, x, bins=10, edges=given)
    np.testing.assert_array_equal(r["preact_edges"].values, given)
    pre = p.net.input(x).detach().numpy().ravel()
    np.testing.assert_array_equal(r["preact_hist"].values[0], np.histogram(pre, given[0])[0])
    np.testing.assert_allclose(r["preact_stats"].values[0],
                               [pre.mean(), pre.std(), st.kurtosis(pre)], rtol=1e-10)
    with pytest.raises(ValueError, match="edges"):
        probes.preactivations(p, x, edges=given[:1])


def test_attention_probabilities_match_a_manual_forward():
    p = ws.parametrize(transformer, 8, 4, "mup", "sgd", seed=1, dtype=torch.float64)
    tokens = torch.randint(0, 11, (6,), generator=gen(5))
    att = probes.attention(p, tokens)["attention"]
    assert att.dims == ("layer", "head", "query", "key")
    assert list(att.coords["layer"]) == ["blocks.0.attn", "blocks.1.attn"]
    assert att.values.shape == (2, 2, 6, 6)
    np.testing.assert_allclose(att.values.sum(-1), 1.0, rtol=1e-12)
    assert np.all(np.triu(att.values, 1) == 0)
    net = p.net
    assert all(v == 1.0 for n, v in p.multipliers.items() if not n.startswith("readout"))
    h = net.embed(tokens[None]) + net.pos_embed.weight[:6]
    attn = net.blocks[0].attn
    z = net.blocks[0].norm1(h)
    q = attn.query(z).view(1, 6, 2, 4).transpose(1, 2)
    k = attn.key(z).view(1, 6, 2, 4).transpose(1, 2)
    logits = (q @ k.transpose(-1, -2)) * attn.qk_scale
    logits = logits.masked_fill(torch.ones(6, 6, dtype=torch.bool).triu(1), float("-inf"))
    np.testing.assert_allclose(att.values[0], logits.softmax(-1)[0].detach().numpy(),
                               rtol=1e-12, atol=1e-15)
    with pytest.raises(ValueError, match="one probe sequence"):
        probes.attention(p, tokens.expand(2, 6))
    with pytest.raises(ValueError, match="attention"):
        probes.attention(ws.parametrize(mlp, 8, 4, seed=0), torch.randn(1, 4))


def test_layer_selection_patterns_inputs_and_errors():
    p = ws.parametrize(transformer, 8, 4, "mup", "sgd", seed=1, dtype=torch.float64)
    x = torch.randint(0, 11, (3, 6), generator=gen(6))
    r = probes.kernels(p, x, layers=["blocks.*.ffn_out", "readout:in"], pool="flatten")
    assert list(r["kernel"].coords["layer"]) == ["blocks.0.ffn_out", "blocks.1.ffn_out",
                                                 "readout:in"]
    feats = p.net.norm(p.net.blocks[1](p.net.blocks[0](
        p.net.embed(x) + p.net.pos_embed.weight[:6]))).reshape(3, -1)
    np.testing.assert_allclose(r["kernel"].values[2], (feats @ feats.T / feats.shape[1])
                               .detach().numpy(), rtol=1e-10)
    with pytest.raises(ValueError, match="matches no module"):
        probes.kernels(p, x, layers=["nope"])
    with pytest.raises(ValueError, match="pool"):
        probes.kernels(p, x, pool="max")

"""Consistency across widths on planted datasets with known distances."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats
import xarray as xr

from widthscan.analysis import (
    consistency_width,
    distance_to_widest,
    histogram_wasserstein,
    kernel_distance,
    preactivation_distance,
    step_dim,
    successive_differences,
)

WIDTHS = np.array([32, 64, 128, 256, 512, 1024])
DIMS = ("param", "width", "seed", "logits_step", "example", "output")


def logits_ds(values: np.ndarray, widths=WIDTHS, params=("mup", "sp")) -> xr.Dataset:
    coords = {"param": list(params), "width": widths, "seed": np.arange(values.shape[2]),
              "logits_step": 10 * np.arange(values.shape[3])}
    return xr.Dataset({"logits": (DIMS, values)}, coords=coords)


def _unit_rms(x: np.ndarray) -> np.ndarray:
    return x / np.sqrt((x**2).mean((-2, -1), keepdims=True))


def planted_inverse_width(rng, scale=(1.0, 3.0), n_seeds=3, n_steps=2, p=400, c=5):
    """Logits of width w = base + scale * noise / w, exact at the widest width."""
    base = rng.normal(size=(len(scale), 1, n_seeds, n_steps, p, c))
    noise = _unit_rms(rng.normal(size=(len(scale), WIDTHS.size, n_seeds, n_steps, p, c)))
    dev = np.asarray(scale)[:, None] / WIDTHS[None, :]
    dev[:, -1] = 0.0
    return base + dev[:, :, None, None, None, None] * noise


def test_step_dim():
    da = xr.DataArray(np.zeros((2, 3)), dims=("width", "kernels_step"))
    assert step_dim(da) == "kernels_step"
    assert step_dim(xr.DataArray(np.zeros(2), dims="step")) == "step"
    with pytest.raises(ValueError):
        step_dim(xr.DataArray(np.zeros(2), dims="width"))
    with pytest.raises(ValueError):
        step_dim(xr.DataArray(np.zeros((2, 2)), dims=("step", "loss_step")))


def test_distance_to_widest_falls_as_inverse_width():
    rng = np.random.default_rng(0)
    ds = logits_ds(planted_inverse_width(rng))
    d = distance_to_widest(ds, "logits")
    assert d.dims == ("param", "width", "seed", "logits_step")
    assert np.all(d.sel(width=1024) == 0)
    narrow = d.sel(width=WIDTHS[:-1])
    w = narrow["width"]
    np.testing.assert_allclose((narrow * w).sel(param="mup"), 1.0, rtol=1e-12)
    np.testing.assert_allclose((narrow * w).sel(param="sp"), 3.0, rtol=1e-12)
    slope = np.polyfit(np.log(WIDTHS[:-1]), np.log(narrow.sel(param="mup").mean(
        ["seed", "logits_step"]).values), 1)[0]
    assert slope == pytest.approx(-1, abs=1e-9)


def test_distance_scaled_and_ensemble():
    rng = np.random.default_rng(1)
    vals = planted_inverse_width(rng, n_seeds=4)
    ds = logits_ds(vals)
    d = distance_to_widest(ds, "logits")
    ref_rms = np.sqrt((vals[:, -1] ** 2).mean((-2, -1)))
    scaled = distance_to_widest(ds, "logits", scaled=True)
    np.testing.assert_allclose(scaled.values, d.values / ref_rms[:, None], rtol=1e-12)
    ens = distance_to_widest(ds, "logits", ensemble=True)
    assert ens.dims == ("param", "width", "logits_step")
    narrow = ens.sel(param="mup", width=WIDTHS[:-1])
    np.testing.assert_allclose(narrow * narrow["width"] * 2.0, 1.0, rtol=0.05)


def test_params_never_mix_and_reference_skips_missing_widest():
    rng = np.random.default_rng(2)
    vals = planted_inverse_width(rng)
    vals[1, -1] = np.nan
    ds = logits_ds(vals)
    d = distance_to_widest(ds, "logits")
    assert d["reference_width"].sel(param="mup") == 1024
    assert d["reference_width"].sel(param="sp") == 512
    assert np.all(d.sel(param="sp", width=512) == 0)
    assert np.all(np.isnan(d.sel(param="sp", width=1024)))
    w = WIDTHS[:-2]
    expected = 3.0 * np.sqrt(1 / w**2 + 1 / 512**2)
    got = d.sel(param="sp", width=w).mean(["seed", "logits_step"])
    np.testing.assert_allclose(got, expected, rtol=0.04)
    np.testing.assert_allclose(d.sel(param="mup", width=w).mean(["seed", "logits_step"]) * w,
                               1.0, rtol=0.04)


def test_successive_differences():
    rng = np.random.default_rng(3)
    ds = logits_ds(planted_inverse_width(rng))
    s = successive_differences(ds, "logits").sel(param="mup").mean(["seed", "logits_step"])
    assert list(s["width"].values) == list(WIDTHS[:-1])
    assert list(s["width_next"].values) == list(WIDTHS[1:])
    w = WIDTHS[:-2]
    np.testing.assert_allclose(s.sel(width=w), np.sqrt(1 / w**2 + 1 / (2 * w) ** 2), rtol=0.04)
    np.testing.assert_allclose(s.sel(width=512), 1 / 512, rtol=0.04)


def test_consistency_width_grows_with_training_time():
    rng = np.random.default_rng(4)
    widths = np.array([8, 16, 32, 64, 128, 256, 512, 1024])
    growth = 0.8 * 2.0 ** np.arange(7)
    n_steps = growth.size
    base = rng.normal(size=(1, 1, 2, n_steps, 50, 3))
    noise = _unit_rms(rng.normal(size=(1, widths.size, 2, n_steps, 50, 3)))
    dev = growth[None, :] / widths[:, None]
    dev[-1] = 0.0
    ds = logits_ds(base + dev[None, :, None, :, None, None] * noise, widths, ("mup",))
    cw = consistency_width(ds, "logits", tol=0.06, scaled=False)
    assert cw.dims == ("param", "seed", "logits_step")
    expected = [16, 32, 64, 128, 256, 512, np.nan]
    for s in range(2):
        np.testing.assert_array_equal(cw.isel(param=0, seed=s).values, expected)
    assert np.all(np.diff(cw.isel(param=0, seed=0).values[:-1]) > 0)


def test_consistency_width_cumulative_and_all_wider_widths():
    rng = np.random.default_rng(5)
    widths = np.array([8, 16, 32, 64, 128])
    growth = np.array([3.2, 0.8, 1.6, 0.8])
    noise = _unit_rms(rng.normal(size=(1, widths.size, 1, growth.size, 40, 2)))
    dev = growth[None, :] / widths[:, None]
    dev[-1] = 0.0
    dev[0, 2] = 0.0
    ds = logits_ds(dev[None, :, None, :, None, None] * noise, widths, ("mup",))
    plain = consistency_width(ds, "logits", tol=0.06, scaled=False, ensemble=True)
    np.testing.assert_array_equal(plain.isel(param=0).values, [64, 16, 32, 16])
    cum = consistency_width(ds, "logits", tol=0.06, scaled=False, ensemble=True,
                            cumulative=True)
    np.testing.assert_array_equal(cum.isel(param=0).values, [64, 64, 64, 64])


def test_consistency_width_all_nan_when_nothing_qualifies():
    rng = np.random.default_rng(6)
    ds = logits_ds(planted_inverse_width(rng))
    cw = consistency_width(ds, "logits", tol=1e-9, scaled=True)
    assert cw.isnull().all()


def reference_cka(k1: np.ndarray, k2: np.ndarray) -> float:
    p = k1.shape[0]
    h = np.eye(p) - np.ones((p, p)) / p
    a, b = h @ k1 @ h, h @ k2 @ h
    return float(np.trace(a @ b) / np.sqrt(np.trace(a @ a) * np.trace(b @ b)))


def test_kernel_distance_cka_and_frobenius():
    rng = np.random.default_rng(7)
    p, widths = 30, np.array([16, 64, 256])
    x = rng.normal(size=(p, 8)) + 3.0
    gram = x @ x.T
    kernels = np.empty((1, widths.size, 2, 2, 3, p, p))
    for i, w in enumerate(widths):
        for s in range(2):
            for t in range(2):
                for layer in range(3):
                    e = rng.normal(size=(p, p))
                    e = (e + e.T) * (0 if w == 256 else 20.0 / w)
                    kernels[0, i, s, t, layer] = (layer + 1) * (gram + e)
    dims = ("param", "width", "seed", "kernels_step", "layer", "example", "example2")
    ds = xr.Dataset({"kernel": (dims, kernels)},
                    coords={"param": ["mup"], "width": widths, "seed": [0, 1],
                            "kernels_step": [0, 5], "layer": ["a", "b", "c"]})
    cka_d = kernel_distance(ds, "kernel", metric="cka")
    frob = kernel_distance(ds, "kernel", metric="frobenius")
    assert cka_d.dims == ("param", "width", "seed", "kernels_step", "layer")
    for i in range(widths.size):
        k = kernels[0, i, 1, 0, 2]
        ref = kernels[0, -1, 1, 0, 2]
        assert cka_d.isel(param=0, width=i, seed=1, kernels_step=0, layer=2) == pytest.approx(
            1 - reference_cka(k, ref), abs=1e-10)
        assert frob.isel(param=0, width=i, seed=1, kernels_step=0, layer=2) == pytest.approx(
            np.linalg.norm(k - ref) / np.linalg.norm(ref), rel=1e-10)
    per_width = cka_d.isel(param=0).mean(["seed", "kernels_step", "layer"]).values
    assert per_width[-1] == pytest.approx(0, abs=1e-12)
    assert per_width[0] > per_width[1] > per_width[2]


def test_cka_distance_ignores_scale_frobenius_does_not():
    rng = np.random.default_rng(8)
    x = rng.normal(size=(20, 5))
    g = x @ x.T
    k = np.stack([5 * g, g])[None, :, None, None]
    ds = xr.Dataset({"entk": (("param", "width", "seed", "entk_step", "example", "example2"), k)},
                    coords={"param": ["mup"], "width": [8, 16], "seed": [0], "entk_step": [0]})
    assert float(kernel_distance(ds, "entk").isel(width=0).squeeze()) == pytest.approx(0, abs=1e-12)
    frob = kernel_distance(ds, "entk", metric="frobenius").isel(width=0).squeeze()
    assert float(frob) == pytest.approx(4.0)


def _hist(samples: np.ndarray, lo: float, hi: float, bins: int) -> tuple[np.ndarray, np.ndarray]:
    counts, edges = np.histogram(samples, bins=bins, range=(lo, hi))
    return counts, edges


def test_histogram_wasserstein_exact_shift():
    edges = np.linspace(0, 1, 11)
    counts = np.array([0, 3, 5, 1, 0, 7, 2, 0, 0, 0])
    assert histogram_wasserstein(counts, edges, counts, edges + 0.1) == pytest.approx(0.1)
    shifted = np.roll(counts, 2)
    assert histogram_wasserstein(counts, edges, shifted, edges) == pytest.approx(0.2)
    assert histogram_wasserstein(counts, edges, 4 * counts, edges) == pytest.approx(0, abs=1e-15)


def test_histogram_wasserstein_matches_scipy_on_raw_samples():
    rng = np.random.default_rng(9)
    for trial in range(10):
        a = rng.normal(0.0, 1.0, size=20000)
        b = rng.laplace(0.3 * trial / 10, 0.8, size=15000)
        bins_a, bins_b = 60 + 7 * trial, 45
        ca, ea = _hist(a, a.min(), a.max(), bins_a)
        cb, eb = _hist(b, b.min() - 0.3, b.max() + 0.1, bins_b)
        h = max(np.diff(ea).max(), np.diff(eb).max())
        got = histogram_wasserstein(ca, ea, cb, eb)
        exact = scipy.stats.wasserstein_distance(a, b)
        assert abs(got - exact) < 0.05 * h, (trial, got, exact, h)


def test_preactivation_distance_against_raw_samples():
    rng = np.random.default_rng(10)
    widths, n_seeds, n_steps, layers, bins = np.array([16, 64, 256]), 2, 2, 2, 50
    n = 4000
    shape = (1, widths.size, n_seeds, n_steps, layers)
    hist, edges = np.empty((*shape, bins)), np.empty((*shape, bins + 1))
    raw = {}
    for idx in np.ndindex(*shape):
        w = widths[idx[1]]
        x = rng.normal(2.0 / w * (idx[3] + 1), 1 + idx[4] * 0.5, size=n)
        raw[idx] = x
        lo, hi = x.min() - rng.uniform(0, 0.5), x.max() + rng.uniform(0, 0.5)
        hist[idx], edges[idx] = _hist(x, lo, hi, bins)
    dims = ("param", "width", "seed", "preactivations_step", "layer")
    ds = xr.Dataset(
        {"preact_hist": ((*dims, "bin"), hist), "preact_edges": ((*dims, "bin_edge"), edges)},
        coords={"param": ["mup"], "width": widths, "seed": [0, 1],
                "preactivations_step": [0, 100], "layer": ["l0", "l1"]},
    )
    d = preactivation_distance(ds)
    assert d.dims == dims
    for idx in np.ndindex(*shape):
        ref = (*idx[:1], widths.size - 1, *idx[2:])
        h = max(np.diff(edges[idx]).max(), np.diff(edges[ref]).max())
        exact = scipy.stats.wasserstein_distance(raw[idx], raw[ref])
        assert abs(float(d[idx]) - exact) < 0.1 * h
    pooled = preactivation_distance(ds, ensemble=True)
    assert pooled.dims == ("param", "width", "preactivations_step", "layer")
    for i, t, layer in np.ndindex(widths.size, n_steps, layers):
        a = np.concatenate([raw[(0, i, s, t, layer)] for s in range(n_seeds)])
        b = np.concatenate([raw[(0, widths.size - 1, s, t, layer)] for s in range(n_seeds)])
        exact = scipy.stats.wasserstein_distance(a, b)
        got = float(pooled.isel(param=0, width=i, preactivations_step=t, layer=layer))
        assert abs(got - exact) < 0.1 * np.diff(edges).max()


def test_distance_keeps_layer_and_reduces_attention_dims():
    rng = np.random.default_rng(11)
    dims = ("param", "width", "seed", "attention_step", "layer", "head", "query", "key")
    vals = rng.uniform(size=(1, 3, 2, 2, 3, 4, 5, 5))
    vals[:, -1] = vals[:, 0]
    vals[:, 1] = vals[:, 0] + 0.5
    ds = xr.Dataset({"attention": (dims, vals)}, coords={"width": [8, 16, 32]})
    d = distance_to_widest(ds, "attention")
    assert d.dims == ("param", "width", "seed", "attention_step", "layer")
    np.testing.assert_allclose(d.isel(width=0), 0.0)
    np.testing.assert_allclose(d.isel(width=1), 0.5)
    per_head = distance_to_widest(ds, "attention", keep=("head",))
    assert per_head.dims == ("param", "width", "seed", "attention_step", "layer", "head")


def test_distance_of_a_scalar_curve_is_the_absolute_gap():
    loss = xr.DataArray([[[1.0, 0.5]], [[0.7, 0.45]], [[0.6, 0.4]]], dims=("width", "seed", "step"),
                        coords={"width": [256, 64, 1024]})
    d = distance_to_widest(loss)
    assert list(d["width"].values) == [64, 256, 1024]
    np.testing.assert_allclose(d.squeeze("seed"), [[0.1, 0.05], [0.4, 0.1], [0.0, 0.0]])

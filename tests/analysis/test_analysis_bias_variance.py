"""Bias and variance over seeds on planted ensembles with known bias and variance."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
from scipy.special import log_softmax

from widthscan.analysis import bias_variance, variance_vs_ensemble_size

DIMS = ("param", "width", "seed", "logits_step", "example", "output")


def planted(rng, widths, bias_rms, sigma, n_seeds, n_ex=2000, n_out=5, n_steps=2):
    """logits = truth + bias_w + sigma_w * noise; returns (ds, truth, exact bias^2 per width)."""
    truth = rng.normal(size=(n_ex, n_out))
    bias = rng.normal(size=(len(widths), n_ex, n_out))
    bias *= np.asarray(bias_rms)[:, None, None] / np.sqrt((bias**2).mean((1, 2)))[:, None, None]
    bias = np.nan_to_num(bias)
    noise = rng.normal(size=(1, len(widths), n_seeds, n_steps, n_ex, n_out))
    logits = (truth + bias[None, :, None, None]
              + np.asarray(sigma)[None, :, None, None, None, None] * noise)
    ds = xr.Dataset({"logits": (DIMS, logits)},
                    coords={"param": ["mup"], "width": widths, "seed": np.arange(n_seeds),
                            "logits_step": np.arange(n_steps)})
    return ds, truth, (bias**2).mean((1, 2))


def test_recovers_planted_bias_and_variance():
    rng = np.random.default_rng(0)
    widths = np.array([64, 128, 256, 512])
    bias_rms = np.array([0.5, 0.2, 0.05, 0.0])
    sigma = np.array([0.4, 0.2, 0.1, 0.05])
    m, n = 4, 2000 * 5
    ds, truth, b2 = planted(rng, widths, bias_rms, sigma, m)
    out = bias_variance(ds, targets=truth, loss="mse")
    assert out["variance"].dims == ("param", "width", "logits_step")
    s2 = sigma[:, None] ** 2
    se_var = s2 * np.sqrt(2 / ((m - 1) * n))
    se_bias = np.sqrt((4 * b2[:, None] * s2 / m + 2 * s2**2 / m**2 * (1 + 1 / (m - 1))) / n)
    var = out["variance"].isel(param=0).values
    bias2 = out["bias2"].isel(param=0).values
    assert np.all(np.abs(var - s2) < 5 * se_var)
    assert np.all(np.abs(bias2 - b2[:, None]) < 5 * se_bias)
    naive_var = out["variance_naive"].isel(param=0).values
    assert np.all(np.abs(naive_var - s2) > 10 * se_var)
    np.testing.assert_allclose(naive_var, var * (m - 1) / m, rtol=1e-10)
    np.testing.assert_allclose(out["single_loss"], out["bias2"] + out["variance"], rtol=1e-10)
    width_bias = out["width_bias"].isel(param=0).values
    assert np.all(np.abs(width_bias - b2[:, None]) < 5 * (se_bias + se_bias[-1]))
    np.testing.assert_array_equal(width_bias[-1], 0.0)


@pytest.mark.parametrize("m", [2, 3, 4])
def test_unbiased_estimators_at_few_seeds(m):
    rng = np.random.default_rng(m)
    n_rep, n_ex, b, sigma = 3000, 20, 0.3, 0.6
    truth = rng.normal(size=n_ex)
    bias = b * rng.choice([-1.0, 1.0], size=n_ex)
    logits = truth + bias + sigma * rng.normal(size=(n_rep, 1, m, n_ex))
    da = xr.DataArray(logits, dims=("repeat", "width", "seed", "example"),
                      coords={"width": [128], "seed": np.arange(m)}, name="logits")
    out = bias_variance(da, targets=truth, loss="mse")
    assert out["bias2"].dims == ("width", "repeat")

    def mean_se(x):
        x = x.values.ravel()
        return x.mean(), x.std() / np.sqrt(x.size)

    mu, se = mean_se(out["bias2"])
    assert abs(mu - b**2) < 4 * se
    mu, se = mean_se(out["ensemble_loss"])
    assert abs(mu - (b**2 + sigma**2 / m)) < 4 * se
    assert abs(mu - b**2) > 20 * se
    mu, se = mean_se(out["variance"])
    assert abs(mu - sigma**2) < 4 * se
    mu, se = mean_se(out["variance_naive"])
    assert abs(mu - sigma**2) > 10 * se


def test_mse_labels_are_one_hot_and_targets_from_dataset():
    rng = np.random.default_rng(5)
    ds, _, _ = planted(rng, np.array([8, 16]), [0.1, 0.0], [0.1, 0.1], 3, n_ex=30, n_out=4)
    labels = rng.integers(0, 4, size=30)
    onehot = np.eye(4)[labels]
    a = bias_variance(ds, targets=labels, loss="mse")
    b = bias_variance(ds, targets=onehot, loss="mse")
    xr.testing.assert_allclose(a, b)
    c = bias_variance(ds.assign(targets=("example", labels)), loss="mse")
    xr.testing.assert_allclose(a, c)
    with pytest.raises(ValueError):
        bias_variance(ds, loss="mse")


def test_cross_entropy_against_direct_computation():
    rng = np.random.default_rng(6)
    ds, _, _ = planted(rng, np.array([8, 16, 32]), [1.0, 0.5, 0.0], [1.0, 0.5, 0.3], 3,
                       n_ex=40, n_out=6)
    ds = ds.assign_coords(example=np.arange(40))
    labels = rng.integers(0, 6, size=40)
    labels[:5] = -100
    out = bias_variance(ds, targets=labels, loss="ce")
    f = ds["logits"].isel(param=0, width=1, logits_step=0).values
    valid = labels != -100

    def ce(x):
        return -log_softmax(x[valid], -1)[np.arange(valid.sum()), labels[valid]].mean()

    single = np.mean([ce(f[s]) for s in range(3)])
    ens = ce(f.mean(0))
    got = out.isel(param=0, width=1, logits_step=0)
    assert float(got["single_loss"]) == pytest.approx(single, rel=1e-12)
    assert float(got["ensemble_loss"]) == pytest.approx(ens, rel=1e-12)
    assert float(got["variance"]) == pytest.approx(single - ens, rel=1e-10)
    assert np.all(out["variance"] >= 0)
    assert float(got["bias2"]) == pytest.approx(ens, rel=1e-12)
    shuffled = xr.DataArray(labels[::-1], dims="example", coords={"example": np.arange(40)[::-1]})
    xr.testing.assert_allclose(out, bias_variance(ds, targets=shuffled, loss="ce"))


def test_cross_entropy_variance_vanishes_without_seed_noise():
    rng = np.random.default_rng(7)
    ds, _, _ = planted(rng, np.array([8, 16]), [0.5, 0.0], [0.0, 0.0], 3, n_ex=20, n_out=3)
    out = bias_variance(ds, targets=rng.integers(0, 3, size=20), loss="ce")
    np.testing.assert_allclose(out["variance"], 0.0, atol=1e-12)


def test_variance_falls_as_one_over_ensemble_size():
    rng = np.random.default_rng(8)
    sigma = np.array([0.5, 0.3])
    m = 6
    ds, truth, _ = planted(rng, np.array([32, 64]), [0.3, 0.0], sigma, m, n_ex=2000, n_out=3)
    out = variance_vs_ensemble_size(ds, targets=truth, loss="mse", n_subsets=20)
    assert out["variance"].dims == ("param", "width", "logits_step", "ensemble_size")
    k = out["ensemble_size"].values
    np.testing.assert_array_equal(k, np.arange(1, m + 1))
    var = out["variance"].isel(param=0)
    np.testing.assert_allclose(var, out["reference"].isel(param=0), rtol=1e-10)
    want = np.broadcast_to((sigma[:, None, None] ** 2) / k[None, None, :], var.shape)
    np.testing.assert_allclose(var, want, rtol=0.05)
    bv = bias_variance(ds, targets=truth)
    xr.testing.assert_allclose(out["variance"].sel(ensemble_size=1, drop=True), bv["variance"])

    m = 10
    ds, truth, _ = planted(rng, np.array([32, 64]), [0.3, 0.0], sigma, m, n_ex=2000, n_out=3)
    out = variance_vs_ensemble_size(ds, targets=truth, loss="mse", n_subsets=12, seed=1)
    k = out["ensemble_size"].values
    var = out["variance"].isel(param=0)
    want = np.broadcast_to((sigma[:, None, None] ** 2) / k[None, None, :], var.shape)
    np.testing.assert_allclose(var, want, rtol=0.06)


def test_cross_entropy_variance_vs_ensemble_size_is_close_to_one_over_k():
    rng = np.random.default_rng(9)
    ds, _, _ = planted(rng, np.array([32, 64]), [0.3, 0.0], [0.3, 0.2], 6, n_ex=3000, n_out=4)
    labels = rng.integers(0, 4, size=3000)
    out = variance_vs_ensemble_size(ds, targets=labels, loss="ce", n_subsets=20)
    var = out["variance"].isel(param=0)
    assert np.all(var.diff("ensemble_size") < 0)
    np.testing.assert_allclose(var * var["ensemble_size"] / var.sel(ensemble_size=1), 1.0,
                               rtol=0.1)


SWEEP = """\
widths = [16, 32]
base_width = 16
params = ["mup"]
seeds = 3
[task]
name = "gegenbauer"
probe_examples = 12
options = { dim = 4, degree = 2 }
[optimizer]
lr = 0.1
[train]
steps = 6
batch_size = 8
[probes]
logits = { n_log = 2, n_linear = 2 }
"""


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    import widthscan as ws

    root = tmp_path_factory.mktemp("sweep")
    (root / "sweep.toml").write_text(SWEEP)
    ws.Sweep.from_toml(root / "sweep.toml").run(root / "run")
    return ws.load(root / "run")


def test_bias_variance_of_a_loaded_sweep_has_one_value_per_param_width_step(loaded):
    assert "seed" in loaded["targets"].dims and "targets_step" in loaded["targets"].dims
    out = bias_variance(loaded)
    for var in out.data_vars:
        assert out[var].dims == ("param", "width", "logits_step"), var
    f = loaded["logits"].values.astype(np.float64)
    y = loaded["targets"].values[0, 0, 0, 0].astype(np.float64)
    single = ((f - y) ** 2).mean((-2, -1)).mean(2)
    ens = ((f.mean(2) - y) ** 2).mean((-2, -1))
    np.testing.assert_allclose(out["single_loss"], single, rtol=1e-10)
    np.testing.assert_allclose(out["ensemble_loss"], ens, rtol=1e-10)
    vk = variance_vs_ensemble_size(loaded)
    assert "seed" not in vk.dims and "targets_step" not in vk.dims


def test_targets_that_differ_between_runs_raise(loaded):
    bad = loaded.copy()
    bad["targets"] = bad["targets"].copy()
    bad["targets"][0, 1, 0, 0, 0, 0] += 1.0
    with pytest.raises(ValueError, match="targets differ"):
        bias_variance(bad)

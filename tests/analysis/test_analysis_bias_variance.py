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


def shared_noise(rng, widths, bias_rms, sigma, rho, n_seeds, n_ex=2000, n_out=3):
    """Members = truth + bias_w + sigma_w (sqrt(rho) z_shared + sqrt(1 - rho) z_seed): a part
    of the noise common to every member, which no ensemble of this pool averages away."""
    truth = rng.normal(size=(n_ex, n_out))
    bias = rng.normal(size=(len(widths), n_ex, n_out))
    bias *= np.asarray(bias_rms)[:, None, None] / np.sqrt((bias**2).mean((1, 2)))[:, None, None]
    shared = rng.normal(size=(1, len(widths), 1, 1, n_ex, n_out))
    own = rng.normal(size=(1, len(widths), n_seeds, 1, n_ex, n_out))
    noise = np.sqrt(rho) * shared + np.sqrt(1 - rho) * own
    logits = truth + bias[None, :, None, None] + np.asarray(sigma)[None, :, None, None, None,
                                                                    None] * noise
    ds = xr.Dataset({"logits": (DIMS, logits)},
                    coords={"param": ["mup"], "width": widths, "seed": np.arange(n_seeds),
                            "logits_step": [0]})
    return ds, truth, (bias**2).mean((1, 2))


@pytest.mark.parametrize("rho", [0.0, 0.6])
def test_ensemble_loss_against_size_is_measured_on_disjoint_sub_ensembles(rho):
    """Closed forms: loss(k) = b^2 + rho s^2 + (1 - rho) s^2 / k against the targets and
    distance_to_full(k) = (1 - rho) s^2 (1/k - 1/M). With shared noise (rho > 0) the excess
    over the bias is not loss(1)'s excess / k."""
    rng = np.random.default_rng(8)
    sigma, m = np.array([0.5, 0.3]), 8
    ds, truth, b2 = shared_noise(rng, np.array([32, 64]), [0.3, 0.1], sigma, rho, m)
    out = variance_vs_ensemble_size(ds, targets=truth, loss="mse", n_subsets=10)
    assert out["ensemble_loss"].dims == ("param", "width", "logits_step", "ensemble_size")
    k = out["ensemble_size"].values
    np.testing.assert_array_equal(k, np.arange(1, m + 1))
    np.testing.assert_array_equal(out["n_groups"], [8, 40, 20, 20, 10, 10, 10, 1])
    s2 = sigma[:, None] ** 2
    want = b2[:, None] + rho * s2 + (1 - rho) * s2 / k
    got = out["ensemble_loss"].isel(param=0, logits_step=0).values
    np.testing.assert_allclose(got, want, rtol=0.04)
    dist = out["distance_to_full"].isel(param=0, logits_step=0).values
    np.testing.assert_allclose(dist[:, :-1], ((1 - rho) * s2 * (1 / k - 1 / m))[:, :-1],
                               rtol=0.06)
    np.testing.assert_allclose(dist[:, -1], 0.0, atol=1e-24)
    excess = got - b2[:, None]
    if rho:
        assert np.all(excess[:, -1] > 2 * excess[:, 0] / m)
    bv = bias_variance(ds, targets=truth)
    one = out["ensemble_loss"].sel(ensemble_size=1, drop=True)
    xr.testing.assert_allclose(one, bv["single_loss"])
    xr.testing.assert_allclose(out["ensemble_loss"].sel(ensemble_size=m, drop=True),
                               bv["ensemble_loss"])


def test_cross_entropy_ensemble_loss_against_size():
    rng = np.random.default_rng(9)
    ds, _, _ = planted(rng, np.array([32, 64]), [0.3, 0.0], [0.3, 0.2], 6, n_ex=3000, n_out=4)
    labels = rng.integers(0, 4, size=3000)
    out = variance_vs_ensemble_size(ds, targets=labels, loss="ce", n_subsets=20)
    bv = bias_variance(ds, targets=labels, loss="ce")
    ens = out["ensemble_loss"].isel(param=0)
    assert np.all(ens.diff("ensemble_size") < 0)
    xr.testing.assert_allclose(out["ensemble_loss"].sel(ensemble_size=1, drop=True),
                               bv["single_loss"])
    xr.testing.assert_allclose(out["ensemble_loss"].sel(ensemble_size=6, drop=True),
                               bv["ensemble_loss"])
    assert np.all(out["loss_inf"] < out["ensemble_loss"].sel(ensemble_size=6))


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


def test_per_token_cross_entropy_matches_targets_by_position_label():
    """Loaded text sweeps: logits on a few predicted positions, targets on all of them
    (in another order); every token is scored against its own target."""
    from scipy.special import log_softmax

    rng = np.random.default_rng(3)
    pos_f, pos_t = np.array([7, 2, 11]), np.array([11, 0, 2, 5, 7])
    v, k = 5, 3
    f = rng.standard_normal((1, 2, k, 1, pos_f.size, v))
    labels = {11: 4, 0: 1, 2: 0, 5: 3, 7: 2}
    logits = xr.DataArray(
        f, dims=("param", "width", "seed", "logits_step", "logits_position", "output"),
        coords={"param": ["mup"], "width": [8, 16], "seed": [0, 1, 2], "logits_step": [5],
                "logits_position": pos_f})
    t = np.broadcast_to(np.array([labels[p] for p in pos_t], float), (1, 2, k, 1, pos_t.size))
    targets = xr.DataArray(
        t, dims=("param", "width", "seed", "targets_step", "targets_position"),
        coords={"param": ["mup"], "width": [8, 16], "seed": [0, 1, 2], "targets_step": [0],
                "targets_position": pos_t})
    bv = bias_variance(xr.Dataset({"logits": logits, "targets": targets}), loss="ce")
    y = np.array([labels[p] for p in pos_f])
    tokens = np.arange(pos_f.size)

    def ce(a):
        return -log_softmax(a, -1)[..., tokens, y].mean(-1)

    single = ce(f[0, :, :, 0]).mean(1)
    ens = ce(f[0, :, :, 0].mean(1))
    np.testing.assert_allclose(bv["single_loss"].isel(param=0, logits_step=0).values, single)
    np.testing.assert_allclose(bv["ensemble_loss"].isel(param=0, logits_step=0).values, ens)

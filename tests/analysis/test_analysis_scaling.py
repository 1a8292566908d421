"""Power-law fits in width and infinite-width extrapolation on planted laws."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import xarray as xr
from scipy.optimize import curve_fit

from widthscan.analysis import extrapolate, fit_power_law, varpro_fit

WIDTHS = 32 * 2 ** np.arange(6)


def power(n, a, alpha, c):
    return a * n**-alpha + c


def planted_loss(rng, alphas, cs, gap0=3.0, widths=WIDTHS, n_seeds=16, noise=0.01):
    """loss (param, width, seed, step) = a N^-alpha + c, times (1 + noise * N(0, 1)) per seed.

    alphas, cs: (param, step); a is set so the gap at the narrowest width is gap0 * c.
    """
    alphas, cs = np.asarray(alphas, float), np.asarray(cs, float)
    a = gap0 * cs * widths[0] ** alphas
    law = power(widths[None, :, None], a[:, None, :], alphas[:, None, :], cs[:, None, :])
    noise_ = 1 + noise * rng.normal(size=(law.shape[0], widths.size, n_seeds, law.shape[-1]))
    vals = law[:, :, None, :] * noise_
    ds = xr.Dataset(
        {"loss": (("param", "width", "seed", "step"), vals)},
        coords={"param": ["mup", "sp"][: law.shape[0]], "width": widths,
                "seed": np.arange(n_seeds), "step": 100 * (1 + np.arange(law.shape[-1]))},
    )
    return ds, a


def test_planted_power_law_recovered_within_two_percent():
    rng = np.random.default_rng(0)
    alphas = [[1.0, 1.2, 1.5], [1.5, 1.0, 2.0]]
    cs = [[2.0, 1.0, 0.5], [1.5, 1.0, 0.8]]
    ds, a = planted_loss(rng, alphas, cs, n_seeds=24)
    fit = fit_power_law(ds, n_boot=100)
    assert fit["alpha"].dims == ("param", "step")
    for name in ("alpha", "a", "c", "r2", "alpha_lo", "alpha_hi", "c_lo", "c_hi"):
        assert name in fit
    np.testing.assert_allclose(fit["alpha"], alphas, rtol=0.02)
    np.testing.assert_allclose(fit["c"], cs, rtol=0.02)
    np.testing.assert_allclose(fit["a"], a, rtol=0.15)
    assert np.all(fit["r2"] > 0.99)
    assert np.all(fit["alpha_lo"] < fit["alpha"]) and np.all(fit["alpha"] < fit["alpha_hi"])
    assert np.all(fit["c_lo"] < fit["c"]) and np.all(fit["c"] < fit["c_hi"])


def test_exact_power_law_recovered_to_machine_precision():
    y = power(WIDTHS.astype(float), 37.0, 0.73, 1.9)
    out = varpro_fit(WIDTHS, y[None, None, :])
    assert out["alpha"][0] == pytest.approx(0.73, rel=1e-7)
    assert out["a"][0, 0] == pytest.approx(37.0, rel=1e-6)
    assert out["c"][0, 0] == pytest.approx(1.9, rel=1e-7)
    assert out["r2"][0] == pytest.approx(1.0, abs=1e-12)


def test_bootstrap_interval_covers_truth():
    rng = np.random.default_rng(1)
    alpha, c = 1.0, 1.0
    a = 3.0 * c * WIDTHS[0] ** alpha
    law = power(WIDTHS, a, alpha, c)
    vals = law[None, :, None] * (1 + 0.01 * rng.normal(size=(100, WIDTHS.size, 16)))
    da = xr.DataArray(vals, dims=("replicate", "width", "seed"), coords={"width": WIDTHS})
    fit = fit_power_law(da, n_boot=200, ci=0.9)
    assert fit["alpha"].dims == ("replicate",)
    covered = ((fit["alpha_lo"] <= alpha) & (alpha <= fit["alpha_hi"])).mean()
    assert 0.75 <= float(covered) <= 0.99
    covered_c = ((fit["c_lo"] <= c) & (c <= fit["c_hi"])).mean()
    assert 0.75 <= float(covered_c) <= 0.99


def test_random_planted_cases_beat_curve_fit_from_default_start():
    rng = np.random.default_rng(2)
    n_cases, widths = 200, 64 * 2 ** np.arange(6)
    alpha = rng.uniform(0.2, 2.0, n_cases)
    c = rng.uniform(0.5, 5.0, n_cases)
    a = rng.uniform(0.3, 3.0, n_cases) * c * widths[0] ** alpha
    n_widths = rng.integers(5, 7, n_cases)
    law = power(widths[None, :], a[:, None], alpha[:, None], c[:, None])
    vals = law[:, :, None] * (1 + 0.01 * rng.normal(size=(n_cases, widths.size, 8)))
    vals[n_widths == 5, -1] = np.nan
    da = xr.DataArray(vals, dims=("case", "width", "seed"), coords={"width": widths})
    fit = fit_power_law(da, n_boot=0)
    assert np.all(np.isfinite(fit["alpha"])) and np.all(np.isfinite(fit["c"]))
    np.testing.assert_array_equal(fit["n_widths"], n_widths)
    err_vp = np.abs(fit["alpha"].values / alpha - 1)

    err_cf, n_failed, n_not_optimal = np.empty(n_cases), 0, 0
    for i in range(n_cases):
        n = widths[: n_widths[i]].astype(float)
        y = vals[i, : n_widths[i]].mean(-1)
        sse_vp = np.sum((power(n, *(float(fit[k][i]) for k in ("a", "alpha", "c"))) - y) ** 2)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                p, _ = curve_fit(power, n, y)
                err_cf[i] = abs(p[1] / alpha[i] - 1)
            except RuntimeError:
                err_cf[i], n_failed = np.inf, n_failed + 1
            try:
                oracle, _ = curve_fit(power, n, y, p0=[a[i], alpha[i], c[i]], maxfev=20000)
            except RuntimeError:
                continue
        sse_oracle = np.sum((power(n, *oracle) - y) ** 2)
        n_not_optimal += sse_vp > sse_oracle * (1 + 1e-6) + 1e-14
    assert n_not_optimal == 0
    assert np.median(err_vp) < 0.03
    assert np.median(err_vp) <= 0.25 * np.median(err_cf)
    assert np.mean(err_vp > 0.5) == 0
    assert np.mean(err_cf > 0.5) > 0.2


def test_weighting_by_seed_spread_helps_heteroscedastic_data():
    rng = np.random.default_rng(3)
    a = 3.0 * WIDTHS[0]
    sigma = np.geomspace(0.2, 0.002, WIDTHS.size)
    law = power(WIDTHS, a, 1.0, 1.0)
    vals = law[None, :, None] + sigma[None, :, None] * rng.normal(size=(200, WIDTHS.size, 8))
    da = xr.DataArray(vals, dims=("replicate", "width", "seed"), coords={"width": WIDTHS})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plain = fit_power_law(da, n_boot=0)
        weighted = fit_power_law(da, n_boot=0, weighted=True)
    assert np.median(np.abs(weighted["alpha"] - 1)) < 0.7 * np.median(np.abs(plain["alpha"] - 1))
    assert np.median(np.abs(weighted["c"] - 1)) < 0.7 * np.median(np.abs(plain["c"] - 1))


def test_step_selection_and_inputs():
    rng = np.random.default_rng(4)
    ds, _ = planted_loss(rng, [[1.0, 1.2, 1.5]], [[2.0, 1.0, 0.5]])
    one = fit_power_law(ds, step=200, n_boot=0)
    assert one["alpha"].dims == ("param",)
    assert int(one["step"]) == 200
    some = fit_power_law(ds, step=[110, 290], n_boot=0)
    assert list(some["step"].values) == [100, 300]
    every = fit_power_law(ds["loss"], n_boot=0)
    xr.testing.assert_allclose(every["alpha"].sel(step=200, drop=True),
                               one["alpha"].drop_vars("step"))
    no_seed = fit_power_law(ds["loss"].mean("seed"), n_boot=50)
    xr.testing.assert_allclose(no_seed["alpha"], every["alpha"])
    assert no_seed["alpha_lo"].isnull().all()


def test_warns_on_few_widths_and_poor_fits():
    rng = np.random.default_rng(5)
    ds, _ = planted_loss(rng, [[1.0]], [[1.0]], widths=np.array([64, 128, 256]))
    with pytest.warns(UserWarning, match="fewer than 4 widths"):
        fit_power_law(ds, n_boot=0)
    with pytest.warns(UserWarning, match="fewer than 4 widths"):
        two = fit_power_law(ds.isel(width=[0, 2]), n_boot=10)
    assert two["alpha"].isnull().all() and two["c_hi"].isnull().all()
    assert int(two["n_widths"].squeeze()) == 2
    noise = xr.DataArray(1 + 0.1 * rng.normal(size=(6, 4)), dims=("width", "seed"),
                         coords={"width": WIDTHS})
    with pytest.warns(UserWarning, match="R\\^2"):
        fit_power_law(noise, n_boot=0)


def test_extrapolated_loss_curve_and_flags():
    rng = np.random.default_rng(6)
    cs = np.array([[2.0, 1.5, 1.2, 1.0]])
    ds, _ = planted_loss(rng, [[1.0, 1.1, 1.2, 1.3]], cs)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = extrapolate(ds, "loss", n_boot=50)
    assert out["loss_inf"].dims == ("param", "step")
    np.testing.assert_allclose(out["loss_inf"], cs, rtol=0.02)
    assert np.all(out["loss_inf_lo"] < out["loss_inf"])
    assert out["reliable"].all()

    few = ds.isel(width=[0, 2, 4])
    with pytest.warns(UserWarning, match="unreliable"):
        out = extrapolate(few, "loss", n_boot=0)
    assert out["few_widths"].all() and not out["reliable"].any()

    logn = xr.DataArray(np.log(WIDTHS), dims="width", coords={"width": WIDTHS})
    log_like = (2.0 - 0.2 * logn).expand_dims(seed=4)
    with pytest.warns(UserWarning, match="unreliable"):
        out = extrapolate(xr.Dataset({"loss": log_like}), "loss", n_boot=0)
    assert bool(out["alpha_at_bound"]) and bool(out["c_out_of_range"])
    assert not bool(out["reliable"])


def test_extrapolated_logits_share_an_exponent_per_step():
    rng = np.random.default_rng(7)
    n_ex, n_out, alphas = 300, 4, np.array([0.8, 1.4])
    f_inf = rng.normal(size=(2, n_ex, n_out))
    b = 20 * rng.normal(size=(2, n_ex, n_out))
    w = WIDTHS[:, None, None, None].astype(float)
    mean = f_inf + b * w ** -alphas[:, None, None]
    logits = mean[None, :, None] + 1e-4 * rng.normal(size=(1, WIDTHS.size, 3, 2, n_ex, n_out))
    ds, _ = planted_loss(rng, [[1.0, 1.0]], [[1.0, 1.0]], n_seeds=3)
    ds["logits"] = (("param", "width", "seed", "logits_step", "example", "output"), logits)
    ds = ds.assign_coords(logits_step=[10, 20])
    out = extrapolate(ds, "loss", n_boot=0)
    assert out["logits_inf"].dims == ("param", "logits_step", "example", "output")
    np.testing.assert_allclose(out["logits_alpha"].isel(param=0), alphas, rtol=0.01)
    err = np.sqrt(((out["logits_inf"].isel(param=0).values - f_inf) ** 2).mean((-2, -1)))
    assert np.all(err < 0.01)
    assert out["logits_reliable"].all()

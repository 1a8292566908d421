"""Power-law fits in width and infinite-width extrapolation on planted laws."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import xarray as xr
from scipy import stats
from scipy.optimize import curve_fit

from widthscan.analysis import extrapolate, fit_power_law, varpro_fit
from widthscan.analysis.scaling import steadily_decreasing

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
    fit = fit_power_law(ds)
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


ISSUE_WIDTHS = 64 * 2 ** np.arange(7)


def planted_laws(rng, n, n_seeds=4, noise=0.02, widths=ISSUE_WIDTHS):
    """The issue's protocol: (replicate, width, seed) of n random laws, 2% noise."""
    alpha = rng.uniform(0.3, 1.5, n)
    c = rng.uniform(0.1, 2.0, n)
    a = np.exp(rng.uniform(np.log(0.3), np.log(3.0), n)) * c * widths[0] ** alpha
    law = power(widths[None, :], a[:, None], alpha[:, None], c[:, None])
    vals = law[:, :, None] * (1 + noise * rng.normal(size=(n, widths.size, n_seeds)))
    da = xr.DataArray(vals, dims=("replicate", "width", "seed"), coords={"width": widths})
    return da, alpha, c


def test_interval_covers_planted_alpha_at_its_nominal_level():
    # 4 seeds, 2% noise, widths 64..4096: a bootstrap over seeds covered 71-80% at 90%
    da, alpha, c = planted_laws(np.random.default_rng(11), 300)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = fit_power_law(da, ci=0.9)
    covered = ((fit["alpha_lo"] <= alpha) & (alpha <= fit["alpha_hi"])).mean()
    assert 0.85 <= float(covered) <= 0.96
    covered_c = ((fit["c_lo"] <= c) & (c <= fit["c_hi"])).mean()
    assert 0.85 <= float(covered_c) <= 0.97
    assert np.all(fit["alpha_lo"] <= fit["alpha"]) and np.all(fit["alpha"] <= fit["alpha_hi"])
    assert np.all(fit["c_lo"] <= fit["c"]) and np.all(fit["c"] <= fit["c_hi"])


def test_profile_interval_matches_brute_force_f_region():
    # the interval is {alpha: min_{a,c} SSE_all_seeds(alpha) <= SSE_min (1 + F q / df)}
    rng = np.random.default_rng(12)
    da, _, _ = planted_laws(rng, 3, n_seeds=3, widths=64 * 2 ** np.arange(5))
    fit = fit_power_law(da, ci=0.8)
    widths = da["width"].values.astype(float)
    for i in range(3):
        y = da.values[i]
        grid = np.exp(np.linspace(np.log(1e-3), np.log(4.0), 4000))
        sse = np.empty(grid.size)
        for k, al in enumerate(grid):
            x = np.repeat(widths ** -al, y.shape[1])
            design = np.stack([x, np.ones_like(x)], 1)
            coef, *_ = np.linalg.lstsq(design, y.ravel(), rcond=None)
            if coef[1] < 0:
                coef = [x @ y.ravel() / (x @ x), 0.0]
            sse[k] = np.sum((y.ravel() - design @ coef) ** 2)
        df = y.size - 3
        thr = sse.min() * (1 + stats.f.ppf(0.8, 1, df) / df)
        inside = grid[sse <= thr]
        assert float(fit["alpha_lo"][i]) == pytest.approx(inside.min(), rel=5e-3)
        assert float(fit["alpha_hi"][i]) == pytest.approx(inside.max(), rel=5e-3)
        # c: {c >= 0: min over alpha and a of SSE(alpha, a, c) <= thr}
        c_hat = float(fit["c"][i])
        cs = np.linspace(0, 3 * c_hat, 1500)
        x = np.repeat(widths[None, :] ** -grid[::4, None], y.shape[1], axis=1)
        r = y.ravel()[None, None, :] - cs[None, :, None]
        sse_c = (r**2).sum(-1) - (np.einsum("ak,ack->ac", x, r) ** 2
                                   / (x * x).sum(-1)[:, None])
        c_in = cs[sse_c.min(0) <= thr]
        step = cs[1] - cs[0]
        assert float(fit["c_lo"][i]) == pytest.approx(c_in.min(), abs=2 * step)
        assert float(fit["c_hi"][i]) == pytest.approx(c_in.max(), abs=2 * step)


def test_loss_asymptote_is_never_negative():
    # c = 0 planted: unbounded least squares puts c below 0 in about half the replicates
    widths = 64 * 2 ** np.arange(7)
    law = power(widths, 3.0 * 64**0.7, 0.7, 0.0)
    noise = np.random.default_rng(14).normal(size=(60, widths.size, 4))
    vals = xr.DataArray(law[None, :, None] * (1 + 0.02 * noise),
                        dims=("replicate", "width", "seed"), coords={"width": widths})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        free = fit_power_law(vals, c_min=None)
        fit = fit_power_law(vals)
    assert float((free["c"] < 0).mean()) > 0.2
    assert np.all(fit["c"] >= 0) and np.all(fit["c_lo"] >= 0)
    np.testing.assert_array_equal(fit["c_at_bound"], fit["c"] == 0)
    assert fit["c_at_bound"].any()
    covered = ((fit["alpha_lo"] <= 0.7) & (0.7 <= fit["alpha_hi"])).mean()
    assert float(covered) >= 0.8


def _seeds(rng, law, n_seeds=4, noise=0.02, n=None):
    """law (W,) with multiplicative noise: (width, seed), or (replicate, width, seed)."""
    law = np.asarray(law, float)
    size = (law.size, n_seeds) if n is None else (n, law.size, n_seeds)
    vals = law[..., None] * (1 + noise * rng.normal(size=size))
    dims = ("width", "seed") if n is None else ("replicate", "width", "seed")
    return xr.DataArray(vals, dims=dims, coords={"width": WIDTHS})


def test_only_steadily_decreasing_sequences_are_power_laws():
    rng = np.random.default_rng(15)
    n = WIDTHS.astype(float)
    cases = {
        "decreasing": (power(n, 40.0, 0.8, 1.0), True),
        "saturated": (power(n, 4e4, 2.0, 1.0), True),
        "flat": (np.full(n.size, 2.0), False),
        "increasing": (power(n, -40.0, 0.8, 3.0), False),
        "u_shape": (1.0 + 0.2 * (np.log2(n) - 7.5) ** 2, False),
        "drop_then_rise": (np.array([3.0, 2.0, 1.5, 1.3, 1.6, 1.9]), False),
    }
    for name, (law, expected) in cases.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fit = fit_power_law(_seeds(rng, law, n=100))
        rate = float(fit["decreasing"].mean())
        # z = 2 one-sided: a flat sequence passes by chance a few % of the time
        assert rate >= 0.95 if expected else rate <= 0.1, (name, rate)
    # an increasing power law fits perfectly (R^2 ~ 1) and is still "no power law"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        inc = fit_power_law(_seeds(rng, power(n, -40.0, 0.8, 3.0), noise=1e-4), c_min=None)
    assert float(inc["r2"]) > 0.99 and not bool(inc["decreasing"])


def test_steadiness_closed_form_thresholds():
    y = np.array([[3.0, 2.0, 2.1, 1.0]])
    # a rise of 0.1 is noise when its standard error is 0.1 (z = 1 < 2), not when it is 0.01
    assert steadily_decreasing(y, np.full((1, 4), 0.005))[0]
    assert not steadily_decreasing(y, np.full((1, 4), 0.00005))[0]
    assert not steadily_decreasing(y, np.zeros((1, 4)))[0]
    # the total drop 2.0 must exceed 2 standard errors: sqrt(2 v) < 1
    flat = np.array([[3.0, 2.5, 2.0, 1.0]])
    assert steadily_decreasing(flat, np.full((1, 4), 0.49))[0]
    assert not steadily_decreasing(flat, np.full((1, 4), 0.51))[0]


def test_exponent_at_its_bound_is_flagged():
    rng = np.random.default_rng(16)
    n = WIDTHS.astype(float)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        steep = fit_power_law(_seeds(rng, power(n, 32.0**6, 6.0, 1.0), noise=1e-3))
        fine = fit_power_law(_seeds(rng, power(n, 40.0, 0.8, 1.0)))
    assert bool(steep["alpha_at_bound"]) and float(steep["alpha"]) == pytest.approx(4.0, rel=0.01)
    assert float(steep["alpha_hi"]) == pytest.approx(4.0)
    assert not bool(fine["alpha_at_bound"]) and not bool(fine["c_at_bound"])


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
    fit = fit_power_law(da)
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
        plain = fit_power_law(da)
        weighted = fit_power_law(da, weighted=True)
    assert np.median(np.abs(weighted["alpha"] - 1)) < 0.7 * np.median(np.abs(plain["alpha"] - 1))
    assert np.median(np.abs(weighted["c"] - 1)) < 0.7 * np.median(np.abs(plain["c"] - 1))


def test_step_selection_and_inputs():
    rng = np.random.default_rng(4)
    ds, _ = planted_loss(rng, [[1.0, 1.2, 1.5]], [[2.0, 1.0, 0.5]])
    one = fit_power_law(ds, step=200)
    assert one["alpha"].dims == ("param",)
    assert int(one["step"]) == 200
    some = fit_power_law(ds, step=[110, 290])
    assert list(some["step"].values) == [100, 300]
    every = fit_power_law(ds["loss"])
    xr.testing.assert_allclose(every["alpha"].sel(step=200, drop=True),
                               one["alpha"].drop_vars("step"))
    no_seed = fit_power_law(ds["loss"].mean("seed"))
    xr.testing.assert_allclose(no_seed["alpha"], every["alpha"])
    assert (no_seed["df"] == WIDTHS.size - 3).all() and (every["df"] == WIDTHS.size * 16 - 3).all()
    with pytest.warns(UserWarning, match="fewer than 4 widths"):
        three = fit_power_law(ds["loss"].mean("seed").isel(width=[0, 2, 4]))
    assert three["alpha_lo"].isnull().all() and three["alpha"].notnull().all()


def test_warns_on_few_widths_and_poor_fits():
    rng = np.random.default_rng(5)
    ds, _ = planted_loss(rng, [[1.0]], [[1.0]], widths=np.array([64, 128, 256]))
    with pytest.warns(UserWarning, match="fewer than 4 widths"):
        fit_power_law(ds)
    with pytest.warns(UserWarning, match="fewer than 4 widths"):
        two = fit_power_law(ds.isel(width=[0, 2]))
    assert two["alpha"].isnull().all() and two["c_hi"].isnull().all()
    assert int(two["n_widths"].squeeze()) == 2
    noise = xr.DataArray(1 + 0.1 * rng.normal(size=(6, 4)), dims=("width", "seed"),
                         coords={"width": WIDTHS})
    with pytest.warns(UserWarning, match="R\\^2"):
        fit_power_law(noise)


def test_extrapolated_loss_curve_and_flags():
    rng = np.random.default_rng(6)
    cs = np.array([[2.0, 1.5, 1.2, 1.0]])
    ds, _ = planted_loss(rng, [[1.0, 1.1, 1.2, 1.3]], cs)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = extrapolate(ds, "loss")
    assert out["loss_inf"].dims == ("param", "step")
    np.testing.assert_allclose(out["loss_inf"], cs, rtol=0.02)
    assert np.all(out["loss_inf_lo"] < out["loss_inf"])
    assert out["reliable"].all()

    few = ds.isel(width=[0, 2, 4])
    with pytest.warns(UserWarning, match="unreliable"):
        out = extrapolate(few, "loss")
    assert out["few_widths"].all() and not out["reliable"].any()

    logn = xr.DataArray(np.log(WIDTHS), dims="width", coords={"width": WIDTHS})
    log_like = (2.0 - 0.2 * logn).expand_dims(seed=4)
    with pytest.warns(UserWarning, match="unreliable"):
        out = extrapolate(xr.Dataset({"loss": log_like}), "loss")
    # log-like decay has no finite power-law asymptote: least squares wants c < 0
    assert bool(out["c_at_bound"]) and float(out["loss_inf"]) == 0.0
    assert not bool(out["reliable"])
    with pytest.warns(UserWarning, match="unreliable"):
        out = extrapolate(xr.Dataset({"loss": (0.5 + 0.1 * logn).expand_dims(seed=4)}), "loss")
    assert bool(out["no_power_law"]) and not bool(out["reliable"])


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
    out = extrapolate(ds, "loss")
    assert out["logits_inf"].dims == ("param", "logits_step", "example", "output")
    np.testing.assert_allclose(out["logits_alpha"].isel(param=0), alphas, rtol=0.01)
    err = np.sqrt(((out["logits_inf"].isel(param=0).values - f_inf) ** 2).mean((-2, -1)))
    assert np.all(err < 0.01)
    assert out["logits_reliable"].all()


def _logits_ds(mean, rng, n_seeds=3, noise=1e-3, widths=WIDTHS):
    """mean (step, width, example): one param, seeds with Gaussian noise."""
    vals = mean[:, :, None, :] + noise * rng.normal(size=(*mean.shape[:2], n_seeds,
                                                           mean.shape[-1]))
    da = xr.DataArray(vals[None], dims=("param", "logits_step", "width", "seed", "example"),
                      coords={"param": ["mup"], "width": widths, "logits_step": [0, 1, 2]})
    return xr.Dataset({"loss": xr.ones_like(da.isel(example=0, logits_step=0)), "logits": da})


def test_extrapolated_logits_recover_planted_limits_and_mask_garbage():
    rng = np.random.default_rng(17)
    n_ex = 40
    n = WIDTHS.astype(float)[:, None]
    f_inf = rng.normal(size=n_ex)
    b = rng.choice([-1, 1], n_ex) * rng.uniform(20, 60, n_ex)
    good = f_inf + b * n**-1.0
    slow = f_inf + b * n**-0.1 / 20
    garbage = good.copy()
    garbage[:, :10] = f_inf[:10] + rng.normal(size=(WIDTHS.size, 10))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = extrapolate(_logits_ds(np.stack([good, slow, garbage]), rng), "loss")
    inf = out["logits_inf"].isel(param=0).values
    # step 0: every example recovered; step 1: alpha = 0.1 puts the limit further beyond
    # the widest width than all widths are spread (1 / (64^0.1 - 1) = 1.9), so masked
    np.testing.assert_allclose(inf[0], f_inf, atol=0.01)
    assert float(out["logits_alpha"].isel(param=0, logits_step=0)) == pytest.approx(1.0, rel=0.02)
    assert np.isnan(inf[1]).all() and out["logits_out_of_range"].isel(logits_step=1).all()
    # step 2: the 10 random sequences are masked as not monotone, the rest recovered
    assert out["logits_not_monotone"].isel(param=0, logits_step=2, example=slice(0, 10)).all()
    assert np.isnan(inf[2, :10]).all()
    np.testing.assert_allclose(inf[2, 10:], f_inf[10:], atol=0.05)


def test_extrapolated_logits_need_four_widths_and_can_be_restricted():
    rng = np.random.default_rng(18)
    n = WIDTHS.astype(float)[:, None]
    f_inf = rng.normal(size=6)
    mean = np.stack([f_inf + 30 * n**-1.0] * 3)
    ds = _logits_ds(mean, rng)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        few = extrapolate(ds.isel(width=[0, 2, 4]), "loss")
        one = extrapolate(ds, "loss", examples={"example": [2]})
        every = extrapolate(ds, "loss")
    assert few["logits_few_widths"].all() and few["logits_inf"].isnull().all()
    assert one["logits_inf"].sizes["example"] == 1
    np.testing.assert_allclose(one["logits_inf"].isel(example=0), f_inf[2], atol=0.01)
    np.testing.assert_allclose(every["logits_inf"].isel(example=2), f_inf[2], atol=0.01)


def test_shared_exponent_from_pooled_moments_equals_the_direct_sum():
    # uniform weights take the O(W^2) moment route; a bound that never binds the direct one
    rng = np.random.default_rng(19)
    y = rng.normal(size=(3, 50, 6)) + 30 * WIDTHS.astype(float) ** -0.9
    w = np.ones_like(y) * rng.uniform(0.5, 2.0, size=(3, 50, 1))
    fast = varpro_fit(WIDTHS, y, w)
    direct = varpro_fit(WIDTHS, y, w, c_min=-1e12)
    # the golden-section search stops within ~1e-8 in log alpha; the SSE is flat there
    np.testing.assert_allclose(fast["alpha"], direct["alpha"], rtol=1e-6)
    np.testing.assert_allclose(fast["sse"], direct["sse"], rtol=1e-10)
    for key in ("a", "c", "r2"):
        np.testing.assert_allclose(fast[key], direct[key], rtol=1e-4, err_msg=key)


def test_monotone_check_equals_the_pairwise_definition():
    from widthscan.analysis.scaling import _monotone

    rng = np.random.default_rng(20)
    mean = np.cumsum(rng.normal(0.3, 1.0, size=(2000, 6)), -1)
    var = rng.uniform(0, 0.5, 2000) * (rng.uniform(size=2000) > 0.2)
    expected = np.empty(2000, bool)
    for s in range(2000):
        sign = np.sign(mean[s, -1] - mean[s, 0])
        moves = [sign * (mean[s, j] - mean[s, i]) for i in range(6) for j in range(i + 1, 6)]
        limit = 3 * np.sqrt(2 * var[s]) if var[s] > 0 else 0.0
        expected[s] = min(moves) >= -limit
    np.testing.assert_array_equal(_monotone(mean, var), expected)
    assert 0.2 < expected.mean() < 0.9

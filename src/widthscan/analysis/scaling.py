"""Power laws in width, L(N) = a N^-alpha + c (paper Section 4), and extrapolation.

Fits use variable projection: for fixed alpha, (a, c) solve a weighted linear
least-squares problem in closed form (with c >= ``c_min`` when given: then c = c_min
and a alone is fitted), leaving a 1-D problem in alpha. Its global minimum is
bracketed on a log-spaced grid over ``bounds`` and refined by golden-section search
in log(alpha), vectorized over all fits at once. It needs no initial guess and
cannot diverge.

Intervals are profile-likelihood (F) intervals of nonlinear least squares on the
individual seeds (Bates & Watts 1988, ch. 6): alpha is in the interval when the
profiled sum of squares SSE(alpha) exceeds its minimum by at most s^2 F(1, df; ci),
with s^2 the residual variance of all seeds about the fit (pure seed-to-seed scatter
plus lack of fit), df = (usable widths) x seeds - 3. The F quantile is the small-
sample correction; the profile follows the curved, skewed shape of SSE(alpha)
where a bootstrap over 4 seeds cannot (it covered a planted alpha 71-80% of the time
at nominal 90%; this covers it 89-91%, see benchmarks/power_law_coverage.py).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence

import numpy as np
import xarray as xr
from scipy import stats

from widthscan.analysis.dims import ensemble_mean, find_step_dim, get_var, ordered

BOUNDS = (1e-3, 4.0)
STEADY_Z = 2.0
_GOLDEN = (np.sqrt(5.0) - 1.0) / 2.0
_N_PROFILE = 192


def _linear(logn: np.ndarray, alpha: np.ndarray, y: np.ndarray, w: np.ndarray,
            c_min: float | None = None) -> dict[str, np.ndarray]:
    """Weighted LS of y = a x + c, x = exp(-alpha logn); y, w (G, S, W), alpha (G,).

    Returns a, c (with c >= c_min), sse, tss (G, S) and the unconstrained c_free,
    sse_free and v_c = [(X^T W X)^-1]_cc, so that the unconstrained SSE at fixed
    (alpha, c) is sse_free + (c - c_free)^2 / v_c.
    """
    x = np.exp(-alpha[:, None, None] * logn)
    sw = w.sum(-1)
    xm = (w * x).sum(-1) / sw
    ym = (w * y).sum(-1) / sw
    dx = x - xm[..., None]
    dy = y - ym[..., None]
    sxx = (w * dx * dx).sum(-1)
    a = (w * dx * dy).sum(-1) / sxx
    c = ym - a * xm
    tss = (w * dy * dy).sum(-1)
    sse = tss - a * a * sxx
    out = {"c_free": c, "sse_free": sse, "v_c": (w * x * x).sum(-1) / (sw * sxx), "tss": tss}
    if c_min is not None:
        low = c < c_min
        a_low = (w * x * (y - c_min)).sum(-1) / (w * x * x).sum(-1)
        r = y - c_min - a_low[..., None] * x
        a = np.where(low, a_low, a)
        c = np.where(low, c_min, c)
        sse = np.where(low, (w * r * r).sum(-1), sse)
    out.update(a=a, c=c, sse=np.maximum(sse, 0.0))
    return out


def _minimize(sse: Callable[[np.ndarray], np.ndarray], g: int, lo: float, hi: float,
              n_grid: int, iters: int) -> np.ndarray:
    """Global minimum in [lo, hi] of g vectorized 1-D functions: grid, then golden section."""
    grid = np.linspace(lo, hi, n_grid)
    vals = np.stack([sse(np.full(g, v)) for v in grid])
    i = vals.argmin(0)
    best_grid, best_val = grid[i], vals[i, np.arange(g)]
    a_, b_ = grid[np.maximum(i - 1, 0)], grid[np.minimum(i + 1, n_grid - 1)]
    x1, x2 = b_ - _GOLDEN * (b_ - a_), a_ + _GOLDEN * (b_ - a_)
    f1, f2 = sse(x1), sse(x2)
    for _ in range(iters):
        left = f1 < f2
        b_ = np.where(left, x2, b_)
        a_ = np.where(left, a_, x1)
        new = np.where(left, b_ - _GOLDEN * (b_ - a_), a_ + _GOLDEN * (b_ - a_))
        fn = sse(new)
        x1, f1, x2, f2 = (np.where(left, new, x2), np.where(left, fn, f2),
                          np.where(left, x1, new), np.where(left, f1, fn))
    mid = np.where(f1 < f2, x1, x2)
    return np.where(np.minimum(f1, f2) <= best_val, mid, best_grid)


def _prepare(widths: np.ndarray, y: np.ndarray, w: np.ndarray | None):
    y = np.asarray(y, np.float64)
    w = np.isfinite(y).astype(np.float64) if w is None else np.asarray(w, np.float64)
    w = np.where(np.isfinite(y) & np.isfinite(w), w, 0.0)
    n_used = (w > 0).sum(-1)
    w = np.where(n_used[..., None] >= 3, w, 0.0)
    y = np.where(w > 0, y, 0.0)
    series_ok = n_used >= 3
    group_ok = series_ok.any(-1)
    w = np.where(group_ok[:, None, None], w, 1.0)
    logn = np.log(np.asarray(widths, np.float64))
    ref = logn.mean()
    return y, w, n_used, series_ok, group_ok, logn - ref, ref


def _pooled_moments(logn: np.ndarray, y: np.ndarray,
                    k: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """Pooled SSE(log alpha) of a group whose series s have weights k[g, s] at every width.

    Then SSE_s = k_s (|dy_s|^2 - (dx . dy_s)^2 / |dx|^2) with dx = x - mean(x) the same
    for all series, so the group's sum needs only M = sum_s k_s dy_s dy_s^T (G, W, W),
    formed once: each evaluation costs O(W^2) per group instead of O(S W).
    """
    dy = y - y.mean(-1, keepdims=True)
    m = np.einsum("gs,gsi,gsj->gij", k, dy, dy)
    tss = np.einsum("gii->g", m)

    def pooled(log_alpha: np.ndarray) -> np.ndarray:
        x = np.exp(-np.exp(log_alpha)[:, None] * logn)
        dx = x - x.mean(-1, keepdims=True)
        with np.errstate(all="ignore"):
            s = tss - np.einsum("gi,gij,gj->g", dx, m, dx) / (dx * dx).sum(-1)
        return np.where(np.isfinite(s), np.maximum(s, 0.0), np.inf)

    return pooled


def varpro_fit(
    widths: np.ndarray,
    y: np.ndarray,
    w: np.ndarray | None = None,
    bounds: tuple[float, float] = BOUNDS,
    n_grid: int = 32,
    iters: int = 40,
    c_min: float | None = None,
) -> dict[str, np.ndarray]:
    """Fit y[g, s, :] = a[g, s] N^-alpha[g] + c[g, s] with alpha shared within group g.

    widths (W,); y (G, S, W); w (G, S, W) non-negative weights (default: 1 where y
    is finite); ``c_min``: lower bound on c (None: free). Series with fewer than 3
    usable widths are left out (NaN). Returns alpha (G,), a (G, S), c (G, S), r2 (G,)
    pooled over the group's series, n (G,) the fewest usable widths of a series of
    the group, sse (G,) the pooled weighted residual sum of squares.
    """
    y, w, n_used, series_ok, group_ok, logn, ref = _prepare(widths, y, w)
    if c_min is None and np.all(w == w[..., :1]):
        pooled = _pooled_moments(logn, y, np.where(series_ok, w[..., 0], 0.0))
    else:
        def pooled(log_alpha: np.ndarray) -> np.ndarray:
            with np.errstate(all="ignore"):
                s = _linear(logn, np.exp(log_alpha), y, w, c_min)["sse"]
            s = np.where(series_ok | ~group_ok[:, None], s, 0.0).sum(-1)
            return np.where(np.isfinite(s), s, np.inf)

    lo, hi = np.log(bounds[0]), np.log(bounds[1])
    alpha = np.exp(_minimize(pooled, y.shape[0], lo, hi, n_grid, iters))
    with np.errstate(all="ignore"):
        fit = _linear(logn, alpha, y, w, c_min)
        s = np.where(series_ok, fit["sse"], 0).sum(-1)
        r2 = 1.0 - s / np.where(series_ok, fit["tss"], 0).sum(-1)
    a = fit["a"] * np.exp(alpha[:, None] * ref)
    nan = ~(series_ok & group_ok[:, None])
    n = np.where(group_ok, np.where(series_ok, n_used, n_used.max()).min(-1), n_used.max(-1))
    return {"alpha": np.where(group_ok, alpha, np.nan),
            "a": np.where(nan, np.nan, a), "c": np.where(nan, np.nan, fit["c"]),
            "r2": np.where(group_ok, r2, np.nan), "n": n,
            "sse": np.where(group_ok, s, np.nan)}


def _profile_intervals(widths: np.ndarray, y: np.ndarray, w: np.ndarray, alpha: np.ndarray,
                       thr: np.ndarray, bounds: tuple[float, float],
                       c_min: float | None) -> dict[str, np.ndarray]:
    """Profile intervals {alpha: SSE(alpha) <= thr} and {c: min_alpha SSE(alpha, c) <= thr}.

    y, w (G, W) seed means and weights (0 = unused); alpha (G,) the minimizer; thr (G,).
    The alpha endpoints are bracketed on a log grid and bisected; c's interval is the
    union over alpha in that range of c_free(alpha) +- sqrt((thr - sse_free) v_c),
    clipped at c_min (exact: SSE is quadratic in c at fixed alpha).
    """
    logn = np.log(np.asarray(widths, np.float64))
    logn = logn - logn.mean()
    y3, w3 = y[:, None, :], w[:, None, :]

    def sse(log_alpha: np.ndarray) -> np.ndarray:
        with np.errstate(all="ignore"):
            s = _linear(logn, np.exp(log_alpha), y3, w3, c_min)["sse"][:, 0]
        return np.where(np.isfinite(s), s, np.inf)

    g = y.shape[0]
    lo_b, hi_b = np.log(bounds[0]), np.log(bounds[1])
    grid = np.linspace(lo_b, hi_b, _N_PROFILE)
    inside = np.stack([sse(np.full(g, v)) <= thr for v in grid], -1)
    opt = np.log(alpha)
    below, above = grid[None, :] < opt[:, None], grid[None, :] > opt[:, None]

    def endpoint(side: int) -> np.ndarray:
        if side < 0:
            cand = np.where(inside & below, grid, np.inf).min(-1)
            first = np.minimum(cand, opt)
            idx = np.searchsorted(grid, first, side="left") - 1
            at_bound = idx < 0
        else:
            cand = np.where(inside & above, grid, -np.inf).max(-1)
            first = np.maximum(cand, opt)
            idx = np.searchsorted(grid, first, side="right")
            at_bound = idx >= grid.size
        out_pt = grid[np.clip(idx, 0, grid.size - 1)]
        in_pt = first
        for _ in range(30):
            mid = 0.5 * (out_pt + in_pt)
            ok = sse(mid) <= thr
            in_pt, out_pt = np.where(ok, mid, in_pt), np.where(ok, out_pt, mid)
        return np.where(at_bound, lo_b if side < 0 else hi_b, in_pt)

    a_lo, a_hi = endpoint(-1), endpoint(1)
    fine = a_lo[:, None] + (a_hi - a_lo)[:, None] * np.linspace(0, 1, 64)[None, :]
    c_lo, c_hi = np.full(g, np.inf), np.full(g, -np.inf)
    for k in range(fine.shape[1]):
        with np.errstate(all="ignore"):
            f = _linear(logn, np.exp(fine[:, k]), y3, w3)
        room = (thr - f["sse_free"][:, 0]) * f["v_c"][:, 0]
        r = np.sqrt(np.where(room >= 0, room, np.nan))
        cf = f["c_free"][:, 0]
        lo_k, hi_k = cf - r, cf + r
        if c_min is not None:
            valid = hi_k >= c_min
            lo_k = np.where(valid, np.maximum(lo_k, c_min), np.nan)
            hi_k = np.where(valid, hi_k, np.nan)
        c_lo = np.fmin(c_lo, lo_k)
        c_hi = np.fmax(c_hi, hi_k)
    c_lo = np.where(np.isfinite(c_lo), c_lo, np.nan)
    c_hi = np.where(np.isfinite(c_hi), c_hi, np.nan)
    return {"alpha_lo": np.exp(a_lo), "alpha_hi": np.exp(a_hi), "c_lo": c_lo, "c_hi": c_hi}


def steadily_decreasing(y: np.ndarray, var: np.ndarray, z: float = STEADY_Z) -> np.ndarray:
    """Whether seed means fall steadily with width, per row.

    y (G, W) seed means ordered by width (NaN = unused), var (G, W) their variances.
    True when the widest usable width is below the narrowest by more than z standard
    errors of the difference and no width lies above a narrower one by more than z
    standard errors of that difference. With var = 0 (one seed) every wider width
    must be strictly lower.
    """
    y = np.asarray(y, np.float64)
    ok = np.isfinite(y)
    v = np.where(ok, var, 0.0)
    rise = y[:, None, :] - y[:, :, None]
    se = np.sqrt(v[:, None, :] + v[:, :, None])
    later = np.triu(np.ones((y.shape[1], y.shape[1]), bool), 1)
    pair = ok[:, None, :] & ok[:, :, None] & later
    with np.errstate(invalid="ignore"):
        bad_rise = np.where(se > 0, rise > z * se, rise >= 0)
    no_rise = ~(bad_rise & pair).any((-2, -1))
    first = ok.argmax(-1)
    last = y.shape[1] - 1 - ok[:, ::-1].argmax(-1)
    rows = np.arange(y.shape[0])
    drop = y[rows, first] - y[rows, last]
    se_drop = np.sqrt(v[rows, first] + v[rows, last])
    with np.errstate(invalid="ignore"):
        falls = (drop > z * se_drop) & (last > first)
    return falls & no_rise & (ok.sum(-1) >= 3)


def _seed_weights(vals: np.ndarray) -> np.ndarray:
    """1 / (standard error of the seed mean)^2 for vals (..., W, M)."""
    m = vals.shape[-1]
    with np.errstate(all="ignore"):
        sem = vals.std(-1, ddof=1) / np.sqrt(m)
    pos = np.where(sem > 0, sem, np.inf).min(-1, keepdims=True)
    sem = np.where(sem > 0, sem, np.where(np.isfinite(pos), pos, 1.0))
    return 1.0 / sem**2


def _fit_seeds(widths: np.ndarray, vals: np.ndarray, ci: float, weighted: bool,
               bounds: tuple[float, float], c_min: float | None) -> dict[str, np.ndarray]:
    """Power-law fit of the seed means of vals (G, W, M) with profile intervals."""
    m = vals.shape[-1]
    usable = np.isfinite(vals).all(-1)
    mean = np.where(usable, vals.mean(-1), np.nan)
    w = _seed_weights(vals) if weighted and m > 1 else np.ones(mean.shape)
    w = np.where(usable, w, np.nan)
    point = varpro_fit(widths, mean[:, None, :], w[:, None, :], bounds, c_min=c_min)
    out = {k: point[k][:, 0] if point[k].ndim == 2 else point[k] for k in point}
    n = usable.sum(-1)
    with np.errstate(all="ignore"):
        dev = np.where(usable[..., None], vals - mean[..., None], 0.0)
        wz = np.where(usable, w, 0.0)
        pure = (wz * (dev**2).sum(-1)).sum(-1)
        df = n * m - 3
        s2 = (pure + m * out["sse"]) / df
        fitted = n >= 3
        can = fitted & (df > 0) & np.isfinite(s2)
        q = stats.f.ppf(ci, 1, np.maximum(df, 1))
        thr = out["sse"] + q * s2 / m
        ci_vals = {k: np.full(mean.shape[0], np.nan)
                   for k in ("alpha_lo", "alpha_hi", "c_lo", "c_hi")}
        if can.any():
            res = _profile_intervals(widths, np.where(usable, mean, 0.0)[can],
                                     np.where(usable, w, 0.0)[can], out["alpha"][can],
                                     thr[can], bounds, c_min)
            for k, v in res.items():
                ci_vals[k][can] = v
        pure_var = pure / np.maximum(n * (m - 1), 1) if m > 1 else np.zeros(mean.shape[0])
        var_mean = pure_var[:, None] / (m * np.where(usable, w, np.nan))
    out.update(ci_vals)
    out["decreasing"] = steadily_decreasing(mean, var_mean)
    out["alpha_at_bound"] = fitted & ((out["alpha"] <= bounds[0] * 1.01)
                                      | (out["alpha"] >= bounds[1] * 0.99))
    out["c_at_bound"] = fitted & (c_min is not None) & (out["c"] <= (c_min or 0.0))
    out["df"] = np.where(can, df, 0)
    return out


def fit_power_law(
    data: xr.Dataset | xr.DataArray,
    step: int | Sequence[int] | None = None,
    var: str = "loss",
    ci: float = 0.9,
    weighted: bool = False,
    bounds: tuple[float, float] = BOUNDS,
    c_min: float | None = 0.0,
) -> xr.Dataset:
    """Fit L(N) = a N^-alpha + c over width N, per param and step (Fig. 9).

    ``data``: a Dataset (fits ``var``) or a DataArray with a ``width`` dim and
    optional ``seed``, step and other dims (each fitted apart). The mean over seeds
    is fitted; a width with a NaN member at that step is left out. ``step``: None
    for every step, else the nearest logged step(s). ``weighted`` weighs widths by
    1/SEM^2 over seeds. ``c_min``: lower bound on the asymptote c, 0 for losses (the
    default); None leaves c free (logits, or any quantity that may be negative).

    Intervals (level ``ci``): profile likelihood with an F(1, df) quantile and the
    residual variance of the individual seeds, df = widths x seeds - 3 (module
    docstring); NaN when df < 1 (3 widths and one seed). An endpoint at a bound of
    alpha means the data do not bound alpha on that side.

    Flags: ``decreasing`` (the seed means fall steadily with width: see
    :func:`steadily_decreasing`, z = 2; False = "no power law" whatever R^2 says),
    ``alpha_at_bound`` (alpha within 1% of ``bounds``), ``c_at_bound`` (c = c_min: the
    data wanted a lower asymptote). Warns when a fit has fewer than 4 widths or
    R^2 < 0.9. Returns a Dataset over (param, [step]) with alpha, a, c, r2,
    n_widths, alpha_lo/_hi, c_lo/_hi, the flags and df.
    """
    da = get_var(data, var).astype(np.float64)
    sd = find_step_dim(da)
    if step is not None:
        if sd is None:
            raise ValueError("step given but the data has no step dim")
        da = da.sel({sd: step}, method="nearest")
    if "seed" not in da.dims:
        da = da.expand_dims(seed=[0])
    groups = [d for d in da.dims if d not in ("width", "seed")]
    da = da.transpose(*groups, "width", "seed")
    template = da.isel(width=0, seed=0, drop=True)
    widths = da["width"].values
    vals = da.values.reshape(-1, widths.size, da.sizes["seed"])
    res = _fit_seeds(widths, vals, ci, weighted, bounds, c_min)

    def wrap(x: np.ndarray) -> xr.DataArray:
        return template.copy(data=np.asarray(x).reshape(template.shape))

    few = res["n"] < 4
    if few.any():
        warnings.warn(f"power-law fit with fewer than 4 widths ({int(few.sum())} of {few.size} "
                      "fits): alpha and c are poorly determined", stacklevel=2)
    poor = res["r2"] < 0.9
    if poor.any():
        warnings.warn(f"poor power-law fit, R^2 < 0.9 ({int(poor.sum())} of {poor.size} fits)",
                      stacklevel=2)
    names = ("alpha", "a", "c", "r2", "alpha_lo", "alpha_hi", "c_lo", "c_hi", "decreasing",
             "alpha_at_bound", "c_at_bound", "df")
    out = xr.Dataset({"n_widths": wrap(res["n"]), **{k: wrap(res[k]) for k in names}})
    out = out[["alpha", "a", "c", "r2", "n_widths", *names[4:]]]
    out.attrs.update(model="L(N) = a N^-alpha + c", ci=ci, interval="profile likelihood, F",
                     alpha_bounds=list(bounds), c_min="none" if c_min is None else c_min,
                     weighted=int(weighted), steady_z=STEADY_Z, var=str(da.name or var))
    return ordered(out, "param")


def extrapolate(
    ds: xr.Dataset,
    var: str = "loss",
    logits: str | None = "logits",
    step: int | Sequence[int] | None = None,
    ci: float = 0.9,
    r2_min: float = 0.9,
    c_margin: float = 1.0,
    bounds: tuple[float, float] = BOUNDS,
    examples: dict[str, int | Sequence[int]] | None = None,
    range_factor: float = 1.0,
) -> xr.Dataset:
    """Infinite-width estimates from power-law fits across width.

    ``<var>_inf`` (param, <step dim>): the fitted asymptote c(t) >= 0 of
    :func:`fit_power_law` at each step (``step`` selects steps of ``var``) with its
    profile interval ``<var>_inf_lo``/``_hi``, plus ``alpha`` and ``r2``. Flags, True =
    suspect: ``few_widths`` (< 4), ``poor_fit`` (R^2 < r2_min or no fit),
    ``no_power_law`` (the seed means do not fall steadily with width),
    ``alpha_at_bound`` (alpha within 1% of ``bounds``, where c is ill-determined),
    ``c_at_bound`` (c = 0), ``c_out_of_range`` (c beyond the observed seed-mean range
    across widths by more than ``c_margin`` times that range); ``reliable`` = none.

    ``logits_inf`` (param, <logits step>, example, output), when ``logits`` is in
    ``ds``: per-example extrapolated ensemble-mean logits (c free in sign). Per step one
    exponent ``logits_alpha`` is shared by the monotone examples and outputs (variable
    projection on their summed squared error); per-example a and c are linear.
    ``examples`` (e.g. ``{"example": [0], "output": [0]}``) restricts the fit to those
    series (``isel``): the exponent is then fitted on them alone. ``logits_inf`` is NaN
    where ``logits_reliable`` is False; the reason is in ``logits_few_widths``,
    ``logits_poor_fit``, ``logits_alpha_at_bound`` (per step), ``logits_not_monotone``
    (some width's mean lies beyond a narrower one's against the overall direction by
    more than 3 standard errors, a family-wise margin over all pairs of widths; the
    seed variance is pooled over widths per series; strictly with one seed) and
    ``logits_out_of_range`` (|c - f_widest| > ``range_factor`` times the largest
    |f_w - f_widest|: the limit would lie further beyond the widest width than all
    the widths are spread).
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = fit_power_law(ds, step=step, var=var, ci=ci, bounds=bounds)
    y = get_var(ds, var)
    sd = find_step_dim(y)
    if step is not None:
        y = y.sel({sd: step}, method="nearest")
    y = ensemble_mean(y)
    ymin, ymax = y.min("width"), y.max("width")
    span = ymax - ymin
    flags = {
        "few_widths": fit["n_widths"] < 4,
        "poor_fit": ~(fit["r2"] >= r2_min),
        "no_power_law": ~fit["decreasing"].astype(bool),
        "alpha_at_bound": fit["alpha_at_bound"].astype(bool),
        "c_at_bound": fit["c_at_bound"].astype(bool),
        "c_out_of_range": (fit["c"] < ymin - c_margin * span) | (fit["c"] > ymax + c_margin * span),
    }
    bad = xr.zeros_like(fit["c"], dtype=bool)
    for flag in flags.values():
        bad = bad | flag
    reliable = ~bad & fit["c"].notnull()
    name = str(y.name or var)
    out = xr.Dataset({
        f"{name}_inf": fit["c"], f"{name}_inf_lo": fit["c_lo"], f"{name}_inf_hi": fit["c_hi"],
        "alpha": fit["alpha"], "r2": fit["r2"], **flags, "reliable": reliable,
    })
    if logits is not None and isinstance(ds, xr.Dataset) and logits in ds:
        f = ds[logits] if examples is None else ds[logits].isel(examples)
        out = out.merge(_extrapolate_logits(f, bounds, r2_min, range_factor))
    out.attrs.update(model="L(N) = a N^-alpha + c", ci=ci, interval="profile likelihood, F")
    if not bool(reliable.all()):
        warnings.warn(f"{int((~reliable).sum())} of {reliable.size} extrapolations flagged "
                      "unreliable (see the flag variables)", stacklevel=2)
    return out


def _monotone(mean: np.ndarray, var: np.ndarray, z: float = 3.0) -> np.ndarray:
    """mean (..., W) ordered by width, var (...) the variance of each of its points: no
    width lies against the overall direction (widest minus narrowest) beyond a narrower
    one by more than z standard errors of the difference, sqrt(2 var) (strictly: var 0).

    The largest move against the direction over all pairs i < j is the largest drawdown
    of the direction-signed sequence from its running maximum: O(W) per series.
    """
    signed = mean * np.sign(mean[..., -1] - mean[..., 0])[..., None]
    peak = np.maximum.accumulate(signed, -1)
    drawdown = (peak[..., :-1] - signed[..., 1:]).max(-1)
    with np.errstate(invalid="ignore"):
        return np.where(var > 0, drawdown <= z * np.sqrt(2 * var), drawdown <= 0)


def _extrapolate_logits(
    f: xr.DataArray, bounds: tuple[float, float], r2_min: float, range_factor: float
) -> xr.Dataset:
    f = f.sortby("width")
    series = [d for d in f.dims if d not in ("param", "width", "seed", find_step_dim(f))]
    groups = [d for d in f.dims if d not in (*series, "width", "seed")]
    if "seed" not in f.dims:
        f = f.expand_dims(seed=1)
    f = f.transpose(*groups, *series, "width", "seed")
    m = f.sizes["seed"]
    raw = f.values.astype(np.float64)
    vals_ms = raw.mean(-1)
    var_pt = raw.var(-1, ddof=1).mean(-1) / m if m > 1 else np.zeros(vals_ms.shape[:-1])
    mean = f.isel(seed=0, drop=True).copy(data=vals_ms)
    widths = mean["width"].values
    g = int(np.prod([mean.sizes[d] for d in groups]))
    vals = vals_ms.reshape(g, -1, widths.size)
    usable = np.isfinite(vals).all(-1)
    with np.errstate(invalid="ignore"):
        monotone = _monotone(vals, var_pt.reshape(vals.shape[:-1])) | ~usable
    weight = np.broadcast_to(monotone[..., None], vals.shape).astype(np.float64)
    res = varpro_fit(widths, vals, weight, bounds=bounds)
    tmpl_s = mean.isel(width=0, drop=True)
    tmpl_g = tmpl_s.isel({d: 0 for d in series}, drop=True)

    def per_group(x: np.ndarray) -> xr.DataArray:
        return tmpl_g.copy(data=np.asarray(x).reshape(tmpl_g.shape))

    def per_series(x: np.ndarray) -> xr.DataArray:
        return tmpl_s.copy(data=np.asarray(x).reshape(tmpl_s.shape))

    with np.errstate(invalid="ignore"):
        widest = vals[..., -1]
        spread = np.abs(vals - widest[..., None]).max(-1)
        out_of_range = np.abs(res["c"] - widest) > range_factor * spread + 1e-12 * np.abs(widest)
    few = res["n"] < 4
    poor = ~(res["r2"] >= r2_min)
    at_bound = (res["alpha"] <= bounds[0] * 1.01) | (res["alpha"] >= bounds[1] * 0.99)
    group_bad = (few | poor | at_bound)[:, None]
    reliable = ~group_bad & monotone & ~out_of_range & np.isfinite(res["c"])
    return xr.Dataset({
        "logits_inf": per_series(np.where(reliable, res["c"], np.nan)),
        "logits_alpha": per_group(res["alpha"]),
        "logits_r2": per_group(res["r2"]),
        "logits_few_widths": per_group(few),
        "logits_poor_fit": per_group(poor),
        "logits_alpha_at_bound": per_group(at_bound),
        "logits_not_monotone": per_series(~monotone),
        "logits_out_of_range": per_series(out_of_range & np.isfinite(res["c"])),
        "logits_reliable": per_series(reliable),
    })

"""Power laws in width, L(N) = a N^-alpha + c (paper Section 4), and extrapolation.

Fits use variable projection: for fixed alpha, (a, c) solve a weighted linear
least-squares problem in closed form, leaving a 1-D problem in alpha. Its
global minimum is bracketed on a log-spaced grid over ``bounds`` and refined
by golden-section search in log(alpha), vectorized over all fits at once (the
same result as ``scipy.optimize.minimize_scalar(method="bounded")`` on the
bracket, without a Python loop per fit). Unlike ``curve_fit`` from a default
start it needs no initial guess and cannot diverge.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import xarray as xr

from widthscan.analysis.dims import ensemble_mean, find_step_dim, get_var, ordered, sample_dims

BOUNDS = (1e-3, 4.0)
_GOLDEN = (np.sqrt(5.0) - 1.0) / 2.0
_CHUNK_ELEMS = 1 << 22


def _linear(logn: np.ndarray, alpha: np.ndarray, y: np.ndarray, w: np.ndarray):
    """Weighted LS of y = a x + c, x = exp(-alpha logn); y, w (G, S, W), alpha (G,)."""
    x = np.exp(-alpha[:, None, None] * logn)
    sw = w.sum(-1)
    xm = (w * x).sum(-1) / sw
    ym = (w * y).sum(-1) / sw
    dx = x - xm[..., None]
    dy = y - ym[..., None]
    a = (w * dx * dy).sum(-1) / (w * dx * dx).sum(-1)
    c = ym - a * xm
    r = dy - a[..., None] * dx
    return a, c, (w * r * r).sum(-1), (w * dy * dy).sum(-1)


def varpro_fit(
    widths: np.ndarray,
    y: np.ndarray,
    w: np.ndarray | None = None,
    bounds: tuple[float, float] = BOUNDS,
    n_grid: int = 32,
    iters: int = 40,
) -> dict[str, np.ndarray]:
    """Fit y[g, s, :] = a[g, s] N^-alpha[g] + c[g, s] with alpha shared within group g.

    widths (W,); y (G, S, W); w (G, S, W) non-negative weights (default: 1 where y
    is finite). Series with fewer than 3 usable widths are left out (NaN).
    Returns alpha (G,), a (G, S), c (G, S), r2 (G,) pooled over the group's
    series, n (G,) the fewest usable widths of a series of the group.
    """
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
    logn = logn - ref
    lo, hi = np.log(bounds[0]), np.log(bounds[1])

    def sse(log_alpha: np.ndarray) -> np.ndarray:
        with np.errstate(all="ignore"):
            s = _linear(logn, np.exp(log_alpha), y, w)[2]
        s = np.where(series_ok | ~group_ok[:, None], s, 0.0).sum(-1)
        return np.where(np.isfinite(s), s, np.inf)

    g = y.shape[0]
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
    log_alpha = np.where(np.minimum(f1, f2) <= best_val, mid, best_grid)
    alpha = np.exp(log_alpha)
    with np.errstate(all="ignore"):
        a, c, s, t = _linear(logn, alpha, y, w)
        r2 = 1.0 - np.where(series_ok, s, 0).sum(-1) / np.where(series_ok, t, 0).sum(-1)
    a = a * np.exp(alpha[:, None] * ref)
    nan = ~(series_ok & group_ok[:, None])
    a, c = np.where(nan, np.nan, a), np.where(nan, np.nan, c)
    alpha, r2 = np.where(group_ok, alpha, np.nan), np.where(group_ok, r2, np.nan)
    n = np.where(group_ok, np.where(series_ok, n_used, n_used.max()).min(-1), n_used.max(-1))
    return {"alpha": alpha, "a": a, "c": c, "r2": r2, "n": n}


def _seed_weights(vals: np.ndarray) -> np.ndarray:
    """1 / (standard error of the seed mean)^2 for vals (..., W, M)."""
    m = vals.shape[-1]
    with np.errstate(all="ignore"):
        sem = vals.std(-1, ddof=1) / np.sqrt(m)
    pos = np.where(sem > 0, sem, np.inf).min(-1, keepdims=True)
    sem = np.where(sem > 0, sem, np.where(np.isfinite(pos), pos, 1.0))
    return 1.0 / sem**2


def fit_power_law(
    data: xr.Dataset | xr.DataArray,
    step: int | Sequence[int] | None = None,
    var: str = "loss",
    n_boot: int = 200,
    ci: float = 0.9,
    seed: int = 0,
    weighted: bool = False,
    bounds: tuple[float, float] = BOUNDS,
) -> xr.Dataset:
    """Fit L(N) = a N^-alpha + c over width N, per param and step (Fig. 9).

    ``data``: a Dataset (fits ``var``) or a DataArray with a ``width`` dim and
    optional ``seed``, step and other dims (each fitted apart). The mean over seeds
    is fitted; a width with a NaN member at that step is left out. ``step``: None
    for every step, else the nearest logged step(s). ``weighted`` weighs widths by
    1/SEM^2 over seeds. Confidence intervals: percentile bootstrap over seeds
    (seeds resampled with replacement, the same draw for every width), level
    ``ci``; NaN without several seeds or with ``n_boot=0``.

    Warns when a fit has fewer than 4 widths or R^2 < 0.9. Returns a Dataset
    over (param, [step]) with alpha, a, c, r2, n_widths and alpha/a/c _lo/_hi.
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
    m = vals.shape[-1]

    def fit(v: np.ndarray) -> dict[str, np.ndarray]:
        y = v.mean(-1)
        w = _seed_weights(v) if weighted and m > 1 else None
        out = varpro_fit(widths, y[:, None, :], None if w is None else w[:, None, :], bounds)
        return {"alpha": out["alpha"], "a": out["a"][:, 0], "c": out["c"][:, 0],
                "r2": out["r2"], "n": out["n"]}

    point = fit(vals)
    lo_q, hi_q = 50 * (1 - ci), 50 * (1 + ci)
    ci_vals = {f"{k}_{s}": np.full(vals.shape[0], np.nan)
               for k in ("alpha", "a", "c") for s in ("lo", "hi")}
    if n_boot > 0 and m > 1:
        idx = np.random.default_rng(seed).integers(0, m, size=(n_boot, m))
        chunk = max(1, _CHUNK_ELEMS // (n_boot * widths.size * m))
        for start in range(0, vals.shape[0], chunk):
            v = vals[start:start + chunk]
            boot = v[:, :, idx].transpose(0, 2, 1, 3).reshape(-1, widths.size, m)
            res = fit(boot)
            for k in ("alpha", "a", "c"):
                r = res[k].reshape(v.shape[0], n_boot)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)
                    q = np.nanpercentile(r, [lo_q, hi_q], axis=1)
                ci_vals[f"{k}_lo"][start:start + chunk] = q[0]
                ci_vals[f"{k}_hi"][start:start + chunk] = q[1]

    def wrap(x: np.ndarray) -> xr.DataArray:
        return template.copy(data=np.asarray(x).reshape(template.shape))

    few = point["n"] < 4
    if few.any():
        warnings.warn(f"power-law fit with fewer than 4 widths ({int(few.sum())} of {few.size} "
                      "fits): alpha and c are poorly determined", stacklevel=2)
    poor = point["r2"] < 0.9
    if poor.any():
        warnings.warn(f"poor power-law fit, R^2 < 0.9 ({int(poor.sum())} of {poor.size} fits)",
                      stacklevel=2)
    out = xr.Dataset({
        "alpha": wrap(point["alpha"]), "a": wrap(point["a"]), "c": wrap(point["c"]),
        "r2": wrap(point["r2"]), "n_widths": wrap(point["n"]),
        **{k: wrap(v) for k, v in ci_vals.items()},
    })
    out.attrs.update(model="L(N) = a N^-alpha + c", ci=ci, n_boot=n_boot if m > 1 else 0,
                     alpha_bounds=list(bounds), weighted=int(weighted), var=str(da.name or var))
    return ordered(out, "param")


def extrapolate(
    ds: xr.Dataset,
    var: str = "loss",
    logits: str | None = "logits",
    step: int | Sequence[int] | None = None,
    n_boot: int = 200,
    ci: float = 0.9,
    seed: int = 0,
    r2_min: float = 0.9,
    c_margin: float = 1.0,
    bounds: tuple[float, float] = BOUNDS,
) -> xr.Dataset:
    """Infinite-width estimates from power-law fits across width.

    ``<var>_inf`` (param, <step dim>): the fitted c(t) of :func:`fit_power_law`
    at each step (``step`` selects steps of ``var``) with its bootstrap interval
    ``<var>_inf_lo``/``_hi``, plus ``alpha`` and ``r2``. Flags, True = suspect:
    ``few_widths`` (< 4), ``poor_fit`` (R^2 < r2_min or no fit), ``alpha_at_bound``
    (alpha within 1% of ``bounds``, where c is ill-determined), ``c_out_of_range``
    (c beyond the observed seed-mean range across widths by more than ``c_margin``
    times that range); ``reliable`` = none of them.

    ``logits_inf`` (param, <logits step>, example, output), when ``logits`` is in
    ``ds``: per-example extrapolated ensemble-mean logits. Per step one exponent
    ``logits_alpha`` is shared by all examples and outputs, chosen by variable
    projection to minimize the summed squared error of all per-example fits (the
    maximum-likelihood version of an exponent read off the RMS distances);
    per-example a and c are linear. ``logits_r2`` is pooled over examples;
    ``logits_reliable`` applies the width, R^2 and bound flags.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = fit_power_law(ds, step=step, var=var, n_boot=n_boot, ci=ci, seed=seed,
                            bounds=bounds)
    y = get_var(ds, var)
    sd = find_step_dim(y)
    if step is not None:
        y = y.sel({sd: step}, method="nearest")
    y = ensemble_mean(y)
    ymin, ymax = y.min("width"), y.max("width")
    span = ymax - ymin
    at_bound = (fit["alpha"] <= bounds[0] * 1.01) | (fit["alpha"] >= bounds[1] * 0.99)
    flags = {
        "few_widths": fit["n_widths"] < 4,
        "poor_fit": ~(fit["r2"] >= r2_min),
        "alpha_at_bound": at_bound,
        "c_out_of_range": (fit["c"] < ymin - c_margin * span) | (fit["c"] > ymax + c_margin * span),
    }
    reliable = ~(flags["few_widths"] | flags["poor_fit"] | flags["alpha_at_bound"]
                 | flags["c_out_of_range"]) & fit["c"].notnull()
    name = str(y.name or var)
    out = xr.Dataset({
        f"{name}_inf": fit["c"], f"{name}_inf_lo": fit["c_lo"], f"{name}_inf_hi": fit["c_hi"],
        "alpha": fit["alpha"], "r2": fit["r2"], **flags, "reliable": reliable,
    })
    if logits is not None and isinstance(ds, xr.Dataset) and logits in ds:
        out = out.merge(_extrapolate_logits(ds[logits], bounds, r2_min))
    out.attrs.update(model="L(N) = a N^-alpha + c", ci=ci, n_boot=n_boot)
    if not bool(reliable.all()):
        warnings.warn(f"{int((~reliable).sum())} of {reliable.size} extrapolations flagged "
                      "unreliable (see the flag variables)", stacklevel=2)
    return out


def _extrapolate_logits(
    f: xr.DataArray, bounds: tuple[float, float], r2_min: float
) -> xr.Dataset:
    f = ensemble_mean(f.sortby("width").astype(np.float64))
    series = [*sample_dims(f), *(["output"] if "output" in f.dims else [])]
    groups = [d for d in f.dims if d not in (*series, "width")]
    f = f.transpose(*groups, *series, "width")
    widths = f["width"].values
    shape_g = [f.sizes[d] for d in groups]
    vals = f.values.reshape(int(np.prod(shape_g)), -1, widths.size)
    res = varpro_fit(widths, vals, bounds=bounds)
    tmpl_s = f.isel(width=0, drop=True)
    tmpl_g = tmpl_s.isel({d: 0 for d in series}, drop=True)
    alpha = tmpl_g.copy(data=res["alpha"].reshape(tmpl_g.shape))
    r2 = tmpl_g.copy(data=res["r2"].reshape(tmpl_g.shape))
    n = tmpl_g.copy(data=res["n"].reshape(tmpl_g.shape))
    at_bound = (alpha <= bounds[0] * 1.01) | (alpha >= bounds[1] * 0.99)
    return xr.Dataset({
        "logits_inf": tmpl_s.copy(data=res["c"].reshape(tmpl_s.shape)),
        "logits_alpha": alpha,
        "logits_r2": r2,
        "logits_reliable": (n >= 4) & (r2 >= r2_min) & ~at_bound,
    })

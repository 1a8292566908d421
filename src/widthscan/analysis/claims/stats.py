"""Statistics of a loaded sweep that the paper's claims are judged on.

Each builder returns a ``measure(ds) -> Estimate``: the statistic on all seeds plus a
percentile bootstrap over seeds (seeds resampled with replacement, the same draw for every
width, so pointwise comparisons across widths stay paired). Everything is computed with the
public ``widthscan.analysis`` functions; dims are looked up on the variable (the step dim
via ``analysis.step_dim``, example dims by their names), never assumed.

Raising :class:`Undecidable` makes a claim INCONCLUSIVE with its message as the reason.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np
import scipy.stats
import xarray as xr

from widthscan import analysis
from widthscan.analysis.claims.verdicts import CI, Estimate, Undecidable
from widthscan.analysis.dims import layer_dim, sample_dims

N_BOOT = 100
MIN_WIDTHS = 4

Stat = Callable[[xr.Dataset], float]
Measure = Callable[[xr.Dataset], Estimate]


# ---------------------------------------------------------------- plumbing


def resample(ds: xr.Dataset, idx: np.ndarray) -> xr.Dataset:
    """``ds`` with its members replaced by members ``idx`` (relabelled 0..len-1)."""
    return ds.isel(seed=idx).assign_coords(seed=np.arange(len(idx)))


def bootstrap(stat: Stat, prepare: Callable[[xr.Dataset], xr.Dataset] = lambda d: d,
              n_boot: int | None = None, seed: int = 0, jackknife: bool = False) -> Measure:
    """``stat`` on ``prepare(ds)`` and on ``n_boot`` (default: ``N_BOOT`` at call time)
    seed resamples of it (percentile interval). ``jackknife``: leave-one-seed-out draws and
    the normal interval value +- z se_jack instead, for statistics of the ensemble itself
    (a resample with repeated members is a less diverse ensemble, which biases them)."""

    def measure(ds: xr.Dataset) -> Estimate:
        n = N_BOOT if n_boot is None else n_boot
        small = prepare(ds).load()  # one read of a lazily loaded sweep, then many resamples
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            value = stat(small)
            m = small.sizes.get("seed", 1)
            if m < 2 or n <= 0 or (jackknife and m < 3):
                return Estimate(value, None, note="too few seeds: no interval")
            if jackknife:
                draws = np.array([_try(stat, small.isel(seed=[j for j in range(m) if j != i]))
                                  for i in range(m)])
                se = np.sqrt((m - 1) / m * np.nansum((draws - np.nanmean(draws)) ** 2))
                z = float(scipy.stats.norm.ppf((1 + CI) / 2))
                return Estimate(value, draws, bounds=(value - z * se, value + z * se),
                                note="jackknife interval over seeds")
            rng = np.random.default_rng(seed)
            draws = np.array([_try(stat, resample(small, rng.integers(0, m, m)))
                              for _ in range(n)])
        return Estimate(value, draws)

    return measure


def _try(stat: Stat, ds: xr.Dataset) -> float:
    try:
        return stat(ds)
    except Undecidable:
        return np.nan


def need(ds: xr.Dataset, *names: str) -> None:
    missing = [n for n in names if n not in ds.data_vars]
    if missing:
        raise Undecidable(f"not measured: {', '.join(missing)} (is the probe on?)")


def at_param(ds: xr.Dataset, param: str) -> xr.Dataset:
    """``ds`` for one parameterization, keeping the param dim (length 1)."""
    if "param" not in ds.dims or param not in [str(p) for p in ds["param"].values]:
        raise Undecidable(f"parameterization {param!r} is not in the sweep")
    return ds.sel(param=[param])


def step_of(da: xr.DataArray, at: float) -> int:
    """The logged step of ``da`` nearest to the fraction ``at`` of its last step."""
    sd = analysis.step_dim(da)
    steps = da[sd].values
    target = at * steps[-1]
    return int(steps[np.argmin(np.abs(steps - target))])


def at_step(ds: xr.Dataset, var: str, at: float) -> xr.Dataset:
    """``ds[var]`` (and whatever shares its step dim) at one step, keeping the step dim."""
    sd = analysis.step_dim(ds[var])
    return ds.sel({sd: [step_of(ds[var], at)]})


def only(ds: xr.Dataset, *names: str) -> xr.Dataset:
    """``ds`` with just ``names`` (and the probe targets, as labels when they are
    integral), without layers or probe examples that no run measured (the loader fills a
    coordinate shared by two probes with NaN where one of them did not measure)."""
    need(ds, *names)
    small = ds[list(names)]
    for name in names:
        layer = layer_dim(ds[name])
        for dim in [*([layer] if layer else []), *sample_dims(ds[name])]:
            small = small.dropna(dim, how="all", subset=[name])
    if "targets" in ds.data_vars:
        small["targets"] = probe_targets(ds["targets"])
    return small


def probe_targets(t: xr.DataArray) -> xr.DataArray:
    """The probe targets without param/width/seed/step dims (the same for every run),
    integral values as int64 class labels (the loader stores every variable as float)."""
    extra = {d: 0 for d in t.dims if d in ("param", "width", "seed")
             or str(d) == "step" or str(d).endswith("_step")}
    t = t.isel(extra, drop=True) if extra else t
    v = t.values
    if t.ndim == 1 and np.all(np.isfinite(v)) and np.array_equal(v, np.round(v)):
        t = t.astype(np.int64)
    return t


def widths_of(da: xr.DataArray) -> np.ndarray:
    return np.sort(da["width"].values.astype(int))


def finite(x: float, what: str) -> float:
    if not np.isfinite(x):
        raise Undecidable(f"{what} is not finite (diverged or missing runs)")
    return float(x)


def per_width(da: xr.DataArray, what: str) -> xr.DataArray:
    """Mean over every dim but width; Undecidable if any width is NaN."""
    other = [d for d in da.dims if d != "width"]
    out = da.mean(other, skipna=False) if other else da
    out = out.sortby("width")
    bad = [int(w) for w, v in zip(out["width"].values, out.values) if not np.isfinite(v)]
    if bad:
        raise Undecidable(f"{what} is not finite at width(s) {bad} (diverged or missing)")
    return out


def loglog_slope(widths: np.ndarray, values: np.ndarray, what: str) -> float:
    """Least-squares slope of log(values) against log(widths)."""
    widths, values = np.asarray(widths, float), np.asarray(values, float)
    if len(widths) < MIN_WIDTHS - 1:
        raise Undecidable(f"{what}: needs at least {MIN_WIDTHS} widths "
                          f"({len(widths)} points to fit)")
    if np.any(values <= 0):
        raise Undecidable(f"{what}: a value is <= 0, no log-log slope")
    return float(np.polyfit(np.log(widths), np.log(values), 1)[0])


def seed_mean(da: xr.DataArray) -> xr.DataArray:
    return da.mean("seed", skipna=False) if "seed" in da.dims else da


# ---------------------------------------------------------------- distances to the widest


def distances(ds: xr.Dataset, var: str, metric: str, scaled: bool, ensemble: bool
              ) -> xr.DataArray:
    """Distance of each width's ``var`` to the widest's (analysis functions)."""
    if metric == "rms":
        return analysis.distance_to_widest(ds, var, scaled=scaled, ensemble=ensemble)
    if metric == "successive":
        return analysis.successive_differences(ds, var, ensemble=ensemble, scaled=scaled)
    if metric == "cka":
        dims = tuple(str(d) for d in ds[var].dims[-2:])
        return analysis.kernel_distance(ds, var, metric="cka", ensemble=ensemble, dims=dims)
    if metric == "w1":
        return analysis.preactivation_distance(ds, ensemble=ensemble)
    raise ValueError(f"metric={metric!r}; allowed: rms, successive, cka, w1")


def distance_slope(var: str, param: str = "mup", metric: str = "rms", scaled: bool = True,
                   ensemble: bool = False, at: float = 1.0, n_boot: int | None = None) -> Measure:
    """Log-log slope against width of the distance of ``var`` to the widest width at the
    step nearest the fraction ``at`` of training (mean over seeds, layers, heads), over the
    widths narrower than the widest (``metric="successive"``: of successive-width
    differences, labelled by the narrower width)."""
    extra = ("preact_edges",) if metric == "w1" else ()

    def prepare(ds: xr.Dataset) -> xr.Dataset:
        small = only(at_param(ds, param), var, *extra)
        return at_step(small, var, at)

    def stat(ds: xr.Dataset) -> float:
        d = per_width(distances(ds, var, metric, scaled, ensemble), f"{var} distance")
        if metric != "successive":
            d = d.isel(width=slice(None, -1))
        return loglog_slope(d["width"].values, d.values, f"{var} distance")

    return bootstrap(stat, prepare, n_boot)


def narrow_distance(ds: xr.Dataset, var: str, param: str, at: float, scaled: bool = True,
                    window: bool = False) -> float:
    """Scaled distance of the narrowest width's ``var`` to the widest's: at one step, or
    (``window``) the relative RMS over the seed-mean curve up to the fraction ``at``."""
    sub = only(at_param(ds, param), var)
    if window:
        d = curve_distances(sub, var, at)
    else:
        sub = at_step(sub, var, at)
        d = per_width(analysis.distance_to_widest(sub, var, scaled=scaled), f"{var} distance")
    return float(d.isel(width=0))


def curve_distances(ds: xr.Dataset, var: str, until: float = 1.0, start: float = 0.0
                    ) -> xr.DataArray:
    """Relative RMS distance over steps between each width's seed-mean ``var`` curve and
    the widest's, over the steps in [start, until] x the last step: (width,)."""
    da = seed_mean(ds[var].astype(np.float64))
    sd = analysis.step_dim(da)
    steps = da[sd].values
    window = (steps >= start * steps[-1]) & (steps <= until * steps[-1])
    da = da.isel({sd: np.flatnonzero(window)}).sortby("width")
    d = analysis.distance_to_widest(da.rename({sd: "curve_point"}).expand_dims(
        {sd: [int(steps[window][-1])]}), scaled=True)
    return per_width(d, f"{var} curve distance")


def curve_distance_slope(var: str, param: str = "mup", until: float = 1.0, start: float = 0.0,
                         n_boot: int | None = None) -> Measure:
    """Log-log slope against width of the relative RMS distance between each width's
    seed-mean ``var`` curve and the widest's, over the steps in [start, until]."""

    def prepare(ds: xr.Dataset) -> xr.Dataset:
        return only(at_param(ds, param), var)

    def stat(ds: xr.Dataset) -> float:
        d = curve_distances(ds, var, until, start)
        d = d.isel(width=slice(None, -1))
        return loglog_slope(d["width"].values, d.values, f"{var} curve distance")

    return bootstrap(stat, prepare, n_boot)


def curve_distance_ratio(var: str, param: str, versus: str, until: float = 1.0,
                         diverged_is_inconsistent: bool = True, n_boot: int | None = None
                         ) -> Measure:
    """Ratio of the narrowest width's relative curve distance to the widest under
    ``param`` to the same under ``versus``. A diverged ``param`` run makes the ratio +inf
    when ``diverged_is_inconsistent`` (the paper counts it as inconsistency)."""

    def prepare(ds: xr.Dataset) -> xr.Dataset:
        need(ds, var)
        for p in (param, versus):
            at_param(ds, p)
        return ds[[var]].sel(param=[param, versus])

    def stat(ds: xr.Dataset) -> float:
        base = float(curve_distances(ds.sel(param=[versus]), var, until).isel(width=0))
        try:
            this = float(curve_distances(ds.sel(param=[param]), var, until).isel(width=0))
        except Undecidable:
            if diverged_is_inconsistent:
                return np.inf
            raise
        if base <= 0:
            raise Undecidable(f"{versus}: zero distance")
        return this / base

    return bootstrap(stat, prepare, n_boot)


def logit_distance_ratio(param: str, versus: str, at: float = 1.0, n_boot: int | None = None
                         ) -> Measure:
    """Ratio of the narrowest width's scaled RMS logit distance to the widest (mean over
    seeds, one step) under ``param`` to the same under ``versus``."""

    def prepare(ds: xr.Dataset) -> xr.Dataset:
        need(ds, "logits")
        for p in (param, versus):
            at_param(ds, p)
        return at_step(ds[["logits"]].sel(param=[param, versus]), "logits", at)

    def stat(ds: xr.Dataset) -> float:
        a = narrow_distance(ds, "logits", param, 1.0)
        b = narrow_distance(ds, "logits", versus, 1.0)
        if b <= 0:
            raise Undecidable(f"{versus}: zero distance")
        return a / b

    return bootstrap(stat, prepare, n_boot)


# ---------------------------------------------------------------- losses across widths


def tail_mean(da: xr.DataArray, at: float, tail: float) -> xr.DataArray:
    """Mean of ``da`` over the logged steps in [at - tail, at] x the last step."""
    sd = analysis.step_dim(da)
    steps = da[sd].values
    lo, hi = (at - tail) * steps[-1], at * steps[-1]
    sel = np.flatnonzero((steps >= lo) & (steps <= hi))
    if not len(sel):
        sel = [int(np.argmin(np.abs(steps - hi)))]
    return da.isel({sd: sel}).mean(sd, skipna=False)


def width_trend(var: str, param: str = "mup", at: float = 1.0, tail: float = 0.0,
                n_boot: int | None = None) -> Measure:
    """Least-squares slope of the seed-mean ``var`` (mean over the last ``tail`` fraction
    of steps before ``at``) against log2(width), in ``var`` units per doubling."""

    def prepare(ds: xr.Dataset) -> xr.Dataset:
        return only(at_param(ds, param), var)

    def stat(ds: xr.Dataset) -> float:
        v = per_width(seed_mean(tail_mean(ds[var].astype(np.float64), at, tail)), var)
        if v.sizes["width"] < 3:
            raise Undecidable(f"{var} trend: needs at least 3 widths")
        return float(np.polyfit(np.log2(v["width"].values), v.values, 1)[0])

    return bootstrap(stat, prepare, n_boot)


def gap_to_widest(var: str, param: str = "mup", at: float = 1.0, tail: float = 0.0,
                  upper_half: bool = True, n_boot: int | None = None) -> Measure:
    """Largest relative gap |L(w) - L(widest)| / |L(widest)| of the seed-mean ``var`` at
    the fraction ``at`` of training, over the widths in the upper half (or all widths)."""

    def prepare(ds: xr.Dataset) -> xr.Dataset:
        return only(at_param(ds, param), var)

    def stat(ds: xr.Dataset) -> float:
        v = per_width(seed_mean(tail_mean(ds[var].astype(np.float64), at, tail)), var)
        if v.sizes["width"] < 2:
            raise Undecidable(f"{var}: needs at least 2 widths")
        ref = float(v.isel(width=-1))
        n = v.sizes["width"]
        rest = v.isel(width=slice(min(n // 2, n - 2) if upper_half else 0, -1))
        return float(np.max(np.abs(rest.values - ref)) / abs(ref))

    return bootstrap(stat, prepare, n_boot)


def top_two_gap(var: str, param: str = "mup", tail: float = 0.05, n_boot: int | None = None
                ) -> Measure:
    """|log(L(second widest) / L(widest))| of the seed-mean ``var`` over the last ``tail``
    of training: how far the two widest widths still are apart, on a log scale."""

    def prepare(ds: xr.Dataset) -> xr.Dataset:
        return only(at_param(ds, param), var)

    def stat(ds: xr.Dataset) -> float:
        v = per_width(seed_mean(tail_mean(ds[var].astype(np.float64), 1.0, tail)), var)
        if v.sizes["width"] < 2:
            raise Undecidable(f"{var}: needs at least 2 widths")
        a, b = float(v.isel(width=-2)), float(v.isel(width=-1))
        if a <= 0 or b <= 0:
            raise Undecidable(f"{var}: non-positive loss")
        return abs(float(np.log(a / b)))

    return bootstrap(stat, prepare, n_boot)


def rise_after_minimum(var: str = "probe_loss", param: str = "mup", n_boot: int | None = None
                       ) -> Measure:
    """Overfitting: the widest width's seed-mean ``var`` at the last step over its minimum
    during training, minus 1 (0 when the last step is the minimum)."""

    def prepare(ds: xr.Dataset) -> xr.Dataset:
        small = only(at_param(ds, param), var)
        return small.sel(width=[int(widths_of(small[var])[-1])])

    def stat(ds: xr.Dataset) -> float:
        da = seed_mean(ds[var].astype(np.float64)).squeeze(drop=True)
        sd = analysis.step_dim(da)
        last = finite(float(da.isel({sd: -1})), var)
        return last / float(da.min(sd)) - 1.0

    return bootstrap(stat, prepare, n_boot)


# ---------------------------------------------------------------- bias and variance


def _bv(ds: xr.Dataset, loss: str) -> xr.Dataset:
    return analysis.bias_variance(ds, loss=loss).squeeze("param", drop=True)


def bias_variance_stat(kind: str, loss: str, param: str = "mup", at: float = 1.0,
                       n_boot: int | None = None) -> Measure:
    """Statistics of the bias-variance decomposition of the probe logits (Fig. 7):

    - ``bias_over_variance``: width bias (bias2 - bias2 of the widest) over variance, at
      the narrowest width;
    - ``narrow_ensemble_minus_wide_single``: loss of the narrowest width's M-member
      ensemble minus the mean single-network loss of the widest width;
    - ``variance_share_widest``: (single - ensemble loss) / single loss at the widest;
    - ``wider_ensemble_worse``: largest increase of the ensemble loss from a narrower
      to a wider width (> 0: some narrower ensemble beats a wider one; Fig. 8f).
    """

    def prepare(ds: xr.Dataset) -> xr.Dataset:
        need(ds, "logits", "targets")
        return at_step(only(at_param(ds, param), "logits"), "logits", at)

    def stat(ds: xr.Dataset) -> float:
        bv = _bv(ds, loss)
        sd = [d for d in bv.dims if d != "width"]
        bv = bv.isel({d: 0 for d in sd}) if sd else bv
        if bv.sizes["width"] < 2:
            raise Undecidable("needs at least 2 widths")
        if kind == "bias_over_variance":
            narrow = bv.isel(width=0)
            var = finite(float(narrow["variance"]), "variance")
            if var <= 0:
                raise Undecidable("zero variance at the narrowest width")
            return finite(float(narrow["width_bias"]), "width bias") / var
        if kind == "narrow_ensemble_minus_wide_single":
            return finite(float(bv["ensemble_loss"].isel(width=0))
                          - float(bv["single_loss"].isel(width=-1)), "loss gap")
        if kind == "variance_share_widest":
            wide = bv.isel(width=-1)
            single = finite(float(wide["single_loss"]), "single loss")
            return (single - float(wide["ensemble_loss"])) / single
        if kind == "wider_ensemble_worse":
            e = bv["ensemble_loss"].values
            if not np.all(np.isfinite(e)):
                raise Undecidable("ensemble loss not finite (diverged)")
            return float(max(e[j] - e[i] for i in range(len(e)) for j in range(i + 1, len(e))))
        raise ValueError(f"kind={kind!r}")

    return bootstrap(stat, prepare, n_boot, jackknife=True)


def ensemble_size_stat(kind: str, loss: str, param: str = "mup", plateau: int = 4,
                       n_boot: int | None = None) -> Measure:
    """Loss of k-member ensembles against k (App. H, Fig. 18), at the last logits step:

    - ``remaining_gain``: sum over widths of L(plateau) - L(M) over the sum of
      L(1) - L(M), the share of the full ensembling gain still to come after ``plateau``
      members (1/k variance gives (1/plateau - 1/M) / (1 - 1/M) at every width; pooling
      the widths averages out the noise of one width's small gain);
    - ``k3_vs_full``: the largest relative difference |L(3) - L(M)| / L(M) over widths.
    """

    def prepare(ds: xr.Dataset) -> xr.Dataset:
        need(ds, "logits", "targets")
        if ds.sizes.get("seed", 1) <= plateau:
            raise Undecidable(f"needs more than {plateau} seeds, has {ds.sizes.get('seed', 1)}")
        return at_step(only(at_param(ds, param), "logits"), "logits", 1.0)

    def stat(ds: xr.Dataset) -> float:
        out = analysis.variance_vs_ensemble_size(ds, loss=loss)
        curve = out["ensemble_loss"].squeeze("param", drop=True)
        other = [d for d in curve.dims if d not in ("width", "ensemble_size")]
        curve = curve.isel({d: -1 for d in other}) if other else curve
        curve = curve.transpose("width", "ensemble_size")
        v = curve.values
        if not np.all(np.isfinite(v)):
            raise Undecidable("ensemble loss not finite (diverged)")
        sizes = list(curve["ensemble_size"].values)
        full = v[:, -1]
        if kind == "remaining_gain":
            gain = float(np.sum(v[:, 0] - full))
            if gain <= 0:
                raise Undecidable("ensembling does not help")
            return float(np.sum(v[:, sizes.index(plateau)] - full) / gain)
        if kind == "k3_vs_full":
            return float(np.max(np.abs(v[:, sizes.index(3)] - full) / np.abs(full)))
        raise ValueError(f"kind={kind!r}")

    return bootstrap(stat, prepare, n_boot, jackknife=True)


# ---------------------------------------------------------------- power law


def power_law_stat(kind: str, var: str = "probe_loss", param: str = "mup") -> Measure:
    """From ``analysis.fit_power_law`` of ``var`` at the last step (Fig. 9): ``r2`` (no
    interval) or ``alpha`` with the fit's own bootstrap interval over seeds."""

    def measure(ds: xr.Dataset) -> Estimate:
        small = only(at_param(ds, param), var)
        if small.sizes["width"] < MIN_WIDTHS:
            raise Undecidable(f"power law: needs at least {MIN_WIDTHS} widths")
        step = int(small[var][analysis.step_dim(small[var])].values[-1])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fit = analysis.fit_power_law(small, step=step, var=var).squeeze(drop=True)
        alpha = finite(float(fit["alpha"]), "alpha")
        if kind == "r2":
            return Estimate(finite(float(fit["r2"]), "R^2"), note=f"alpha {alpha:.3g}")
        lo = float(fit["alpha_lo"]) if "alpha_lo" in fit else np.nan
        hi = float(fit["alpha_hi"]) if "alpha_hi" in fit else np.nan
        bounds = (lo, hi) if np.isfinite(lo) and np.isfinite(hi) else None
        return Estimate(alpha, bounds=bounds, note=f"R^2 {float(fit['r2']):.3g}")

    return measure


# ---------------------------------------------------------------- spectra of the eNTK


def _normalized_entk(ds: xr.Dataset, index: int = -1) -> xr.DataArray:
    """The seed-ensembled eNTK at its logged step ``index`` (-1: the after-kernel, 0: at
    initialization) divided by its trace, (width, P, P)."""
    k = ds["entk"].astype(np.float64)
    sd = analysis.step_dim(k)
    k = seed_mean(k.isel({sd: index}, drop=True)).squeeze("param", drop=True)
    a, b = (str(d) for d in k.dims[-2:])
    trace = xr.apply_ufunc(lambda m: np.trace(m, axis1=-2, axis2=-1), k,
                           input_core_dims=[[a, b]])
    return k / trace


def _labels(ds: xr.Dataset, n: int) -> np.ndarray:
    return probe_targets(ds["targets"]).values[:n]


def spectral_stat(kind: str, param: str = "mup", top: int | None = 10,
                  n_boot: int | None = None, index: int = -1) -> Measure:
    """Spectral statistics of the trace-normalized, seed-ensembled eNTK at its logged step
    ``index`` (-1: the after-kernel; 0: at initialization, the kernel of the lazy limit)
    (Fig. 10):

    - ``spectrum_deviation``: mean over the top ``top`` eigenvalues of
      |log(lambda_narrowest / lambda_widest)|;
    - ``alignment_gap``: mean over k <= ``top`` (None: every k up to the number of probe
      examples) of C_widest(k) - C_narrowest(k), the task power the widest kernel puts in
      its top-k eigenspace in excess of the narrowest's;
    - ``flow_gap``: kernel gradient flow loss of the narrowest kernel minus the widest's,
      relative to the widest's, at the time the widest's loss has fallen to half.
    """

    def prepare(ds: xr.Dataset) -> xr.Dataset:
        need(ds, "entk", "targets")
        return only(at_param(ds, param), "entk")

    def stat(ds: xr.Dataset) -> float:
        k = _normalized_entk(ds, index)
        if k.sizes["width"] < 2:
            raise Undecidable("needs at least 2 widths")
        if not np.all(np.isfinite(k.values)):
            raise Undecidable("eNTK not finite (diverged)")
        narrow, wide = k.isel(width=0).values, k.isel(width=-1).values
        p = narrow.shape[-1]
        y = _labels(ds, p)
        if kind == "spectrum_deviation":
            ln = np.linalg.eigvalsh((narrow + narrow.T) / 2)[::-1][:top]
            lw = np.linalg.eigvalsh((wide + wide.T) / 2)[::-1][:top]
            if np.any(ln <= 0) or np.any(lw <= 0):
                raise Undecidable("non-positive top eigenvalue")
            return float(np.mean(np.abs(np.log(ln / lw))))
        if kind == "alignment_gap":
            cn = analysis.task_power(narrow, y).values[:top]
            cw = analysis.task_power(wide, y).values[:top]
            return float(np.mean(cw - cn))
        if kind == "flow_gap":
            t = np.geomspace(1e-2, 1e6, 400)
            fw = analysis.kernel_flow_loss(wide, y, lr=1.0, steps=t * p).values
            fn = analysis.kernel_flow_loss(narrow, y, lr=1.0, steps=t * p).values
            half = np.flatnonzero(fw <= fw[0] / 2)
            if not len(half):
                raise Undecidable("the widest kernel's flow loss never halves")
            i = half[0]
            return float((fn[i] - fw[i]) / fw[i])
        raise ValueError(f"kind={kind!r}")

    return bootstrap(stat, prepare, n_boot)


# ---------------------------------------------------------------- sharpness


def sharpness_stat(kind: str, param: str = "mup", n_boot: int | None = None) -> Measure:
    """Top Hessian eigenvalue (``sharpness``, eigen 0) over training (Fig. 6a):

    - ``growth``: widest width's seed-mean final sharpness over its minimum during
      training (progressive sharpening, after a catapult if the start is above 2/lr);
    - ``spread``: (max - min) / mean of the seed-mean final sharpness over the widths in
      the upper half (the widest included).
    """

    def prepare(ds: xr.Dataset) -> xr.Dataset:
        small = only(at_param(ds, param), "sharpness")
        return small

    def stat(ds: xr.Dataset) -> float:
        s = ds["sharpness"].astype(np.float64)
        if "eigen" in s.dims:
            s = s.isel(eigen=0, drop=True)
        s = seed_mean(s).squeeze("param", drop=True)
        sd = analysis.step_dim(s)
        if kind == "growth":
            wide = s.isel(width=-1)
            lowest = float(wide.min(sd))
            last = finite(float(tail_mean(wide, 1.0, 0.3)), "final sharpness")
            if not np.isfinite(lowest) or lowest <= 0:
                raise Undecidable("no positive sharpness")
            return last / lowest
        if kind == "spread":
            final = per_width(tail_mean(s, 1.0, 0.3), "final sharpness")
            upper = final.isel(width=slice(final.sizes["width"] // 2, None)).values
            return float((upper.max() - upper.min()) / upper.mean())
        raise ValueError(f"kind={kind!r}")

    return bootstrap(stat, prepare, n_boot)


# ---------------------------------------------------------------- one test point


def point_logit_slope(param: str = "mup", n_boot: int | None = None) -> Measure:
    """Log-log slope against width of the RMS over training of the ensemble-mean logit of
    the first probe example (all outputs) minus the widest's (Figs. 3a-c)."""

    def prepare(ds: xr.Dataset) -> xr.Dataset:
        small = only(at_param(ds, param), "logits")
        ex = sample_dims(small["logits"])
        if not ex:
            raise Undecidable("logits have no example dim")
        return small.isel({ex[0]: [0]})

    def stat(ds: xr.Dataset) -> float:
        f = seed_mean(ds["logits"].astype(np.float64))
        sd = analysis.step_dim(f)
        f = f.rename({sd: "curve_point"}).expand_dims({sd: [0]})
        d = per_width(analysis.distance_to_widest(f, scaled=True), "logit distance")
        d = d.isel(width=slice(None, -1))
        return loglog_slope(d["width"].values, d.values, "one-point logit distance")

    return bootstrap(stat, prepare, n_boot)

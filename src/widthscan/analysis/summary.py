"""Small tables a researcher reads first: final loss by width, per parameterization, and
how fast the distance to the widest width falls."""

from __future__ import annotations

import numpy as np
import pandas as pd
import xarray as xr
from scipy import stats


def final_loss(ds: xr.Dataset, var: str = "loss", window: float = 0.05) -> pd.DataFrame:
    """Final loss per (param, width): each seed's mean over the last ``window`` fraction of
    logged steps (at least one step; ``window=0``: the last logged step alone), then mean
    and std (ddof=1) over seeds, and the number of seeds still finite. Online batch
    losses are noisy, hence the default window; a held-out probe loss needs none."""
    da = ds[var]
    steps = da["step"].values
    n = max(1, int(np.ceil(window * len(steps))))
    tail = da.isel(step=slice(len(steps) - n, None)).mean("step")
    rows = []
    for param in tail["param"].values:
        for width in tail["width"].values:
            values = tail.sel(param=param, width=width).values
            finite = values[np.isfinite(values)]
            rows.append({
                "param": str(param), "width": int(width),
                "loss": float(finite.mean()) if finite.size else np.nan,
                "std": float(finite.std(ddof=1)) if finite.size > 1 else np.nan,
                "seeds": int(finite.size),
            })
    return pd.DataFrame(rows)


def distance_slope(distance: xr.DataArray, ci: float = 0.9) -> xr.Dataset:
    """Log-log slope of a distance to the widest width against width, per param.

    ``distance`` (param, width), e.g. ``distance_to_widest(..., ensemble=True)`` at one
    step; widths at distance 0 (the reference) or non-finite are left out. Ordinary
    least squares of log d on log N: d ~ N^slope. ``slope_lo``/``_hi``: Student-t
    interval at level ``ci`` (n - 2 degrees of freedom; NaN with n < 3). ``falls``: d
    strictly decreases from each used width to the next wider one (n >= 2).
    Returns a Dataset over param with slope, slope_lo, slope_hi, n, falls.
    """
    d = distance.sortby("width").transpose("param", "width")
    logn = np.log(d["width"].values.astype(np.float64))
    rows = []
    for row in d.values.astype(np.float64):
        ok = np.isfinite(row) & (row > 0)
        x, y = logn[ok], np.log(row[ok])
        n = int(ok.sum())
        slope = lo = hi = np.nan
        if n >= 2:
            xc = x - x.mean()
            slope = float(xc @ (y - y.mean()) / (xc @ xc))
        if n >= 3:
            resid = y - y.mean() - slope * xc
            se = np.sqrt(resid @ resid / (n - 2) / (xc @ xc))
            q = stats.t.ppf(0.5 + ci / 2, n - 2)
            lo, hi = slope - q * se, slope + q * se
        falls = n >= 2 and bool(np.all(np.diff(row[ok]) < 0))
        rows.append((slope, lo, hi, n, falls))
    cols = list(zip(*rows)) if rows else [[]] * 5
    coords = {"param": d["param"].values}
    out = xr.Dataset({name: ("param", np.asarray(col)) for name, col in
                      zip(("slope", "slope_lo", "slope_hi", "n", "falls"), cols)}, coords=coords)
    out.attrs.update(model="d(N) ~ N^slope", ci=ci)
    return out

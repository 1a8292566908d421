"""Small tables a researcher reads first: final loss by width, per parameterization."""

from __future__ import annotations

import numpy as np
import pandas as pd
import xarray as xr


def final_loss(ds: xr.Dataset, var: str = "loss", window: float = 0.05) -> pd.DataFrame:
    """Final training loss per (param, width): each seed's mean over the last ``window``
    fraction of logged steps, then mean and std (ddof=1) over seeds, and the number of
    seeds still finite. Online batch losses are noisy, hence the window."""
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

"""Summary tables: final loss windows and the log-log slope of a distance to the widest."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
from scipy import stats

from widthscan.analysis.summary import distance_slope, final_loss

WIDTHS = np.array([64, 128, 256, 512, 1024])


def test_distance_slope_matches_linregress_and_t_interval():
    rng = np.random.default_rng(0)
    n = WIDTHS.astype(float)
    d = np.stack([3 * n**-0.5 * np.exp(0.05 * rng.normal(size=n.size)), 2 * n**-1.0])
    d[:, -1] = 0.0  # the widest, at distance 0, is left out
    da = xr.DataArray(d, dims=("param", "width"),
                      coords={"param": ["mup", "sp"], "width": WIDTHS})
    out = distance_slope(da, ci=0.9)
    ref = stats.linregress(np.log(n[:-1]), np.log(d[0, :-1]))
    q = stats.t.ppf(0.95, 2)
    assert float(out["slope"][0]) == pytest.approx(ref.slope, rel=1e-10)
    assert float(out["slope_lo"][0]) == pytest.approx(ref.slope - q * ref.stderr, rel=1e-10)
    assert float(out["slope_hi"][0]) == pytest.approx(ref.slope + q * ref.stderr, rel=1e-10)
    assert float(out["slope"][1]) == pytest.approx(-1.0, rel=1e-12)
    assert list(out["n"].values) == [4, 4] and bool(out["falls"][1])


def test_distance_slope_falls_flag_and_two_widths():
    da = xr.DataArray([[0.5, 0.2, 0.3, 0.0], [0.4, 0.2, np.nan, 0.0]], dims=("param", "width"),
                      coords={"param": ["a", "b"], "width": WIDTHS[:4]})
    out = distance_slope(da)
    assert not bool(out["falls"][0]) and bool(out["falls"][1])
    assert int(out["n"][1]) == 2 and np.isnan(float(out["slope_lo"][1]))
    assert float(out["slope"][1]) == pytest.approx(np.log(0.5) / np.log(2))


def test_final_loss_window_zero_is_the_last_logged_step():
    steps = np.arange(40)
    vals = np.broadcast_to(steps.astype(float), (1, 2, 3, 40)).copy()
    ds = xr.Dataset({"loss": (("param", "width", "seed", "step"), vals)},
                    coords={"param": ["mup"], "width": [64, 128], "step": steps})
    assert (final_loss(ds, window=0)["loss"] == 39.0).all()
    # 5% of 40 steps: the mean of the last two
    assert (final_loss(ds)["loss"] == 38.5).all()

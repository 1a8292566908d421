"""Axis limits: a few wild values (a member about to diverge, an extrapolation through a
spike) must not squash the curves a reader came to see."""

import numpy as np
import xarray as xr

from widthscan.report import figures


def trajectories(wild: float) -> tuple[xr.DataArray, xr.DataArray]:
    rng = np.random.default_rng(0)
    steps = np.arange(40)
    mean = xr.DataArray(rng.normal(size=(1, 4, 40)), dims=("param", "width", "logits_step"),
                        coords={"param": ["mup"], "width": [64, 128, 256, 512],
                                "logits_step": steps})
    infinite = xr.DataArray(rng.normal(size=(1, 40)), dims=("param", "logits_step"),
                            coords={"param": ["mup"], "logits_step": steps})
    infinite[0, 7] = wild
    return mean, infinite


def test_wild_extrapolation_points_are_off_scale_and_the_curves_are_not():
    mean, infinite = trajectories(wild=-2000.0)
    fig = figures.logit_trajectory(mean, ylabel="logit", title="t",
                                               infinite=infinite)
    lo, hi = fig.axes[0].get_ylim()
    assert lo > -50 and lo <= float(mean.min()) and hi >= float(mean.max())
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert any("down to -2e+03 off scale" in t for t in texts)


def test_moderate_extrapolation_stays_in_view():
    mean, infinite = trajectories(wild=-4.0)
    fig = figures.logit_trajectory(mean, ylabel="logit", title="t",
                                               infinite=infinite)
    lo, _ = fig.axes[0].get_ylim()
    assert lo <= -4.0
    assert not fig.axes[0].texts

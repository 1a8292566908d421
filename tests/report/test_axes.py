"""Axis limits: a few wild values (a member about to diverge, an extrapolation through a
spike) must not squash the curves a reader came to see."""

import numpy as np
import pytest
import xarray as xr
from matplotlib.backends.backend_agg import FigureCanvasAgg

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
    assert any("off scale, down to -2e+03" in t for t in texts)


def test_moderate_extrapolation_stays_in_view():
    mean, infinite = trajectories(wild=-4.0)
    fig = figures.logit_trajectory(mean, ylabel="logit", title="t",
                                               infinite=infinite)
    lo, _ = fig.axes[0].get_ylim()
    assert lo <= -4.0
    assert not fig.axes[0].texts


def over_steps(values: dict[str, np.ndarray], widths=(64, 128, 256)) -> xr.DataArray:
    """param -> (width, step) values as a (param, width, logits_step) DataArray."""
    params = list(values)
    steps = np.arange(next(iter(values.values())).shape[-1])
    return xr.DataArray(np.stack([values[p] for p in params]),
                        dims=("param", "width", "logits_step"),
                        coords={"param": params, "width": list(widths), "logits_step": steps})


def panels(fig) -> dict[str, object]:
    names = {"μP": "mup", "SP": "sp"}
    return {names[ax.get_title().split(" (")[0]]: ax for ax in fig.axes
            if ax.get_title().split(" (")[0] in names}


def test_an_sp_blow_up_does_not_flatten_mup():
    """The single-logit / sharpness case: muP within +-1, SP's widest width at +-30. Each
    panel's y axis fits its own data: muP's curves fill its axis."""
    rng = np.random.default_rng(1)
    mup = rng.normal(0, 0.3, size=(3, 50))
    sp = rng.normal(0, 0.3, size=(3, 50))
    sp[2] = 30 * np.sin(np.arange(50))
    fig = figures.width_curves(over_steps({"mup": mup, "sp": sp}), ylabel="y", title="t")
    ax = panels(fig)
    for p, v in (("mup", mup), ("sp", sp)):
        lo, hi = ax[p].get_ylim()
        assert lo <= v.min() and hi >= v.max(), p
        assert hi - lo < 1.5 * (v.max() - v.min()), p
    assert not ax["mup"].get_shared_y_axes().joined(ax["mup"], ax["sp"])
    assert all(a.get_title().endswith("(own y axis)") for a in ax.values())


def test_comparable_panels_share_one_axis():
    rng = np.random.default_rng(2)
    fig = figures.width_curves(over_steps({"mup": rng.normal(size=(3, 50)),
                                           "sp": rng.normal(size=(3, 50))}),
                               ylabel="y", title="t")
    ax = panels(fig)
    assert ax["mup"].get_shared_y_axes().joined(ax["mup"], ax["sp"])
    assert [a.get_title() for a in ax.values()] == ["μP", "SP"]


def test_off_scale_note_sits_in_the_panel_whose_values_are_off_scale():
    """One SP member spikes to 1e4 at one step (it is about to diverge): that value is off
    scale, and the SP panel, not the muP one, says how many and how far."""
    rng = np.random.default_rng(3)
    mup, sp = rng.normal(size=(3, 60)), rng.normal(size=(3, 60))
    sp[1, 7] = 1e4
    fig = figures.width_curves(over_steps({"mup": mup, "sp": sp}), ylabel="y", title="t")
    ax = panels(fig)
    assert ax["sp"].get_ylim()[1] < 100
    assert [t.get_text() for t in ax["sp"].texts] == ["1 of 180 values off scale, up to 1e+04"]
    assert not ax["mup"].texts


def test_threshold_line_stays_in_view():
    rng = np.random.default_rng(4)
    data = over_steps({"mup": 20 + rng.normal(size=(3, 30))})
    fig = figures.width_curves(data, ylabel="y", title="t", hlines={"mup": [(40.0, "2/eta")]})
    lo, hi = panels(fig)["mup"].get_ylim()
    assert lo <= float(data.min()) and hi >= 40.0


def test_few_points_get_markers_many_do_not():
    rng = np.random.default_rng(5)
    few = figures.width_curves(over_steps({"mup": rng.normal(size=(3, 3))}), ylabel="y",
                               title="t")
    many = figures.width_curves(over_steps({"mup": rng.normal(size=(3, 40))}), ylabel="y",
                                title="t")
    assert all(line.get_marker() == "o" for line in panels(few)["mup"].get_lines())
    assert all(line.get_marker() in ("None", None, "")
               for line in panels(many)["mup"].get_lines())


def test_consistency_draws_the_crosses_its_caption_mentions():
    cw = xr.DataArray([[64.0, np.nan, 128.0, np.nan, np.nan]], dims=("param", "logits_step"),
                      coords={"param": ["mup"], "logits_step": [0, 1, 2, 3, 4]})
    fig = figures.consistency_over_time(cw, [64, 128, 256], title="t", ylabel="y")
    crosses = [ln for ln in fig.axes[0].get_lines() if ln.get_marker() == "x"]
    assert len(crosses) == 1
    np.testing.assert_array_equal(crosses[0].get_xdata(), [1, 3, 4])
    assert (np.asarray(crosses[0].get_ydata()) > 256).all()


def test_kernel_colour_bar_labels_do_not_overlap():
    mats = xr.DataArray(np.random.default_rng(6).normal(size=(2, 5, 8, 8)),
                        dims=("param", "width", "example", "example2"),
                        coords={"param": ["mup", "sp"], "width": [64, 128, 256, 512, 1024]})
    fig = figures.matrix_grid(mats, title="t", cbar_label="kernel value (feature inner product)",
                              xlabel="x", ylabel="y")
    renderer = FigureCanvasAgg(fig).get_renderer()
    fig.draw(renderer)
    labels = [ax.yaxis.label for ax in fig.axes if "kernel" in ax.yaxis.label.get_text()]
    assert len(labels) == 2
    a, b = (t.get_window_extent(renderer) for t in labels)
    assert not a.overlaps(b)


def test_histogram_range_covers_the_data_and_says_what_is_outside():
    """SP's widest width spreads 20x wider than the others: its panel's range covers it,
    and the note's share outside the range matches the counts outside it."""
    rng = np.random.default_rng(7)
    edges, counts = [], []
    for scale in (1.0, 1.0, 20.0):
        v = rng.normal(0, scale, 20000)
        e = np.linspace(-5 * scale, 5 * scale, 51)
        edges.append(e)
        counts.append(np.histogram(v, e)[0])
    hist = xr.DataArray(np.array(counts)[None, :, None], dims=("param", "width", "step", "bin"),
                        coords={"param": ["sp"], "width": [64, 128, 256]})
    edg = xr.DataArray(np.array(edges)[None, :, None], dims=("param", "width", "step", "bin_edge"),
                       coords={"param": ["sp"], "width": [64, 128, 256]})
    fig = figures.preact_histograms(hist, edg, title="t", row_labels=["end"], xlabel="x")
    ax = fig.axes[0]
    lo, hi = ax.get_xlim()
    centers = (np.array(edges)[:, :-1] + np.array(edges)[:, 1:]) / 2
    c = np.array(counts)
    inside = c[(centers >= lo) & (centers <= hi)].sum() / c.sum()
    assert inside > 0.99
    assert hi - lo > 2 * 20 * 2.5
    if inside < 1:
        note = ax.texts[0].get_text()
        assert note.startswith(f"{1 - inside:.2%}")


@pytest.mark.parametrize("spike", [1e3, 1e6])
def test_loss_panels_keep_mup_readable_under_an_sp_blow_up(spike):
    """On log axes muP's curves fill at least a quarter of their panel's decades (shared
    with SP when that holds, else an axis of their own), and SP's spike stays in view."""
    steps = np.arange(50)
    mup = np.stack([np.exp(-steps / 20) * (1 + 0.1 * i) for i in range(3)])
    sp = mup.copy()
    sp[2, 2:7] = spike
    curves = over_steps({"mup": mup, "sp": sp})
    diff = abs(curves - curves.sel(width=256)).assign_coords(reference_width=256)
    fig = figures.loss_curves(curves, diff, ylabel="loss", diff_label="|loss - widest|",
                              title="t")
    top = {ax.get_title().split(" (")[0]: ax for ax in fig.axes[:2]}
    assert top["SP"].get_yscale() == top["μP"].get_yscale() == "log"
    lo, hi = top["μP"].get_ylim()
    assert lo <= mup.min() and mup.max() <= hi
    fill = np.log10(mup.max() / mup.min()) / np.log10(hi / lo)
    assert fill >= 0.25 * 0.9  # 0.9: the 5% margins at both ends
    assert top["SP"].get_ylim()[1] >= spike
    shared = top["μP"].get_shared_y_axes().joined(top["μP"], top["SP"])
    assert shared == (spike == 1e3)

"""One function per report figure: DataArrays / Datasets in, a matplotlib Figure out.

Nothing here computes a measurement: the inputs are what ``widthscan.analysis``
returned (distances, fits, spectra, ...) or raw variables of the Dataset, and the
functions only draw them. Figures are ``matplotlib.figure.Figure`` objects, never
pyplot's global figure manager, and are created under ``style.RC`` (scoped).

Conventions: one panel per parameterization, side by side; curves over training share
the y axis only when every panel's data fills a good part of it (``axes.scale_panels``:
SP's blow-up never flattens muP's curves, and the panel whose values are off scale says
so); widths coloured by log2(width) with a colorbar; the
reference (widest) width is left out of distance plots, where it is zero.
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import matplotlib as mpl
import numpy as np
import xarray as xr
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from widthscan.analysis import step_dim
from widthscan.report import style
from widthscan.report.axes import (
    clip_outliers,
    fig_legend,
    finish,
    finite,
    log_x,
    log_y,
    new_figure,
    panel_title,
    params_of,
    plain_log_ticks,
    plot_by_width,
    reference_of,
    scale_panels,
    single_handles,
    step_axis,
    width_xaxis,
    widths_of,
)

HIST_QUANTILE = 0.005  # histogram panels show the 0.5% to 99.5% quantiles of their values

# ---------------------------------------------------------------- curves over training


def _without(da: xr.DataArray, width: int | None) -> xr.DataArray:
    """``da`` without the reference ``width`` (not drawn: its distance to itself is 0)."""
    return da if width is None else da.drop_sel(width=width)


@style.styled
def width_curves(
    main: xr.DataArray,
    *,
    ylabel: str,
    title: str,
    single: xr.DataArray | None = None,
    logy: bool = False,
    skip_reference: bool = False,
    hlines: Mapping[str, Sequence[tuple[float | xr.DataArray, str]]] | None = None,
) -> Figure:
    """Per parameterization, one curve per width over the step dim of ``main``.

    main (param, width, <step>); ``single`` (param, width, seed, <step>) drawn as
    faint lines; ``hlines`` param -> [(value or DataArray over the step dim, label)]
    reference lines (dashed black). The widest width is skipped when
    ``skip_reference`` (a distance to itself is zero).
    """
    sd = step_dim(main)
    params, widths = params_of(main), widths_of(main)
    colors = style.width_colors(widths)
    fig, axes = new_figure(len(params), sharey=False)
    handles: list[Any] = []
    data, refs = [], []
    for ax, p in zip(axes[0], params):
        ref = reference_of(main, p) if skip_reference else None
        drawn = [_without(main.sel(param=p), ref)]
        if single is not None:
            plot_by_width(ax, single.sel(param=p), colors, sd, ref, lw=0.8, alpha=0.4)
            drawn.append(_without(single.sel(param=p), ref))
        plot_by_width(ax, main.sel(param=p), colors, sd, ref, lw=2.0)
        levels = []
        for value, label in (hlines or {}).get(p, []):
            if isinstance(value, xr.DataArray):
                h, = ax.plot(value[value.dims[0]].values, value.values, ls="--",
                             color=style.REFERENCE_COLOR, lw=1.3, label=label)
                drawn.append(value)
            else:
                h = ax.axhline(value, ls="--", color=style.REFERENCE_COLOR, lw=1.3, label=label)
                levels.append(value)
            handles.append(h)
        data.append(drawn)
        refs.append(levels)
        panel_title(ax, p)
        step_axis(ax, main[sd].values)
    scale_panels(axes[0], data, log=logy, refs=refs)
    axes[0, 0].set_ylabel(ylabel)
    fig_legend(fig, (single_handles() if single is not None else []) + handles)
    return finish(fig, title, widths, axes)


@style.styled
def loss_curves(curves: xr.DataArray, diff: xr.DataArray, *, ylabel: str, diff_label: str,
                title: str) -> Figure:
    """Top row: loss per width over training; bottom row: |loss - loss of the widest|.

    curves (param, width, <step>) ensemble-mean losses; diff the distance to the
    widest of the same shape (analysis ``distance_to_widest``), reference skipped.
    """
    sd = step_dim(curves)
    params, widths = params_of(curves), widths_of(curves)
    colors = style.width_colors(widths)
    fig, axes = new_figure(len(params), 2, sharey=False, panel_h=3.3)
    for j, p in enumerate(params):
        top, bottom = axes[0, j], axes[1, j]
        plot_by_width(top, curves.sel(param=p), colors, sd, lw=1.4)
        plot_by_width(bottom, diff.sel(param=p), colors, sd, reference_of(diff, p), lw=1.4)
        panel_title(top, p)
        step_axis(bottom, curves[sd].values)
        top.set_xlabel("")
    scale_panels(axes[0], [[curves.sel(param=p)] for p in params], log=True)
    scale_panels(axes[1], [[_without(diff.sel(param=p), reference_of(diff, p))]
                           for p in params], log=True)
    axes[0, 0].set_ylabel(ylabel)
    axes[1, 0].set_ylabel(diff_label)
    return finish(fig, title, widths, axes)


@style.styled
def logit_trajectory(mean: xr.DataArray, *, ylabel: str, title: str,
                     single: xr.DataArray | None = None,
                     infinite: xr.DataArray | None = None) -> Figure:
    """One probe example's logit over training, per width; ``infinite`` (param, <step>)
    is the extrapolated infinite-width logit (analysis ``extrapolate``), drawn black."""
    hl = None
    if infinite is not None:
        hl = {p: [(infinite.sel(param=p), "extrapolated width → ∞")] for p in params_of(mean)}
    return width_curves(mean, ylabel=ylabel, title=title, single=single, hlines=hl)


@style.styled
def successive_vs_width(succ: xr.DataArray, *, ylabel: str, title: str,
                        max_lines: int = 6) -> Figure:
    """RMS difference between successive widths against the narrower width, one line per
    step (a subset of at most ``max_lines`` steps, coloured early to late)."""
    return steps_vs_width(succ, ylabel=ylabel, title=title, max_lines=max_lines,
                          xlabel="narrower width w of the pair (w, next width), log2 scale")


@style.styled
def steps_vs_width(succ: xr.DataArray, *, ylabel: str, title: str, xlabel: str,
                   max_lines: int = 6) -> Figure:
    """A quantity (param, width, <step>) against width, one line per step (a subset of at
    most ``max_lines`` steps, coloured early to late)."""
    sd = step_dim(succ)
    params = params_of(succ)
    steps = succ[sd].values
    keep = np.unique(np.linspace(0, steps.size - 1, min(max_lines, steps.size)).round().astype(int))
    norm = mpl.colors.Normalize(0, max(1, keep.size - 1))
    fig, axes = new_figure(len(params), extra_w=0.3)
    for ax, p in zip(axes[0], params):
        da = succ.sel(param=p)
        for i, k in enumerate(keep):
            y = da.isel({sd: k}).values
            ax.plot(da["width"].values, y, marker="o", ms=4, color=style.STEP_CMAP(norm(i) * 0.85),
                    label=f"step {int(steps[k])}")
        width_xaxis(ax, widths_of(succ))
        ax.set_xlabel(xlabel)
        panel_title(ax, p)
    log_y(axes[0, 0], succ)
    axes[0, 0].set_ylabel(ylabel)
    fig_legend(fig, axes[0, -1].get_lines(), where="right upper")
    return finish(fig, title, None, axes)


# ---------------------------------------------------------------- matrices


@style.styled
def matrix_grid(mats: xr.DataArray, *, title: str, cbar_label: str, xlabel: str, ylabel: str,
                cmap: str = style.GRAM_CMAP, symmetric: bool = True) -> Figure:
    """Rows = parameterizations, columns = widths: one matrix (last two dims) per panel,
    on one colour scale per row (symmetric around 0 when ``symmetric``)."""
    params, widths = params_of(mats), widths_of(mats)
    n = len(widths)
    side = min(2.6, 10.8 / max(n, 1))
    with mpl.rc_context(style.RC):
        fig = Figure(figsize=(min(style.MAX_W, n * side + 1.3), len(params) * side + 0.8),
                     dpi=style.DPI, layout="constrained")
        axes = fig.subplots(len(params), n, squeeze=False)
        for i, p in enumerate(params):
            row = mats.sel(param=p)
            v = finite(row)
            if symmetric:
                lim = float(np.abs(v).max()) if v.size else 1.0
                lo, hi = -lim, lim
            else:
                lo, hi = (float(v.min()), float(v.max())) if v.size else (0.0, 1.0)
            if hi <= lo:
                hi = lo + 1.0
            im = None
            for j, w in enumerate(widths):
                ax = axes[i, j]
                m = row.sel(width=w).values
                im = ax.imshow(np.ma.masked_invalid(m), cmap=cmap, vmin=lo, vmax=hi,
                               interpolation="nearest")
                if not np.isfinite(m).any():
                    ax.text(0.5, 0.5, "no finite ensemble mean\n(a member diverged\nor is missing)",
                            transform=ax.transAxes, ha="center", va="center", color="0.35")
                ax.set_xticks([])
                ax.set_yticks([])
                ax.grid(False)
                ax.set_title(f"{style.param_name(p)}, width {w}", fontsize=10)
                if j == 0:
                    ax.set_ylabel(ylabel)
                if i == len(params) - 1:
                    ax.set_xlabel(xlabel)
            cb = fig.colorbar(im, ax=list(axes[i]), fraction=0.03, pad=0.01, aspect=15)
            cb.set_label(_fit_label(cbar_label, side))
        fig.suptitle(title)
    return fig


def _fit_label(text: str, height_in: float, fontsize: float = 10.0) -> str:
    """``text`` wrapped onto lines short enough to run along a colour bar of one row
    (``height_in`` inches), so the labels of stacked rows never run into each other."""
    chars = max(8, int(0.85 * height_in * 72 / (0.6 * fontsize)))
    return textwrap.fill(text, chars)


# ---------------------------------------------------------------- distributions


@style.styled
def preact_histograms(hist: xr.DataArray, edges: xr.DataArray, *, title: str,
                      row_labels: Sequence[str], xlabel: str) -> Figure:
    """Rows = the two chosen steps (init, end), columns = parameterizations: each width's
    preactivation histogram as a density (counts and per-width bin edges as stored).

    hist (param, width, row, bin); edges (param, width, row, bin_edge); ``row`` is
    whatever dim is left besides those (the step dim).
    """
    params, widths = params_of(hist), widths_of(hist)
    colors = style.width_colors(widths)
    rdim = next(d for d in hist.dims if d not in ("param", "width", "bin"))
    fig, axes = new_figure(len(params), hist.sizes[rdim], sharey=False, sharex=False,
                           panel_h=3.0)
    for i in range(hist.sizes[rdim]):
        for j, p in enumerate(params):
            ax = axes[i, j]
            drawn = []
            for w in widths:
                c = hist.sel(param=p, width=w).isel({rdim: i}).values.astype(np.float64)
                e = edges.sel(param=p, width=w).isel({rdim: i}).values.astype(np.float64)
                if not (np.all(np.isfinite(c)) and np.all(np.isfinite(e))) or c.sum() <= 0:
                    continue
                ax.hist(e[:-1], bins=e, weights=c, density=True, histtype="step",
                        color=colors[w], lw=1.4)
                drawn.append((c, e))
            if drawn:
                _histogram_range(ax, drawn)
            ax.set_title(f"{style.param_name(p)}: {row_labels[i]}")
            ax.set_xlabel(xlabel)
        axes[i, 0].set_ylabel("density")
    return finish(fig, title, widths, axes)


def _histogram_range(ax, hists: Sequence[tuple[np.ndarray, np.ndarray]],
                     q: float = HIST_QUANTILE) -> None:
    """x range of one panel: from the ``q`` to the 1 − ``q`` quantile of its histograms
    (counts, edges), widths pooled, plus 5%; the panel says how many counted values lie
    outside it."""
    centers = np.concatenate([(e[:-1] + e[1:]) / 2 for _, e in hists])
    counts = np.concatenate([c for c, _ in hists])
    order = np.argsort(centers)
    cum = np.cumsum(counts[order]) / counts.sum()
    lo = float(centers[order][np.searchsorted(cum, q)])
    hi = float(centers[order][min(np.searchsorted(cum, 1 - q), cum.size - 1)])
    bin_w = max(float(np.max(e[1:] - e[:-1])) for _, e in hists)
    pad = bin_w + 0.05 * (hi - lo + 2 * bin_w)
    lo, hi = lo - pad, hi + pad
    ax.set_xlim(lo, hi)
    outside = float(counts[(centers < lo) | (centers > hi)].sum())
    if outside > 0:
        ax.text(0.99, 0.99, f"{outside / counts.sum():.2%} of counted values\n"
                f"outside this range", transform=ax.transAxes, ha="right", va="top",
                fontsize=8, color="0.35")


# ---------------------------------------------------------------- ensembles


_TERM_LABELS = {
    "single_loss": "single network (mean over seeds)",
    "ensemble_loss": "ensemble of all seeds",
    "bias2": "bias² (infinite ensemble)",
    "variance": "variance over seeds",
}


@style.styled
def bias_variance_vs_width(bv: xr.Dataset, *, ylabel: str, title: str) -> Figure:
    """Per parameterization, the terms of ``analysis.bias_variance`` (param, width)
    against width."""
    params, widths = params_of(bv), widths_of(bv)
    fig, axes = new_figure(len(params), extra_w=0.3)
    for ax, p in zip(axes[0], params):
        for term, label in _TERM_LABELS.items():
            if term in bv:
                ax.plot(widths, bv[term].sel(param=p).values, marker="o", ms=4,
                        color=style.TERM_COLORS[term], label=label,
                        ls="--" if term == "variance" else "-")
        width_xaxis(ax, widths)
        panel_title(ax, p)
    log_y(axes[0, 0], *(bv[t] for t in _TERM_LABELS if t in bv))
    axes[0, 0].set_ylabel(ylabel)
    fig_legend(fig, axes[0, 0].get_lines())
    return finish(fig, title, None, axes)


@style.styled
def variance_vs_ensemble(vk: xr.Dataset, *, ylabel: str, title: str) -> Figure:
    """Measured loss of k-member ensembles against k per width (markers), with each width's
    infinite-ensemble estimate ``loss_inf`` (dotted)."""
    params, widths = params_of(vk), widths_of(vk)
    colors = style.width_colors(widths)
    fig, axes = new_figure(len(params))
    k = vk["ensemble_size"].values
    for ax, p in zip(axes[0], params):
        for w in widths:
            ax.plot(k, vk["ensemble_loss"].sel(param=p, width=w).values, marker="o", ms=4,
                    color=colors[w])
            inf = float(vk["loss_inf"].sel(param=p, width=w))
            ax.plot(k, np.full(k.size, inf), ls=":", color=colors[w], lw=1.2)
        ax.set_xticks(k)
        ax.set_xlabel("ensemble size k (members averaged)")
        panel_title(ax, p)
    log_y(axes[0, 0], vk["ensemble_loss"], vk["loss_inf"])
    axes[0, 0].set_ylabel(ylabel)
    fig_legend(fig, [Line2D([], [], color="0.2", marker="o", label="measured: disjoint "
                            "k-member sub-ensembles"),
                     Line2D([], [], color="0.2", ls=":", label="infinite ensemble (bias², "
                            "independent members)")])
    return finish(fig, title, widths, axes)


# ---------------------------------------------------------------- scaling


@style.styled
def power_law(values: xr.DataArray, fit: xr.Dataset, *, ylabel: str, title: str,
              model: Callable[[np.ndarray, float, float, float], np.ndarray]) -> Figure:
    """Each seed's value (dots) against width, with the fitted L(N) = a N^-alpha + c and its
    asymptote c (shaded: its 90% interval, clipped to the panel); no curve where the fit's
    ``decreasing`` flag is False ("no power law"), bound flags named in the legend.

    values (param, width, seed); fit a Dataset over param from ``fit_power_law``
    with alpha, a, c, r2 and c_lo / c_hi; ``model(N, a, alpha, c)`` draws the fit.
    """
    params, widths = params_of(values), widths_of(values)
    colors = style.width_colors(widths)
    fig, axes = new_figure(len(params), sharey=False)
    grid = np.geomspace(min(widths), max(widths) * 2, 200)
    for ax, p in zip(axes[0], params):
        v = values.sel(param=p)
        for w in widths:
            y = v.sel(width=w).values
            ax.plot(np.full(y.shape, w), y, "o", ms=5, alpha=0.6, color=colors[w])
        f = fit.sel(param=p)
        a, alpha, c = (float(f[k]) for k in ("a", "alpha", "c"))
        shown = [finite(v)]
        steady = bool(f["decreasing"]) if "decreasing" in f else True
        if np.isfinite([a, alpha, c]).all() and not steady:
            ax.text(0.5, 0.9, "no power law: not steadily decreasing with width",
                    transform=ax.transAxes, ha="center")
        elif np.isfinite([a, alpha, c]).all():
            curve = model(grid, a, alpha, c)
            r2 = float(f["r2"])
            at_alpha = " (α at its bound)" if bool(f.get("alpha_at_bound", False)) else ""
            at_c = " (at its bound)" if bool(f.get("c_at_bound", False)) else ""
            ax.plot(grid, curve, color=style.REFERENCE_COLOR, lw=1.6,
                    label=f"fit: {a:.3g}·$N^{{-{alpha:.2f}}}$ + {c:.3g}, R² = {r2:.3f}{at_alpha}")
            ax.axhline(c, ls="--", color="0.45", lw=1.1, label=f"c = {c:.3g} (width → ∞){at_c}")
            shown += [curve, np.array([c])]
            lo, hi = float(f.get("c_lo", np.nan)), float(f.get("c_hi", np.nan))
            if np.isfinite([lo, hi]).all():
                ax.axhspan(lo, hi, color="0.6", alpha=0.2, lw=0, label="90% interval of c")
            ax.legend(loc="upper right", framealpha=0.9)
        else:
            ax.text(0.5, 0.9, "no fit (fewer than 3 usable widths)", transform=ax.transAxes,
                    ha="center")
        y = np.concatenate([finite(x) for x in shown])
        if y.size:
            pad = 0.08 * max(float(y.max() - y.min()), 1e-12)
            ax.set_ylim(float(y.min()) - pad, float(y.max()) + 3 * pad)
        width_xaxis(ax, [*widths, 2 * max(widths)])
        panel_title(ax, p)
        ax.set_ylabel(ylabel)
    return finish(fig, title, widths, axes)


@style.styled
def extrapolation(curves: xr.DataArray, inf: xr.DataArray, *, ylabel: str, title: str,
                  lo: xr.DataArray | None = None, hi: xr.DataArray | None = None,
                  reliable: xr.DataArray | None = None) -> Figure:
    """Per width the ensemble-mean curve, and black the extrapolated width → ∞ curve
    ``inf`` (param, <step>) with its interval; unreliable steps get hollow markers."""
    sd = step_dim(curves)
    params, widths = params_of(curves), widths_of(curves)
    colors = style.width_colors(widths)
    fig, axes = new_figure(len(params))
    handles: list[Any] = []
    for ax, p in zip(axes[0], params):
        plot_by_width(ax, curves.sel(param=p), colors, sd, lw=1.3, alpha=0.9)
        x = inf[step_dim(inf)].values
        y = inf.sel(param=p).values
        ok = np.isfinite(y) if reliable is None else reliable.sel(param=p).values.astype(bool)
        bad = ~ok & np.isfinite(y)
        if bad.any():
            ax.plot(x[bad], y[bad], "o", mfc="none", mec="k", ms=3.5, mew=0.8, alpha=0.7,
                    label="extrapolation flagged unreliable")
        ax.plot(x, np.where(ok, y, np.nan), color="k", lw=2.2, label="extrapolated width → ∞")
        if lo is not None and hi is not None:
            ax.fill_between(x, lo.sel(param=p).values, hi.sel(param=p).values, where=ok,
                            color="0.5", alpha=0.25, lw=0, label="90% interval")
        panel_title(ax, p)
        step_axis(ax, curves[sd].values)
        handles += ax.get_legend_handles_labels()[0]
    fig_legend(fig, handles)
    log_y(axes[0, 0], curves, inf)
    clip_outliers(axes[0, 0], curves, factor=3.0, bottom=True, note=False)
    axes[0, 0].set_ylabel(ylabel)
    return finish(fig, title, widths, axes)


@style.styled
def consistency_over_time(cw: xr.DataArray, widths: Sequence[int], *, title: str,
                          ylabel: str) -> Figure:
    """Consistency width (param, <step>) over training, one line per parameterization:
    dots where a width qualifies; crosses on a "none" row on top where none narrower than
    the widest does (NaN)."""
    sd = step_dim(cw)
    params = params_of(cw)
    fig, axes = new_figure(1, panel_w=8.5, extra_w=0.5)
    ax = axes[0, 0]
    x = cw[sd].values
    ticks = sorted({int(w) for w in widths})
    none_y = ticks[-1] * 2.0
    for i, p in enumerate(params):
        y = cw.sel(param=p).values
        col = style.param_color(p, i)
        none = ~np.isfinite(y)
        shown = np.where(none, none_y, y) * (1 + 0.04 * (i - (len(params) - 1) / 2))
        ax.plot(x, shown, color=col, label=style.param_name(p), drawstyle="steps-post",
                alpha=0.9)
        ax.plot(x[~none], shown[~none], "o", ms=5, color=col, alpha=0.9)
        ax.plot(x[none], shown[none], "x", ms=7, mew=1.8, color=col, alpha=0.9)
    ax.set_yscale("log", base=2)
    ax.set_yticks([*ticks, none_y], [*(str(t) for t in ticks), "none <\nwidest"])
    ax.minorticks_off()
    ax.set_ylim(ticks[0] / 1.5, none_y * 1.5)
    ax.set_ylabel(ylabel)
    step_axis(ax, x)
    fig_legend(fig, [*ax.get_lines(), Line2D([], [], ls="", marker="x", color="0.3",
                                             label="no width < widest qualifies")],
               where="right upper")
    return finish(fig, title, None, axes)


# ---------------------------------------------------------------- spectra


@style.styled
def spectrum(eig: xr.DataArray, *, title: str, ylabel: str) -> Figure:
    """Eigenvalues (param, width, eigen) against rank, log-log, one line per width."""
    params, widths = params_of(eig), widths_of(eig)
    colors = style.width_colors(widths)
    fig, axes = new_figure(len(params))
    k = eig["eigen"].values + 1
    for ax, p in zip(axes[0], params):
        for w in widths:
            y = eig.sel(param=p, width=w).values
            ax.plot(k, np.where(y > 0, y, np.nan), color=colors[w], lw=1.5)
        log_x(ax, k)
        plain_log_ticks(ax.xaxis)
        ax.set_xlabel("eigenvalue rank k (1 = largest)")
        panel_title(ax, p)
    log_y(axes[0, 0], eig.where(eig > 0))
    axes[0, 0].set_ylabel(ylabel)
    return finish(fig, title, widths, axes)


@style.styled
def task_power_curves(c: xr.DataArray, *, title: str) -> Figure:
    """Cumulative task power C(k) (param, width, k) per width."""
    params, widths = params_of(c), widths_of(c)
    colors = style.width_colors(widths)
    fig, axes = new_figure(len(params))
    k = c["k"].values
    for ax, p in zip(axes[0], params):
        for w in widths:
            ax.plot(k, c.sel(param=p, width=w).values, color=colors[w], lw=1.5)
        log_x(ax, k)
        plain_log_ticks(ax.xaxis)
        ax.set_xlabel("number of top eigenvectors k")
        ax.set_ylim(0, 1.02)
        panel_title(ax, p)
    axes[0, 0].set_ylabel("C(k): fraction of ‖y‖² in top-k eigenspace")
    return finish(fig, title, widths, axes)


@style.styled
def kernel_flow(predicted: xr.DataArray, observed: xr.DataArray | None, *, ylabel: str,
                title: str, after: xr.DataArray | None = None) -> Figure:
    """Loss of kernel gradient flow with each width's eNTK (dashed; ``after``, a second
    kernel's, dotted) against the observed ensemble loss (solid), all (param, width,
    <step>)."""
    params, widths = params_of(predicted), widths_of(predicted)
    colors = style.width_colors(widths)
    fig, axes = new_figure(len(params))
    for ax, p in zip(axes[0], params):
        plot_by_width(ax, predicted.sel(param=p), colors, step_dim(predicted), ls="--", lw=1.4)
        if after is not None:
            plot_by_width(ax, after.sel(param=p), colors, step_dim(after), ls=":", lw=1.4)
        if observed is not None:
            plot_by_width(ax, observed.sel(param=p), colors, step_dim(observed), lw=1.8)
        step_axis(ax, predicted[step_dim(predicted)].values)
        panel_title(ax, p)
    log_y(axes[0, 0], *(a for a in (predicted, after, observed) if a is not None))
    axes[0, 0].set_ylabel(ylabel)
    label = "kernel-flow prediction" if after is None else "kernel flow, initial eNTK"
    handles = [Line2D([], [], color="0.2", ls="--", label=label)]
    if after is not None:
        handles.append(Line2D([], [], color="0.2", ls=":", label="kernel flow, final eNTK"))
    if observed is not None:
        handles.append(Line2D([], [], color="0.2", label="observed (ensemble mean)"))
    fig_legend(fig, handles)
    return finish(fig, title, widths, axes)

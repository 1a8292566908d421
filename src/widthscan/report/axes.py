"""Axis helpers shared by the report figures: panels, log axes, step axes, legends,
width colours, and the clipping of off-scale values. Plotting only, no measurements."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib as mpl
import numpy as np
import xarray as xr
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import (
    LogLocator,
    NullFormatter,
    StrMethodFormatter,
    SymmetricalLogLocator,
)

from widthscan.report import style

STEP_LABEL = "training step"
MARKER_MAX = 12  # curves with at most this many points get markers
OWN_AXIS = "own y axis"  # title note of panels that do not share the y axis
_NOTE = {"fontsize": 9, "color": "0.35", "zorder": 10,
         "bbox": {"boxstyle": "square,pad=0.2", "facecolor": "white", "edgecolor": "none",
                  "alpha": 0.85}}


def new_figure(ncols: int, nrows: int = 1, *, sharey: bool | str = True,
               sharex: bool | str = True, panel_w: float = style.PANEL_W,
               panel_h: float = style.PANEL_H, extra_w: float = 1.0,
               ) -> tuple[Figure, np.ndarray]:
    """A constrained-layout Figure with a grid of panels (not registered with pyplot)."""
    with mpl.rc_context(style.RC):
        fig = Figure(figsize=style.figsize(ncols, nrows, panel_w, panel_h, extra_w),
                     dpi=style.DPI, layout="constrained")
        axes = fig.subplots(nrows, ncols, squeeze=False, sharey=sharey, sharex=sharex)
    return fig, axes


def params_of(da: xr.DataArray | xr.Dataset) -> list[str]:
    return sorted((str(p) for p in da["param"].values), key=style.param_sort_key)


def widths_of(da: xr.DataArray | xr.Dataset) -> list[int]:
    return [int(w) for w in da["width"].values]


def finite(*arrays: Any) -> np.ndarray:
    vals = [np.asarray(a, np.float64).ravel() for a in arrays if a is not None]
    vals = [v[np.isfinite(v)] for v in vals]
    return np.concatenate(vals) if vals else np.empty(0)


def log_y(ax, *arrays: Any) -> None:
    """Log y axis when there is positive data to show (else matplotlib warns); plain-number
    ticks (0.1, 0.2, 0.5, ...) when the data spans less than two decades."""
    v = finite(*arrays)
    v = v[v > 0]
    if v.size:
        ax.set_yscale("log")
        if v.max() / v.min() < 100:
            plain_log_ticks(ax.yaxis)


def clip_outliers(ax, *arrays: Any, factor: float = 10.0, bottom: bool = False,
                   note: bool = True) -> None:
    """Keep a few extreme values (a member blowing up just before it is flagged diverged)
    from squashing every curve: the y axis stops ``factor`` (log; linear: one data range)
    beyond the 1st / 99th percentile of ``arrays``, with a note of what is off scale.
    ``bottom`` clips the low end too (else only the top)."""
    v = finite(*arrays)
    log = ax.get_yscale() == "log"
    if log:
        v = v[v > 0]
    if v.size < 20:
        return
    p_lo, p_hi = (float(x) for x in np.percentile(v, [1, 99]))
    top, low = float(v.max()), float(v.min())
    span = p_hi - p_lo
    limit_hi = p_hi * factor if log else p_hi + span
    limit_lo = p_lo / factor if log else p_lo - span
    if top > limit_hi:
        ax.set_ylim(top=limit_hi)
        if note:
            ax.text(0.01, 0.99, f"values up to {top:.3g} off scale", transform=ax.transAxes,
                    ha="left", va="top", fontsize=9, color="0.35")
    if bottom:  # pin the low end to the data of ``arrays`` (other artists may reach lower)
        lo = max(low, limit_lo)
        ax.set_ylim(bottom=lo / 1.5 if log else lo - 0.05 * span)
        if note and low < limit_lo:
            ax.text(0.01, 0.01, f"values down to {low:.3g} off scale", transform=ax.transAxes,
                    ha="left", va="bottom", fontsize=9, color="0.35")


def _robust_range(v: np.ndarray, log: bool, factor: float, bottom: bool
                  ) -> tuple[float, float]:
    """(lo, hi) of the values ``v`` with a few extreme ones left out: at most ``factor``
    (log) or one 1-99 percentile span (linear) beyond the 1st / 99th percentile."""
    lo, hi = float(v.min()), float(v.max())
    if v.size < 20:
        return lo, hi
    p_lo, p_hi = (float(x) for x in np.percentile(v, [1, 99]))
    span = p_hi - p_lo
    hi = min(hi, p_hi * factor if log else p_hi + span)
    if bottom:
        lo = max(lo, p_lo / factor if log else p_lo - span)
    return lo, hi


def _padded(lo: float, hi: float, log: bool) -> tuple[float, float]:
    if log:
        a, b = np.log10(lo), np.log10(hi)
        pad = 0.05 * (b - a) if b > a else 0.2
        return float(10 ** (a - pad)), float(10 ** (b + pad))
    pad = 0.05 * (hi - lo) if hi > lo else max(0.1 * abs(hi), 0.5)
    return lo - pad, hi + pad


def scale_panels(axes: Sequence[Any], data: Sequence[Sequence[Any]], *, log: bool = False,
                 refs: Sequence[Sequence[float]] | None = None, factor: float = 10.0,
                 bottom: bool | None = None, min_fill: float = 0.25) -> bool:
    """Y axes of a row of panels, each fitted to its own data (``data[i]``: the arrays
    drawn in ``axes[i]``), so that one parameterization's blow-up never flattens another's
    curves. A few extreme values are left off scale (see ``_robust_range``; the low end
    too when ``bottom``, default: on linear axes) and the panel they belong to says how
    many. ``refs[i]``: reference values (threshold lines) kept in view, never clipped.

    The panels share one axis when each one's data fills at least ``min_fill`` of the
    common range (they then compare at a glance); otherwise each gets its own, and its
    title says so.
    ``log``: a log axis when there are positive values. Returns whether they share.
    """
    vals = [finite(*arrays) for arrays in data]
    if log and any((v > 0).any() for v in vals):
        vals = [v[v > 0] for v in vals]
        for ax in axes:
            ax.set_yscale("log")
    else:
        log = False
    clip_low = (not log) if bottom is None else bottom
    ranges: list[tuple[float, float] | None] = []
    for i, v in enumerate(vals):
        r = _robust_range(v, log, factor, clip_low) if v.size else None
        extra = finite(*(refs[i] if refs else ()))
        extra = extra[extra > 0] if log else extra
        if extra.size:
            r = (min(r[0], float(extra.min())) if r else float(extra.min()),
                 max(r[1], float(extra.max())) if r else float(extra.max()))
        ranges.append(r)
    shown = [r for r in ranges if r is not None]
    if not shown:
        return False

    def t(x: float) -> float:
        return float(np.log10(x)) if log else x

    lo_all, hi_all = min(r[0] for r in shown), max(r[1] for r in shown)
    union = t(hi_all) - t(lo_all)
    share = len(axes) > 1 and all(t(r[1]) - t(r[0]) >= min_fill * union for r in shown)
    for i, ax in enumerate(axes):
        r = (lo_all, hi_all) if share else ranges[i]
        if r is None:
            continue
        if not share and len(axes) > 1 and ax.get_title():
            ax.set_title(f"{ax.get_title()} ({OWN_AXIS})")
        if share and i > 0:
            ax.sharey(axes[0])
            ax.tick_params(labelleft=False)
        limits = _padded(*r, log)
        ax.set_ylim(*limits)
        if log and r[1] / r[0] < 100:
            plain_log_ticks(ax.yaxis)
        _off_scale_note(ax, vals[i], *limits)
    return share


def _off_scale_note(ax, v: np.ndarray, lo: float, hi: float) -> None:
    """Say in ``ax`` how many of its values ``v`` lie above ``hi`` / below ``lo``."""
    above, below = v[v > hi], v[v < lo]
    if above.size:
        ax.text(0.01, 0.99, f"{above.size} of {v.size} values off scale, "
                f"up to {float(above.max()):.3g}", transform=ax.transAxes, ha="left", va="top",
                **_NOTE)
    if below.size:
        ax.text(0.01, 0.01, f"{below.size} of {v.size} values off scale, "
                f"down to {float(below.min()):.3g}", transform=ax.transAxes, ha="left",
                va="bottom", **_NOTE)


def log_x(ax, *arrays: Any, base: float = 10) -> None:
    v = finite(*arrays)
    if (v > 0).any():
        ax.set_xscale("log", base=base)


def step_axis(ax, steps: Any) -> None:
    """Symlog x axis for log-spaced probe schedules (dense early), linear otherwise."""
    s = np.unique(finite(steps))
    pos = s[s > 0]
    gaps = np.diff(s)
    if pos.size >= 4 and pos.max() / pos.min() >= 30 and gaps[-1] >= 5 * gaps[0]:
        thresh = max(1.0, float(pos.min()))
        ax.set_xscale("symlog", linthresh=thresh, linscale=0.4)
        ax.xaxis.set_major_locator(SymmetricalLogLocator(base=10, linthresh=thresh,
                                                         subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(StrMethodFormatter("{x:g}"))
        ax.set_xlim(float(s.min()) - 0.08 * thresh, float(s.max()) * 1.08)
    ax.set_xlabel(STEP_LABEL)


def width_xaxis(ax, widths: Sequence[int]) -> None:
    ax.set_xscale("log", base=2)
    ax.set_xticks(list(widths), [str(int(w)) for w in widths])
    ax.minorticks_off()
    ax.set_xlabel("width (log2 scale)")


def panel_title(ax, param: str) -> None:
    ax.set_title(style.param_name(param))


def finish(fig: Figure, title: str, widths: Sequence[int] | None, axes) -> Figure:
    with mpl.rc_context(style.RC):
        if widths is not None:
            style.width_colorbar(fig, axes, widths)
        fig.suptitle(title)
    return fig


def fig_legend(fig: Figure, handles: Sequence[Any], where: str = "lower center") -> None:
    """One legend for the whole figure, outside the panels (never over data)."""
    seen: dict[str, Any] = {}
    for h in handles:
        label = h.get_label()
        if label and not label.startswith("_") and label not in seen:
            seen[label] = h
    if seen:
        ncols = 1 if "right" in where else min(4, len(seen))
        fig.legend(handles=list(seen.values()), loc=f"outside {where}", ncols=ncols,
                   frameon=False)


def plain_log_ticks(axis) -> None:
    """Ticks 1, 2, 5, 10, 20, ... labelled as plain numbers on a log axis."""
    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(StrMethodFormatter("{x:g}"))
    axis.set_minor_formatter(NullFormatter())


def single_handles(note: str = "single networks (one per seed)") -> list[Line2D]:
    return [Line2D([], [], color="0.2", lw=2.0, label="ensemble mean over seeds"),
            Line2D([], [], color="0.2", lw=0.8, alpha=0.45, label=note)]


def reference_of(da: xr.DataArray, param: str) -> int | None:
    if "reference_width" not in da.coords:
        return None
    ref = da["reference_width"]
    return int(ref.sel(param=param)) if "param" in ref.dims else int(ref)


def plot_by_width(ax, da: xr.DataArray, colors: Mapping[int, Any], x_dim: str,
                   skip: int | None = None, **kw: Any) -> None:
    """One line per width (per seed too when ``da`` has more dims) against ``x_dim``;
    with few points (at most ``MARKER_MAX``) every point gets a marker."""
    x = da[x_dim].values
    if x.size <= MARKER_MAX and "marker" not in kw:
        kw = {"marker": "o", "ms": 3.5 if kw.get("lw", 1.6) < 1.0 else 4.5, **kw}
    for w in widths_of(da):
        if w == skip:
            continue
        y = da.sel(width=w).transpose(..., x_dim).values
        if y.ndim == 1:
            ax.plot(x, y, color=colors[w], **kw)
        else:
            for row in y.reshape(-1, y.shape[-1]):
                ax.plot(x, row, color=colors[w], **kw)

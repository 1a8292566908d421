"""Colours, fonts and sizes shared by every report figure.

Widths are coloured on viridis by log2(width) (the yellow end is cut off: it is
unreadable on white), parameterizations get one panel each, side by side, in a
fixed order (muP first). Fonts are sized for reading at 100% zoom: figures are
about 5.5 inches per panel at 100 dpi, text at 9-12 pt.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import matplotlib as mpl
import numpy as np
from matplotlib.cm import ScalarMappable
from matplotlib.colors import LinearSegmentedColormap, Normalize

DPI = 100
PANEL_W = 5.4
PANEL_H = 3.9
MAX_W = 12.0

RC = {
    "font.size": 10,
    "axes.titlesize": 11,
    "axes.labelsize": 10,
    "xtick.labelsize": 9,
    "ytick.labelsize": 9,
    "legend.fontsize": 9,
    "legend.title_fontsize": 9,
    "figure.titlesize": 12,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "grid.linewidth": 0.6,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "lines.linewidth": 1.6,
    "savefig.dpi": DPI,
    "figure.dpi": DPI,
    "pdf.fonttype": 42,
    "svg.fonttype": "none",
}

PARAM_ORDER = ("mup", "mf", "sp", "ntp")
PARAM_NAMES = {"mup": "μP", "mf": "mean-field", "sp": "SP", "ntp": "NTP"}
PARAM_COLORS = {"mup": "#1b6ca8", "mf": "#2a9d8f", "sp": "#d1495b", "ntp": "#edae49"}

WIDTH_CMAP = LinearSegmentedColormap.from_list(
    "viridis_cut", mpl.colormaps["viridis"](np.linspace(0.0, 0.88, 256)))
STEP_CMAP = mpl.colormaps["plasma"]
GRAM_CMAP = "RdBu_r"
ATTENTION_CMAP = "magma"
REFERENCE_COLOR = "0.15"

# Colours of the bias/variance terms (x is width there, so widths are not colours).
TERM_COLORS = {
    "single_loss": "#222222",
    "ensemble_loss": "#1b6ca8",
    "bias2": "#2a9d8f",
    "variance": "#d1495b",
    "width_bias": "#edae49",
}


F = TypeVar("F", bound=Callable[..., Any])


def styled(fn: F) -> F:
    """Run ``fn`` under ``RC`` (scoped: rcParams are restored afterwards)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with mpl.rc_context(RC):
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def param_name(param: str) -> str:
    """Display name of a parameterization (``mup`` -> ``μP``)."""
    return PARAM_NAMES.get(str(param), str(param))


def param_sort_key(param: str) -> tuple[int, str]:
    p = str(param)
    return (PARAM_ORDER.index(p) if p in PARAM_ORDER else len(PARAM_ORDER), p)


def param_color(param: str, i: int = 0) -> str:
    return PARAM_COLORS.get(str(param), f"C{i % 10}")


def width_norm(widths: Sequence[int]) -> Normalize:
    """Normalization of log2(width) over the widths of a sweep."""
    lw = np.log2(np.asarray(widths, np.float64))
    lo, hi = float(lw.min()), float(lw.max())
    if hi == lo:
        lo, hi = lo - 0.5, hi + 0.5
    return Normalize(lo, hi)


def width_colors(widths: Sequence[int]) -> dict[int, tuple[float, ...]]:
    """width -> RGBA on the cut viridis scale by log2(width)."""
    norm = width_norm(widths)
    return {int(w): WIDTH_CMAP(norm(np.log2(float(w)))) for w in widths}


def width_colorbar(fig, axes, widths: Sequence[int], label: str = "width (log2 scale)"):
    """One colorbar for ``axes`` with a tick at every width, labelled by the width."""
    sm = ScalarMappable(norm=width_norm(widths), cmap=WIDTH_CMAP)
    cb = fig.colorbar(sm, ax=axes, pad=0.015, fraction=0.04, aspect=25)
    cb.set_ticks(np.log2(np.asarray(widths, np.float64)))
    cb.set_ticklabels([str(int(w)) for w in widths])
    cb.set_label(label)
    cb.minorticks_off()
    return cb


def figsize(ncols: int, nrows: int = 1, panel_w: float = PANEL_W,
            panel_h: float = PANEL_H, extra_w: float = 1.0) -> tuple[float, float]:
    """Figure size in inches for a grid of panels plus room for a colorbar."""
    w = min(MAX_W, max(6.5, ncols * panel_w + extra_w))
    return (w, nrows * panel_h + 0.7)

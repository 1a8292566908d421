"""The check's HTML page: verdict, roles, per-layer table and coordinate-check plots.

Plots: RMS activation against width (log-log), one panel per layer, at init and after the
steps, every seed a point, the fitted slope in the legend; the dynamics panel shows the
distance to the widest network. Built with ``widthscan.report.html`` (one self-contained file).
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from widthscan.check.result import CheckResult
from widthscan.check.verdict import Slope
from widthscan.report.html import FigureOut, SectionOut, Table, render_notes, render_page

COLS = 4
DPI = 100


def _png(fig, name: str, caption: str) -> FigureOut:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    w, h = (round(v * DPI) for v in fig.get_size_inches())
    return FigureOut(name, caption, buf.getvalue(), w, h)


def _fit_line(ax, widths: np.ndarray, values: np.ndarray, slope: Slope, color: str,
              label: str) -> None:
    ax.scatter(widths, values, s=12, color=color, alpha=0.7)
    if math.isfinite(slope.value):
        keep = values > 0
        x = np.log(widths[keep])
        icept = np.mean(np.log(values[keep]) - slope.value * x)
        grid = np.unique(widths)
        ax.plot(grid, np.exp(icept) * grid**slope.value, color=color,
                label=f"{label}: slope {slope.value:+.2f} (pred. {slope.expected:+.1f})")


def coord_figure(result: CheckResult) -> FigureOut:
    """One panel per layer: init RMS and change RMS against width, log-log."""
    layers = result.layers
    cols = max(1, min(COLS, len(layers)))
    rows = max(1, math.ceil(len(layers) / cols))
    fig = Figure(figsize=(4 * cols, 3 * rows))
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax, v in zip(axes.flat, layers):
        pts = [r for r in result.coords if r.layer == v.layer]
        w = np.array([r.width for r in pts], np.float64)
        for measure, slope, color in (("init", v.init, "C0"), ("change", v.change, "C1")):
            vals = np.array([getattr(r, measure) for r in pts], np.float64)
            if np.isfinite(vals).all() and (vals > 0).any():
                _fit_line(ax, w, vals, slope, color, measure)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_title(f"{v.layer}: {v.verdict}", fontsize=9,
                     color="black" if v.ok else "firebrick")
        ax.legend(fontsize=7)
        ax.set_xlabel("width")
    for ax in list(axes.flat)[len(layers):]:
        ax.axis("off")
    fig.tight_layout()
    return _png(fig, "coord_check", "RMS activation per coordinate against width: at init "
                "(blue) and its change after the first steps (orange); points are seeds, "
                "lines the fitted log-log slopes.")


def dynamics_figure(result: CheckResult) -> FigureOut | None:
    dyn = result.dynamics
    if dyn is None or dyn.error:
        return None
    fig = Figure(figsize=(10, 3.5))
    a, b = fig.subplots(1, 2)
    for w in dyn.loss["width"].values:
        a.plot(dyn.loss.sel(width=w).mean("seed"), label=f"width {int(w)}")
    a.set_xlabel("step")
    a.set_ylabel("training loss (mean over seeds)")
    a.legend(fontsize=7)
    d = dyn.distance.isel(width=slice(0, -1))
    b.plot(d["width"], d.mean("seed"), "o-")
    b.set_xscale("log", base=2)
    b.set_yscale("log")
    b.set_xlabel("width")
    b.set_ylabel("scaled distance to the widest")
    b.set_title(f"slope {dyn.slope.value:+.2f} [{dyn.slope.low:+.2f}, {dyn.slope.high:+.2f}]",
                fontsize=9)
    fig.tight_layout()
    return _png(fig, "dynamics", "Short training run: loss curves and the RMS distance of the "
                "probe outputs to the widest network, scaled by its RMS.")


def render(result: CheckResult) -> str:
    """The page as an HTML string."""
    verdict = "width-consistent" if result.ok else f"NOT width-consistent: {result.cause()}"
    summary = SectionOut("verdict", "Verdict", paragraphs=[verdict], extra_html=[
        render_notes([f.message for f in result.findings], "Structural findings")])
    roles = SectionOut("roles", f"Roles at width {result.widths[-1]}", tables=[Table(
        ["parameter", "shape", "role", "init std", "multiplier", "lr scale", "note"],
        [[r.name, "x".join(map(str, r.shape)), r.role,
          "keep" if r.init_std is None else f"{r.init_std:.3g}", f"{r.multiplier:.3g}",
          f"{r.lr_scale:.3g}", r.note] for r in result.roles.values()])])
    frame = result.frame()
    coords = SectionOut(
        "coords", "Coordinate check",
        paragraphs=[f"Log-log slope of each layer's RMS activation against width, 95% "
                    f"interval over {len(result.seeds)} seeds, and the prediction of "
                    f"{result.param}; tolerance {result.tol:g}."],
        tables=[Table(["layer", "features", "init slope", "change slope", "verdict", "hint"],
                      [[row.layer, row.features,
                        f"{row.init_slope:+.2f} [{row.init_low:+.2f}, {row.init_high:+.2f}]",
                        f"{row.change_slope:+.2f} [{row.change_low:+.2f}, "
                        f"{row.change_high:+.2f}]", row.verdict, row.hint]
                       for row in frame.itertuples()])],
        figures=[coord_figure(result)])
    sections = [summary, roles, coords]
    dyn = dynamics_figure(result)
    if dyn is not None:
        sections.append(SectionOut("dynamics", "Dynamics",
                                   paragraphs=[result.dynamics.summary()], figures=[dyn]))
    meta = [f"param {result.param}, optimizer {result.optimizer}, lr {result.lr:g}, widths "
            f"{result.widths} (base {result.base_width}), data {result.data}"]
    return render_page(title=f"widthscan check: {result.model}", meta=meta, sections=sections,
                       skipped={})


def write(result: CheckResult, out: str | Path) -> Path:
    """Write ``out/check.html``; returns its path."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "check.html"
    path.write_text(render(result), encoding="utf-8")
    return path

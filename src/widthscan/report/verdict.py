"""The verdict at the top of the report: one sentence per parameterization, then a table
per parameterization and width.

Final losses come from ``analysis.summary.final_loss`` (train: the last 5% of logged
steps; probe: the last logged step), the power law from ``analysis.fit_power_law`` at
the last step, the consistency width from ``analysis.consistency_width`` of the
ensemble-mean logits at the last logits step, the distance slope from
``analysis.summary.distance_slope``, divergences from ``ds.attrs["diverged"]`` and the
count of finite seeds.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import xarray as xr

from widthscan.analysis import consistency_width, distance_to_widest, fit_power_law, step_dim
from widthscan.analysis.summary import distance_slope, final_loss
from widthscan.report.context import Context
from widthscan.report.html import Cell, SectionOut, Table

TOL = 0.1
PROBE_WINDOW = 0.0


def fmt(x: float, digits: int = 4) -> str:
    return "—" if x is None or not np.isfinite(x) else f"{x:.{digits}g}"


def _r2(x: float) -> str:
    return "—" if not np.isfinite(x) else f"{x:.3f}"


def _mean_std(row: pd.Series | None) -> str:
    if row is None or not np.isfinite(row["loss"]):
        return "—"
    if not np.isfinite(row["std"]):
        return fmt(row["loss"])
    return f"{fmt(row['loss'])} ± {fmt(row['std'], 2)}"


def final_table(ctx: Context, var: str, window: float = 0.05) -> pd.DataFrame | None:
    """``final_loss`` of ``var``; a probe variable's own step dim is relabelled ``step``."""
    if not ctx.has(var):
        return None
    sd = step_dim(ctx.ds[var])
    data = ctx.ds[[var]] if sd == "step" else ctx.ds[[var]].rename({sd: "step"})
    return final_loss(data, var=var, window=window)


def power_law_fit(ctx: Context):
    var = ctx.fit_var
    if var is None or len(ctx.widths) < 3:
        return None
    step = ctx.last_step(var)
    return ctx.get(f"fit:{var}", lambda: fit_power_law(ctx.ds, step=step, var=var))


def consistency(ctx: Context):
    if not ctx.has("logits") or len(ctx.widths) < 2:
        return None
    return ctx.get("consistency", lambda: consistency_width(
        ctx.ds, "logits", tol=TOL, scaled=True, ensemble=True))


def slope(ctx: Context) -> xr.Dataset | None:
    """``distance_slope`` of the ensemble-mean logits' scaled distance at the last step."""
    if not ctx.has("logits") or len(ctx.widths) < 3:
        return None
    d = ctx.get("dist:logits:ens", lambda: distance_to_widest(
        ctx.ds, "logits", scaled=True, ensemble=True))
    return distance_slope(d.isel({step_dim(d): -1}))


def _interval(lo: float, hi: float, digits: int = 2) -> str:
    return f" [{fmt(lo, digits)}, {fmt(hi, digits)}]" if np.isfinite([lo, hi]).all() else ""


def _interval_at_bound(f: xr.Dataset) -> str:
    """The alpha search bound that the fit's alpha interval reaches ('' when none)."""
    lo_b, hi_b = f.attrs.get("alpha_bounds", [np.nan, np.nan])
    if float(f["alpha_hi"]) >= hi_b * 0.99:
        return f"{hi_b:g}"
    if float(f["alpha_lo"]) <= lo_b * 1.01:
        return f"{lo_b:g}"
    return ""


def loss_caveats(f: xr.Dataset) -> list[str]:
    """Why a power-law fit (one param of ``fit_power_law``) is not a clean result."""
    out = []
    if bool(f["alpha_at_bound"]):
        bounds = f.attrs.get("alpha_bounds", [np.nan, np.nan])
        side = "upper" if float(f["alpha"]) > 1 else "lower"
        value = bounds[1] if side == "upper" else bounds[0]
        out.append(f"α at its {side} bound {value:g}, so α is not determined by the data")
    elif _interval_at_bound(f):
        out.append(f"the α interval reaches the search bound {_interval_at_bound(f)}, so one "
                   "end of it is not determined by the data")
    if bool(f["c_at_bound"]):
        out.append("c at its bound 0 (the widths ask for a negative asymptote: no finite "
                   "limit determined)")
    if float(f["n_widths"]) < 4:
        out.append(f"only {int(f['n_widths'])} widths")
    if not float(f["r2"]) >= 0.9:
        out.append(f"R² = {_r2(float(f['r2']))}")
    return out


def loss_clause(f: xr.Dataset | None, what: str) -> str:
    """The loss half of a conclusion from one param of ``fit_power_law`` (or None)."""
    if f is None or not np.isfinite(float(f["alpha"])):
        return f"{what}: no power-law fit (fewer than 3 usable widths)"
    if not bool(f["decreasing"]):
        return f"{what}: no power law (it does not fall steadily with width)"
    text = (f"{what} converges as N^−{fmt(float(f['alpha']), 2)}"
            f"{_interval(float(f['alpha_lo']), float(f['alpha_hi']))} to "
            f"c = {fmt(float(f['c']), 3)}{_interval(float(f['c_lo']), float(f['c_hi']), 3)}")
    caveats = loss_caveats(f)
    return text + (f" (caveat: {'; '.join(caveats)})" if caveats else "")


def logits_clause(sl: xr.Dataset | None, cw: float, widths: list[int]) -> tuple[str, str]:
    """(status, clause) of the ensemble's logits from one param of ``distance_slope`` and
    its consistency width ``cw`` (NaN: none)."""
    if sl is None or int(sl["n"]) < 2:
        return "consistency not assessed", "no probe logits at 3 or more widths"
    s, lo, hi = (float(sl[k]) for k in ("slope", "slope_lo", "slope_hi"))
    law = f"N^{fmt(s, 3)}{_interval(lo, hi)}"
    falls = bool(sl["falls"]) and (hi < 0 if np.isfinite(hi) else s < 0)
    if falls and int(sl["n"]) < 3:
        return "consistency not established", (
            f"only 2 widths below the widest have finite ensemble logits (scaled distance "
            f"∝ {law}, no interval)")
    if not falls:
        return "not consistent", (f"the ensemble's probe logits do not approach the widest "
                                  f"width's steadily (scaled distance ∝ {law})")
    reach = (f"within {TOL:g} of the widest from width {int(cw)} on" if np.isfinite(cw)
             else f"no width narrower than {max(widths)} within {TOL:g} yet")
    return "consistent", (f"the ensemble's probe logits approach the widest width's, scaled "
                          f"distance ∝ {law}, {reach}")


def conclusions(ctx: Context) -> list[str]:
    """One sentence per parameterization: are widths consistent, does the loss converge."""
    fit, cw, sl = power_law_fit(ctx), consistency(ctx), slope(ctx)
    what = {"probe_loss": "probe loss", "loss": "training loss"}.get(ctx.fit_var or "", "loss")
    out = []
    for param in ctx.params:
        v = np.nan
        if cw is not None:
            v = float(cw.sel(param=param).isel({step_dim(cw): -1}))
        status, clause = logits_clause(None if sl is None else sl.sel(param=param), v,
                                       ctx.widths)
        f = None if fit is None else fit.sel(param=param)
        out.append(f"{param_label(param)}: {status}: {clause}; {loss_clause(f, what)}.")
    return out


def _lookup(df: pd.DataFrame | None, param: str, width: int) -> pd.Series | None:
    if df is None:
        return None
    hit = df[(df["param"] == param) & (df["width"] == width)]
    return hit.iloc[0] if len(hit) else None


def build(ctx: Context) -> SectionOut:
    train = final_table(ctx, "loss")
    probe = final_table(ctx, "probe_loss", window=PROBE_WINDOW)
    fit = power_law_fit(ctx)
    cw = consistency(ctx)
    diverged = ctx.diverged()
    n_seeds = ctx.n_seeds

    headers = ["parameterization", "width"]
    if train is not None:
        headers.append("final train loss")
    if probe is not None:
        headers.append("final probe loss")
    headers += ["finite seeds", "diverged (seed @ step)"]
    if fit is not None:
        headers += ["power law α [90% CI]", "R²", "loss at width → ∞ (c)"]
    if cw is not None:
        headers.append(f"consistency width (tol {TOL:g})")

    rows, attrs = [], []
    widths = ctx.widths
    for param in ctx.params:
        for i, w in enumerate(widths):
            t, p = _lookup(train, param, w), _lookup(probe, param, w)
            row: list[Cell | str] = []
            if i == 0:
                row.append(Cell(param_label(param), rowspan=len(widths), cls="label"))
            row.append(str(w))
            if train is not None:
                row.append(_mean_std(t))
            if probe is not None:
                row.append(_mean_std(p))
            ref = t if t is not None else p
            finite = int(ref["seeds"]) if ref is not None else n_seeds
            row.append(Cell(f"{finite}/{n_seeds}", cls="bad" if finite < n_seeds else ""))
            div = diverged.get((param, w), [])
            row.append(Cell(", ".join(f"{s} @ {st}" for s, st in div) or "none",
                            cls="bad" if div else ""))
            if i == 0 and fit is not None:
                row += fit_cells(fit.sel(param=param), len(widths))
            if i == 0 and cw is not None:
                last = cw.sel(param=param).isel({step_dim(cw): -1})
                v = float(last)
                text = str(int(v)) if np.isfinite(v) else f"none < {max(widths)}"
                row.append(Cell(text, rowspan=len(widths), cls="good" if np.isfinite(v) else "bad"))
            rows.append(row)
            attrs.append({"data-param": param, "data-width": str(w)})

    paragraphs = ["One row per (parameterization, width); the per-parameterization columns "
                  "span their rows."]
    summary = conclusions(ctx)
    if train is not None:
        paragraphs.append("Final train loss: each seed's mean training loss over the last 5% of "
                          "logged steps, then mean ± std over seeds of the finite ones "
                          "(analysis.summary.final_loss).")
    if probe is not None:
        paragraphs.append(f"Final probe loss: the held-out probe loss at its last logged "
                          f"step ({ctx.last_step('probe_loss')}), mean ± std over seeds "
                          f"(analysis.summary.final_loss, window=0).")
    if fit is not None:
        paragraphs.append(
            f"Power law L(N) = a·N^−α + c, c ≥ 0, fitted across widths N to the seed mean of "
            f"{ctx.fit_var} at step {ctx.last_step(ctx.fit_var)} (analysis.fit_power_law; "
            f"interval: profile likelihood with an F quantile on the seeds' residual "
            f"variance). 'no power law': the seed means do not fall steadily with width (a "
            f"wider width above a narrower one by more than 2 standard errors, or no drop "
            f"beyond 2 standard errors from the narrowest to the widest), whatever R² says. "
            f"A parameter at its bound is a caveat, not a result."
            + (" The training loss is a single batch's loss, so this fit is noisy."
               if ctx.fit_var == "loss" else ""))
    paragraphs.append(
        "The sentences above: 'consistent' when the scaled RMS distance of the ensemble-mean "
        "probe logits to the widest width falls strictly from each width to the next at the "
        "last logits step and its log-log slope (analysis.summary.distance_slope, 90% t "
        "interval, at least 3 widths below the widest) is below 0; the loss clause is the "
        "power law of the table.")
    if cw is not None:
        paragraphs.append(
            f"Consistency width: the narrowest width from which every wider width has "
            f"ensemble-mean probe logits within {TOL:g} scaled RMS distance of the widest "
            f"(analysis.consistency_width), at the last logits step "
            f"({ctx.last_step('logits')}). 'none < W' means no width narrower than the "
            f"widest W qualifies.")
    return SectionOut("verdict", "Verdict", paragraphs=summary, footnotes=paragraphs, tables=[
        Table(headers, rows, row_attrs=attrs, cls="verdict")])


def fit_cells(f: xr.Dataset, rowspan: int) -> list[Cell]:
    """α [CI], R² and c cells of one param's power law; green only for a clean fit."""
    alpha = fmt(float(f["alpha"]), 3)
    if alpha == "—":
        return [Cell("—", rowspan=rowspan), Cell("—", rowspan=rowspan),
                Cell("—", rowspan=rowspan)]
    r2 = Cell(_r2(float(f["r2"])), rowspan=rowspan)
    if not bool(f["decreasing"]):
        return [Cell("no power law (not steadily decreasing)", rowspan=rowspan, cls="bad"), r2,
                Cell("—", rowspan=rowspan)]
    text = f"{alpha}{_interval(float(f['alpha_lo']), float(f['alpha_hi']))}"
    if bool(f["alpha_at_bound"]):
        text += " (α at its bound: caveat)"
    elif _interval_at_bound(f):
        text += " (interval at the search bound: caveat)"
    c = fmt(float(f["c"])) + (" (at its bound 0: caveat)" if bool(f["c_at_bound"]) else "")
    clean = not loss_caveats(f)
    r2.cls = "good" if clean else ("bad" if not float(f["r2"]) >= 0.9 else "")
    return [Cell(text, rowspan=rowspan), r2, Cell(c, rowspan=rowspan)]


def param_label(param: str) -> str:
    from widthscan.report.style import param_name

    name = param_name(param)
    return name if name == param else f"{name} ({param})"

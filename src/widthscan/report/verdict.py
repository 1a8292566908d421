"""The verdict table at the top of the report: per parameterization and width.

Final losses come from ``analysis.summary.final_loss``, the power law from
``analysis.fit_power_law`` at the last step, the consistency width from
``analysis.consistency_width`` at the last logits step, divergences from
``ds.attrs["diverged"]`` and the count of finite seeds.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from widthscan.analysis import consistency_width, fit_power_law, step_dim
from widthscan.analysis.summary import final_loss
from widthscan.report.context import Context
from widthscan.report.html import Cell, SectionOut, Table

TOL = 0.1


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


def final_table(ctx: Context, var: str) -> pd.DataFrame | None:
    """``final_loss`` of ``var``; a probe variable's own step dim is relabelled ``step``."""
    if not ctx.has(var):
        return None
    sd = step_dim(ctx.ds[var])
    data = ctx.ds[[var]] if sd == "step" else ctx.ds[[var]].rename({sd: "step"})
    return final_loss(data, var=var)


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


def _lookup(df: pd.DataFrame | None, param: str, width: int) -> pd.Series | None:
    if df is None:
        return None
    hit = df[(df["param"] == param) & (df["width"] == width)]
    return hit.iloc[0] if len(hit) else None


def build(ctx: Context) -> SectionOut:
    train = final_table(ctx, "loss")
    probe = final_table(ctx, "probe_loss")
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
                f = fit.sel(param=param)
                ci = f"[{fmt(float(f['alpha_lo']), 2)}, {fmt(float(f['alpha_hi']), 2)}]"
                alpha = fmt(float(f["alpha"]), 3)
                row += [Cell(f"{alpha} {ci}" if alpha != "—" else "—", rowspan=len(widths)),
                        Cell(_r2(float(f["r2"])), rowspan=len(widths),
                             cls="good" if float(f["r2"]) >= 0.9 else "bad"),
                        Cell(fmt(float(f["c"])), rowspan=len(widths))]
            if i == 0 and cw is not None:
                last = cw.sel(param=param).isel({step_dim(cw): -1})
                v = float(last)
                text = str(int(v)) if np.isfinite(v) else f"none < {max(widths)}"
                row.append(Cell(text, rowspan=len(widths), cls="good" if np.isfinite(v) else "bad"))
            rows.append(row)
            attrs.append({"data-param": param, "data-width": str(w)})

    paragraphs = ["One row per (parameterization, width); the per-parameterization columns "
                  "span their rows."]
    if train is not None:
        paragraphs.append("Final train loss: each seed's mean training loss over the last 5% of "
                          "logged steps, then mean ± std over seeds of the finite ones "
                          "(analysis.summary.final_loss).")
    if probe is not None:
        paragraphs.append(f"Final probe loss: the held-out probe loss at its last step "
                          f"({ctx.last_step('probe_loss')}), mean ± std over seeds.")
    if fit is not None:
        paragraphs.append(
            f"Power law L(N) = a·N^−α + c fitted across widths N to the seed mean of "
            f"{ctx.fit_var} at step {ctx.last_step(ctx.fit_var)} (analysis.fit_power_law; "
            f"interval: bootstrap over seeds)."
            + (" The training loss is a single batch's loss, so this fit is noisy."
               if ctx.fit_var == "loss" else ""))
    if cw is not None:
        paragraphs.append(
            f"Consistency width: the narrowest width from which every wider width has "
            f"ensemble-mean probe logits within {TOL:g} scaled RMS distance of the widest "
            f"(analysis.consistency_width), at the last logits step "
            f"({ctx.last_step('logits')}). 'none < W' means no width narrower than the "
            f"widest W qualifies.")
    return SectionOut("verdict", "Verdict", footnotes=paragraphs, tables=[
        Table(headers, rows, row_attrs=attrs, cls="verdict")])


def param_label(param: str) -> str:
    from widthscan.report.style import param_name

    name = param_name(param)
    return name if name == param else f"{name} ({param})"

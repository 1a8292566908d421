"""Section builders: each calls ``widthscan.analysis`` and ``report.figures`` and returns
a ``SectionOut``. A builder raises ``Skip(reason)`` when the data cannot support it.

Conventions kept by every section: "ensemble" quantities average the logits or
losses over seeds first (analysis ``ensemble=True``); single-network ones compare
seed with seed; distances are to the widest width of the same parameterization.
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from widthscan.analysis import (
    bias_variance,
    distance_to_widest,
    entk_flow_loss,
    entk_spectrum,
    extrapolate,
    kernel_distance,
    learning_time,
    preactivation_distance,
    step_dim,
    successive_differences,
    variance_vs_ensemble_size,
)
from widthscan.analysis.dims import ensemble_mean
from widthscan.probes import preconditioners
from widthscan.report import figures
from widthscan.report.context import Context, Skip
from widthscan.report.html import FigureOut, SectionOut
from widthscan.report.verdict import TOL, consistency, power_law_fit

ENS = "Solid: ensemble mean over seeds; faint: single networks (one line per seed)"


def _layer_text(ctx: Context, var: str) -> str:
    layer = ctx.layer(var)
    return f", layer {layer}" if layer else ""


def _step_sel(da: xr.DataArray, i: int) -> xr.DataArray:
    return da.isel({step_dim(da): i})


# ---------------------------------------------------------------- losses


def _loss_section(ctx: Context, var: str, sid: str, title: str, name: str,
                  what: str) -> SectionOut:
    curves = ensemble_mean(ctx.ds[var])
    diff = ctx.get(f"dist:{var}", lambda: distance_to_widest(ctx.ds, var, ensemble=True))
    fig = figures.loss_curves(
        curves, diff, ylabel=ctx.loss_label(what),
        diff_label=ctx.loss_label(f"|{what} − widest|"),
        title=f"{what.capitalize()} across widths (mean over {ctx.n_seeds} seeds), "
              + " vs ".join(figures.style.param_name(p) for p in ctx.params))
    cap = (f"Top: {what} per width, mean over seeds. Bottom: absolute difference of that mean "
           f"to the widest width's (analysis.distance_to_widest, ensemble=True); the widest "
           f"itself is left out.")
    return SectionOut(sid, title, figures=[ctx.figure(name, fig, cap)])


def train_loss(ctx: Context) -> SectionOut:
    out = _loss_section(ctx, "loss", "loss", "Training loss", "train_loss", "training loss")
    out.paragraphs.append("Every width and seed sees the same batch at each step, so the "
                          "step-to-step noise is shared and the curves compare point by point.")
    return out


def probe_loss(ctx: Context) -> SectionOut:
    return _loss_section(ctx, "probe_loss", "probe-loss", "Probe (held-out) loss", "probe_loss",
                         "probe loss")


# ---------------------------------------------------------------- logits


def logits(ctx: Context) -> SectionOut:
    ds = ctx.ds
    ex, out_dim = ctx.last_dims("logits")
    sel = {ex: 0, out_dim: 0}
    one = ds["logits"].isel(sel)
    inf = None
    if ctx.fit_var is not None and len(ctx.widths) >= 3:
        ext = ctx.get("extrapolate:logit0", lambda: extrapolate(
            ds, var=ctx.fit_var, logits="logits", examples={ex: [0], out_dim: [0]}),
            show_notes=False)
        if "logits_inf" in ext:
            inf = ext["logits_inf"].isel(sel)
    fig1 = figures.logit_trajectory(
        ensemble_mean(one), single=one, infinite=inf, ylabel="logit (output units)",
        title="One probe example's logit over training, across widths")
    cap1 = (f"Probe example 0, output 0. {ENS}."
            + (" Black: the per-example infinite-width extrapolation (analysis.extrapolate, "
               "a·N^−α + c fitted across widths at each step, on this example alone); left "
               "out at steps where it is not trustworthy (fewer than 4 widths, R² < 0.9, not "
               "monotone in width, exponent at its bound, or a limit further beyond the "
               "widest width than the widths are spread)." if inf is not None else ""))
    ens = ctx.get("dist:logits:ens", lambda: distance_to_widest(
        ds, "logits", scaled=True, ensemble=True))
    single = ctx.get("dist:logits", lambda: distance_to_widest(ds, "logits", scaled=True))
    fig2 = figures.width_curves(
        ens, single=single, logy=True, skip_reference=True,
        ylabel="RMS distance to widest / RMS of widest",
        title="Probe logits: scaled RMS distance to the widest width")
    cap2 = (f"RMS over probe examples and outputs of f_w − f_widest, divided by the widest's RMS "
            f"(analysis.distance_to_widest, scaled=True). {ENS}, each compared with the widest "
            f"network of the same seed.")
    return SectionOut("logits", "Pointwise predictions (probe logits)", figures=[
        ctx.figure("logit_trajectory", fig1, cap1), ctx.figure("logit_distance", fig2, cap2)])


def successive(ctx: Context) -> SectionOut:
    succ = ctx.get("succ:logits", lambda: successive_differences(
        ctx.ds, "logits", ensemble=True, scaled=True))
    fig = figures.successive_vs_width(
        succ, ylabel="RMS(f_next − f_w) / RMS(f_next)",
        title="Probe logits: difference between successive widths (ensemble means)")
    cap = ("Scaled RMS difference of the ensemble-mean logits of each width and the next wider "
           "one (analysis.successive_differences), against the narrower width, at several "
           "steps. Falling lines mean the widths converge.")
    return SectionOut("successive", "Successive-width differences",
                      figures=[ctx.figure("logit_successive", fig, cap)])


def consistency_section(ctx: Context) -> SectionOut:
    cw = consistency(ctx)
    fig = figures.consistency_over_time(
        cw, ctx.widths, ylabel="consistency width (log2 scale)",
        title=f"Consistency width over training (probe logits, tolerance {TOL:g})")
    cap = (f"Narrowest width from which every wider width's ensemble-mean logits are within "
           f"{TOL:g} scaled RMS distance of the widest (analysis.consistency_width). Crosses: no "
           f"width narrower than the widest qualifies at that step.")
    return SectionOut("consistency", "Consistency width",
                      figures=[ctx.figure("consistency_width", fig, cap)])


# ---------------------------------------------------------------- representations


def kernel(ctx: Context) -> SectionOut:
    ds = ctx.ds
    d1, d2 = ctx.last_dims("kernel")
    gram = ctx.sel_layer(_step_sel(ensemble_mean(ds["kernel"]), -1), "kernel")
    symmetric = bool(np.nanmin(gram.values) < 0) if np.isfinite(gram.values).any() else True
    fig1 = figures.matrix_grid(
        gram, symmetric=symmetric, cmap="RdBu_r" if symmetric else "magma",
        cbar_label="kernel value (feature inner product)", xlabel="probe example",
        ylabel="probe example",
        title=f"Feature kernels at step {ctx.last_step('kernel')}{_layer_text(ctx, 'kernel')}"
              " (ensemble mean), across widths")
    shown = ctx.sel_layer(ds["kernel"], "kernel")  # only the layer the figures show
    ens = ctx.get("kdist:ens", lambda: kernel_distance(
        shown, metric="cka", ensemble=True, dims=(d1, d2)))
    single = ctx.get("kdist", lambda: kernel_distance(shown, metric="cka", dims=(d1, d2)))
    fig2 = figures.width_curves(
        ens, single=single, logy=True, skip_reference=True, ylabel="1 − CKA to widest",
        title=f"Feature kernel distance to the widest width{_layer_text(ctx, 'kernel')}")
    cap1 = ("Gram matrices over the probe examples, averaged over seeds, one colour scale per "
            "row. Consistent widths show the same block structure.")
    cap2 = f"1 − centered kernel alignment (analysis.kernel_distance, metric='cka'). {ENS}."
    return SectionOut("kernel", "Feature kernels", figures=[
        ctx.figure("kernel_gram", fig1, cap1), ctx.figure("kernel_distance", fig2, cap2)])


def preactivations(ctx: Context) -> SectionOut:
    ds = ctx.ds
    hist, edges = ds["preact_hist"], ds["preact_edges"]
    sd = step_dim(hist)
    steps = hist[sd].values
    if steps.size < 1:
        raise Skip("no preactivation steps")
    idx = [0, steps.size - 1] if steps.size > 1 else [0]
    seed = int(ds["seed"].values[0]) if "seed" in hist.dims else None
    pick = {"seed": 0} if seed is not None else {}
    h = ctx.sel_layer(hist.isel(pick).isel({sd: idx}), "preact_hist")
    e = ctx.sel_layer(edges.isel(pick).isel({sd: idx}), "preact_edges")
    labels = [f"step {int(steps[i])}" + (" (init)" if i == 0 else " (end)") for i in idx]
    fig1 = figures.preact_histograms(
        h, e, row_labels=labels, xlabel="preactivation value",
        title=f"Preactivation distributions{_layer_text(ctx, 'preact_hist')}, at init and end, "
              "across widths")
    cap1 = (f"Histogram of one layer's preactivations over units and probe examples, seed "
            f"{seed}, as a density. In the feature-learning limit every width draws its units "
            f"from the same distribution.")
    figs = [ctx.figure("preact_hist", fig1, cap1)]
    if len(ctx.widths) >= 2:
        dist = ctx.sel_layer(ctx.get("pdist", lambda: preactivation_distance(
            ds, ensemble=True)), "preact_hist")
        fig2 = figures.width_curves(
            dist, logy=True, skip_reference=True,
            ylabel="Wasserstein-1 to widest (preactivation units)",
            title="Preactivation distribution: distance to the widest width")
        cap2 = ("Wasserstein-1 distance between each width's histogram (seeds pooled) and the "
                "widest's (analysis.preactivation_distance, ensemble=True).")
        figs.append(ctx.figure("preact_distance", fig2, cap2))
    if ctx.has("preact_stats") and "std" in ds["preact_stats"]["stat"].values:
        std = ctx.sel_layer(ensemble_mean(ds["preact_stats"].sel(stat="std")), "preact_stats")
        fig3 = figures.width_curves(
            std, logy=True, ylabel="preactivation std (preactivation units)",
            title=f"Preactivation scale over training{_layer_text(ctx, 'preact_stats')}, "
                  "across widths (coordinate check)")
        cap3 = ("Standard deviation of the layer's preactivations over units and probe "
                "examples, mean over seeds. A parameterization with a width-independent "
                "feature-learning limit keeps one curve for every width; SP's drift with width "
                "as training moves the features.")
        figs.append(ctx.figure("preact_scale", fig3, cap3))
    return SectionOut("preactivations", "Preactivation distributions", figures=figs)


def attention(ctx: Context) -> SectionOut:
    ds = ctx.ds
    att = ctx.sel_layer(_step_sel(ensemble_mean(ds["attention"]), -1), "attention")
    if "head" in att.dims:
        att = att.isel(head=0)
    fig1 = figures.matrix_grid(
        att, symmetric=False, cmap="magma", cbar_label="attention weight",
        xlabel="key position", ylabel="query position",
        title=f"Attention maps at step {ctx.last_step('attention')}"
              f"{_layer_text(ctx, 'attention')}, head 0 (ensemble mean), across widths")
    shown = ctx.sel_layer(ds["attention"], "attention")  # the layer the figures show
    ens = ctx.get("dist:attention:ens", lambda: distance_to_widest(
        shown, scaled=True, ensemble=True))
    single = ctx.get("dist:attention", lambda: distance_to_widest(shown, scaled=True))
    fig2 = figures.width_curves(
        ens, single=single, logy=True, skip_reference=True,
        ylabel="RMS distance to widest / RMS of widest",
        title=f"Attention maps: scaled RMS distance to the widest{_layer_text(ctx, 'attention')}")
    narrower = ens.sel(width=[w for w in ens["width"].values
                              if (ens["reference_width"] > w).any()])
    fig3 = figures.steps_vs_width(
        narrower, ylabel="RMS distance to widest / RMS of widest",
        xlabel="width, log2 scale",
        title=f"Attention maps: distance to the widest against width"
              f"{_layer_text(ctx, 'attention')} (ensemble means)")
    cap1 = (f"Attention weights (query × key) of one probe sequence, averaged over seeds, "
            f"head 0{_layer_text(ctx, 'attention')}, at the last step, one column per width.")
    cap2 = (f"RMS over heads, queries and keys (analysis.distance_to_widest, scaled=True). "
            f"{ENS}.")
    cap3 = ("The same ensemble-mean distance against width at several steps; falling lines "
            "mean the attention maps converge as width grows (paper Figs 1, 5).")
    return SectionOut("attention", "Attention maps", figures=[
        ctx.figure("attention_maps", fig1, cap1), ctx.figure("attention_distance", fig2, cap2),
        ctx.figure("attention_vs_width", fig3, cap3)])


# ---------------------------------------------------------------- dynamics


def _eos_lines(ctx: Context, code: float) -> tuple[dict, str]:
    """Threshold lines eta -> factor / eta for the optimizer of the sweep, and a caption note.
    ``code``: which matrix the sharpness is of (``preconditioners.CODES``)."""
    opt = ctx.section("optimizer")
    name = str(opt.get("name", "sgd"))
    if name in preconditioners.ADAM:
        if code != preconditioners.CODES["adam"]:
            return {}, (f"No threshold line: with {name} the stability threshold applies to "
                        "Adam's preconditioned Hessian (probe option preconditioned = 'auto').")
        beta1 = float((opt.get("betas") or (0.9, 0.999))[0])
        factor = preconditioners.threshold(name, beta1=beta1)
        label = f"{factor:.3g}/η"
        note_label = f"(2+2β₁)/((1−β₁)η) = {label} (β₁ = {beta1:g})"
    elif name == "sgd":
        beta = float(opt.get("momentum", 0.0) or 0.0)
        factor = preconditioners.threshold(name, momentum=beta)
        label = "2(1+β)/η" if beta > 0 else "2/η"
        note_label = label
    else:
        return {}, f"No threshold line: the edge of stability of {name} is not modelled."
    lines: dict = {}
    schedule = ctx.section("schedule")
    constant = schedule.get("kind", "constant") == "constant" and not schedule.get(
        "warmup_steps", 0)
    if ctx.has("lr") and not (constant and ctx.lr() is not None):
        for p in ctx.params:
            lr = _most_complete(ctx.ds["lr"].sel(param=p))
            lines[p] = [(factor / lr.where(lr > 0), f"{label} (η = logged lr)")]
        src = "the logged learning rate (the lr variable)"
    elif ctx.lr() is not None:
        lines = {p: [(factor / ctx.lr(), f"{label} = {factor / ctx.lr():.3g}")]
                 for p in ctx.params}
        src = f"the config's optimizer.lr = {ctx.lr():g}"
    else:
        return {}, "No threshold line: the learning rate is not known."
    return lines, f"Dashed: the edge-of-stability threshold {note_label} with η {src}."


def _sharpness_code(ctx: Context) -> float:
    """Which matrix every stored sharpness is of (``preconditioners.CODES``; runs before
    that probe option existed stored the raw Hessian's: 0)."""
    if not ctx.has("sharpness_preconditioned"):
        return preconditioners.CODES["none"]
    flags = ctx.ds["sharpness_preconditioned"].values
    codes = set(np.unique(flags[np.isfinite(flags)]).tolist())
    return codes.pop() if len(codes) == 1 else preconditioners.CODES["none"]


def _most_complete(da: xr.DataArray) -> xr.DataArray:
    """The (width, seed) series of ``da`` with the most finite values (a member that
    diverged is NaN from then on; the logged lr is the same for every member)."""
    lead = [d for d in ("width", "seed") if d in da.dims]
    if not lead:
        return da
    flat = da.stack(member=lead)
    best = int(flat.notnull().sum(step_dim(da)).argmax("member"))
    return flat.isel(member=best, drop=True)


def sharpness(ctx: Context) -> SectionOut:
    top = ctx.ds["sharpness"]
    if "eigen" in top.dims:
        top = top.isel(eigen=0)
    code = _sharpness_code(ctx)
    lines, note = _eos_lines(ctx, code)
    if code == preconditioners.CODES["sgd"]:
        ylabel = r"top eigenvalue of $P^{1/2} H P^{1/2}$ (loss / param², × lr scale)"
        what = ("Top eigenvalue of the training-loss Hessian preconditioned by the "
                "parameterization's per-layer learning-rate scales P (P^½ H P^½, Lanczos): "
                "the matrix SGD's edge of stability acts on, comparable across widths")
    elif code == preconditioners.CODES["adam"]:
        ylabel = r"top eigenvalue of $D^{1/2} H D^{1/2}$ (Adam's preconditioner D)"
        what = ("Top eigenvalue of the training-loss Hessian preconditioned by Adam's D = "
                "lr scale / ((1 − β₁^(t+1)) (√v̂ + ε)) (D^½ H D^½, Lanczos; Cohen et al. 2022): "
                "the matrix Adam's edge of stability acts on; undefined at step 0")
    else:
        ylabel = "top Hessian eigenvalue λ_max (loss / param²)"
        what = "Top eigenvalue of the training-loss Hessian (raw parameters, Lanczos)"
        if lines:
            note += (" Per-layer learning-rate scales are not included, so under muP/mf "
                     "away from the base width the line is not the threshold.")
    fig = figures.width_curves(
        ensemble_mean(top), single=top, hlines=lines, ylabel=ylabel,
        title="Sharpness over training across widths")
    cap = f"{what}. {ENS}. {note}"
    return SectionOut("sharpness", "Sharpness (edge of stability)",
                      figures=[ctx.figure("sharpness", fig, cap)])


# ---------------------------------------------------------------- ensembles


def _loss_for_targets(ctx: Context) -> str:
    kind = ctx.loss_kind
    if kind:
        return kind
    t = ctx.targets()
    return "ce" if t is not None and np.issubdtype(t.dtype, np.integer) else "mse"


def _logits_ds(ctx: Context) -> xr.Dataset:
    """logits (and targets) with their example/output dims named as analysis expects."""
    ex, out = ctx.last_dims("logits")
    f = ctx.ds["logits"].rename({ex: "example", out: "output"})
    data = {"logits": f}
    t = ctx.targets()
    if t is not None:
        if "example" in t.coords and "example" in f.coords:
            # the targets of the examples (or token positions) the logits were kept for;
            # a Dataset would otherwise align the two on the union of their labels
            t = t.sel(example=f["example"].values)
        data["targets"] = t
    return xr.Dataset(data)


def bias_variance_section(ctx: Context) -> SectionOut:
    if ctx.n_seeds < 2:
        raise Skip("bias and variance over seeds need at least two seeds")
    loss = _loss_for_targets(ctx)
    data = _logits_ds(ctx)
    bv = ctx.get("bv", lambda: bias_variance(data, loss=loss))
    vk = ctx.get("vk", lambda: variance_vs_ensemble_size(data, loss=loss))
    last = ctx.last_step("logits")
    per_token = ctx.ds["logits"].attrs.get("per") == "token"
    unit = (f"loss on probe set{', per token' if per_token else ''} "
            f"({'MSE' if loss == 'mse' else 'cross-entropy, nats'})")
    fig1 = figures.bias_variance_vs_width(
        _step_sel(bv, -1), ylabel=unit,
        title=f"Bias and variance over seeds against width (probe set, step {last})")
    fig2 = figures.variance_vs_ensemble(
        _step_sel(vk, -1), ylabel=unit,
        title=f"Loss of k-member ensembles against k (probe set, step {last})")
    cap1 = ("analysis.bias_variance on the probe logits and the Dataset's targets: single-network "
            "loss = bias² + variance; the gap between a wide single network and a narrow "
            "ensemble is the bias of narrower width.")
    cap2 = ("analysis.variance_vs_ensemble_size, measured as in the paper's App. H: each point "
            "is the loss, against the targets, of the averaged logits of k members, mean over "
            "disjoint k-member sub-ensembles of the seeds (several random splits). Dotted: the "
            "infinite-ensemble loss estimated from all seeds (mse: the unbiased bias², which "
            "assumes independent members; ce: the 1/k intercept). Curves that flatten by "
            "k ≈ 3-4 mean a few members already give the ensemble's (bias) loss.")
    return SectionOut("bias-variance", "Bias and variance over initializations", figures=[
        ctx.figure("bias_variance", fig1, cap1), ctx.figure("variance_ensemble", fig2, cap2)],
        paragraphs=[f"Loss used: {loss}, on the probe set's targets (the 'targets' variable)."
                    + (f" Language model: the loss is per token, a mean over the "
                       f"{data['logits'].sizes['example']} predicted positions whose full "
                       f"logits the probe keeps (logits option n_full), the ensemble "
                       f"averaging the members' logits at each token." if per_token else "")])


# ---------------------------------------------------------------- scaling


def _power(n: np.ndarray, a: float, alpha: float, c: float) -> np.ndarray:
    return a * n ** (-alpha) + c


def power_law(ctx: Context) -> SectionOut:
    var = ctx.fit_var
    fit = power_law_fit(ctx)
    step = ctx.last_step(var)
    values = ctx.ds[var].sel({step_dim(ctx.ds[var]): step})
    what = "probe loss" if var == "probe_loss" else "training loss"
    fig = figures.power_law(
        values, fit, model=_power, ylabel=ctx.loss_label(f"{what} at step {step}"),
        title=f"Power law in width: {what} at step {step}, $L(N) = a\\,N^{{-\\alpha}} + c$")
    cap = ("Dots: each seed; line: analysis.fit_power_law on the seed means (variable "
           "projection, c ≥ 0), with its asymptote c (shaded: 90% profile-likelihood "
           "interval, F quantile on the seeds' residual variance). A panel whose seed means "
           "do not fall steadily with width (a rise beyond 2 standard errors, or no "
           "significant drop from the narrowest to the widest) says 'no power law' and draws "
           "no fit; a parameter at its bound is named in the legend.")
    return SectionOut("power-law", "Scaling with width (power law)",
                      figures=[ctx.figure("power_law", fig, cap)])


def extrapolation(ctx: Context) -> SectionOut:
    var = ctx.fit_var
    ext = ctx.get("extrapolate", lambda: extrapolate(ctx.ds, var=var, logits=None))
    what = "probe loss" if var == "probe_loss" else "training loss"
    fig = figures.extrapolation(
        ensemble_mean(ctx.ds[var]), ext[f"{var}_inf"], lo=ext[f"{var}_inf_lo"],
        hi=ext[f"{var}_inf_hi"], reliable=ext["reliable"], ylabel=ctx.loss_label(what),
        title=f"Infinite-width extrapolation of the {what}")
    cap = ("Coloured: seed-mean curves per width. Black: c(t) ≥ 0 of a power law fitted "
           "across widths at each step (analysis.extrapolate), shaded its 90% "
           "profile-likelihood interval; hollow markers: steps the analysis flags as "
           "unreliable (fewer than 4 widths, R² < 0.9, not steadily decreasing in width, "
           "exponent at its bound, c at 0, or c out of range).")
    out = SectionOut("extrapolation", "Infinite-width extrapolation",
                     figures=[ctx.figure("extrapolation", fig, cap)])
    if var == "loss":
        out.paragraphs.append(
            "Only the training loss was measured: it is one batch's loss per step, so the "
            "per-step fits are noisy. A 'loss' probe (held-out probe_loss) makes this curve "
            "smooth. The y axis follows the measured curves; extrapolations far outside "
            "them are off scale.")
    return out


# ---------------------------------------------------------------- spectra


KERNELS = {
    1.0: ("lr-weighted eNTK Θ = Σ_l lr_scale_l J_l J_lᵀ (the kernel SGD's function-space "
          "dynamics follow)"),
    0.0: ("raw-parameter eNTK Θ = Σ_l J_l J_lᵀ (not the kernel the optimizer follows under "
          "muP/mf away from the base width, nor under Adam)"),
    None: ("eNTK (its weighting was not recorded: a store written before 'entk_weighting' "
           "holds the raw-parameter kernel)"),
}


def _entk_weighting(ctx: Context) -> float | None:
    """1.0 when every stored eNTK is lr-weighted, 0.0 when every one is raw, else None."""
    if not ctx.has("entk_weighting"):
        return None
    codes = np.unique(ctx.ds["entk_weighting"].values)
    codes = codes[np.isfinite(codes)]
    return float(codes[0]) if codes.size == 1 else None


def _flow_time(ctx: Context, steps: np.ndarray) -> np.ndarray:
    """Kernel-flow time (lr = 1) at ``steps`` from the logged lr schedule, relative to the
    first of ``steps``; the config's lr times steps without a logged schedule."""
    if ctx.has("lr"):
        lr = ctx.ds["lr"]
        lr = lr.isel({d: 0 for d in lr.dims if d != step_dim(lr)})
        ok = np.isfinite(lr.values)
        tau = learning_time(lr[step_dim(lr)].values[ok], lr.values[ok], steps)
    else:
        tau = float(ctx.lr()) * steps.astype(np.float64)
    return tau - tau[0]


def _kernel_flow(ctx: Context, entk: xr.DataArray, bad: xr.DataArray, y: np.ndarray,
                 kernel: str) -> tuple[FigureOut | None, str | None]:
    """The kernel-flow figure on held-out probe examples, or why it is left out."""
    ds = ctx.ds
    weighting = _entk_weighting(ctx)
    if _loss_for_targets(ctx) != "mse":
        return None, "Kernel-flow prediction left out: it models MSE training."
    if ctx.lr() is None:
        return None, "Kernel-flow prediction left out: the learning rate is unknown."
    if weighting == 0.0:
        return None, ("Kernel-flow prediction left out: the stored eNTK is the raw-parameter "
                      "kernel (runs trained with Adam store it), which no fixed-kernel flow "
                      "of this run follows.")
    if "output" in entk.dims:
        return None, ("Kernel-flow prediction left out: it takes the eNTK traced over outputs "
                      "(the probe's trace = true).")
    n = entk.sizes["example"]
    if not ctx.has("logits") or ds["logits"].sizes[ctx.last_dims("logits")[0]] < n:
        return None, ("Kernel-flow prediction left out: it needs the probe logits on the "
                      "eNTK's examples.")
    ex, out = ctx.last_dims("logits")
    logits = ds["logits"].rename({ex: "example", out: "output"}).isel(example=slice(0, n))
    logits = logits.drop_vars("example", errors="ignore")
    sd = step_dim(logits)
    steps = logits[sd].values
    fit, held = np.arange(0, n, 2), np.arange(1, n, 2)
    f0 = ensemble_mean(logits).isel({sd: 0}, drop=True)
    momentum = float(ctx.section("optimizer").get("momentum") or 0.0)
    tau = _flow_time(ctx, steps)
    kernel_steps = entk[step_dim(entk)].values

    def flow(i: int) -> xr.DataArray:
        finite = ~bad.isel({step_dim(bad): i}, drop=True)
        return entk_flow_loss(entk, y, lr=1.0, steps=tau, f0=f0, momentum=momentum, fit=fit,
                              kernel_step=int(kernel_steps[i])).assign_coords(
                                  step=steps).where(finite)

    first = ctx.get("flow_initial", lambda: flow(0))
    final = ctx.get("flow_final", lambda: flow(-1)) if kernel_steps.size > 1 else None
    targets = xr.DataArray(y.reshape(n, -1)[held], dims=("example", "output"))
    observed = bias_variance(xr.Dataset({"logits": logits.isel(example=held),
                                         "targets": targets}), loss="mse")["ensemble_loss"]
    fig = figures.kernel_flow(
        first, observed, after=final, ylabel="held-out probe loss (MSE)",
        title="Kernel-flow predictions vs observed training, on held-out probe examples")
    caption = (
        f"Like with like, both on the odd-numbered probe examples (held out). Dashed: MSE of "
        f"gradient flow with each width's seed-averaged {kernel} at step "
        f"{int(kernel_steps[0])} frozen"
        + (f" (dotted: the final one, step {int(kernel_steps[-1])}, the after-kernel)"
           if final is not None else "")
        + f", fitting the even-numbered probe examples as a stand-in for the data stream and "
        f"moving the held-out ones through the kernel's cross block (analysis.entk_flow_loss: "
        f"rate 2·lr/(P·C) for the mean of (f − y)² over P examples and C outputs, time Σ lr_t "
        f"over the logged schedule{f', lr/(1 − {momentum:g}) for momentum' if momentum else ''}"
        f"), from the observed ensemble-mean outputs at step {int(steps[0])}. Solid: the "
        f"observed ensemble-mean loss on the same examples (analysis.bias_variance). A "
        f"lazy network follows the dashed line; one that learns features leaves it after the "
        f"early phase. The predictions level off once the {len(fit)} stand-in examples are "
        f"fit; the run, which sees fresh data, can keep improving.")
    if weighting is None:
        caption += (" The kernel's weighting was not recorded: the prediction assumes the "
                    "lr-weighted one.")
    return ctx.figure("kernel_flow", fig, caption), None


def spectra(ctx: Context) -> SectionOut:
    ds = ctx.ds
    d1, d2 = ctx.last_dims("entk")
    entk = ds["entk"].rename({d1: "example", d2: "example2"}) if (d1, d2) != (
        "example", "example2") else ds["entk"]
    # eigh cannot take NaN: a width whose ensemble has a diverged member gets a zero kernel
    # here and NaN results below (as every other ensemble quantity of that width).
    bad = ensemble_mean(entk).isnull().any(["example", "example2"])
    entk = entk.where(~bad, 0.0)
    kernel = KERNELS[_entk_weighting(ctx)]
    t = ctx.targets()
    n = entk.sizes["example"]
    paragraphs, figs = [f"Kernel: the {kernel}, on the first {n} probe examples."], []
    if t is not None and t.sizes.get(t.dims[0], 0) < n:
        paragraphs.append(f"C(k) and kernel flow left out: the targets cover "
                          f"{t.sizes[t.dims[0]]} examples, the eNTK {n}.")
        t = None
    target_values = None if t is None else t.values[:n]
    spec = ctx.get("entk_spectrum", lambda: entk_spectrum(
        entk, targets=target_values).where(~bad))
    last = ctx.last_step("entk")
    fig1 = figures.spectrum(
        _step_sel(spec["eigenvalues"], -1), ylabel="eigenvalue (kernel units)",
        title=f"Spectrum of the ensemble-averaged eNTK at step {last}, across widths")
    figs.append(ctx.figure("entk_spectrum", fig1, (
        f"Eigenvalues of the seed-averaged {kernel} on the probe examples "
        "(analysis.entk_spectrum), by rank.")))
    if t is None:
        if not ctx.has("targets"):
            paragraphs.append("C(k) and the kernel-flow prediction need the probe targets: the "
                              "Dataset has no 'targets' variable, so they are left out.")
    else:
        fig2 = figures.task_power_curves(
            _step_sel(spec["task_power"], -1),
            title=f"Task alignment C(k) of the eNTK at step {last}, across widths")
        figs.append(ctx.figure("task_power", fig2, (
            "Cumulative task power C(k) (analysis.task_power) of the same kernel: the fraction "
            "of the target in the top-k eigenvectors. A width whose C(k) rises later learns "
            "the task more slowly.")))
        fig3, why = _kernel_flow(ctx, entk, bad, target_values, kernel)
        if fig3 is not None:
            figs.append(fig3)
        if why:
            paragraphs.append(why)
    return SectionOut("spectra", "eNTK spectra and task alignment", paragraphs=paragraphs,
                      figures=figs)

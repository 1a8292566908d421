"""Which sections the report has, in which order, and when each one appears.

A section appears only when the Dataset holds what it needs (``requires``: all of
these variables; ``any_of``: at least one) and the sweep has enough widths; a
section that is left out is listed, with the reason, at the top of the page.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import xarray as xr

from widthscan.report import paper, sections, verdict
from widthscan.report.context import Context, Skip, capture_notes, parse_config
from widthscan.report.html import SectionOut, esc, render_page


class ReportWarning(UserWarning):
    """A report section could not be built (the report is written without it)."""


@dataclass(frozen=True)
class SectionSpec:
    """``uses``: variables the section reads beyond ``requires`` and ``any_of`` (read
    into memory with them before it is built)."""

    id: str
    title: str
    build: Callable[[Context], SectionOut]
    requires: tuple[str, ...] = ()
    any_of: tuple[str, ...] = ()
    min_widths: int = 1
    applies: Callable[[Context], bool] | None = None  # False: left out without a note
    uses: tuple[str, ...] = ()

    def variables(self) -> tuple[str, ...]:
        return (*self.requires, *self.any_of, *self.uses)


def _config(ctx: Context) -> SectionOut:
    out = SectionOut("config", "Sweep configuration and version")
    loaded = ctx.ds.attrs.get("widthscan_version")
    out.paragraphs.append(f"Data loaded with widthscan {loaded or 'unknown'}; report rendered "
                          f"with widthscan {_version()}.")
    text = str(ctx.ds.attrs.get("config") or "")
    out.extra_html.append(f"<pre>{esc(text)}</pre>" if text else
                          "<p>The Dataset carries no sweep config (attrs['config']).</p>")
    return out


SECTIONS: tuple[SectionSpec, ...] = (
    SectionSpec("paper", "Paper vs measured", paper.build, applies=paper.applies),
    SectionSpec("verdict", "Verdict", verdict.build, uses=("logits", "loss", "probe_loss")),
    SectionSpec("loss", "Training loss", sections.train_loss, requires=("loss",)),
    SectionSpec("probe-loss", "Probe (held-out) loss", sections.probe_loss,
                requires=("probe_loss",)),
    SectionSpec("logits", "Pointwise predictions (probe logits)", sections.logits,
                requires=("logits",), min_widths=2, uses=("loss", "probe_loss")),
    SectionSpec("successive", "Successive-width differences", sections.successive,
                requires=("logits",), min_widths=3),
    SectionSpec("kernel", "Feature kernels", sections.kernel, requires=("kernel",),
                min_widths=2),
    SectionSpec("preactivations", "Preactivation distributions", sections.preactivations,
                requires=("preact_hist", "preact_edges"), uses=("preact_stats",)),
    SectionSpec("attention", "Attention maps", sections.attention, requires=("attention",),
                min_widths=2),
    SectionSpec("sharpness", "Sharpness (edge of stability)", sections.sharpness,
                requires=("sharpness",), uses=("lr", "sharpness_preconditioned")),
    SectionSpec("bias-variance", "Bias and variance over initializations",
                sections.bias_variance_section, requires=("logits", "targets")),
    SectionSpec("power-law", "Scaling with width (power law)", sections.power_law,
                any_of=("probe_loss", "loss"), min_widths=3),
    SectionSpec("spectra", "eNTK spectra and task alignment", sections.spectra,
                requires=("entk",), uses=("targets", "logits")),
    SectionSpec("consistency", "Consistency width", sections.consistency_section,
                requires=("logits",), min_widths=2),
    SectionSpec("extrapolation", "Infinite-width extrapolation", sections.extrapolation,
                any_of=("probe_loss", "loss"), min_widths=3, uses=("logits",)),
    SectionSpec("config", "Sweep configuration and version", _config),
)


def _version() -> str:
    from widthscan._version import __version__

    return __version__


def _why_not(ctx: Context, spec: SectionSpec) -> str | None:
    missing = [v for v in spec.requires if not ctx.has(v)]
    if missing:
        return "not measured (no " + ", ".join(f"'{v}'" for v in missing) + " in the Dataset)"
    if spec.any_of and not any(ctx.has(v) for v in spec.any_of):
        return "not measured (none of " + ", ".join(f"'{v}'" for v in spec.any_of) + ")"
    if len(ctx.widths) < spec.min_widths:
        return f"needs at least {spec.min_widths} widths, the sweep has {len(ctx.widths)}"
    return None


HOLD_BYTES = 256 * 2**20
"""Variables up to this size are held in memory while sections use them (read once);
larger ones stay lazy and each section reads only the part it shows."""


class _WorkingSet:
    """Holds in memory the variables of the section being built and of later ones that
    read them again; everything else stays lazy (as ``widthscan.load`` returns it), so a
    report's memory is bounded by what its sections read, each read from disk once
    (variables over HOLD_BYTES: once per use, of the part used)."""

    def __init__(self, ds: xr.Dataset, specs: list[SectionSpec]) -> None:
        self.lazy = ds
        self.specs = specs
        self.loaded: dict[str, xr.DataArray] = {}

    def enter(self, i: int) -> xr.Dataset:
        later = {v for spec in self.specs[i + 1:] for v in spec.variables()}
        for name in list(self.loaded):
            if name not in later and name not in self.specs[i].variables():
                del self.loaded[name]
        for name in self.specs[i].variables():
            if (name in self.lazy.data_vars and name not in self.loaded
                    and self.lazy[name].nbytes <= HOLD_BYTES):
                self.loaded[name] = self.lazy[name].compute()
        return self.lazy.assign(self.loaded) if self.loaded else self.lazy


def build_sections(ctx: Context, progress: Callable[[str], None] | None = None
                   ) -> tuple[list[SectionOut], dict[str, str]]:
    """Build every section the data supports, in order; and the reasons for the others.
    ``progress`` gets one line per section built, with its time."""
    built: list[SectionOut] = []
    skipped: dict[str, str] = {}
    specs = [s for s in SECTIONS if s.applies is None or s.applies(ctx)]
    ready = [(spec, _why_not(ctx, spec)) for spec in specs]
    todo = [spec for spec, reason in ready if reason is None]
    work = _WorkingSet(ctx.ds, todo)
    for spec, reason in ready:
        if reason is None:
            i = todo.index(spec)
            start = time.perf_counter()
            ctx.ds = work.enter(i)
            ctx.notes = []
            try:
                with capture_notes(ctx.notes):
                    out = spec.build(ctx)
            except Skip as e:
                reason = str(e)
            except Exception as e:  # one broken section must not cost the whole report
                reason = f"failed: {type(e).__name__}: {e}"
                warnings.warn(f"report section {spec.id!r} {reason}", ReportWarning,
                              stacklevel=2)
            else:
                out.notes = list(dict.fromkeys([*ctx.notes, *out.notes]))
                built.append(out)
            finally:
                if progress is not None:
                    progress(f"report: section {i + 1}/{len(todo)} {spec.id} "
                             f"({time.perf_counter() - start:.1f} s)")
            if reason is None:
                continue
        skipped[spec.title] = reason
    ctx.ds = work.lazy
    return built, skipped


def _meta(ctx: Context) -> list[str]:
    params = ", ".join(sections.figures.style.param_name(p) for p in ctx.params)
    widths = ", ".join(str(w) for w in ctx.widths)
    seeds = ", ".join(str(int(s)) for s in ctx.ds["seed"].values) if "seed" in ctx.ds else "—"
    lines = [f"Parameterizations: {params} · widths: {widths} · seeds: {seeds}"]
    task, model, opt = ctx.section("task"), ctx.section("model"), ctx.section("optimizer")
    bits = []
    if task.get("name"):
        bits.append(f"task {task['name']}")
    if model.get("family"):
        bits.append(f"model {model['family']}")
    if opt.get("name"):
        bits.append(f"optimizer {opt['name']}" + (f", lr {opt['lr']}" if "lr" in opt else ""))
    if ctx.section("train").get("steps"):
        bits.append(f"{ctx.section('train')['steps']} steps")
    if bits:
        lines.append(" · ".join(bits))
    lines.append(f"widthscan {ctx.ds.attrs.get('widthscan_version') or _version()}")
    return lines


def build_report(ds: xr.Dataset, path: Path,
                 progress: Callable[[str], None] | None = None) -> Path:
    """Write ``path`` (HTML) and ``path.parent/figures/*.png|pdf``; return ``path``.
    ``progress`` gets one line per section (see :func:`build_sections`)."""
    ctx = Context(ds=ds, fig_dir=path.parent / "figures",
                  config=parse_config(str(ds.attrs.get("config") or "")))
    built, skipped = build_sections(ctx, progress)
    top = []
    if ctx.incomplete():
        top.append("Incomplete sweep: runs not finished (their missing steps are NaN): "
                   + ", ".join(ctx.incomplete()))
    n_div = sum(len(v) for v in ctx.diverged().values())
    if n_div:
        top.append(f"{n_div} member(s) diverged; they are NaN from their divergence step on "
                   "(see the verdict table).")
    name = ctx.config.get("name") or path.parent.name or "sweep"
    page = render_page(title=f"widthscan report: {name}", meta=_meta(ctx), sections=built,
                       skipped=skipped, top_notes=top)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(path)
    return path

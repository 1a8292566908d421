""""Paper vs measured": the claims of a ``widthscan reproduce`` experiment and our verdicts.

The section appears at the top of the report of a sweep whose config name is
``paper:<experiment>:<part>:<scale>`` (what ``widthscan reproduce`` writes); it judges that
part's claims on the loaded Dataset. The experiment page (all parts) and the index page of
``reproduce all`` are built from the same table.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from widthscan.analysis.claims import CLAIM_SETS, ClaimSet, evaluate_claim, parse_sweep_name
from widthscan.report.context import Context, Skip
from widthscan.report.html import Cell, SectionOut, Table, esc, render_page

HEADERS = ("paper's claim", "figure", "part", "statistic and threshold", "measured [90% CI]",
           "verdict", "why")
_CLS = {"PASS": "good", "FAIL": "bad", "INCONCLUSIVE": ""}


def experiment_of(ctx: Context) -> tuple[ClaimSet, str, str] | None:
    """(the experiment's claims, part, scale) when the sweep is a reproduce sweep, else
    None."""
    parsed = parse_sweep_name(str(ctx.config.get("name") or ""))
    if parsed is None or parsed[0] not in CLAIM_SETS:
        return None
    return CLAIM_SETS[parsed[0]], parsed[1], parsed[2]


def applies(ctx: Context) -> bool:
    return experiment_of(ctx) is not None


def claims_table(results: Sequence[Any], caption: str = "") -> Table:
    rows = []
    for r in results:
        row = r.row()
        rows.append([Cell(row["claim"], cls="label"), row["figures"], row["part"], row["rule"],
                     row["measured"], Cell(row["verdict"], cls=_CLS.get(row["verdict"], "")),
                     Cell(row["detail"][:140], title=row["detail"])])
    attrs = [{"data-verdict": r.verdict, "data-claim": r.claim.id} for r in results]
    return Table(HEADERS, rows, caption=caption, row_attrs=attrs, cls="paper")


def _explain() -> str:
    return ("PASS: the whole 90% interval of the statistic (percentile bootstrap over seeds; "
            "leave-one-seed-out jackknife for statistics of the ensemble; the fit's own "
            "interval for a power-law exponent) is on the paper's side of the threshold; "
            "FAIL: entirely on the other side; "
            "INCONCLUSIVE: it straddles the threshold, or the data cannot decide (too few "
            "widths, diverged or missing runs).")


def build(ctx: Context) -> SectionOut:
    """The section for one part of a reproduce experiment."""
    found = experiment_of(ctx)
    if found is None:
        raise Skip("not a `widthscan reproduce` sweep")
    exp, part, scale = found
    claims = exp.claims_of(part)
    if not claims:
        raise Skip(f"experiment {exp.name!r} has no claims about part {part!r}")
    results = [evaluate_claim(c, ctx.ds) for c in claims]
    out = SectionOut("paper", "Paper vs measured")
    out.paragraphs.append(f"Experiment {exp.name} ({exp.figures}), part {part}, scale "
                          f"{scale}: {exp.summary}")
    out.tables.append(claims_table(results))
    out.footnotes.append(_explain())
    out.footnotes += [f"Threshold of '{c.text}': {c.why}" for c in claims if c.why]
    return out


def experiment_section(exp: Any, scale: str, results: Sequence[Any],
                       parts: Mapping[str, str], seconds: float | None = None) -> SectionOut:
    out = SectionOut(exp.name, f"{exp.name}: {exp.title}")
    took = f" Ran in {seconds:.0f} s." if seconds is not None else ""
    out.paragraphs.append(f"{exp.figures}. {exp.summary} Scale: {scale}.{took}")
    if exp.notes:
        out.paragraphs.append(exp.notes)
    out.tables.append(claims_table(results))
    out.footnotes.append(_explain())
    out.footnotes += [f"Threshold of '{c.text}': {c.why}" for c in exp.claims if c.why]
    links = " · ".join(f'<a href="{esc(href)}">{esc(p)} report</a>' for p, href in parts.items())
    if links:
        out.extra_html.append(f"<p>Reports of the parts: {links}</p>")
    return out


def write_experiment_page(exp: Any, scale: str, results: Sequence[Any], path: Path,
                          parts: Mapping[str, str], seconds: float | None = None) -> Path:
    section = experiment_section(exp, scale, results, parts, seconds)
    page = render_page(title=f"Paper vs measured: {exp.name} ({scale})",
                       meta=[f"{len(results)} claims · " + _counts(results)],
                       sections=[section], skipped={})
    path.write_text(page, encoding="utf-8")
    return path


def write_index_page(runs: Sequence[Any], path: Path) -> Path:
    """One section per experiment run (``runner.ExperimentRun``), linking its page."""
    sections = []
    for run in runs:
        rel = Path(run.out).relative_to(path.parent) if Path(run.out).is_relative_to(
            path.parent) else Path(run.out)
        parts = {"experiment": f"{rel}/report.html"}
        sections.append(experiment_section(run.experiment, run.scale, run.results, parts,
                                           run.seconds))
    results = [r for run in runs for r in run.results]
    page = render_page(title="Paper vs measured: all experiments",
                       meta=[f"{len(runs)} experiments · {len(results)} claims · "
                             + _counts(results)], sections=sections, skipped={})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    return path


def _counts(results: Sequence[Any]) -> str:
    counts = {v: sum(r.verdict == v for r in results) for v in ("PASS", "FAIL", "INCONCLUSIVE")}
    return ", ".join(f"{n} {v}" for v, n in counts.items())

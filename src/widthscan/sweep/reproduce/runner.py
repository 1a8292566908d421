"""Running an experiment: write its sweep TOMLs, run them, judge the claims, write reports.

Layout of ``out`` for one experiment::

    out/<part>.toml        the sweep config of each part (edit it, or resume it with
                           ``widthscan run out/<part>.toml -o out/<part>``)
    out/<part>/            the sweep directory (runs, report.html with "Paper vs measured")
    out/report.html        the experiment's "Paper vs measured" page, linking the parts
    out/verdicts.json      the verdict table as data

``run_all`` puts each experiment in ``out/<experiment>/`` and writes ``out/index.html``.
"""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from widthscan.analysis.claims.verdicts import ClaimResult
from widthscan.config import ConfigError, dumps_config, load_config, parse_config
from widthscan.sweep.reproduce.cost import estimate_parts
from widthscan.sweep.reproduce.experiments import EXPERIMENTS
from widthscan.sweep.reproduce.spec import SCALES, Experiment


@dataclass
class ExperimentRun:
    experiment: Experiment
    scale: str
    out: Path
    results: list[ClaimResult]
    seconds: float
    failed: list[str]


def get(name: str) -> Experiment:
    if name not in EXPERIMENTS:
        raise ConfigError(f"experiment {name!r} is unknown; allowed: {sorted(EXPERIMENTS)} "
                          "or 'all'")
    return EXPERIMENTS[name]


def check_scale(scale: str) -> str:
    if scale not in SCALES:
        raise ConfigError(f"--scale {scale!r} is unknown; allowed: {list(SCALES)}")
    return scale


def write_configs(exp: Experiment, scale: str, out: Path) -> dict[str, Path]:
    """Write ``out/<part>.toml`` for every part (validated); an existing file of the same
    experiment, part and scale is kept as it is (the user may have edited it)."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for part, cfg in exp.configs(scale).items():
        path = out / f"{part}.toml"
        if path.exists():
            old = load_config(path)
            if old.name != cfg["name"]:
                raise ConfigError(f"{path} holds sweep {old.name!r}, not {cfg['name']!r}: "
                                  "use another output directory")
        else:
            path.write_text(dumps_config(parse_config(cfg)))
        paths[part] = path
    return paths


def run_experiment(name: str, scale: str = "cpu", out: str | Path | None = None,
                   executor: str | None = None, workers: int | None = None,
                   progress: bool | None = None, log=print, reports: bool = True
                   ) -> ExperimentRun:
    """Write, run and judge experiment ``name`` at ``scale`` into ``out``; ``reports``:
    also write each part's full report (the experiment page is always written)."""
    from widthscan.report.paper import write_experiment_page
    from widthscan.store import load
    from widthscan.sweep import Sweep

    exp, scale = get(name), check_scale(scale)
    out = Path(out or f"reproduce-{name}-{scale}")
    paths = write_configs(exp, scale, out)
    log(f"{name}: sweep configs in {out}/ ({', '.join(p.name for p in paths.values())})")
    start = time.perf_counter()
    failed: list[str] = []
    datasets = {}
    for part, path in paths.items():
        result = Sweep.from_toml(path).run(out / part, executor=executor, workers=workers,
                                           progress=progress)
        failed += [f"{part}/{r}" for r in result.failed]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            datasets[part] = load(out / part)
    seconds = time.perf_counter() - start
    results = exp.evaluate(datasets)
    if reports:
        _write_reports(datasets, out)
    write_experiment_page(exp, scale, results, out / "report.html",
                          parts={p: f"{p}/report.html" for p in paths} if reports else {},
                          seconds=seconds)
    (out / "verdicts.json").write_text(json.dumps(
        {"experiment": name, "scale": scale, "seconds": round(seconds, 1),
         "claims": [r.row() for r in results]}, indent=2))
    return ExperimentRun(exp, scale, out, results, seconds, failed)


def _write_reports(datasets: dict, out: Path) -> None:
    from widthscan.report import report

    for part, ds in datasets.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            report(ds, out / part / "report.html")


def run_all(scale: str, out: str | Path, executor: str | None = None,
            workers: int | None = None, progress: bool | None = None, log=print,
            names: Sequence[str] | None = None, reports: bool = True) -> list[ExperimentRun]:
    """Every experiment (or ``names``) into ``out/<name>/``, then ``out/index.html``."""
    from widthscan.report.paper import write_index_page

    out = Path(out)
    runs = []
    for name in names or list(EXPERIMENTS):
        run = run_experiment(name, scale, out / name, executor, workers, progress, log, reports)
        log(verdict_table(run.results, f"{name} ({scale}, {run.seconds:.0f} s)"))
        runs.append(run)
    write_index_page(runs, out / "index.html")
    return runs


def verdict_table(results: Sequence[ClaimResult], title: str = "") -> str:
    """Plain-text verdict table for the terminal."""
    rows = [r.row() for r in results]
    head = ("claim", "statistic  threshold", "measured", "verdict")
    lines = [title] if title else []
    cols = [[r["claim"] for r in rows], [r["rule"] for r in rows],
            [r["measured"] for r in rows], [r["verdict"] for r in rows]]
    widths = [min(60, max([len(h)] + [len(c) for c in col])) for h, col in zip(head, cols)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(_clip(c, w).ljust(w) for c, w in zip(cells, widths)).rstrip()

    lines.append(line(head))
    lines.append("  ".join("-" * w for w in widths))
    lines += [line((r["claim"], r["rule"], r["measured"], r["verdict"])) for r in rows]
    for r in rows:
        if r["verdict"] != "PASS":
            lines.append(f"  {r['verdict']}: {_clip(r['claim'], 50)}: {r['detail']}")
    return "\n".join(lines)


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[:width - 1] + "…"


def list_table() -> str:
    """Every experiment: figures, claim, parts, and the estimated cost at each scale."""
    lines = []
    for exp in EXPERIMENTS.values():
        costs = []
        for scale in ("cpu", "gpu", "paper"):
            try:
                costs.append(f"{scale}: {estimate_parts(exp.configs(scale), scale).describe()}")
            except Exception as err:  # a family the estimator does not know
                costs.append(f"{scale}: ? ({type(err).__name__})")
        lines += [f"{exp.name}  [{exp.figures}]", f"  {exp.title}.", f"  {exp.summary}",
                  f"  parts: {', '.join(exp.configs('cpu'))}; claims: {len(exp.claims)}",
                  f"  cost: {'; '.join(costs)}", ""]
    return "\n".join(lines).rstrip()


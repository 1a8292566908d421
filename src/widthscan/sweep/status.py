"""Where each run of a sweep stands, read live from what the runs write: the status table
of ``widthscan status`` and the progress lines of ``widthscan run``."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from widthscan.store import RunStore, iter_run_dirs, lock_holder, run_dir
from widthscan.store.layout import SWEEP_CONFIG
from widthscan.store.run import SCALARS_FILE
from widthscan.store.scalars import parse_lines
from widthscan.store.tables import damage_notes

TAIL_BYTES = 1 << 16


@dataclass
class RunProgress:
    """One run: ``step`` = steps trained so far (from the live scalar log), ``steps`` the
    total (None when unknown), ``losses`` seed -> loss at the last logged step,
    ``resume_step`` the step of its last checkpoint (where a resume starts)."""

    param: str
    width: int
    state: str = "pending"
    step: int = 0
    steps: int | None = None
    losses: dict[int, float] = field(default_factory=dict)
    resume_step: int = 0
    diverged: dict[str, int] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.param} w={self.width}"

    @property
    def mean_loss(self) -> float | None:
        v = np.array(list(self.losses.values()), np.float64)
        v = v[np.isfinite(v)]
        return float(v.mean()) if v.size else None


def planned_runs(sweep_dir: str | Path) -> tuple[list[tuple[str, int]], int | None]:
    """Every (param, width) of the sweep (from its sweep.toml: runs not started yet too,
    then any other run folder found) and the number of training steps per run."""
    from widthscan.config import ConfigError
    from widthscan.config.load import read_bytes, read_toml

    runs: list[tuple[str, int]] = []
    steps = None
    try:  # the saved, resolved config, read as plain TOML: nothing is imported or run
        data = read_toml(read_bytes(Path(sweep_dir) / SWEEP_CONFIG))
        runs = [(str(p), int(w)) for p in data["params"] for w in sorted(data["widths"])]
        steps = int(data["train"]["steps"])
    except (ConfigError, KeyError, TypeError, ValueError):
        pass
    runs += [(p, w) for p, w, _ in iter_run_dirs(sweep_dir) if (p, w) not in runs]
    return runs, steps


def last_logged(path: Path) -> tuple[int, dict[int, float]] | None:
    """(step, seed -> loss) of the last step in a run's scalar log: the tail of
    scalars.jsonl while it trains (cheap at any length), else the stored table."""
    jsonl = path / SCALARS_FILE
    try:
        with open(jsonl, "rb") as f:
            size = f.seek(0, 2)
            f.seek(max(0, size - TAIL_BYTES))
            data = f.read()
        if size > TAIL_BYTES:
            data = data[data.find(b"\n") + 1:]
        records = parse_lines(data).records
    except FileNotFoundError:
        df = RunStore(path).read_scalars()
        records = df.to_dict("records") if len(df) else []
    if not records:
        return None
    step = max(int(r["step"]) for r in records)
    return step, {int(r["seed"]): float(r.get("loss", np.nan)) for r in records
                  if int(r["step"]) == step}


def run_progress(sweep_dir: str | Path, param: str, width: int, steps: int | None = None,
                 alive: bool = True) -> RunProgress:
    """The live state of one run. ``alive``: whether a process holds the sweep's lock; a
    run left "running" without one was interrupted."""
    path = run_dir(sweep_dir, param, width)
    status = RunStore(path).read_status() or {}
    run = RunProgress(param, width, status.get("state", "pending"),
                      int(status.get("step", 0)), status.get("steps", steps),
                      resume_step=int(status.get("step", 0)),
                      diverged=dict(status.get("diverged") or {}))
    logged = last_logged(path) if path.is_dir() else None
    if logged is not None:
        last, run.losses = logged
        if run.state in ("pending", "running"):
            run.step = max(run.step, last + 1)
    if run.state == "running" and not alive:
        run.state = "interrupted"
    return run


def sweep_progress(sweep_dir: str | Path) -> list[RunProgress]:
    """Every run of the sweep, planned ones included, in plan order."""
    runs, steps = planned_runs(sweep_dir)
    alive = lock_holder(sweep_dir) is not None
    return [run_progress(sweep_dir, p, w, steps, alive) for p, w in runs]


def _loss_text(losses: dict[int, float]) -> str:
    return " ".join("nan" if not np.isfinite(v) else f"{v:.4g}"
                    for _, v in sorted(losses.items()))


def _damage(sweep_dir: str | Path, run: RunProgress) -> str:
    path = run_dir(sweep_dir, run.param, run.width)
    if not path.is_dir():
        return "-"
    store = RunStore(path)
    return "; ".join(damage_notes(store.read_status(), store.read_scalars())) or "-"


def status_table(sweep_dir: str | Path) -> pd.DataFrame:
    """Columns: run, state, step ("done/total"), last loss per member, diverged members,
    and what was repaired or dropped (only when something was). A run whose process died
    while running is "interrupted (resumes at step N)"."""
    rows = []
    for run in sweep_progress(sweep_dir):
        state = run.state
        if state == "interrupted":
            state = f"interrupted (resumes at step {run.resume_step})"
        rows.append({
            "run": run.name,
            "state": state,
            "step": f"{run.step}/{run.steps if run.steps is not None else '?'}",
            "last loss (per seed)": _loss_text(run.losses),
            "diverged": ", ".join(f"seed {s} @ step {t}" for s, t in run.diverged.items())
            or "-",
            "damaged": _damage(sweep_dir, run),
        })
    table = pd.DataFrame(rows)
    if len(table) and (table["damaged"] == "-").all():
        table = table.drop(columns="damaged")
    return table

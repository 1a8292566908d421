"""Read the runs of a sweep directory; tables for status displays and scalar analysis."""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from widthscan.store.checkpoint import StoreWarning
from widthscan.store.layout import SWEEP_CONFIG, iter_run_dirs, run_label
from widthscan.store.run import RunStore
from widthscan.store.scalars import KEY_COLUMNS


class LoadWarning(UserWarning):
    """Part of a run could not be placed in the dataset and was left out."""


@dataclass
class RunData:
    """Everything read from one run directory; ``seeds`` lists member seeds in order (k -> seed)."""

    param: str
    width: int
    store: RunStore
    status: dict[str, Any] | None
    seeds: list[int]
    scalars: pd.DataFrame

    @property
    def label(self) -> str:
        return run_label(self.param, self.width)

    @property
    def state(self) -> str:
        return (self.status or {}).get("state", "pending")

    @property
    def diverged(self) -> dict[int, int]:
        return (self.status or {}).get("diverged", {})


def _safe(read: Any, what: str) -> Any:
    try:
        return read()
    except ValueError as e:
        warnings.warn(f"cannot parse {what}: {e}", LoadWarning, stacklevel=3)
        return None


def _member_seeds(store: RunStore, status: dict[str, Any] | None, scalars: pd.DataFrame
                  ) -> list[int]:
    config = _safe(store.read_config, store.path / "config.json")
    for source in (status, config):
        if source and isinstance(source.get("seeds"), list):
            return [int(s) for s in source["seeds"]]
    return sorted(int(s) for s in scalars["seed"].unique())


def read_run(param: str, width: int, path: Path) -> RunData:
    """Status and scalars of one run (probes are read lazily by ``store.load``); member
    seeds from status.json, else config.json, else the logged seeds.
    """
    store = RunStore(path)
    status = _safe(store.read_status, path / "status.json")
    scalars = store.read_scalars()
    return RunData(param, width, store, status, _member_seeds(store, status, scalars), scalars)


def read_runs(sweep_dir: str | os.PathLike[str]) -> list[RunData]:
    """Every run of a sweep, sorted by param then width; FileNotFoundError if no sweep dir."""
    root = Path(sweep_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"no sweep directory at {root}")
    return [read_run(p, w, path) for p, w, path in iter_run_dirs(root)]


def damage_notes(status: dict[str, Any] | None, scalars: pd.DataFrame | None = None
                 ) -> list[str]:
    """What was repaired or dropped when reading one run's status and scalars (empty when
    nothing was). A partial last line of a running run is its writer at work, not damage."""
    status = status or {}
    attrs = scalars.attrs if scalars is not None else {}
    notes = [status["repaired"]] if status.get("repaired") else []
    if status.get("lost_rows"):
        notes.append(f"{status['lost_rows']} scalar rows lost before a checkpoint")
    if attrs.get("bad_lines"):
        notes.append(f"{attrs['bad_lines']} damaged scalar lines dropped")
    if attrs.get("torn_tail") and status.get("state") != "running":
        notes.append("a partial last scalar line dropped")
    return notes


def read_config_text(sweep_dir: str | os.PathLike[str]) -> str:
    """SWEEP/sweep.toml as text ("" if missing or not UTF-8, with a StoreWarning); the text
    is never executed or imported from."""
    path = Path(sweep_dir) / SWEEP_CONFIG
    try:
        return path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        return ""
    except (OSError, UnicodeDecodeError) as e:
        warnings.warn(f"ignoring unreadable {path} ({type(e).__name__})", StoreWarning,
                      stacklevel=3)
        return ""


def metric_columns(frames: list[pd.DataFrame]) -> list[str]:
    """Numeric columns other than step/seed, in first-seen order."""
    names: dict[str, None] = {}
    for df in frames:
        for col in df.columns:
            if col not in KEY_COLUMNS and (
                pd.api.types.is_numeric_dtype(df[col]) or pd.api.types.is_bool_dtype(df[col])
            ):
                names[col] = None
    return list(names)


def load_scalars(sweep_dir: str | os.PathLike[str], *, mask_diverged: bool = True) -> pd.DataFrame:
    """Long table with columns param, width, seed, step and one column per metric.

    With ``mask_diverged``, metrics of a diverged member are NaN from its diverged step on.
    """
    runs = read_runs(sweep_dir)
    metrics = metric_columns([r.scalars for r in runs])
    frames = []
    for r in runs:
        df = r.scalars.reindex(columns=[*KEY_COLUMNS, *metrics]).copy()
        df[metrics] = df[metrics].astype("float64")
        if mask_diverged:
            for seed, step in r.diverged.items():
                df.loc[(df["seed"] == seed) & (df["step"] >= step), metrics] = np.nan
        df.insert(0, "width", np.int64(r.width))
        df.insert(0, "param", r.param)
        frames.append(df)
    columns = ["param", "width", "seed", "step", *metrics]
    if not frames:
        return pd.DataFrame(columns=columns)
    out = pd.concat(frames, ignore_index=True)[columns]
    out = out.astype({"width": "int64", "seed": "int64", "step": "int64"})
    return out.sort_values(["param", "width", "seed", "step"], kind="stable").reset_index(drop=True)


def load_status(sweep_dir: str | os.PathLike[str]) -> pd.DataFrame:
    """One row per run: param, width, state, step, steps, diverged ({seed: step}), seeds,
    updated (Unix s), error (last line of error.txt or None), damaged (what was repaired or
    lost, or None). Runs without status.json are "pending".
    """
    rows = []
    for param, width, path in iter_run_dirs(sweep_dir):
        store = RunStore(path)
        status = _safe(store.read_status, path / "status.json") or {}
        error = store.read_error()
        lines = error.strip().splitlines() if error else []
        rows.append(
            {
                "param": param,
                "width": width,
                "state": status.get("state", "pending"),
                "step": status.get("step"),
                "steps": status.get("steps"),
                "diverged": status.get("diverged", {}),
                "seeds": status.get("seeds"),
                "updated": status.get("updated"),
                "error": lines[-1] if lines else None,
                "damaged": "; ".join(damage_notes(status)) or None,
            }
        )
    columns = ["param", "width", "state", "step", "steps", "diverged", "seeds", "updated", "error",
               "damaged"]
    return pd.DataFrame(rows, columns=columns)

"""The status table of a sweep directory: one row per run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from widthscan.store import RunStore, iter_run_dirs
from widthscan.store.tables import damage_notes


def status_table(sweep_dir: str | Path) -> pd.DataFrame:
    """Columns: run, state, step ("done/total"), last loss per member, diverged members."""
    rows = []
    for param, width, path in iter_run_dirs(sweep_dir):
        store = RunStore(path)
        status = store.read_status() or {"state": "pending", "step": 0}
        scalars = store.read_scalars()
        last = ""
        if len(scalars):
            tail = scalars[scalars["step"] == scalars["step"].max()].sort_values("seed")
            last = " ".join("nan" if not np.isfinite(v) else f"{v:.4g}" for v in tail["loss"])
        diverged = status.get("diverged") or {}
        rows.append({
            "run": f"{param} w={width}",
            "state": status.get("state", "pending"),
            "step": f"{status.get('step', 0)}/{status.get('steps', '?')}",
            "last loss (per seed)": last,
            "diverged": ", ".join(f"seed {s} @ step {t}" for s, t in diverged.items()) or "-",
            "damaged": "; ".join(damage_notes(status, scalars)) or "-",
        })
    table = pd.DataFrame(rows)
    if len(table) and (table["damaged"] == "-").all():
        table = table.drop(columns="damaged")
    return table

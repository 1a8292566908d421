"""Where things live in a sweep directory (see docs/data-model.md)."""

from __future__ import annotations

import os
import re
from pathlib import Path

RUNS_DIR = "runs"
SWEEP_CONFIG = "sweep.toml"
SWEEP_LOCK = "sweep.lock"

_PARAM_RE = re.compile(r"^param=(?P<param>.+)$")
_WIDTH_RE = re.compile(r"^width=(?P<width>\d+)$")


def _check_param(param: str) -> str:
    if not param or "/" in param or os.sep in param or param in (".", ".."):
        raise ValueError(f"param must be a non-empty name without path separators, got {param!r}")
    return param


def run_dir(sweep_dir: str | os.PathLike[str], param: str, width: int) -> Path:
    """``SWEEP/runs/param=<param>/width=<width>``."""
    if int(width) != width or width < 0:
        raise ValueError(f"width must be a non-negative integer, got {width!r}")
    return Path(sweep_dir) / RUNS_DIR / f"param={_check_param(param)}" / f"width={int(width)}"


def iter_run_dirs(sweep_dir: str | os.PathLike[str]) -> list[tuple[str, int, Path]]:
    """All run directories as ``(param, width, path)``, sorted by param then numeric width.

    Entries that do not parse as ``param=<p>/width=<int>`` are skipped.
    """
    runs_root = Path(sweep_dir) / RUNS_DIR
    if not runs_root.is_dir():
        return []
    found: list[tuple[str, int, Path]] = []
    for pdir in runs_root.iterdir():
        pmatch = _PARAM_RE.match(pdir.name)
        if pmatch is None or not pdir.is_dir():
            continue
        for wdir in pdir.iterdir():
            wmatch = _WIDTH_RE.match(wdir.name)
            if wmatch is not None and wdir.is_dir():
                found.append((pmatch["param"], int(wmatch["width"]), wdir))
    return sorted(found, key=lambda r: (r[0], r[1]))


def run_label(param: str, width: int) -> str:
    """Human-readable run id, e.g. ``param=mup,width=64``."""
    return f"param={param},width={width}"

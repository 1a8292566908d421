"""On-disk cache of fitted task state: npz files keyed by a hash of their inputs.

Directory: $WIDTHSCAN_CACHE, else ~/.cache/widthscan. Files are written to a temporary name
and renamed, and read with allow_pickle=False; an unreadable entry counts as a miss.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np


def cache_dir() -> Path:
    """Where fitted task state is cached."""
    env = os.environ.get("WIDTHSCAN_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "widthscan"


def cache_key(**parts: Any) -> str:
    """A short hex digest of JSON-serializable `parts`."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:24]


def load_npz(path: Path) -> dict[str, np.ndarray] | None:
    """The arrays stored at `path`, or None if it is absent or unreadable."""
    try:
        with np.load(path, allow_pickle=False) as f:
            return {k: f[k] for k in f.files}
    except (OSError, ValueError, EOFError, KeyError):
        return None


def save_npz(path: Path, arrays: dict[str, np.ndarray]) -> bool:
    """Store `arrays` at `path` atomically; False (nothing written) if that is not possible."""
    tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npz")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(tmp, **arrays)
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)
        return False
    return True

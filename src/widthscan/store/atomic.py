"""Atomic file writes: a temp file in the same directory, fsync, then os.replace.

A reader sees either the old content or the new content, never a partial file.
Temp files are named ``.<name>.<random>.tmp`` so that readers can skip them.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

TEMP_SUFFIX = ".tmp"


def is_temp_file(path: str | os.PathLike[str]) -> bool:
    """True for the temp files this module creates (possibly left behind by a crash)."""
    name = Path(path).name
    return name.startswith(".") and name.endswith(TEMP_SUFFIX)


def remove_temp_files(folder: str | os.PathLike[str], recursive: bool = True) -> int:
    """Delete the temp files a killed writer left in ``folder``; only while holding the
    folder's lock (a live writer's temp file looks the same). Returns how many."""
    root = Path(folder)
    if not root.is_dir():
        return 0
    n = 0
    for p in root.rglob(".*") if recursive else root.glob(".*"):
        if p.is_file() and is_temp_file(p):
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
                n += 1
    return n


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        _fsync_path(path)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temp path to write to; on success it is fsynced and renamed onto ``path``.

    For writers that want a filename (e.g. ``safetensors.torch.save_file``). On an
    exception the temp file is removed and ``path`` is untouched.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{secrets.token_hex(6)}{TEMP_SUFFIX}")
    try:
        yield tmp
        _fsync_path(tmp)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _fsync_dir(target.parent)


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike[str], mode: str = "wb") -> Iterator[IO[Any]]:
    """Open a temp file for writing (``mode`` "wb" or "w"); it replaces ``path`` on close."""
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_open supports modes 'wb' and 'w', not {mode!r}")
    with atomic_path(path) as tmp:
        if mode == "w":
            with open(tmp, "x", encoding="utf-8", newline="") as f:
                yield f
        else:
            with open(tmp, "xb") as f:
                yield f


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically."""
    with atomic_open(path, "wb") as f:
        f.write(data)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Replace ``path`` with UTF-8 ``text`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    raise TypeError(f"object of type {type(obj).__name__} is not JSON serializable")


def to_json(obj: Any, *, indent: int | None = 2) -> str:
    """JSON text for ``obj``; numpy scalars/arrays and paths are converted."""
    return json.dumps(obj, indent=indent, default=_json_default)


def atomic_write_json(path: str | os.PathLike[str], obj: Any, *, indent: int | None = 2) -> None:
    """Replace ``path`` with ``obj`` as JSON atomically (trailing newline)."""
    atomic_write_text(path, to_json(obj, indent=indent) + "\n")

"""RunStore: everything one run writes to and reads from its directory."""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from widthscan.measurement import Measurement
from widthscan.store import checkpoint as _ckpt
from widthscan.store import probes as _probes
from widthscan.store import scalars as _scalars
from widthscan.store.atomic import (
    atomic_open,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    is_temp_file,
)

if TYPE_CHECKING:
    import torch

STATES = ("pending", "running", "done", "diverged", "failed")
FINISHED_STATES = ("done", "diverged")
CONFIG_FILE = "config.json"
STATUS_FILE = "status.json"
SCALARS_FILE = "scalars.jsonl"
PARQUET_FILE = "scalars.parquet"
ERROR_FILE = "error.txt"
PROBES_DIR = "probes"
log = logging.getLogger(__name__)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None


def _last_newline_end(f: Any, size: int, chunk: int = 1 << 16) -> int:
    """Offset just past the last b"\\n" in the first ``size`` bytes of ``f`` (0 if none)."""
    end = size
    while end > 0:
        start = max(0, end - chunk)
        f.seek(start)
        i = f.read(end - start).rfind(b"\n")
        if i >= 0:
            return start + i + 1
        end = start
    return 0


def _have_pyarrow() -> bool:
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        return False
    return True


class RunStore:
    """The files of one run directory ``SWEEP/runs/param=<p>/width=<w>/``.

    One writer per run directory (the sweep lock guarantees it); readers may run
    concurrently and see only complete files, plus whole lines of scalars.jsonl.
    """

    def __init__(self, run_dir: str | os.PathLike[str], *, fsync_scalars: bool = False) -> None:
        self.path = Path(run_dir)
        self.fsync_scalars = fsync_scalars
        self._tail_checked = False
        self._dims: dict[str, dict[str, dict[str, Any]]] = {}
        self.last_read_torn = False
        self.last_read_bad_lines = 0

    def __repr__(self) -> str:
        return f"RunStore({str(self.path)!r})"

    def _ensure_dir(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True)

    def write_config(self, config: Mapping[str, Any]) -> None:
        """config.json: the resolved run spec (JSON-able)."""
        atomic_write_json(self.path / CONFIG_FILE, dict(config))

    def read_config(self) -> dict[str, Any] | None:
        return _read_json(self.path / CONFIG_FILE)

    def write_status(self, status: Mapping[str, Any]) -> None:
        """status.json, atomically; ``state`` must be one of STATES. Sets ``updated``
        (Unix seconds). ``diverged`` maps seed -> first diverged step. Write it last,
        after the data it describes.
        """
        status = dict(status)
        if status.get("state") not in STATES:
            raise ValueError(f"status state must be one of {STATES}, got {status.get('state')!r}")
        status["diverged"] = {
            str(int(k)): int(v) for k, v in (status.get("diverged") or {}).items()
        }
        status["updated"] = time.time()
        atomic_write_json(self.path / STATUS_FILE, status)

    def read_status(self) -> dict[str, Any] | None:
        """status.json with ``diverged`` keys as int seeds, or None if not written yet."""
        status = _read_json(self.path / STATUS_FILE)
        if status is not None:
            status["diverged"] = {int(k): int(v) for k, v in (status.get("diverged") or {}).items()}
        return status

    def write_error(self, traceback_text: str) -> None:
        atomic_write_text(self.path / ERROR_FILE, traceback_text)

    def read_error(self) -> str | None:
        try:
            return (self.path / ERROR_FILE).read_text(encoding="utf-8")
        except FileNotFoundError:
            return None

    def _repair_tail(self) -> None:
        """Cut a torn last line (left by a kill) so the next append starts on a fresh line."""
        path = self.path / SCALARS_FILE
        try:
            with open(path, "rb+") as f:
                size = f.seek(0, os.SEEK_END)
                if size == 0:
                    return
                f.seek(size - 1)
                if f.read(1) == b"\n":
                    return
                keep = _last_newline_end(f, size)
                f.truncate(keep)
                f.flush()
                os.fsync(f.fileno())
            log.warning("dropped a torn last line of %d bytes from %s", size - keep, path)
        except FileNotFoundError:
            return

    def _invalidate_parquet(self) -> None:
        (self.path / PARQUET_FILE).unlink(missing_ok=True)

    def _reopen_log(self) -> None:
        """A finished run keeps its scalars only as parquet: before appending to or cutting
        the log again, write the JSONL back from it (durably, before the parquet goes)."""
        jsonl, parquet = self.path / SCALARS_FILE, self.path / PARQUET_FILE
        if jsonl.exists() or not parquet.exists():
            return
        df = pd.read_parquet(parquet)
        rows = [{k: v for k, v in row.items()} for row in df.to_dict("records")]
        atomic_write_bytes(jsonl, _scalars.encode_rows(rows))

    def append_scalars(self, rows: Iterable[Mapping[str, Any]]) -> None:
        """Append rows ``{"step": int, "seed": int, <metric>: number, ...}`` to scalars.jsonl.

        Non-finite floats are stored as "nan"/"inf"/"-inf". Flushed per call; fsynced
        when ``fsync_scalars``.
        """
        payload = _scalars.encode_rows(rows)
        if not payload:
            return
        self._ensure_dir()
        if not self._tail_checked:
            self._reopen_log()
            self._repair_tail()
            self._invalidate_parquet()
            self._tail_checked = True
        with open(self.path / SCALARS_FILE, "ab") as f:
            f.write(payload)
            f.flush()
            if self.fsync_scalars:
                os.fsync(f.fileno())

    def _parse_jsonl(self) -> _scalars.ParsedLines:
        try:
            data = (self.path / SCALARS_FILE).read_bytes()
        except FileNotFoundError:
            data = b""
        parsed = _scalars.parse_lines(data)
        if parsed.torn_tail:
            log.info("ignoring a partial last line of %s", self.path / SCALARS_FILE)
        if parsed.bad_lines:
            log.warning(
                "ignored %d invalid lines in %s", parsed.bad_lines, self.path / SCALARS_FILE
            )
        return parsed

    def read_scalars(self) -> pd.DataFrame:
        """Long table: columns step, seed (int64), then the metrics; sorted by (step, seed).

        Tolerant: a partial last line and invalid lines are dropped (see ``last_read_torn``,
        ``last_read_bad_lines`` and ``df.attrs``); after a resume, re-logged steps replace
        the stale ones. Uses scalars.parquet when it is at least as new as the JSONL.
        """
        jsonl, parquet = self.path / SCALARS_FILE, self.path / PARQUET_FILE
        if parquet.exists() and (
            not jsonl.exists() or parquet.stat().st_mtime_ns >= jsonl.stat().st_mtime_ns
        ):
            try:
                df = pd.read_parquet(parquet)
            except Exception as e:
                log.warning("ignoring unreadable %s: %s", parquet, e)
            else:
                self.last_read_torn, self.last_read_bad_lines = False, 0
                df.attrs.update(torn_tail=False, bad_lines=0)
                return df
        parsed = self._parse_jsonl()
        self.last_read_torn, self.last_read_bad_lines = parsed.torn_tail, parsed.bad_lines
        df = _scalars.records_to_frame(parsed.records)
        df.attrs.update(torn_tail=parsed.torn_tail, bad_lines=parsed.bad_lines)
        return df

    def truncate_scalars(self, after_step: int) -> None:
        """Resume from a checkpoint at ``after_step``: drop scalar lines and probe shards with
        step > after_step, so the resumed run logs exactly what an uninterrupted one would.
        """
        self._reopen_log()
        parsed = self._parse_jsonl()
        kept = [raw for rec, raw in zip(parsed.records, parsed.raw) if rec["step"] <= after_step]
        if (self.path / SCALARS_FILE).exists():
            atomic_write_bytes(self.path / SCALARS_FILE, b"".join(kept))
        self._tail_checked = True
        self._invalidate_parquet()
        probes_root = self.path / PROBES_DIR
        if probes_root.is_dir():
            for probe_dir in probes_root.iterdir():
                for step, path in _probes.shard_steps(probe_dir):
                    if step > after_step:
                        path.unlink(missing_ok=True)

    def write_probe(self, probe: str, step: int, results: Mapping[str, Measurement]) -> None:
        """One atomic shard ``probes/<probe>/<step:09d>.npz`` with every variable of
        ``results`` (each of shape (K, *sizes)); dims.json is updated first.
        """
        probe_dir = self.path / PROBES_DIR / _probes.check_name(probe, "probe")
        specs, arrays = {}, {}
        for var, m in results.items():
            specs[var], arrays[var] = _probes.var_spec(var, m)
        if probe not in self._dims:
            self._dims[probe] = _probes.read_dims(probe_dir)
        merged = dict(self._dims[probe])
        if _probes.update_dims(probe_dir, merged, specs):
            _probes.write_dims(probe_dir, merged)
            self._dims[probe] = merged
        _probes.write_shard(probe_dir, int(step), arrays)

    def read_probes(self) -> dict[str, dict[str, _probes.ProbeSeries]]:
        """``{probe: {var: ProbeSeries(dims, coords, steps, values (n_steps, K, ...))}}``.
        Unreadable shards and temp files are skipped.
        """
        root = self.path / PROBES_DIR
        if not root.is_dir():
            return {}
        out = {}
        for probe_dir in sorted(root.iterdir()):
            if probe_dir.is_dir() and not probe_dir.name.startswith("."):
                series = _probes.read_probe_dir(probe_dir)
                if series:
                    out[probe_dir.name] = series
        return out

    def save_checkpoint(self, tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> None:
        """checkpoint.safetensors then checkpoint.json, each atomic, sharing a nonce."""
        self._ensure_dir()
        _ckpt.save_checkpoint(self.path, tensors, meta)

    def load_checkpoint(
        self, device: str | torch.device = "cpu"
    ) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
        """``(tensors, meta)`` or None; a torn pair warns (StoreWarning) and is repaired."""
        return _ckpt.load_checkpoint(self.path, device)

    def finalize(self) -> bool:
        """Compact scalars.jsonl to scalars.parquet if pyarrow is available, then delete the
        JSONL, so a finished run stores its scalars once. The parquet is written atomically
        (fsynced) and read back before the JSONL goes. Returns whether it was written; a
        later append (a resumed or extended run) writes the JSONL back from the parquet.
        """
        jsonl = self.path / SCALARS_FILE
        if not _have_pyarrow() or not jsonl.exists():
            return False
        df = self.read_scalars()
        df.attrs = {}
        with atomic_open(self.path / PARQUET_FILE, "wb") as f:
            df.to_parquet(f, index=False)
        if len(pd.read_parquet(self.path / PARQUET_FILE)) != len(df):
            raise OSError(f"{self.path / PARQUET_FILE} does not read back; keeping the JSONL")
        jsonl.unlink()
        self._tail_checked = False
        return True

    def drop_checkpoint(self, keep: str = "none") -> None:
        """After the run finished: delete its checkpoint unless ``keep`` is "last" or
        "all" (the ``store.keep_checkpoints`` setting)."""
        if keep == "none":
            _ckpt.remove_checkpoint(self.path)

    def archive_checkpoint(self, step: int) -> None:
        """Keep a copy of the current checkpoint as checkpoints/<step:09d>.safetensors."""
        _ckpt.archive_checkpoint(self.path, step)

    def clean_temp(self) -> int:
        """Remove temp files left by crashed atomic writes; call only while holding the lock."""
        n = 0
        if not self.path.is_dir():
            return 0
        for p in self.path.rglob(".*"):
            if p.is_file() and is_temp_file(p):
                p.unlink(missing_ok=True)
                n += 1
        return n

    def remove(self) -> None:
        """Delete the run directory (for a fresh restart)."""
        shutil.rmtree(self.path, ignore_errors=True)

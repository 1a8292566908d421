"""RunStore: everything one run writes to and reads from its directory."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import time
import warnings
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
    remove_temp_files,
)
from widthscan.store.checkpoint import StoreWarning

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
DIGEST_KEY = b"widthscan.sha256"
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
        self._rows: int | None = None
        self.last_read_torn = False
        self.last_read_bad_lines = 0
        self.damage: dict[str, int] = {}

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
        """status.json with ``diverged`` keys as int seeds, or None if not written yet.

        A damaged status.json (not JSON, not a status) warns (StoreWarning) and is rebuilt
        from config.json and the checkpoint: "pending" (rerunning resumes the run), or
        "done"/"diverged" when the checkpoint is at the last step.
        """
        path = self.path / STATUS_FILE
        try:
            status = json.loads(path.read_bytes())
            if not isinstance(status, dict) or status.get("state") not in STATES:
                raise ValueError(f"not a status with a state in {STATES}")
            status["diverged"] = {int(k): int(v)
                                  for k, v in (status.get("diverged") or {}).items()}
        except FileNotFoundError:
            return None
        except (ValueError, TypeError, AttributeError, OSError) as err:
            return self._rebuilt_status(f"{type(err).__name__}: {err}")
        return status

    def _rebuilt_status(self, reason: str) -> dict[str, Any]:
        try:
            status = self._status_from_checkpoint()
        except (ValueError, TypeError, AttributeError):
            status = {"state": "pending", "step": 0, "steps": None, "seeds": None,
                      "diverged": {}}
        state, step = status["state"], status["step"]
        status["repaired"] = "status.json was unreadable; rebuilt from the checkpoint"
        then = " (rerun to resume)" if state == "pending" else ""
        warnings.warn(f"{self.path / STATUS_FILE} is unreadable ({reason}); rebuilt from the "
                      f"checkpoint: {state} at step {step}{then}", StoreWarning, stacklevel=3)
        return status

    def _status_from_checkpoint(self) -> dict[str, Any]:
        """State, step, seeds and divergence from checkpoint.json and config.json: "done" or
        "diverged" when the checkpoint is at the last step, else "pending"."""
        meta = _ckpt.read_meta(self.path) or {}
        ens = meta.get("ensemble") if isinstance(meta.get("ensemble"), dict) else meta
        try:
            config = self.read_config() or {}
        except ValueError:
            config = {}
        seeds = ens.get("seeds") or config.get("seeds")
        if isinstance(seeds, int):
            seeds = list(range(seeds))
        diverged = {int(s): int(d) for s, d in zip(seeds or [], ens.get("diverged_at") or [])
                    if d is not None}
        step, steps = int(ens.get("step") or 0), (config.get("train") or {}).get("steps")
        state = "pending"
        if isinstance(steps, int) and step >= steps:
            state = "diverged" if seeds and len(diverged) == len(seeds) else "done"
        return {"state": state, "step": step, "steps": steps,
                "seeds": [int(s) for s in seeds] if seeds else None, "diverged": diverged}

    def write_error(self, traceback_text: str) -> None:
        atomic_write_text(self.path / ERROR_FILE, traceback_text)

    def read_error(self) -> str | None:
        try:
            return (self.path / ERROR_FILE).read_bytes().decode("utf-8", errors="replace")
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

    def append_scalars(self, rows: Iterable[Mapping[str, Any]]) -> None:
        """Append rows ``{"step": int, "seed": int, <metric>: number, ...}`` to scalars.jsonl.

        Non-finite floats are stored as "nan"/"inf"/"-inf". Flushed per call; fsynced
        when ``fsync_scalars``.
        """
        payload = _scalars.encode_rows(rows)
        if not payload:
            return
        self._ensure_dir()
        self._restore_log()
        if not self._tail_checked:
            self._repair_tail()
            self._invalidate_parquet()
            self._tail_checked = True
        rows_before = self.scalar_rows
        with open(self.path / SCALARS_FILE, "ab") as f:
            f.write(payload)
            f.flush()
            if self.fsync_scalars:
                os.fsync(f.fileno())
        self._rows = rows_before + payload.count(b"\n")

    @property
    def scalar_rows(self) -> int:
        """Valid lines in scalars.jsonl (counted once, then tracked by appends)."""
        if self._rows is None:
            self._restore_log()
            self._rows = len(self._parse_jsonl().records)
        return self._rows

    def sync_scalars(self) -> None:
        """fsync scalars.jsonl (and its folder): every appended row survives a power loss.
        Call before committing a checkpoint, so scalars are durable up to it."""
        path = self.path / SCALARS_FILE
        if not path.exists():
            return
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        with contextlib.suppress(OSError):
            fd = os.open(self.path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def check_resumed_scalars(self, meta: Mapping[str, Any]) -> dict[str, int]:
        """After ``truncate_scalars`` on resume from a checkpoint with ``meta``: rows it
        recorded as durable but now missing or damaged are counted in ``damage``
        (``lost_rows``, carried forward from ``meta["damage"]``) and warned about."""
        self.damage = {k: int(v) for k, v in (meta.get("damage") or {}).items()}
        expected = meta.get("scalar_rows")
        if isinstance(expected, int) and self.scalar_rows < expected:
            lost = expected - self.scalar_rows
            self.damage["lost_rows"] = self.damage.get("lost_rows", 0) + lost
            warnings.warn(f"{self.path / SCALARS_FILE}: {lost} rows written before the "
                          "checkpoint are missing or damaged; their steps stay NaN",
                          StoreWarning, stacklevel=2)
        return self.damage

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

        Tolerant: a partial last line and invalid lines (bad JSON or checksum) are dropped
        (see ``last_read_torn``, ``last_read_bad_lines`` and ``df.attrs``); after a resume,
        re-logged steps replace the stale ones. Uses scalars.parquet when its checksum holds
        and it is at least as new as the JSONL, or the JSONL lost lines.
        """
        jsonl, parquet = self.path / SCALARS_FILE, self.path / PARQUET_FILE
        parsed = None
        if parquet.exists() and jsonl.exists() and \
                parquet.stat().st_mtime_ns < jsonl.stat().st_mtime_ns:
            parsed = self._parse_jsonl()
        if parquet.exists() and (parsed is None or parsed.torn_tail or parsed.bad_lines):
            df = self._read_parquet()
            if df is not None:
                self.last_read_torn, self.last_read_bad_lines = False, 0
                df.attrs.update(torn_tail=False, bad_lines=0)
                return df
        parsed = parsed or self._parse_jsonl()
        self.last_read_torn, self.last_read_bad_lines = parsed.torn_tail, parsed.bad_lines
        df = _scalars.records_to_frame(parsed.records)
        df.attrs.update(torn_tail=parsed.torn_tail, bad_lines=parsed.bad_lines)
        return df

    def _read_parquet(self) -> pd.DataFrame | None:
        """scalars.parquet if it reads and its sha256 matches (files written before
        checksums carry none and are accepted), else None (warned)."""
        path = self.path / PARQUET_FILE
        try:
            import pyarrow.parquet as pq

            table = pq.read_table(path)
            want = (table.schema.metadata or {}).get(DIGEST_KEY)
            df = table.to_pandas()
            if want is not None and want.decode() != _scalars.frame_digest(df):
                raise ValueError("its checksum does not match its contents")
        except Exception as e:
            warnings.warn(f"ignoring {path}: {e}; reading {SCALARS_FILE}", StoreWarning,
                          stacklevel=3)
            return None
        df.attrs = {}
        return df

    def truncate_scalars(self, after_step: int) -> None:
        """Resume from a checkpoint at ``after_step``: drop scalar lines and probe shards with
        step > after_step, so the resumed run logs exactly what an uninterrupted one would.
        """
        self._restore_log()
        parsed = self._parse_jsonl()
        kept = [rec for rec in parsed.records if rec["step"] <= after_step]
        if (self.path / SCALARS_FILE).exists():
            atomic_write_bytes(self.path / SCALARS_FILE, _scalars.encode_rows(kept))
        self._rows = len(kept)
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
        """Compact scalars.jsonl to scalars.parquet if pyarrow is available. Returns whether
        it was written; the JSONL stays the source of truth.
        """
        if not _have_pyarrow() or not (self.path / SCALARS_FILE).exists():
            return False
        import pyarrow as pa
        import pyarrow.parquet as pq

        df = self.read_scalars()
        df.attrs = {}
        table = pa.Table.from_pandas(df, preserve_index=False)
        digest = _scalars.frame_digest(table.to_pandas()).encode()
        table = table.replace_schema_metadata({**(table.schema.metadata or {}),
                                               DIGEST_KEY: digest})
        with atomic_open(self.path / PARQUET_FILE, "wb") as f:
            pq.write_table(table, f)
        return True

    def drop_scalar_log(self) -> bool:
        """After the run finished: delete scalars.jsonl once scalars.parquet reads back with
        its checksum and the same rows (else keep both). Returns whether it was deleted."""
        jsonl = self.path / SCALARS_FILE
        if not (jsonl.exists() and (self.path / PARQUET_FILE).exists()):
            return False
        df = self._read_parquet()
        parsed = self._parse_jsonl()
        if df is None or len(df) != len(_scalars.records_to_frame(parsed.records)):
            return False
        jsonl.unlink()
        return True

    def _restore_log(self) -> None:
        """Before a finished run whose JSONL was dropped is appended to or truncated (it is
        trained further): rewrite scalars.jsonl from its verified scalars.parquet."""
        jsonl, parquet = self.path / SCALARS_FILE, self.path / PARQUET_FILE
        if jsonl.exists() or not parquet.exists():
            return
        df = self._read_parquet()
        if df is None:
            return
        ints = ("step", "seed")
        rows = [{k: (int(v) if k in ints else float(v)) for k, v in rec.items()
                 if k in ints or pd.notna(v)} for rec in df.to_dict("records")]
        atomic_write_bytes(jsonl, _scalars.encode_rows(rows))
        self._rows = None

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
        return remove_temp_files(self.path)

    def remove(self) -> None:
        """Delete the run directory (for a fresh restart)."""
        shutil.rmtree(self.path, ignore_errors=True)

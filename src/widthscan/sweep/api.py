"""``Sweep``: a validated config that runs into a directory, resumably."""

from __future__ import annotations

import contextlib
import functools
import logging
import sys
import time
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from widthscan.config import (
    ConfigError,
    SweepConfig,
    config_dict,
    diff_configs,
    dumps_config,
    load_config,
    loads_config,
    parse_config,
)
from widthscan.config.load import read_toml, resolve_saved
from widthscan.store import RunStore, StoreWarning, SweepLock, atomic_write_text, iter_run_dirs
from widthscan.store.atomic import remove_temp_files
from widthscan.store.layout import SWEEP_CONFIG
from widthscan.sweep.executors import get_executor
from widthscan.sweep.plan import RunSpec, plan
from widthscan.sweep.preflight import Preflight, check_sweep
from widthscan.sweep.progress import SweepProgress
from widthscan.sweep.run import execute

log = logging.getLogger(__name__)

IGNORED_IN_DIFF = ("executor", "tracker", "store")


class ConfigChangedError(ConfigError):
    """The directory holds a sweep with a different config."""


@dataclass
class SweepResult:
    """Final status of every run; ``ok`` is False when any run failed."""

    statuses: dict[str, dict] = field(default_factory=dict)

    @property
    def failed(self) -> list[str]:
        return [n for n, s in self.statuses.items() if s.get("state") == "failed"]

    @property
    def ok(self) -> bool:
        return not self.failed


def _comparable(cfg: dict) -> dict:
    return {k: v for k, v in cfg.items() if k not in IGNORED_IN_DIFF}


def _warn(message: str) -> None:
    warnings.warn(message, StoreWarning, stacklevel=3)


def saved_config(out: Path) -> dict[str, Any] | None:
    """The resolved config of the sweep in ``out`` (schema only: nothing imported), from its
    sweep.toml, else (damaged file, warned) from a run's config.json; None if there is none."""
    saved = out / SWEEP_CONFIG
    if saved.exists():
        try:
            resolved = resolve_saved(read_toml(saved.read_bytes(), str(saved)))
            reason = "it does not validate"
        except (OSError, ConfigError) as err:
            resolved, reason = None, str(err)
        if resolved is not None:
            return resolved
        _warn(f"{saved} is unreadable ({reason}); comparing with the runs' config.json")
    for _, _, path in iter_run_dirs(out):
        try:
            run_config = RunStore(path).read_config()
        except ValueError:
            continue
        if isinstance(run_config, dict):
            fields = {k: v for k, v in run_config.items() if k not in ("param", "width")}
            resolved = resolve_saved(fields)
            if resolved is not None:
                return resolved
    return None


class Sweep:
    """A grid of parameterizations x widths x seeds from one validated config.

    ``allow_import``: modules (or packages) of user code the config may import, e.g. the
    ``"package.module:function"`` of a model family; nothing else named by a config is
    imported (``widthscan run --allow-import MODULE``).
    """

    def __init__(self, config: SweepConfig | dict, allow_import: Iterable[str] = ()):
        self.allow_import = tuple(allow_import)
        data = config_dict(config) if isinstance(config, SweepConfig) else config
        self.config = parse_config(data, self.allow_import)

    @classmethod
    def from_toml(cls, path: str | Path, allow_import: Iterable[str] = ()) -> Sweep:
        return cls(load_config(path, allow_import), allow_import)

    @classmethod
    def from_string(cls, text: str, allow_import: Iterable[str] = ()) -> Sweep:
        return cls(loads_config(text, allow_import=allow_import), allow_import)

    def plan(self, out: str | Path) -> list[RunSpec]:
        return plan(self.config, Path(out), self.allow_import)

    def check(self) -> Preflight:
        """Everything that can be checked before a file is written (device, task, the model
        at every width on the meta device, a memory estimate); raises ConfigError."""
        return check_sweep(self.config, self.allow_import)

    def _prepare(self, out: Path, force_new: bool) -> Path | None:
        """Compare with the sweep already in ``out``; with ``force_new`` move it aside (the
        returned path). The saved config is read as data: nothing it names is imported."""
        old = saved_config(out)
        if old is None:
            if (out / SWEEP_CONFIG).exists() or iter_run_dirs(out):
                _warn(f"{out} holds runs without a readable config; continuing with this one")
            return None
        changes = diff_configs(_comparable(old), _comparable(config_dict(self.config)))
        if not changes:
            return None
        if not force_new:
            raise ConfigChangedError(
                f"{out} holds a sweep with a different config:\n  " + "\n  ".join(changes)
                + "\nrun into another directory, or pass force_new=True (--force-new) to move "
                "the old results aside and start over")
        return self._move_aside(out)

    @staticmethod
    def _move_aside(out: Path) -> Path:
        aside = out.with_name(f"{out.name}.old-{time.strftime('%Y%m%d-%H%M%S')}")
        out.rename(aside)
        print(f"moved the previous sweep to {aside}", file=sys.stderr)
        return aside

    def run(self, out: str | Path, executor: str | None = None, workers: int | None = None,
            wait: bool = False, force_new: bool = False, progress: bool | None = None,
            scheduler: str | None = None) -> SweepResult:
        """Run every (param, width) into ``out``; done runs are skipped, others resume.

        Everything is validated first (``check``): a ConfigError leaves ``out`` untouched.
        ``progress``: per-run progress on stderr (run, step, loss, ETA): a live bar on a
        terminal, plain lines elsewhere; None (default): only on a terminal.
        """
        out = Path(out)
        cfg = self.config
        updates = {k: v for k, v in {"kind": executor, "workers": workers,
                                     "scheduler": scheduler}.items() if v is not None}
        if updates:
            cfg = cfg.model_copy(update={"executor": cfg.executor.model_copy(update=updates)})
            self.config = parse_config(config_dict(cfg), self.allow_import)
        self.check()
        lock = SweepLock(out, wait=wait)
        lock.acquire()
        try:
            aside = self._prepare(out, force_new)
            if aside is not None:
                lock = _relock(lock, aside, out)
            _clean_temp(out)
            atomic_write_text(out / SWEEP_CONFIG, dumps_config(self.config))
            specs = self.plan(out)
            result = SweepResult()
            kind = self.config.executor.kind
            run_fn = get_executor(kind)
            fn = execute if kind == "local" else functools.partial(execute, threads=1)
            show = sys.stderr.isatty() if progress is None else progress
            runs = [(spec.param, spec.width) for spec in specs]
            with _progress(out, runs, self.config.train.steps, show):
                for spec, status in run_fn(fn, specs, self.config.executor):
                    result.statuses[spec.name] = status
        finally:
            lock.release()
        return result


def _relock(old: SweepLock, aside: Path, out: Path) -> SweepLock:
    """After ``out`` was renamed to ``aside`` with ``old`` held: lock the new ``out`` before
    letting the old folder go, so no second writer is admitted in between (SweepLockedError
    if one got there first)."""
    old.moved_to(aside)
    new = SweepLock(out)
    try:
        new.acquire()
    finally:
        old.release()
    return new


def _clean_temp(out: Path) -> None:
    """Remove temp files left by killed writers (the caller holds the sweep lock)."""
    n = remove_temp_files(out, recursive=False)
    n += sum(RunStore(path).clean_temp() for _, _, path in iter_run_dirs(out))
    if n:
        log.info("removed %d temp files left by an interrupted run in %s", n, out)


def _progress(out: Path, runs: list[tuple[str, int]], steps: int, show: bool):
    """Per-run progress on stderr (a live bar on a terminal, plain lines elsewhere)."""
    if not show:
        return contextlib.nullcontext()
    return SweepProgress(out, runs, steps)

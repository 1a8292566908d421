"""``Sweep``: a validated config that runs into a directory, resumably."""

from __future__ import annotations

import contextlib
import functools
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

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
from widthscan.store import SweepLock, atomic_write_text
from widthscan.sweep.executors import get_executor
from widthscan.sweep.plan import RunSpec, plan
from widthscan.sweep.progress import SweepProgress
from widthscan.sweep.run import execute

IGNORED_IN_DIFF = ("executor", "tracker")


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


class Sweep:
    """A grid of parameterizations x widths x seeds from one validated config."""

    def __init__(self, config: SweepConfig | dict):
        self.config = config if isinstance(config, SweepConfig) else parse_config(config)

    @classmethod
    def from_toml(cls, path: str | Path) -> Sweep:
        return cls(load_config(path))

    @classmethod
    def from_string(cls, text: str) -> Sweep:
        return cls(loads_config(text))

    def plan(self, out: str | Path) -> list[RunSpec]:
        return plan(self.config, Path(out))

    def _prepare(self, out: Path, force_new: bool) -> None:
        saved = out / "sweep.toml"
        if not saved.exists():
            return
        old = config_dict(load_config(saved))
        changes = diff_configs(_comparable(old), _comparable(config_dict(self.config)))
        if not changes:
            return
        if not force_new:
            raise ConfigChangedError(
                f"{out} holds a sweep with a different config:\n  " + "\n  ".join(changes)
                + "\nrun into another directory, or pass force_new=True (--force-new) to move "
                "the old results aside and start over")
        aside = out.with_name(f"{out.name}.old-{time.strftime('%Y%m%d-%H%M%S')}")
        out.rename(aside)
        out.mkdir(parents=True)
        print(f"moved the previous sweep to {aside}", file=sys.stderr)

    def run(self, out: str | Path, executor: str | None = None, workers: int | None = None,
            wait: bool = False, force_new: bool = False, progress: bool | None = None,
            scheduler: str | None = None) -> SweepResult:
        """Run every (param, width) into ``out``; done runs are skipped, others resume.

        ``progress``: per-run progress on stderr (run, step, loss, ETA): a live bar on a
        terminal, plain lines elsewhere; None (default): only on a terminal."""
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        cfg = self.config
        updates = {k: v for k, v in {"kind": executor, "workers": workers,
                                     "scheduler": scheduler}.items() if v is not None}
        if updates:
            cfg = cfg.model_copy(update={"executor": cfg.executor.model_copy(update=updates)})
            self.config = parse_config(config_dict(cfg))
        with SweepLock(out, wait=wait):
            self._prepare(out, force_new)
            atomic_write_text(out / "sweep.toml", dumps_config(self.config))
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
        return result


def _progress(out: Path, runs: list[tuple[str, int]], steps: int, show: bool):
    """Per-run progress on stderr (a live bar on a terminal, plain lines elsewhere)."""
    if not show:
        return contextlib.nullcontext()
    return SweepProgress(out, runs, steps)

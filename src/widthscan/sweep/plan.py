"""Expanding a sweep config into runs, and building each run's parts from the config."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from widthscan import models, tasks
from widthscan.config import SweepConfig, config_dict, parse_config


@dataclass(frozen=True)
class RunSpec:
    """One (param, width) run of a sweep; ``config`` is the resolved sweep config dict;
    ``allow_import`` the modules of user code the command allowed (see ``parse_config``)."""

    sweep_dir: str
    param: str
    width: int
    config: dict[str, Any]
    allow_import: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return f"param={self.param},width={self.width}"

    def sweep_config(self) -> SweepConfig:
        return parse_config(self.config, self.allow_import)


def plan(cfg: SweepConfig, sweep_dir: str | Path,
         allow_import: tuple[str, ...] = ()) -> list[RunSpec]:
    """One RunSpec per (parameterization, width), widest first within each parameterization
    so the reference run finishes early."""
    resolved = config_dict(cfg)
    return [RunSpec(str(sweep_dir), p, w, resolved, tuple(allow_import))
            for p in cfg.params for w in sorted(cfg.widths, reverse=True)]


def make_task(cfg: SweepConfig) -> tasks.Task:
    return tasks.make(cfg.task.name, seed=cfg.task.seed, **cfg.task.options)


def model_options(cfg: SweepConfig, spec: tasks.TaskSpec) -> dict[str, Any]:
    """The family's options with the task's sizes filled in where the user left them out."""
    opts = dict(cfg.model.options)
    family = cfg.model.family
    if family == "mlp":
        opts.setdefault("d_in", math.prod(spec.input_shape))
        opts.setdefault("d_out", spec.output_dim)
    elif family == "resnet18":
        opts.setdefault("in_channels", spec.input_shape[0])
        opts.setdefault("n_classes", spec.output_dim)
    elif family == "transformer":
        opts.setdefault("vocab_size", spec.vocab_size or spec.output_dim)
        opts.setdefault("n_out", spec.output_dim)
        opts.setdefault("seq_len", spec.seq_len or spec.input_shape[0])
        opts.setdefault("causal", getattr(spec, "mask_token", None) is None)
    return opts


def make_factory(cfg: SweepConfig, spec: tasks.TaskSpec,
                 allow_import: tuple[str, ...] = ()) -> models.registry.Factory:
    return models.factory(cfg.model.family, allow_import=allow_import, **model_options(cfg, spec))


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def loss_name(cfg: SweepConfig, spec: tasks.TaskSpec) -> str:
    return spec.loss if cfg.train.loss == "auto" else cfg.train.loss

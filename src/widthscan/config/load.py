"""TOML in, validated ``SweepConfig`` out; errors name the field, the value and what is allowed."""

from __future__ import annotations

import inspect
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, get_args, get_origin

import tomli_w
from pydantic import BaseModel, ValidationError

from widthscan.config.schema import SweepConfig

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib


class ConfigError(ValueError):
    """An invalid sweep config; the message lists every bad field."""


def _model_at(loc: tuple) -> type[BaseModel] | None:
    """The model that owns the last key of ``loc`` (through nested models and the values of
    ``dict[str, Model]`` fields, e.g. ``probes.<name>``), or None."""
    model: Any = SweepConfig
    parts = list(loc)
    while parts:
        part = parts.pop(0)
        if get_origin(model) is dict:
            model = get_args(model)[1]
            continue
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            return None
        field = model.model_fields.get(str(part))
        if field is None:
            return model if not parts else None
        model = field.annotation
    return None


def _describe(err: dict) -> str:
    loc = tuple(err["loc"])
    path = ".".join(str(p) for p in loc) or "(top level)"
    value = err.get("input")
    if err["type"] == "extra_forbidden":
        owner = _model_at(loc)
        allowed = sorted(owner.model_fields) if owner else []
        return f"{path}: unknown key; allowed keys here: {allowed}"
    shown = repr(value)
    if len(shown) > 80:
        shown = shown[:77] + "..."
    return f"{path}: {err['msg']} (got {shown})"


def _check_names(cfg: SweepConfig) -> list[str]:
    from widthscan import models, tasks

    problems = []
    if cfg.task.name not in tasks.names():
        problems.append(f"task.name: {cfg.task.name!r} is not a task; allowed: {tasks.names()}")
    else:
        allowed = tasks.options(cfg.task.name)
        problems += [f"task.options.{key}: unknown option; allowed: {allowed}"
                     for key in cfg.task.options if key not in allowed]
    if ":" not in cfg.model.family and cfg.model.family not in models.names():
        problems.append(f"model.family: {cfg.model.family!r} is not a family; allowed: "
                        f"{models.names()} or 'package.module:function'")
    else:
        problems += _check_options("model.options", models.family(cfg.model.family),
                                   cfg.model.options, skip=1)
    if cfg.probes:
        from widthscan import probes
    for name, probe in cfg.probes.items():
        if name not in probes.names():
            problems.append(f"probes.{name}: not a probe; allowed: {probes.names()}")
            continue
        try:
            probes.ProbeSuite({name: probe.suite_options()}, cfg.train.steps)
        except (TypeError, ValueError) as err:
            problems.append(f"probes.{name}.options: {err}")
            continue
        if name == "entk" and probe.options.get("weighting") == "lr" and (
                cfg.optimizer.name != "sgd"):
            problems.append(f"probes.entk.options.weighting: 'lr' is SGD's kernel and "
                            f"optimizer.name = {cfg.optimizer.name!r} follows none; allowed "
                            "here: 'auto', 'raw'")
    if cfg.base_width > max(cfg.widths):
        problems.append(f"base_width: {cfg.base_width} is wider than every width {cfg.widths}")
    return problems


def _check_options(field: str, fn, options: Mapping[str, Any], skip: int = 0) -> list[str]:
    """Options must be keyword arguments of ``fn`` (after its first ``skip`` parameters)."""
    try:
        params = list(inspect.signature(fn).parameters.values())[skip:]
    except (TypeError, ValueError):
        return []
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return []
    allowed = [p.name for p in params]
    return [f"{field}.{key}: unknown option; allowed: {allowed}"
            for key in options if key not in allowed]


def parse_config(data: Mapping[str, Any]) -> SweepConfig:
    """Validate a dict (as read from TOML); raises ConfigError listing every problem."""
    try:
        cfg = SweepConfig.model_validate(dict(data))
    except ValidationError as err:
        lines = [_describe(e) for e in err.errors()]
        raise ConfigError("invalid sweep config:\n  " + "\n  ".join(lines)) from None
    problems = _check_names(cfg)
    if problems:
        raise ConfigError("invalid sweep config:\n  " + "\n  ".join(problems))
    return cfg


def loads_config(text: str, source: str = "<string>") -> SweepConfig:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{source}: not valid TOML: {err}") from None
    return parse_config(data)


def load_config(path: str | Path) -> SweepConfig:
    """Read and validate a sweep TOML file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such config file")
    return loads_config(path.read_text(), str(path))


def _drop_none(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _drop_none(v) for k, v in obj.items() if v is not None}
    if isinstance(obj, list | tuple):
        return [_drop_none(v) for v in obj]
    return obj


def config_dict(cfg: SweepConfig) -> dict[str, Any]:
    """The fully resolved config as plain JSON/TOML-able values."""
    return _drop_none(cfg.model_dump(mode="json"))


def dumps_config(cfg: SweepConfig) -> str:
    return tomli_w.dumps(config_dict(cfg))


def diff_configs(old: Mapping[str, Any], new: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Lines 'path: old -> new' for every resolved field that differs."""
    lines = []
    for key in sorted(set(old) | set(new)):
        path = f"{prefix}{key}"
        a, b = old.get(key, "<unset>"), new.get(key, "<unset>")
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            lines += diff_configs(a, b, path + ".")
        elif a != b:
            lines.append(f"{path}: {a!r} -> {b!r}")
    return lines

"""TOML in, validated ``SweepConfig`` out; errors name the field, the value and what is allowed."""

from __future__ import annotations

import inspect
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, get_args, get_origin

import tomli_w
from pydantic import BaseModel, ValidationError

from widthscan.config.schema import SweepConfig

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib


MAX_CONFIG_BYTES = 1 << 20
MAX_NESTING = 16
MAX_LAYERS = 1024
LAYER_OPTIONS = ("depth", "n_layers")


class ConfigError(ValueError):
    """An invalid sweep config; the message lists every bad field, one line each."""


def config_error(problems: list[str], source: str | None = None) -> ConfigError:
    """One line per problem, each naming the field path, the value and what is allowed."""
    head = f"{source}: invalid sweep config" if source else "invalid sweep config"
    if len(problems) == 1:
        return ConfigError(f"{head}: {problems[0]}")
    return ConfigError(f"{head} ({len(problems)} problems):\n  " + "\n  ".join(problems))


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
    msg = str(err["msg"]).removeprefix("Value error, ")
    return f"{path}: {msg} (got {_shown(value)})"


def _shown(value: Any) -> str:
    shown = repr(value)
    return shown if len(shown) <= 80 else shown[:77] + "..."


def import_module_name(family: str) -> str | None:
    """The module a ``"package.module:function"`` family imports, or None for a built-in."""
    return family.partition(":")[0] if ":" in family else None


def imports(cfg: SweepConfig) -> list[str]:
    """Modules of user code the config names (each imported only when allowed)."""
    return [m for m in (import_module_name(cfg.model.family),) if m]


def _import_problem(family: str, allow_import: Iterable[str]) -> str | None:
    from widthscan.models.registry import module_allowed

    module = import_module_name(family)
    if module is None or module_allowed(module, allow_import):
        return None
    return (f"model.family: {family!r} would import and run module {module!r}; code named in "
            f"a config runs only when allowed: pass --allow-import {module} "
            f"(Python: allow_import=[{module!r}])")


def _depth(obj: Any, limit: int, path: str = "") -> str | None:
    """Path of the first value nested deeper than ``limit`` tables/arrays, or None."""
    if limit < 0:
        return path or "(top level)"
    items = obj.items() if isinstance(obj, dict) else (
        enumerate(obj) if isinstance(obj, list) else ())
    for key, value in items:
        found = _depth(value, limit - 1, f"{path}.{key}" if path else str(key))
        if found:
            return found
    return None


def _model_option_problems(cfg: SweepConfig, fn: Any) -> list[str]:
    """Booleans given for integer options, and layer counts above MAX_LAYERS."""
    problems = []
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        params = {}
    for key, value in cfg.model.options.items():
        default = params[key].default if key in params else None
        if isinstance(value, bool) and type(default) in (int, float):
            problems.append(f"model.options.{key}: a boolean is not a number (got {value!r}); "
                            f"allowed: a {type(default).__name__} like {default!r}")
        elif key in LAYER_OPTIONS and isinstance(value, int) and not isinstance(value, bool) \
                and not 1 <= value <= MAX_LAYERS:
            problems.append(f"model.options.{key}: {value!r} is out of range; allowed: "
                            f"1..{MAX_LAYERS}")
    return problems


def _check_names(cfg: SweepConfig, allow_import: Iterable[str]) -> list[str]:
    from widthscan import models, tasks

    problems = []
    if cfg.task.name not in tasks.names():
        problems.append(f"task.name: {cfg.task.name!r} is not a task; allowed: {tasks.names()}")
    else:
        allowed = tasks.options(cfg.task.name)
        problems += [f"task.options.{key}: unknown option; allowed: {allowed}"
                     for key in cfg.task.options if key not in allowed]
    blocked = _import_problem(cfg.model.family, allow_import)
    if blocked:
        problems.append(blocked)
    elif ":" not in cfg.model.family and cfg.model.family not in models.names():
        problems.append(f"model.family: {cfg.model.family!r} is not a family; allowed: "
                        f"{models.names()} or 'package.module:function'")
    else:
        try:
            fn = models.family(cfg.model.family, allow_import=tuple(allow_import))
        except ValueError as err:
            problems.append(f"model.family: {err}")
        else:
            problems += _check_options("model.options", fn, cfg.model.options, skip=1)
            problems += _model_option_problems(cfg, fn)
    if cfg.probes:
        from widthscan import probes
    for name, probe in cfg.probes.items():
        if name not in probes.names():
            problems.append(f"probes.{name}: not a probe; allowed: {probes.names()}")
            continue
        bad = _probe_option_problems(name, probe.options)
        if bad:
            problems += bad
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


PROBE_INTS = {"k": 1, "max_iter": 1, "n_examples": 1, "n_full": 1, "chunk": 1, "batch_size": 1,
              "bins": 1, "every": 1, "first": 0, "example": 0}
PROBE_FLOATS = ("tol", "range_std", "memory_budget")
MAX_PROBE_INT = 1 << 20


def _probe_option_problems(name: str, options: Mapping[str, Any]) -> list[str]:
    """Numeric probe options: integers (not booleans) in range, positive finite floats."""
    problems = []
    for key, value in options.items():
        path = f"probes.{name}.options.{key}"
        if key in PROBE_INTS and value is not None:
            low = PROBE_INTS[key]
            if isinstance(value, bool) or not isinstance(value, int) or \
                    not low <= value <= MAX_PROBE_INT:
                problems.append(f"{path}: {_shown(value)} is not allowed; allowed: an integer "
                                f"{low}..{MAX_PROBE_INT}" + (" or unset" if low else ""))
        elif key in PROBE_FLOATS and value is not None and (
                isinstance(value, bool) or not isinstance(value, int | float)
                or not 0 < value < float("inf")):
            problems.append(f"{path}: {_shown(value)} is not allowed; allowed: a number > 0")
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


def _validate(data: Mapping[str, Any], source: str | None) -> SweepConfig:
    """Schema validation only: no registry look-ups, nothing imported."""
    if not isinstance(data, Mapping):
        raise config_error([f"(top level): expected a table of fields (got {_shown(data)})"],
                           source)
    deep = _depth(dict(data), MAX_NESTING)
    if deep:
        raise config_error([f"{deep}: nested deeper than {MAX_NESTING} tables/arrays; allowed: "
                            f"at most {MAX_NESTING} levels"], source)
    try:
        return SweepConfig.model_validate(dict(data))
    except ValidationError as err:
        raise config_error([_describe(e) for e in err.errors()], source) from None


def parse_config(data: Mapping[str, Any], allow_import: Iterable[str] = (),
                 source: str | None = None) -> SweepConfig:
    """Validate a dict (as read from TOML); raises ConfigError listing every problem.

    ``allow_import``: modules (or packages) whose code a ``"package.module:function"`` model
    family may import; any other module named by the config is an error, never imported.
    """
    cfg = _validate(data, source)
    problems = _check_names(cfg, allow_import)
    if problems:
        raise config_error(problems, source)
    return cfg


def resolve_saved(data: Mapping[str, Any]) -> dict[str, Any] | None:
    """A saved sweep's resolved config (schema only: no import, no look-up), or None when
    it does not validate."""
    try:
        return config_dict(_validate(data, None))
    except ConfigError:
        return None


def read_toml(text: str | bytes, source: str = "<string>") -> dict[str, Any]:
    """TOML text (or UTF-8 bytes) as a dict; ConfigError (one line) if it is not."""
    if isinstance(text, bytes):
        if len(text) > MAX_CONFIG_BYTES:
            raise ConfigError(f"{source}: {len(text)} bytes; allowed: at most "
                              f"{MAX_CONFIG_BYTES} bytes")
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as err:
            raise ConfigError(f"{source}: not UTF-8 text (byte {text[err.start]:#04x} at offset "
                              f"{err.start}); allowed: a UTF-8 TOML file") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{source}: not valid TOML: {str(err).splitlines()[0]}") from None
    except RecursionError:
        raise ConfigError(f"{source}: not valid TOML: nested too deeply to parse; allowed: at "
                          f"most {MAX_NESTING} levels") from None


def loads_config(text: str, source: str = "<string>",
                 allow_import: Iterable[str] = ()) -> SweepConfig:
    return parse_config(read_toml(text, source), allow_import, source)


def load_config(path: str | Path, allow_import: Iterable[str] = ()) -> SweepConfig:
    """Read and validate a sweep TOML file (see ``parse_config`` for ``allow_import``)."""
    return parse_config(read_toml(read_bytes(path), str(path)), allow_import, str(path))


def read_bytes(path: str | Path) -> bytes:
    """A config file's bytes; ConfigError (one line) if it cannot be read."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such config file")
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_CONFIG_BYTES + 1)
    except OSError as err:
        raise ConfigError(f"{path}: cannot read the config file ({err.strerror})") from None
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path}: larger than {MAX_CONFIG_BYTES} bytes; allowed: at most "
                          f"{MAX_CONFIG_BYTES} bytes")
    return data


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

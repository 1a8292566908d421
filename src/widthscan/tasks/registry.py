"""Tasks by name: `register` a `Task` class, `make` one from its name and options."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, TypeVar

from .base import Task
from .errors import TaskConfigError

T = TypeVar("T", bound=type[Task])

_REGISTRY: dict[str, type[Task]] = {}


def register(cls: T | None = None, *, name: str | None = None, overwrite: bool = False) -> Any:
    """Register a `Task` subclass under `name` (default: its `name` attribute).

    Use as `@register`, `@register(name="mine")` or `register(MyTask, name="mine")`.
    """

    def add(task_cls: T) -> T:
        if not (isinstance(task_cls, type) and issubclass(task_cls, Task)):
            raise TypeError(f"register expects a Task subclass, got {task_cls!r}")
        key = name or task_cls.name
        if not key or key == Task.name:
            raise TaskConfigError(f"name: give the task class a `name` or pass name=, got {key!r}")
        if key in _REGISTRY and _REGISTRY[key] is not task_cls and not overwrite:
            raise TaskConfigError(
                f"name: task {key!r} is already registered ({_REGISTRY[key].__qualname__});"
                " pass overwrite=True to replace it"
            )
        if task_cls.name != key and "name" not in vars(task_cls):
            task_cls.name = key
        _REGISTRY[key] = task_cls
        return task_cls

    return add if cls is None else add(cls)


def unregister(name: str) -> None:
    """Remove a registered task (no error if absent)."""
    _REGISTRY.pop(name, None)


def names() -> list[str]:
    """Names of the registered tasks, sorted."""
    return sorted(_REGISTRY)


def get(name: str) -> type[Task]:
    """The task class registered as `name`."""
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise TaskConfigError(
            f"task name must be one of {', '.join(names())}; got {name!r}"
        ) from None


def options(name: str) -> list[str]:
    """The keyword options `make(name, ...)` accepts (besides `seed`)."""
    return _options(get(name))


def make(name: str, seed: int = 0, **opts: Any) -> Task:
    """Build the task registered as `name` with data seed `seed` and task options `opts`."""
    cls = get(name)
    allowed = _options(cls)
    unknown = sorted(set(opts) - set(allowed))
    if unknown:
        raise TaskConfigError(
            f"unknown option(s) {', '.join(unknown)} for task {name!r}; allowed options:"
            f" {', '.join(allowed)}"
        )
    return cls(seed, **opts)


def _options(cls: type[Task]) -> list[str]:
    """Keyword options of `cls.__init__`, following `**kwargs` up the class hierarchy.

    The class's own parameters count (except `seed`); a base class reached through `**kwargs`
    contributes only its keyword-only parameters (its positional ones are filled by the
    subclass, not by the user).
    """
    found: list[str] = []
    own = True
    for klass in cls.__mro__:
        init: Callable[..., Any] | None = vars(klass).get("__init__")
        if init is None:
            continue
        params = list(inspect.signature(init).parameters.values())
        for p in params:
            named = p.kind is p.KEYWORD_ONLY or (own and p.kind is p.POSITIONAL_OR_KEYWORD)
            if named and p.name not in ("self", "seed") and p.name not in found:
                found.append(p.name)
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            break
        own = False
    return found

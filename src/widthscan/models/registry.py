"""Model families by name: each maps (width, **options) to an nn.Module."""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable, Iterable

from torch import nn

from widthscan.models.mlp import mlp
from widthscan.models.resnet import resnet18
from widthscan.models.transformer import transformer

Factory = Callable[[int], nn.Module]

_FAMILIES: dict[str, Callable[..., nn.Module]] = {
    "mlp": mlp,
    "resnet18": resnet18,
    "transformer": transformer,
}


def names() -> list[str]:
    """Registered family names."""
    return sorted(_FAMILIES)


def register(name: str, family: Callable[..., nn.Module]) -> None:
    """Add a family ``family(width, **options) -> nn.Module`` under ``name``."""
    _FAMILIES[name] = family


class ImportNotAllowedError(ValueError):
    """A family names user code that the caller did not allow to be imported."""


def module_allowed(module: str, allow_import: Iterable[str]) -> bool:
    """Whether ``module`` is one of ``allow_import`` or inside one of those packages."""
    return any(module == a or module.startswith(a + ".") for a in allow_import)


def family(name: str, allow_import: Iterable[str] | None = None) -> Callable[..., nn.Module]:
    """The family registered as ``name``, or imported from ``"package.module:function"``.

    ``allow_import``: None when the caller names the family itself (Python code); from a
    config, the modules (or packages) the user allowed: any other module is refused,
    not imported.
    """
    if ":" in name:
        mod_name, _, fn_name = name.partition(":")
        if allow_import is not None and not module_allowed(mod_name, allow_import):
            raise ImportNotAllowedError(
                f"model={name!r} would import module {mod_name!r}, which was not allowed "
                f"(--allow-import {mod_name})")
        try:
            fn = getattr(importlib.import_module(mod_name), fn_name)
        except Exception as err:
            raise ValueError(f"cannot import {fn_name!r} from module {mod_name!r} "
                             f"({type(err).__name__}: {err}); allowed: an importable "
                             f"'package.module:function'") from None
        if not callable(fn):
            raise ValueError(f"{name!r} is a {type(fn).__name__}, not a callable "
                             f"width -> nn.Module")
        return fn
    if name not in _FAMILIES:
        raise ValueError(f"model={name!r} is unknown; allowed: {names()} or 'module:function'")
    return _FAMILIES[name]


def factory(name: str, *, allow_import: Iterable[str] | None = None, **options) -> Factory:
    """A ``width -> nn.Module`` factory for a registered family or ``"package.module:function"``
    (``allow_import`` as in ``family``).

    Options are bound now, not checked; build the model to check them.
    """
    return functools.partial(family(name, allow_import), **options)

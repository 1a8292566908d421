"""Model families by name: each maps (width, **options) to an nn.Module."""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable

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


def family(name: str) -> Callable[..., nn.Module]:
    """The family registered as ``name``, or imported from ``"package.module:function"``."""
    if ":" in name:
        mod_name, _, fn_name = name.partition(":")
        try:
            return getattr(importlib.import_module(mod_name), fn_name)
        except (ImportError, AttributeError) as err:
            raise ValueError(f"model={name!r}: cannot import {fn_name!r} from {mod_name!r} "
                             f"({err})") from err
    if name not in _FAMILIES:
        raise ValueError(f"model={name!r} is unknown; allowed: {names()} or 'module:function'")
    return _FAMILIES[name]


def factory(name: str, **options) -> Factory:
    """A ``width -> nn.Module`` factory for a registered family or ``"package.module:function"``.

    Options are bound now, not checked; build the model to check them.
    """
    return functools.partial(family(name), **options)

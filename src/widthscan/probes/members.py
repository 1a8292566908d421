"""A ``Parametrized`` or an ``Ensemble`` seen the same way: the stacked core
(``widthscan.stack.Stack``) with K members.

An ``Ensemble``'s core is its own (same parameters, strategy, optimizer state); a
``Parametrized`` becomes a core of K = 1 whose public probe results drop the member axis.
Everything else in ``widthscan.probes`` works on that core.
"""

from __future__ import annotations

from typing import Any

from widthscan.measurement import Measurement
from widthscan.parametrization import Parametrized
from widthscan.stack.core import Stack

Members = Stack
"""The name probes used for the core before it moved to ``widthscan.stack``."""


def members(model: Any) -> Stack:
    """The core of an ``Ensemble`` (K stacked) or of a ``Parametrized`` (K = 1, unstacked);
    a ``Stack`` is returned as it is."""
    if isinstance(model, Stack):
        return model
    if isinstance(model, Parametrized):
        return Stack.view(model)
    core = getattr(model, "stack", None)
    if isinstance(core, Stack):
        return core
    raise TypeError(
        f"probes take a ws.Parametrized or a ws.Ensemble, got {type(model).__name__}"
    )


def public(m: Stack, result: dict[str, Measurement]) -> dict[str, Measurement]:
    """Drop the member axis of every Measurement when ``m`` came from a Parametrized."""
    if m.stacked:
        return result
    return {name: meas._replace(values=meas.values[0]) for name, meas in result.items()}

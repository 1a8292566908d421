"""Layer selection and forward hooks that capture features inside ``functional_call``/``vmap``.

A layer is named by its module name: ``"blocks.0"`` is that module's output,
``"readout:in"`` its (first positional) input. Patterns use ``fnmatch`` syntax
(``"hidden.*"``). Hooks are attached for one forward call only and always removed;
captured tensors go into a dict owned by the caller's (vmapped) function, which must
return them rather than keep them.
"""

from __future__ import annotations

import contextlib
import fnmatch
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

INPUT_SUFFIX = ":in"


@dataclass(frozen=True)
class Layer:
    """A feature to capture: ``label`` (the coordinate), ``module`` name, ``where``
    ("output" | "input") and an optional elementwise ``transform`` (e.g. an activation)."""

    label: str
    module: str
    where: str = "output"
    transform: Callable[[torch.Tensor], torch.Tensor] | None = None


def split(name: str) -> tuple[str, str]:
    """``"a.b:in"`` -> ("a.b", "input"); ``"a.b"`` -> ("a.b", "output")."""
    if name.endswith(INPUT_SUFFIX):
        return name[: -len(INPUT_SUFFIX)], "input"
    return name, "output"


def resolve(net: nn.Module, names: Sequence[str]) -> list[str]:
    """Expand patterns to concrete layer names (module order), keeping ``:in`` suffixes.

    Raises ValueError naming a pattern that matches no module.
    """
    modules = [n for n, _ in net.named_modules() if n]
    out: list[str] = []
    for name in names:
        base, where = split(name)
        hits = [n for n in modules if fnmatch.fnmatchcase(n, base)]
        if not hits:
            shown = ", ".join(modules[:40]) + (" ..." if len(modules) > 40 else "")
            raise ValueError(f"layer {name!r} matches no module; modules are: {shown}")
        suffix = INPUT_SUFFIX if where == "input" else ""
        out.extend(h + suffix for h in hits if h + suffix not in out)
    return out


@contextlib.contextmanager
def capture(net: nn.Module, layers: Sequence[Layer], store: dict[str, torch.Tensor],
            repeats: bool = False) -> Iterator[dict[str, torch.Tensor]]:
    """Record each layer's tensor into ``store[label]`` during forwards inside the block.

    A module that runs more than once per forward is an error (the feature would be
    ambiguous), unless ``repeats``: then its n-th call goes to ``store[f"{label}#{n}"]``.
    The hooks are removed on exit, also after an exception.
    """
    modules = dict(net.named_modules())
    handles = []

    def put(label: str, t: torch.Tensor) -> None:
        if label in store:
            if not repeats:
                raise ValueError(f"layer {label!r} ran more than once in one forward")
            n = 2
            while f"{label}#{n}" in store:
                n += 1
            label = f"{label}#{n}"
        store[label] = t

    try:
        for layer in layers:
            mod = modules[layer.module]
            if layer.where == "input":
                def pre(_m, args, label=layer.label):
                    put(label, args[0])
                handles.append(mod.register_forward_pre_hook(pre))
            else:
                def post(_m, _args, out, label=layer.label):
                    put(label, out)
                handles.append(mod.register_forward_hook(post))
        yield store
    finally:
        for h in handles:
            h.remove()


@contextlib.contextmanager
def perturb(net: nn.Module, deltas: Mapping[str, torch.Tensor],
            inputs: dict[str, torch.Tensor]) -> Iterator[None]:
    """Add ``deltas[name]`` to the output of module ``name`` and record its input.

    Used for per-layer output gradients: d f / d delta = d f / d output. A module that
    runs twice, or whose output shape differs from its delta, raises ``Unstructured``.
    """
    modules = dict(net.named_modules())
    handles = []
    try:
        for name, delta in deltas.items():
            def hook(_m, args, out, name=name, delta=delta):
                if name in inputs or out.shape != delta.shape:
                    raise Unstructured(name)
                inputs[name] = args[0]
                return out + delta
            handles.append(modules[name].register_forward_hook(hook))
        yield
    finally:
        for h in handles:
            h.remove()


class Unstructured(Exception):
    """A network that does not fit the layerwise structured form (internal signal)."""

"""Coordinate check (microsoft/mup's idea): the scale of every layer's activations at init and
of their change after a few optimizer steps, at each width and seed.

A *layer* is a module that owns parameters (its output: a preactivation, a norm's output, an
embedding lookup) or the logits fed to a softmax / ``scaled_dot_product_attention`` call inside
a module (label ``<module>:logits``). Scales are RMS per coordinate: sqrt(mean(a^2)) over every
entry (example, position, feature); the change is the RMS of a_t - a_0 on the same probe inputs.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from widthscan.check.data import Data
from widthscan.parametrization import parametrize
from widthscan.probes.hooks import Layer, capture
from widthscan.stack.losses import member_losses

LOGITS = ":logits"
_CHANNELS_FIRST = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.GroupNorm, nn.BatchNorm1d, nn.BatchNorm2d,
                   nn.BatchNorm3d)
_SOFTMAX = {torch.softmax, F.softmax, torch.Tensor.softmax}


@dataclass(frozen=True)
class Activation:
    """One layer's activations in one forward: RMS per coordinate, feature count (last dim,
    or dim 1 of a conv map) and the values themselves (kept to measure their change)."""

    rms: float
    features: int
    values: torch.Tensor


@dataclass(frozen=True)
class CoordRow:
    """One (width, seed, layer): ``init`` RMS at init, ``change`` RMS of the change after
    ``steps`` updates, ``features`` the layer's output feature count, ``order`` its position
    in the forward pass, ``readout`` whether its output is the model's output."""

    width: int
    seed: int
    layer: str
    init: float
    change: float
    features: int
    order: int
    readout: bool


def _first_tensor(out) -> torch.Tensor | None:
    if torch.is_tensor(out):
        return out
    if isinstance(out, (tuple, list)):
        return next((t for t in out if torch.is_tensor(t)), None)
    return None


def _rms(t: torch.Tensor) -> float:
    t = t.detach().double()
    finite = torch.isfinite(t)
    n = int(finite.sum())
    return math.sqrt(float(torch.where(finite, t, 0.0).pow(2).sum()) / n) if n else float("nan")


def _features(t: torch.Tensor, conv: bool) -> int:
    return int(t.shape[1]) if conv and t.ndim > 2 else int(t.shape[-1])


class _Logits(TorchFunctionMode):
    """Records the logits of softmax / scaled_dot_product_attention calls, labelled by the
    innermost running module (``stack``)."""

    def __init__(self, stack: list[str], store: dict[str, torch.Tensor]):
        super().__init__()
        self.stack, self.store = stack, store

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        logits = None
        if func in _SOFTMAX:
            logits = args[0]
        elif func is F.scaled_dot_product_attention:
            q, k = args[0], args[1]
            scale = kwargs.get("scale") or 1.0 / math.sqrt(q.shape[-1])
            logits = (q @ k.transpose(-2, -1)) * scale
        if logits is not None and self.stack:
            label = self.stack[-1] + LOGITS
            n = sum(1 for key in self.store if key == label or key.startswith(label + "#"))
            self.store[label if n == 0 else f"{label}#{n + 1}"] = logits
        return func(*args, **kwargs)


@contextlib.contextmanager
def _module_stack(net: nn.Module, stack: list[str]) -> Iterator[None]:
    def leave(_m, _args, _out) -> None:
        stack.pop()

    handles = []
    for name, mod in net.named_modules():
        label = name or "(model)"
        handles.append(mod.register_forward_pre_hook(lambda m, a, n=label: stack.append(n)))
        handles.append(mod.register_forward_hook(leave))
    try:
        yield
    finally:
        for h in handles:
            h.remove()


class _Copies(dict):
    """A capture store that keeps detached copies (a later in-place op, e.g.
    ``ReLU(inplace=True)``, must not change a recorded output)."""

    def __setitem__(self, key: str, value) -> None:
        t = _first_tensor(value)
        super().__setitem__(key, None if t is None else t.detach().clone())


def layer_modules(net: nn.Module) -> list[str]:
    """Names of modules that own parameters directly (the root is ``"(model)"``)."""
    return [name or "(model)" for name, mod in net.named_modules()
            if any(True for _ in mod.parameters(recurse=False))]


def activations(net: nn.Module, call: Callable[[torch.Tensor], object], x: torch.Tensor
                ) -> tuple[dict[str, Activation], torch.Tensor]:
    """Every layer of ``net``'s activations (forward order) and the output of ``call(x)``, a
    forward of ``net`` (e.g. a ``ScaledModule`` around it)."""
    names = layer_modules(net)
    modules = {name or "(model)": mod for name, mod in net.named_modules()}
    layers = [Layer(n, n) for n in names if n != "(model)"]
    store: dict[str, torch.Tensor] = _Copies()
    stack: list[str] = []
    with torch.no_grad(), capture(net, layers, store, repeats=True), \
            _module_stack(net, stack), _Logits(stack, store):
        out = call(x)
    out_t = _first_tensor(out)
    if "(model)" in names and not any(t is not None and t.shape == out_t.shape
                                      and torch.equal(t, out_t) for t in store.values()):
        store["(model)"] = out_t
    result = {}
    for label, t in store.items():
        if t is None or not t.is_floating_point():
            continue
        mod = modules.get(label.split(LOGITS)[0].split("#")[0])
        conv = isinstance(mod, _CHANNELS_FIRST)
        result[label] = Activation(_rms(t), _features(t, conv), t)
    return result, out_t


def readout_label(acts: Mapping[str, Activation], out: torch.Tensor) -> str | None:
    """The layer whose values are the model's output, else the last layer of the output's
    shape (e.g. before a parameter-free log_softmax), else None."""
    shaped = [label for label, a in acts.items()
              if LOGITS not in label and a.values.shape == out.shape]
    for label in shaped:
        if torch.equal(acts[label].values, out):
            return label
    return shaped[-1] if shaped else None


def _optimizer(name: str, groups: list[dict], lr: float) -> torch.optim.Optimizer:
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr)
    cls = torch.optim.Adam if name == "adam" else torch.optim.AdamW
    return cls(groups, lr=lr)


def coord_rows(
    factory: Callable[[int], nn.Module],
    width: int,
    base_width: int,
    seed: int,
    data: Data,
    param: str,
    optimizer: str,
    lr: float,
    steps: int,
    roles: Mapping[str, str] | None = None,
) -> list[CoordRow]:
    """One row per layer of ``factory(width)``: the RMS at init and the RMS of the change
    after ``steps`` updates on ``data``."""
    p = parametrize(factory, width, base_width, param, optimizer, seed=seed, roles=roles)
    x_probe = data.probe()
    before, out = activations(p.net, p.module, x_probe)
    readout = readout_label(before, out)
    opt = _optimizer(optimizer, p.param_groups(lr, eps=None if optimizer == "sgd" else 1e-8),
                     lr)
    for step in range(steps):
        x, y = data.batch(step)
        opt.zero_grad(set_to_none=True)
        loss = member_losses(p.module(x).unsqueeze(0), y, data.loss)[0]
        loss.backward()
        opt.step()
    after, _ = activations(p.net, p.module, x_probe)
    rows = []
    for order, (label, a) in enumerate(before.items()):
        b = after.get(label)
        change = _rms(b.values - a.values) if b is not None else float("nan")
        rows.append(CoordRow(width, seed, label, a.rms, change, a.features, order,
                             label == readout))
    return rows


def coord_check(
    factory: Callable[[int], nn.Module],
    widths: Sequence[int],
    base_width: int,
    seeds: Sequence[int],
    data: Data,
    param: str,
    optimizer: str,
    lr: float,
    steps: int,
    roles: Mapping[str, str] | None = None,
) -> list[CoordRow]:
    """``coord_rows`` at every width and seed (all see the same batches and probe inputs)."""
    rows: list[CoordRow] = []
    for width in widths:
        for seed in seeds:
            rows += coord_rows(factory, width, base_width, seed, data, param, optimizer, lr,
                               steps, roles)
    return rows

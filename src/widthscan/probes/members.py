"""A ``Parametrized`` or an ``Ensemble`` seen the same way: K members with stacked raw parameters.

A ``Parametrized`` is a stack of K = 1 whose public probe results drop the member axis;
an ``Ensemble`` keeps it. Everything else in ``widthscan.probes`` works on ``Members``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, vmap

from widthscan.measurement import Measurement
from widthscan.parametrization import Parametrized, scale_params


@dataclass(frozen=True)
class Members:
    """K members of one network: raw parameters stacked on a leading axis.

    net: a module to call only through ``call`` (functional, may live on the meta device).
    params: name -> raw tensor (K, ...), detached (views of the model's own tensors).
    buffers: name -> shared tensor. multipliers: name -> forward multiplier.
    loss: "mse" | "ce" | None. stacked: False for a Parametrized (results drop the K axis).
    lr_scales: name -> the parameterization's learning-rate scale (optimizer's lr = lr *
    scale), for the optimizer ``optimizer`` ("sgd", "adam", "adamw"); None if unknown.
    torch_optimizer: the torch optimizer that trains these stacked parameters (an
    Ensemble's; its Adam state gives Adam's preconditioner), else None.
    """

    net: nn.Module
    params: dict[str, torch.Tensor]
    buffers: dict[str, torch.Tensor]
    multipliers: dict[str, float]
    loss: str | None
    stacked: bool
    precision: str = "float32"
    stacked_apply: Callable[[Mapping[str, torch.Tensor], torch.Tensor], torch.Tensor] | None = None
    lr_scales: dict[str, float] | None = None
    optimizer: str | None = None
    torch_optimizer: torch.optim.Optimizer | None = None

    @property
    def k(self) -> int:
        return next(iter(self.params.values())).shape[0]

    @property
    def dtype(self) -> torch.dtype:
        return next(iter(self.params.values())).dtype

    @property
    def device(self) -> torch.device:
        return next(iter(self.params.values())).device

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` on the members' device; floating inputs in their dtype."""
        x = torch.as_tensor(x)
        if x.is_floating_point() and x.dtype != self.dtype:
            x = x.to(self.dtype)
        return x.to(self.device)

    def autocast(self):
        """The autocast context the members train under (bfloat16 precision) or a no-op."""
        if self.precision != "bfloat16":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16)

    def effective(self, params: Mapping[str, torch.Tensor] | None = None
                  ) -> dict[str, torch.Tensor]:
        """Effective parameters ``multiplier * raw`` (K, ...)."""
        return scale_params(self.params if params is None else params, self.multipliers)

    def call(self, eff: Mapping[str, torch.Tensor], x: torch.Tensor) -> Any:
        """One member's forward with effective parameters ``eff`` (no member axis)."""
        return functional_call(self.net, {**self.buffers, **eff}, (x,))

    def map(self, fn: Callable[..., Any], eff: Mapping[str, torch.Tensor], *args: Any) -> Any:
        """``fn(member_eff, *args)`` for every member, outputs stacked on a leading K axis.

        Uses ``vmap`` over members (``args`` are shared); a single member is called
        directly. ``fn`` must return tensors (or pytrees of them), never stash them.
        """
        if self.k == 1:
            return _unsqueeze(fn({n: p[0] for n, p in eff.items()}, *args))
        return vmap(fn, in_dims=(0, *([None] * len(args))), randomness="error")(dict(eff), *args)

    def apply(self, params: Mapping[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        """Outputs (K, batch, ...) of raw stacked ``params`` on a shared ``x``."""
        if self.stacked_apply is not None:
            return self.stacked_apply(params, x)
        return self.map(self.call, self.effective(params), x)

    def flat_size(self) -> int:
        """Number of parameters of one member."""
        return sum(p[0].numel() for p in self.params.values())

    def measurement(self, dims: tuple[str, ...], values: torch.Tensor | np.ndarray,
               coords: Mapping[str, Any] | None = None) -> Measurement:
        """A Measurement of ``values`` (K, ...) as numpy, member axis kept (see ``public``)."""
        if torch.is_tensor(values):
            values = values.detach()
            if values.dtype == torch.bfloat16:
                values = values.float()
            values = values.cpu().numpy()
        clean = {d: np.asarray(c) for d, c in (coords or {}).items()}
        return Measurement(tuple(dims), np.asarray(values), clean or None)


def _unsqueeze(tree: Any) -> Any:
    """Add a leading axis of size 1 to every tensor in nested tuples, lists and dicts."""
    if torch.is_tensor(tree):
        return tree.unsqueeze(0)
    if isinstance(tree, dict):
        return {k: _unsqueeze(v) for k, v in tree.items()}
    if isinstance(tree, (tuple, list)):
        return type(tree)(_unsqueeze(v) for v in tree)
    return tree


def members(model: Any) -> Members:
    """View a ``Parametrized`` (K = 1, unstacked) or an ``Ensemble`` (K stacked) as Members."""
    if isinstance(model, Members):
        return model
    if isinstance(model, Parametrized):
        net = model.net
        return Members(
            net=net,
            params={n: p.detach().unsqueeze(0) for n, p in net.named_parameters()},
            buffers={n: b.detach() for n, b in net.named_buffers()},
            multipliers=model.multipliers,
            loss=None,
            stacked=False,
            lr_scales=model.lr_scale,
            optimizer=model.optimizer,
        )
    if all(hasattr(model, a) for a in ("params", "multipliers", "net", "apply", "buffers")):
        return Members(
            net=model.net,
            params={n: p.detach() for n, p in model.params.items()},
            buffers=dict(model.buffers),
            multipliers=dict(model.multipliers),
            loss=getattr(model, "loss", None),
            stacked=True,
            precision=getattr(model, "precision", "float32"),
            stacked_apply=model.apply,
            lr_scales=getattr(model, "lr_scale", None),
            optimizer=getattr(model, "optimizer_name", None),
            torch_optimizer=_torch_optimizer(model),
        )
    raise TypeError(
        f"probes take a ws.Parametrized or a ws.Ensemble, got {type(model).__name__}"
    )


def _torch_optimizer(model: Any) -> torch.optim.Optimizer | None:
    opt = getattr(model, "optimizer", None)
    return opt if isinstance(opt, torch.optim.Optimizer) else None


def public(m: Members, result: dict[str, Measurement]) -> dict[str, Measurement]:
    """Drop the member axis of every Measurement when ``m`` came from a Parametrized."""
    if m.stacked:
        return result
    return {name: meas._replace(values=meas.values[0]) for name, meas in result.items()}

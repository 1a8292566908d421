"""Batched backends: a forward over K stacked members for the networks a backend recognizes,
and what else it provides, declared rather than found by isinstance checks at the call site.

A backend's ``recognize(net, buffers)`` returns a plan (what its forward needs to know about
``net``) or None; ``forward(plan, net, params, buffers, multipliers, x, fused)`` returns the
outputs (K, batch, ...) of raw stacked ``params``; ``accepts(plan, x)`` says whether it takes
this input. ``provides`` names the extras: "backward" (a hand-written backward,
``widthscan.stack.mlp_backprop``), "hvp" (closed-form Hessian-vector products,
``widthscan.stack.mlp_hvp``, for a linear chain).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from widthscan.models import transformer_stacked
from widthscan.models.chain import chain_of, forward_stacked
from widthscan.parametrization import scale_params

Tensors = Mapping[str, torch.Tensor]


@dataclass(frozen=True)
class Backend:
    name: str
    recognize: Callable[[nn.Module, Tensors], Any]
    forward: Callable[[Any, nn.Module, Tensors, Tensors, Mapping[str, float], torch.Tensor, bool],
                      torch.Tensor]
    accepts: Callable[[Any, torch.Tensor], bool]
    provides: Callable[[Any, nn.Module], frozenset[str]]


BACKENDS: dict[str, Backend] = {}


def register(backend: Backend) -> Backend:
    """Add ``backend`` to the registry; earlier registrations are tried first."""
    BACKENDS[backend.name] = backend
    return backend


def find(net: nn.Module, buffers: Tensors) -> tuple[Backend, Any] | None:
    """The first registered backend that recognizes ``net``, with its plan; None if none."""
    for backend in BACKENDS.values():
        plan = backend.recognize(net, buffers)
        if plan is not None:
            return backend, plan
    return None


register(Backend(
    name="chain",
    recognize=lambda net, buffers: None if buffers else chain_of(net),
    forward=lambda plan, net, params, buffers, mult, x, fused: forward_stacked(
        plan, params, x, mult),
    accepts=lambda plan, x: plan.accepts(x),
    provides=lambda plan, net: frozenset({"backward", "hvp"}),
))

register(Backend(
    name="transformer",
    recognize=lambda net, buffers: True if transformer_stacked.supports(net) else None,
    forward=lambda plan, net, params, buffers, mult, x, fused: transformer_stacked.forward_stacked(
        net, scale_params(params, mult), buffers, x, fused),
    accepts=lambda plan, x: x.dim() == 2 and not x.is_floating_point(),
    provides=lambda plan, net: frozenset(),
))

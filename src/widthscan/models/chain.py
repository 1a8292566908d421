"""Linear chains: widthscan's ``MLP`` or an ``nn.Sequential`` of Linear layers with one
elementwise activation between them, run for K members at once with batched matmuls."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

ACTIVATIONS = {"relu": F.relu, "gelu": F.gelu, "tanh": torch.tanh, "silu": F.silu,
               "linear": lambda x: x}
_MODULES = {nn.ReLU: "relu", nn.Tanh: "tanh", nn.SiLU: "silu", nn.GELU: "gelu"}


@dataclass(frozen=True)
class Chain:
    """Layers (parameter-name prefixes, input layer first) with ``activation`` after every
    layer but the last. ``flatten``: inputs (batch, ...) are flattened to (batch, d_in);
    else they must already be (batch, d_in)."""

    layers: tuple[str, ...]
    activation: str
    flatten: bool = True

    def accepts(self, x: torch.Tensor) -> bool:
        return self.flatten or x.dim() == 2


def chain_of(net: nn.Module) -> Chain | None:
    """The chain ``net`` computes, or None: an ``MLP`` (not overriding its forwards), or an
    ``nn.Sequential`` of [Flatten(1, -1)], Linear, (activation, Linear)* with one activation
    type (ReLU, Tanh, SiLU, GELU without approximation)."""
    from widthscan.models.mlp import MLP

    if isinstance(net, MLP):
        if type(net).forward is not MLP.forward or (
                type(net).forward_stacked is not MLP.forward_stacked):
            return None
        return Chain(tuple(name for name, _ in net.layers()), net.activation)
    if type(net) is not nn.Sequential:
        return None
    items = list(net.named_children())
    flatten = bool(items) and type(items[0][1]) is nn.Flatten
    if flatten:
        if (items[0][1].start_dim, items[0][1].end_dim) != (1, -1):
            return None
        items = items[1:]
    linears, acts = items[0::2], items[1::2]
    if not linears or len(linears) != len(acts) + 1:
        return None
    if any(type(m) is not nn.Linear for _, m in linears):
        return None
    kinds = {_MODULES.get(type(m)) for _, m in acts}
    if None in kinds or len(kinds) > 1:
        return None
    if any(type(m) is nn.GELU and m.approximate != "none" for _, m in acts):
        return None
    if any(a.out_features != b.in_features for (_, a), (_, b) in itertools.pairwise(linears)):
        return None
    return Chain(tuple(name for name, _ in linears), kinds.pop() if kinds else "linear", flatten)


def forward_stacked(chain: Chain, params: Mapping[str, torch.Tensor], x: torch.Tensor,
                    multipliers: Mapping[str, float] | None = None,
                    on_layer: Callable | None = None) -> torch.Tensor:
    """K members at once: params[name] has shape (K, ...); x (batch, ...) is shared by all
    members. Returns (K, batch, d_out).

    Activations are kept feature-major, (K, features, batch), so each layer is ``W @ h`` and
    the weight gradient ``g @ h^T`` comes out of one batched matmul already in the weight's
    (K, out, in) layout. The input layer, whose x is shared, is a single GEMM over all
    K * width units. The result is a (K, batch, d_out) view of the feature-major readout.

    ``multipliers`` (name -> float), if given, are the forward multipliers of raw ``params``,
    folded into the GEMMs (else ``params`` are the effective weights). ``on_layer(h, z, a)``,
    if given, sees every layer's input h ((d_in, batch) for the input layer, else
    (K, in, batch)), its preactivation z (K, out, batch) and its activation a (None for the
    last layer): ``widthscan.stack.mlp_backprop`` keeps what its backward needs this way.
    """
    act = ACTIVATIONS[chain.activation]
    h = x.flatten(1).t()
    last = chain.layers[-1]
    for name in chain.layers:
        w = params[f"{name}.weight"]
        b = params.get(f"{name}.bias")
        alpha = 1.0 if multipliers is None else multipliers[f"{name}.weight"]
        if b is not None and multipliers is not None and multipliers[f"{name}.bias"] != 1.0:
            b = b * multipliers[f"{name}.bias"]
        k, n_out, n_in = w.shape
        if h.dim() == 2:
            w2 = w.reshape(k * n_out, n_in)
            z = (torch.mm(w2, h) if b is None
                 else torch.addmm(b.reshape(-1, 1), w2, h, alpha=alpha)).view(k, n_out, -1)
        elif b is None:
            z = torch.bmm(w, h)
        else:
            z = torch.baddbmm(b.unsqueeze(-1), w, h, alpha=alpha)
        if b is None and alpha != 1.0:
            z.mul_(alpha)
        a = None if name == last else act(z)
        if on_layer is not None:
            on_layer(h, z, a)
        h = z if a is None else a
    return h.transpose(1, 2)

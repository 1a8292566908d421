"""Multilayer perceptron whose hidden size is ``width``."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import nn

from widthscan.models.chain import ACTIVATIONS, Chain, forward_stacked


class MLP(nn.Module):
    """``depth`` linear layers: input (d_in -> width), depth-2 hidden (width -> width),
    readout (width -> d_out). Inputs of any shape (batch, ...) are flattened.
    """

    def __init__(self, width: int, depth: int = 3, d_in: int = 10, d_out: int = 1,
                 activation: str = "relu", bias: bool = True):
        super().__init__()
        if depth < 2:
            raise ValueError(f"depth={depth}: an MLP needs depth >= 2 (input and readout)")
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation={activation!r}; allowed: {sorted(ACTIVATIONS)}")
        self.activation = activation
        self.input = nn.Linear(d_in, width, bias=bias)
        self.hidden = nn.ModuleList(nn.Linear(width, width, bias=bias) for _ in range(depth - 2))
        self.readout = nn.Linear(width, d_out, bias=bias)

    def layers(self) -> list[tuple[str, nn.Linear]]:
        named = [("input", self.input)]
        named += [(f"hidden.{i}", h) for i, h in enumerate(self.hidden)]
        return [*named, ("readout", self.readout)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        act = ACTIVATIONS[self.activation]
        h = x.flatten(1)
        for name, layer in self.layers():
            h = layer(h)
            if name != "readout":
                h = act(h)
        return h

    def forward_stacked(self, params: dict[str, torch.Tensor], x: torch.Tensor,
                        multipliers: Mapping[str, float] | None = None,
                        on_layer: Callable | None = None) -> torch.Tensor:
        """K members at once with batched matmuls: params[name] (K, ...), x (batch, ...)
        shared, output (K, batch, d_out); see ``widthscan.models.chain.forward_stacked``."""
        return forward_stacked(Chain(tuple(n for n, _ in self.layers()), self.activation),
                               params, x, multipliers, on_layer)


def mlp(width: int, depth: int = 3, d_in: int = 10, d_out: int = 1, activation: str = "relu",
        bias: bool = True) -> MLP:
    return MLP(width, depth, d_in, d_out, activation, bias)

"""Multilayer perceptron whose hidden size is ``width``."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
import torch.nn.functional as F
from torch import nn

ACTIVATIONS = {"relu": F.relu, "gelu": F.gelu, "tanh": torch.tanh, "silu": F.silu,
               "linear": lambda x: x}


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
        """K members at once with batched matmuls: params[name] has shape (K, ...);
        x is (batch, ...) shared by all members. Returns (K, batch, d_out).

        Activations are kept feature-major, (K, features, batch), so each layer is
        ``W @ h`` and autograd's weight gradient ``g @ h^T`` comes out of one batched
        matmul already in the weight's (K, out, in) layout (``h @ W^T`` would give it
        transposed, and a transposing copy per step). The input layer, whose x is
        shared, is a single GEMM over all K * width units. The result is a
        (K, batch, d_out) view of the feature-major readout.

        ``multipliers`` (name -> float), if given, are the forward multipliers of raw
        ``params``, folded into the GEMMs (else ``params`` are the effective weights).
        ``on_layer(h, z, a)``, if given, sees every layer's input h ((d_in, batch) for the
        input layer, else (K, in, batch)), its preactivation z (K, out, batch) and its
        activation a (None for the readout): ``widthscan.train.mlp_backprop`` keeps what its
        hand-written backward needs this way.
        """
        act = ACTIVATIONS[self.activation]
        h = x.flatten(1).t()
        for name, _ in self.layers():
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
            a = None if name == "readout" else act(z)
            if on_layer is not None:
                on_layer(h, z, a)
            h = z if a is None else a
        return h.transpose(1, 2)


def mlp(width: int, depth: int = 3, d_in: int = 10, d_out: int = 1, activation: str = "relu",
        bias: bool = True) -> MLP:
    return MLP(width, depth, d_in, d_out, activation, bias)

"""What one example costs a probe, measured on a meta-device copy of the network.

A forward (and, for the Hessian, a backward with ``create_graph``) on one example runs on
the meta device, nothing allocated: the bytes of the tensors autograd saves (parameters
excluded) are the per-example activation memory the probes' chunk planners work with, the
same at preflight (before training) and at run time. The same pass finds the layers the
structured eNTK can take: Linear and Embedding modules that run once per forward on
(1, ..., fan_in) inputs.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.autograd.graph import saved_tensors_hooks

from widthscan.stack.losses import member_losses


@dataclass(frozen=True)
class Layer:
    """A structured eNTK layer: ``kind`` "linear" | "embedding", its ``positions`` per
    example (product of the dims between batch and features), ``fan_in`` (vocabulary size
    for an embedding), ``fan_out``, its parameter names and its output's shape on one
    example (batch axis of size 1 included)."""

    name: str
    kind: str
    positions: int
    fan_in: int
    fan_out: int
    params: tuple[str, ...]
    out_shape: tuple[int, ...]


@dataclass(frozen=True)
class Footprint:
    """Sizes of one member on one example (bytes in the network's dtype).

    n_params: parameters per member; activations: bytes autograd saves in a forward (the
    activation memory per example); hessian: bytes saved by a forward and a backward with
    ``create_graph`` per example (the graph a Hessian-vector product keeps), hessian_fixed
    its part that does not grow with the batch; output_shape: one example's
    output without the batch axis; layers: the structured eNTK layers; itemsize: bytes
    per number.
    """

    n_params: int
    activations: int
    hessian: int
    hessian_fixed: int
    output_shape: tuple[int, ...]
    itemsize: int
    layers: dict[str, Layer] = field(default_factory=dict)

    def rest(self, structured: bool = True) -> int:
        """Parameters outside the structured layers (all of them when not ``structured``)."""
        if not structured:
            return self.n_params
        return self.n_params - sum(self.layer_params(la) for la in self.layers.values())

    @staticmethod
    def layer_params(layer: Layer) -> int:
        bias = layer.fan_out if len(layer.params) == 2 else 0
        return layer.fan_in * layer.fan_out + bias


def meta_copy(net: nn.Module, dtype: torch.dtype) -> nn.Module:
    """A copy of ``net`` on the meta device in ``dtype`` (no memory)."""
    return _meta_deepcopy(net).to(dtype=dtype)


def _meta_deepcopy(net: nn.Module) -> nn.Module:
    """Deep copy without copying tensor data: every parameter and buffer is replaced by a
    meta tensor of its shape in the copy."""
    memo = {}
    for t in [*net.parameters(), *net.buffers()]:
        meta = torch.empty_like(t, device="meta")
        memo[id(t)] = nn.Parameter(meta, t.requires_grad) if isinstance(t, nn.Parameter) \
            else meta
    return copy.deepcopy(net, memo)


def _structured_layers(net: nn.Module, calls: dict[str, list]) -> dict[str, Layer]:
    modules = dict(net.named_modules())
    out = {}
    for name, seen in calls.items():
        if len(seen) != 1:
            continue
        mod = modules[name]
        (inp, outp) = seen[0]
        own = tuple(n for n, _ in mod.named_parameters(recurse=False))
        full = tuple(f"{name}.{n}" if name else n for n in own)
        if outp.ndim < 2 or outp.shape[0] != 1 or inp.shape[0] != 1:
            continue
        positions = int(outp[0].numel() // outp.shape[-1])
        if isinstance(mod, nn.Linear) and inp.ndim == outp.ndim and own in (
                ("weight",), ("weight", "bias")):
            out[name] = Layer(name, "linear", positions, mod.in_features, mod.out_features,
                              full, tuple(outp.shape))
        elif isinstance(mod, nn.Embedding) and own == ("weight",) and mod.max_norm is None \
                and inp.ndim == outp.ndim - 1:
            out[name] = Layer(name, "embedding", positions, mod.num_embeddings,
                              mod.embedding_dim, full, tuple(outp.shape))
    return out


def footprint(net: nn.Module, x1: torch.Tensor, dtype: torch.dtype, loss: str | None = None
              ) -> Footprint:
    """Sizes of ``net`` on one example ``x1`` (1, ...) (see ``Footprint``); ``loss`` ("mse" |
    "ce") adds the Hessian graph, else ``hessian`` is 0. Per-example bytes are the
    difference between passes on two examples and on one; what does not grow with the
    batch (parameter-sized tensors of the Hessian graph) is ``hessian_fixed``."""
    twin = meta_copy(net, dtype)
    x1 = x1[:1]
    one = _measure(twin, x1, dtype, loss)
    two = _measure(twin, torch.cat([x1, x1]), dtype, loss)
    act = two["activations"] - one["activations"]
    hess = two["hessian"] - one["hessian"]
    return Footprint(
        n_params=sum(p.numel() for p in twin.parameters()), activations=act, hessian=hess,
        hessian_fixed=max(one["hessian"] - hess, 0), output_shape=one["output_shape"],
        itemsize=torch.empty((), dtype=dtype).element_size(),
        layers=_structured_layers(twin, one["calls"]))


def _measure(twin: nn.Module, x: torch.Tensor, dtype: torch.dtype, loss: str | None) -> dict:
    params = list(twin.parameters())
    leaves = {id(p) for p in params}
    x = x.to("meta", dtype=dtype if x.is_floating_point() else x.dtype)
    saved = [0]

    def pack(t: torch.Tensor) -> torch.Tensor:
        base = t._base if t._base is not None else t
        if id(t) not in leaves and id(base) not in leaves:
            saved[0] += t.numel() * t.element_size()
        return t

    calls: dict[str, list] = {n: [] for n, m in twin.named_modules()
                              if isinstance(m, nn.Linear | nn.Embedding)}
    handles = []
    for name, mod in twin.named_modules():
        if name in calls:
            def hook(_m, args, out, name=name):
                calls[name].append((args[0], out))
            handles.append(mod.register_forward_hook(hook))
    try:
        with saved_tensors_hooks(pack, lambda t: t):
            out = twin(x)
            activations = saved[0]
            hessian = _hessian_bytes(out, params, loss, saved) if loss is not None else 0
    finally:
        for h in handles:
            h.remove()
    return {"activations": activations, "hessian": hessian, "calls": calls,
            "output_shape": tuple(out.shape[1:])}


def _hessian_bytes(out: torch.Tensor, params: list[torch.Tensor], loss: str,
                   saved: list[int]) -> int:
    if loss == "ce":
        y = torch.zeros(out.shape[:-1], dtype=torch.long, device="meta")
    else:
        y = torch.zeros_like(out)
    value = member_losses(out.unsqueeze(0), y, loss).sum()
    live = [p for p in params if p.requires_grad]
    torch.autograd.grad(value, live, create_graph=True, allow_unused=True)
    return saved[0]

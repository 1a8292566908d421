"""Hand-written backward pass of a stacked linear chain (widthscan's ``MLP`` or an
``nn.Sequential`` of Linear layers and one activation; K members, feature-major activations).

Autograd's per-node bookkeeping and fresh gradient tensors cost more than the matmuls at
small widths, and at large widths every fresh (K, out, in) gradient is page-faulted in.
Here the forward keeps each layer's input, the backward applies the same aten kernels
autograd would (``threshold_backward``, ``tanh_backward``, ...), and weight and bias
gradients are written into persistent buffers. The per-member losses (MSE, or cross-entropy
with ``IGNORE_INDEX`` targets skipped, as ``member_losses``) come with their gradient in
closed form.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch

from widthscan.models.chain import Chain, chain_of, forward_stacked
from widthscan.stack.losses import IGNORE_INDEX, LOSSES

_SAVES_PREACTIVATION = {"gelu", "silu"}


@dataclass
class Saved:
    """What the backward needs: per layer the input h (d_in, batch) for the first layer,
    else (K, in, batch), and the activation's output (or preactivation for gelu/silu)."""

    inputs: list[torch.Tensor] = field(default_factory=list)
    acts: list[torch.Tensor] = field(default_factory=list)


def supports(net: torch.nn.Module) -> bool:
    """True for a linear chain (``widthscan.models.chain.chain_of``): our MLP (or a subclass
    that keeps its forwards) or a plain ``nn.Sequential`` of Linear layers."""
    return chain_of(net) is not None


def as_chain(net: torch.nn.Module | Chain) -> Chain:
    """``net``'s chain (``chain_of``), or ``net`` itself when it already is a plan."""
    return net if isinstance(net, Chain) else chain_of(net)


def forward(net: torch.nn.Module | Chain, params: Mapping[str, torch.Tensor],
            multipliers: Mapping[str, float], x: torch.Tensor) -> tuple[torch.Tensor, Saved]:
    """Outputs (K, d_out, batch), feature-major, of raw stacked ``params`` on a shared x
    (batch, ...), and what ``backward`` needs (the chain's stacked forward with the
    multipliers folded into its GEMMs)."""
    chain = as_chain(net)
    keep_pre = chain.activation in _SAVES_PREACTIVATION
    saved = Saved()

    def keep(h: torch.Tensor, z: torch.Tensor, a: torch.Tensor | None) -> None:
        saved.inputs.append(h)
        if a is not None:
            saved.acts.append(z if keep_pre else a)

    out = forward_stacked(chain, params, x, multipliers, keep)
    return out.transpose(1, 2), saved


def loss_and_grad(out: torch.Tensor, y: torch.Tensor, loss: str
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-member mean losses (K,) of feature-major outputs ``out`` (K, d_out, batch), and
    the gradient of their sum with respect to ``out``. ``mse``: y (batch, d_out);
    ``ce``: y (batch,) class indices."""
    k, c, n = out.shape
    if loss == "mse":
        diff = out - y.reshape(n, c).t().to(out.dtype)
        losses = diff.square().sum((1, 2)).div_(c * n)
        grad = diff.mul_(2.0 / (c * n))
    elif loss == "ce":
        y = y.reshape(n)
        valid = y != IGNORE_INDEX
        target = torch.where(valid, y, 0).view(1, 1, n).expand(k, 1, n)
        logp = torch.log_softmax(out, 1)
        count = valid.sum().clamp_min(1).to(out.dtype)
        nll = -logp.gather(1, target).squeeze(1)
        losses = torch.where(valid, nll, 0.0).sum(1) / count
        grad = logp.exp_()
        grad.scatter_add_(1, target, torch.full_like(nll, -1.0).unsqueeze(1))
        grad.mul_((valid.to(out.dtype) / count).view(1, 1, n))
    else:
        raise ValueError(f"loss={loss!r}; allowed: {LOSSES}")
    return losses, grad


def _act_backward(activation: str, g: torch.Tensor, saved: torch.Tensor) -> torch.Tensor:
    if activation == "relu":
        return torch.ops.aten.threshold_backward(g, saved, 0)
    if activation == "tanh":
        return torch.ops.aten.tanh_backward(g, saved)
    if activation == "gelu":
        return torch.ops.aten.gelu_backward(g, saved)
    if activation == "silu":
        return torch.ops.aten.silu_backward(g, saved)
    return g


def backward(net: torch.nn.Module | Chain, params: Mapping[str, torch.Tensor],
             multipliers: Mapping[str, float], saved: Saved, g_out: torch.Tensor,
             grads: Mapping[str, torch.Tensor]) -> None:
    """Write dL/dparam (raw parameters) into ``grads`` (name -> buffer of the parameter's
    shape) given g_out = dL/d(output), (K, d_out, batch)."""
    chain = as_chain(net)
    names = chain.layers
    g = g_out
    for i in range(len(names) - 1, -1, -1):
        name = names[i]
        w, alpha = params[f"{name}.weight"], multipliers[f"{name}.weight"]
        h = saved.inputs[i]
        k, n_out, n_in = w.shape
        gb = grads.get(f"{name}.bias")
        if gb is not None:
            torch.sum(g, -1, out=gb)
            beta = multipliers[f"{name}.bias"]
            if beta != 1.0:
                gb.mul_(beta)
        gs = g if alpha == 1.0 else g * alpha
        gw = grads[f"{name}.weight"]
        if h.dim() == 2:
            torch.mm(gs.reshape(k * n_out, -1), h.t(), out=gw.view(k * n_out, n_in))
            return
        torch.bmm(gs, h.transpose(1, 2), out=gw)
        g = _act_backward(chain.activation, torch.bmm(w.transpose(1, 2), gs), saved.acts[i - 1])

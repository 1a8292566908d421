"""Closed-form Hessian-vector products of a stacked linear chain's loss (widthscan's ``MLP`` or
an ``nn.Sequential`` of Linear layers and one activation; Pearlmutter's R-operator).

With z_l = a_l W_l h_{l-1} + b_l c_l (forward multipliers a_l, b_l; h_0 = x), h_l = phi(z_l)
and the output gradient delta_L = dL/dz_L, the directional derivatives along a direction
V = (V_l, u_l) of the raw parameters are

    Rz_l = a_l (V_l h_{l-1} + W_l Rh_{l-1}) + b_l u_l,      Rh_l = phi'(z_l) Rz_l
    Rdelta_L = H_out Rz_L        (MSE: 2 / (C n); CE: (diag p - p p^T) / count per example)
    H V (W_l) = a_l (Rdelta_l h_{l-1}^T + delta_l Rh_{l-1}^T),   H V (c_l) = b_l sum Rdelta_l
    Rdelta_{l-1} = phi'(z) a_l (V_l^T delta_l + W_l^T Rdelta_l) + phi''(z) Rz_{l-1} e_{l-1}

where e_{l-1} = a_l W_l^T delta_l. The forward pass, delta and e are computed once per
batch; each product then costs six batched GEMMs per hidden layer (two for the input and
readout layers), about two training steps, with none of autograd's double-backward graph.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch

from widthscan.models.chain import ACTIVATIONS, Chain, forward_stacked
from widthscan.stack import mlp_backprop
from widthscan.stack.losses import IGNORE_INDEX

_NO_CURVATURE = {"relu", "linear"}


def supports(net: torch.nn.Module, dtype: torch.dtype) -> bool:
    """True for a linear chain (``mlp_backprop.supports``) in float32 or float64."""
    return mlp_backprop.supports(net) and dtype in (torch.float32, torch.float64)


def _derivatives(activation: str, z: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """phi'(z) and phi''(z) elementwise (None where phi'' is zero almost everywhere)."""
    with torch.enable_grad():
        zz = z.detach().requires_grad_(True)
        (d1,) = torch.autograd.grad(ACTIVATIONS[activation](zz).sum(), zz, create_graph=True)
        if activation in _NO_CURVATURE:
            return d1.detach(), None
        (d2,) = torch.autograd.grad(d1.sum(), zz)
    return d1.detach(), d2


def mlp_hvp(net: torch.nn.Module | Chain, params: Mapping[str, torch.Tensor],
            multipliers: Mapping[str, float], x: torch.Tensor, y: torch.Tensor, loss: str
            ) -> Callable[[torch.Tensor], torch.Tensor]:
    """A map (K, n) -> (K, n): stacked direction vectors (``params`` order, each member's raw
    parameters flattened and concatenated) to the Hessians of the members' mean losses
    (``member_losses``) on (x, y) times them. params: name -> (K, ...) raw tensors; x
    (batch, ...) shared; y as ``mlp_backprop.loss_and_grad`` takes it."""
    chain = mlp_backprop.as_chain(net)
    names = list(chain.layers)
    weights = [params[f"{name}.weight"] for name in names]
    alphas = [multipliers[f"{name}.weight"] for name in names]
    betas = [multipliers[f"{name}.bias"] if f"{name}.bias" in params else None
             for name in names]
    inputs: list[torch.Tensor] = []
    zs: list[torch.Tensor] = []

    def keep(h: torch.Tensor, z: torch.Tensor, a: torch.Tensor | None) -> None:
        inputs.append(h)
        zs.append(z)

    with torch.no_grad():
        out = forward_stacked(chain, params, x, multipliers, keep).transpose(1, 2)
        _, delta = mlp_backprop.loss_and_grad(out, y, loss)
        k, c, n = out.shape
        if loss == "ce":
            probs = torch.softmax(out, 1)
            valid = y.reshape(n) != IGNORE_INDEX
            weight = (valid.to(out.dtype) / valid.sum().clamp_min(1).to(out.dtype)).view(1, 1, n)
        derivs = [_derivatives(chain.activation, z) for z in zs[:-1]]
        deltas, errors = [delta], []
        for i in range(len(names) - 1, 0, -1):
            e = torch.bmm(weights[i].transpose(1, 2), deltas[0]).mul_(alphas[i])
            errors.insert(0, e)
            deltas.insert(0, derivs[i - 1][0] * e)
    order = list(params)
    sizes = [p[0].numel() for p in params.values()]

    def loss_hessian(rz: torch.Tensor) -> torch.Tensor:
        if loss == "mse":
            return rz * (2.0 / (c * n))
        pr = probs * rz
        return (pr - probs * pr.sum(1, keepdim=True)).mul_(weight)

    def hvp(v: torch.Tensor) -> torch.Tensor:
        parts = dict(zip(order, torch.split(v, sizes, dim=1)))
        vw = [parts[f"{name}.weight"].reshape(w.shape) for name, w in zip(names, weights)]
        rzs, rhs = [], []
        for i, (w, h) in enumerate(zip(weights, inputs)):
            if h.dim() == 2:
                rz = torch.mm(vw[i].reshape(-1, h.shape[0]), h).view(k, -1, n)
            else:
                rz = torch.bmm(vw[i], h).baddbmm_(w, rhs[-1])
            if alphas[i] != 1.0:
                rz.mul_(alphas[i])
            if betas[i] is not None:
                rz.add_(parts[f"{names[i]}.bias"].unsqueeze(-1), alpha=betas[i])
            rzs.append(rz)
            if i < len(names) - 1:
                rhs.append(derivs[i][0] * rz)
        result: dict[str, torch.Tensor] = {}
        rdelta = loss_hessian(rzs[-1])
        for i in range(len(names) - 1, -1, -1):
            w, h, name = weights[i], inputs[i], names[i]
            if betas[i] is not None:
                result[f"{name}.bias"] = rdelta.sum(-1).mul_(betas[i])
            if h.dim() == 2:
                gw = torch.mm(rdelta.reshape(-1, n), h.t()).view(w.shape)
            else:
                gw = torch.bmm(rdelta, h.transpose(1, 2))
                gw.baddbmm_(deltas[i], rhs[i - 1].transpose(1, 2))
            result[f"{name}.weight"] = gw.mul_(alphas[i]) if alphas[i] != 1.0 else gw
            if i == 0:
                break
            re = torch.bmm(vw[i].transpose(1, 2), deltas[i]).baddbmm_(w.transpose(1, 2), rdelta)
            if alphas[i] != 1.0:
                re.mul_(alphas[i])
            d1, d2 = derivs[i - 1]
            rdelta = re.mul_(d1)
            if d2 is not None:
                rdelta.addcmul_(d2 * rzs[i - 1], errors[i - 1])
        return torch.cat([result[name].reshape(k, -1) for name in order], 1)

    return hvp

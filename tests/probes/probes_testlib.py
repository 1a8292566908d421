"""Small models and data shared by the probe tests."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.func import jacrev

import widthscan as ws

SEEDS = [3, 5]


def mlp(width: int) -> nn.Module:
    return ws.models.mlp(width, depth=3, d_in=4, d_out=2)


def tanh_mlp(width: int) -> nn.Module:
    return ws.models.mlp(width, depth=3, d_in=3, d_out=2, activation="tanh")


def resnet(width: int) -> nn.Module:
    return ws.models.resnet18(width, n_classes=3, in_channels=1, blocks=(1, 1, 1, 1))


def transformer(width: int) -> nn.Module:
    return ws.models.transformer(width, vocab_size=11, seq_len=6, n_layers=2, n_heads=2)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def sphere(n: int, d: int, seed: int = 0) -> torch.Tensor:
    """n points on the sphere of radius sqrt(d), float64."""
    x = torch.randn(n, d, generator=gen(seed), dtype=torch.float64)
    return x / x.norm(dim=1, keepdim=True) * d**0.5


def flat_params(p: ws.parametrization.Parametrized) -> tuple[torch.Tensor, list, list]:
    named = list(p.net.named_parameters())
    flat = torch.cat([t.detach().reshape(-1) for _, t in named])
    return flat, [n for n, _ in named], [t.shape for _, t in named]


def unflatten(flat: torch.Tensor, names: list, shapes: list) -> dict[str, torch.Tensor]:
    out, i = {}, 0
    for n, s in zip(names, shapes):
        size = int(torch.tensor(s).prod()) if len(s) else 1
        out[n] = flat[i:i + size].reshape(s)
        i += size
    return out


def dense_fn(p: ws.parametrization.Parametrized, x: torch.Tensor):
    """flat raw parameters -> outputs of ``p`` (multipliers applied), for dense references."""
    _, names, shapes = flat_params(p)

    def fn(flat: torch.Tensor) -> torch.Tensor:
        raw = unflatten(flat, names, shapes)
        return ws.parametrization.scaled_call(p.net, raw, p.multipliers, (x,))

    return fn


def dense_entk(p: ws.parametrization.Parametrized, x: torch.Tensor, weighting: str = "lr",
               position: int | None = None) -> torch.Tensor:
    """(P, P, C, C) from the dense raw-parameter Jacobian (``torch.func.jacrev`` of the flat
    parameters), each parameter's column weighted by its lr scale (``weighting="lr"``) or
    not; ``position`` keeps the outputs at that sequence position."""
    flat, names, shapes = flat_params(p)
    fn = dense_fn(p, x)
    jac = jacrev(lambda v: fn(v) if position is None else fn(v)[:, position])(flat)
    jac = jac.reshape(x.shape[0], -1, flat.numel())
    scale = [p.lr_scale[n] if weighting == "lr" else 1.0 for n in names]
    d = torch.cat([torch.full((int(np.prod(s)),), v, dtype=flat.dtype)
                   for v, s in zip(scale, shapes)])
    return torch.einsum("acn,n,bdn->abcd", jac, d, jac)

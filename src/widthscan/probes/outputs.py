"""Probe-set loss, accuracy and logits.

Shapes: for a classifier or regressor the network maps x (P, ...) to (P, C); a
sequence model maps (P, S) to (P, S, V) and is scored at its predicted positions
(targets != -100). Results carry a leading member axis K for an Ensemble and none
for a Parametrized.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from widthscan.measurement import Measurement
from widthscan.probes.members import Members, members, public
from widthscan.stack.losses import IGNORE_INDEX, member_losses


@torch.no_grad()
def forward(m: Members, x: torch.Tensor, chunk: int | None = None) -> torch.Tensor:
    """Outputs (K, P, ...) on ``x`` (P, ...), in chunks of ``chunk`` examples."""
    x = m.prepare(x)
    step = x.shape[0] if not chunk else int(chunk)
    with m.autocast():
        parts = [m.apply(m.params, x[i:i + step]) for i in range(0, x.shape[0], step)]
    out = parts[0] if len(parts) == 1 else torch.cat(parts, 1)
    return out.float() if out.dtype == torch.bfloat16 else out


def _loss_name(m: Members, loss: str | None) -> str:
    name = loss or m.loss
    if name is None:
        raise ValueError("pass loss='mse' or 'ce': a Parametrized does not know its loss")
    return name


def measure_loss(m: Members, x: torch.Tensor, y: torch.Tensor, loss: str | None = None,
                 chunk: int | None = None, out: torch.Tensor | None = None
                 ) -> dict[str, Measurement]:
    """``probe_loss`` (K,) mean loss per member and ``probe_accuracy`` (K,) in [0, 1]
    (fraction of argmax hits over non-ignored targets; NaN for mse). ``out``: the
    outputs on x if already computed."""
    name = _loss_name(m, loss)
    out = forward(m, x, chunk) if out is None else out
    y = torch.as_tensor(y).to(out.device)
    if name == "mse" and y.is_floating_point():
        y = y.to(out.dtype)
    losses = member_losses(out, y, name)
    if name == "ce":
        valid = y != IGNORE_INDEX
        hits = (out.argmax(-1) == y.unsqueeze(0)) & valid
        acc = hits.flatten(1).sum(1).double() / valid.sum().clamp_min(1).double()
    else:
        acc = torch.full((m.k,), float("nan"), dtype=torch.float64)
    return {"probe_loss": m.measurement((), losses), "probe_accuracy": m.measurement((), acc)}


def measure_logits(m: Members, x: torch.Tensor, y: torch.Tensor | None = None,
                   n_full: int | None = 32, chunk: int | None = None,
                   out: torch.Tensor | None = None) -> dict[str, Measurement]:
    """Outputs on the probe set.

    (P, C) outputs (one prediction per example): ``logits`` (K, P, C), dims ("example",
    "output"), example coords 0..P-1. Sequence outputs (P, S, V), one prediction per
    token: the predicted positions are those with ``y != -100`` (all positions when ``y``
    is None), numbered by their flat index p * S + s (the "position" coordinate);
    ``target_logit`` (K, E), dims ("position",), holds the logit of the correct token at
    every predicted position (needs ``y``), and ``logits`` (K, E', V), dims ("position",
    "output"), the full vectors at the first E' = min(E, n_full) of them (all with
    ``n_full=None``). ``out``: the outputs on x if already computed.
    """
    out = forward(m, x, chunk) if out is None else out
    if out.ndim <= 3:
        out = out.reshape(m.k, out.shape[1], -1)
        return {"logits": m.measurement(("example", "output"), out,
                                   {"example": np.arange(out.shape[1])})}
    k, v = out.shape[0], out.shape[-1]
    flat = out.reshape(k, -1, v)
    if y is None:
        idx = torch.arange(flat.shape[1], device=out.device)
        target = None
    else:
        y = torch.as_tensor(y).to(out.device).reshape(-1)
        if y.numel() != flat.shape[1]:
            raise ValueError(f"targets with {y.numel()} positions for outputs {tuple(out.shape)}")
        idx = torch.nonzero(y != IGNORE_INDEX).flatten()
        target = y[idx]
    result: dict[str, Measurement] = {}
    labels = idx.cpu().numpy()
    if target is not None:
        picked = flat[:, idx].gather(-1, target.view(1, -1, 1).expand(k, -1, 1))[..., 0]
        result["target_logit"] = m.measurement(("position",), picked, {"position": labels})
    sub = idx if n_full is None else idx[:n_full]
    result["logits"] = m.measurement(("position", "output"), flat[:, sub],
                                     {"position": labels[: sub.numel()]})
    return result


def loss(model: Any, x: torch.Tensor, y: torch.Tensor, loss: str | None = None,
         chunk: int | None = None) -> dict[str, Measurement]:
    """Probe-set loss and accuracy of every member.

    Returns ``probe_loss`` and ``probe_accuracy``, dims (), values (K,) for an Ensemble
    and 0-d for a Parametrized. ``loss`` defaults to the ensemble's; a Parametrized
    needs it. Accuracy is NaN for mse.
    """
    m = members(model)
    return public(m, measure_loss(m, x, y, loss, chunk))


def logits(model: Any, x: torch.Tensor, y: torch.Tensor | None = None,
           n_full: int | None = 32, chunk: int | None = None) -> dict[str, Measurement]:
    """Outputs on a fixed probe set (see :func:`measure_logits` for sequence models).

    Returns ``logits`` (K, P, C) with dims ("example", "output") for an Ensemble,
    (P, C) for a Parametrized.
    """
    m = members(model)
    return public(m, measure_logits(m, x, y, n_full, chunk))

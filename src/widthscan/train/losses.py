"""Per-member losses of a stacked ensemble's outputs."""

from __future__ import annotations

import torch
import torch.nn.functional as F

LOSSES = ("mse", "ce")
IGNORE_INDEX = -100


def member_losses(out: torch.Tensor, y: torch.Tensor, loss: str) -> torch.Tensor:
    """Mean loss of each member over the batch, shape (K,).

    out: (K, batch, ...). ``mse``: y has out's shape without K; the mean squared
    error over batch and output elements (``F.mse_loss``). ``ce``: out is
    (K, batch, [seq,] classes), y holds class indices (batch, [seq]); positions
    with y == -100 are ignored (masked language modelling).
    """
    k = out.shape[0]
    if loss == "mse":
        if y.shape != out.shape[1:]:
            y = y.reshape(out.shape[1:])
        return (out - y).pow(2).flatten(1).mean(1)
    if loss == "ce":
        c = out.shape[-1]
        logits = out.reshape(k, -1, c).transpose(1, 2)
        target = y.reshape(1, -1).expand(k, -1)
        nll = F.cross_entropy(logits.float() if logits.dtype == torch.bfloat16 else logits,
                              target, reduction="none", ignore_index=IGNORE_INDEX)
        valid = (target != IGNORE_INDEX).to(nll.dtype)
        return (nll * valid).sum(1) / valid.sum(1).clamp_min(1.0)
    raise ValueError(f"loss={loss!r}; allowed: {LOSSES}")

"""Per-member losses of a stacked ensemble's outputs."""

from __future__ import annotations

import torch

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
        logits = out.reshape(k, -1, out.shape[-1])
        if logits.dtype == torch.bfloat16:
            logits = logits.float()
        target = y.reshape(1, -1, 1)
        valid = target != IGNORE_INDEX
        logp = torch.log_softmax(logits, -1)
        nll = -logp.gather(2, torch.where(valid, target, 0).expand(k, -1, 1))
        nll = torch.where(valid, nll, 0.0).squeeze(2)
        return nll.sum(1) / valid.reshape(1, -1).sum(1).clamp_min(1).to(nll.dtype)
    raise ValueError(f"loss={loss!r}; allowed: {LOSSES}")

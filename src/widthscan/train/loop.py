"""The step loop: batches addressed by step, probes on a schedule, periodic checkpoints.

It knows no file formats: logging, probe results and checkpoints go to callbacks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from widthscan.train.ensemble import Ensemble

Batch = tuple[torch.Tensor, torch.Tensor]


@dataclass
class LoopHooks:
    """Callbacks of one training run; any may be None.

    on_losses(step, losses (K,)): losses on the batch of ``step``, before its update.
    probes_due(step) -> bool and on_probe(step): probes at the state after ``step`` updates.
    on_checkpoint(step): after ``step`` updates (every ``checkpoint_every`` and at the end).
    """

    on_losses: Callable[[int, torch.Tensor], None] | None = None
    probes_due: Callable[[int], bool] | None = None
    on_probe: Callable[[int], None] | None = None
    on_checkpoint: Callable[[int], None] | None = None
    checkpoint_every: int | None = None


def train_loop(ens: Ensemble, batch: Callable[[int], Batch], steps: int,
               hooks: LoopHooks | None = None) -> str:
    """Train ``ens`` from its current ``step_count`` up to ``steps`` updates.

    Returns "done", or "diverged" when every member diverged (training stops there).
    Probe step t sees the parameters after t updates, so t ranges over 0..steps.
    """
    hooks = hooks or LoopHooks()

    def probe(t: int) -> None:
        if hooks.on_probe and hooks.probes_due and hooks.probes_due(t):
            hooks.on_probe(t)

    state = "done"
    for t in range(ens.step_count, steps):
        probe(t)
        x, y = batch(t)
        losses = ens.step(x, y)
        if hooks.on_losses:
            hooks.on_losses(t, losses)
        done = t + 1
        if all(d is not None for d in ens.diverged_at):
            state = "diverged"
            break
        every = hooks.checkpoint_every
        if hooks.on_checkpoint and every and done % every == 0 and done < steps:
            hooks.on_checkpoint(done)
    if state == "done":
        ens.check_parameters()
        probe(steps)
    if hooks.on_checkpoint:
        hooks.on_checkpoint(ens.step_count)
    return state

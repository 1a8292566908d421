"""The step loop: batches addressed by step, probes on a schedule, periodic checkpoints.

It knows no file formats: logging, probe results and checkpoints go to callbacks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from widthscan.train.ensemble import Ensemble
from widthscan.train.prefetch import Prefetcher

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
               hooks: LoopHooks | None = None, prefetch: int | None = None) -> str:
    """Train ``ens`` from its current ``step_count`` up to ``steps`` updates.

    ``batch(t)`` must be a pure function of t: with ``prefetch`` > 0 a background thread
    makes the batches of the next ``prefetch`` steps while a step runs (0: in this thread).
    None: 2 on CUDA, where the step runs asynchronously; 0 on the CPU, where the thread's
    Python work contends with the step's for the interpreter lock (a width-32 MLP step took
    1.4-3x longer with it, `benchmarks/tasks.py` has the loop-level shares).
    Returns "done", or "diverged" when every member diverged (training stops there).
    Probe step t sees the parameters after t updates, so t ranges over 0..steps.
    """
    hooks = hooks or LoopHooks()
    if prefetch is None:
        prefetch = 2 if ens.device.type == "cuda" else 0
    if prefetch and ens.step_count < steps:
        with Prefetcher(batch, ens.step_count, steps, prefetch) as ahead:
            return _loop(ens, ahead, steps, hooks)
    return _loop(ens, batch, steps, hooks)


def _loop(ens: Ensemble, batch: Callable[[int], Batch], steps: int, hooks: LoopHooks) -> str:

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

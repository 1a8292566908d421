"""Learning-rate schedules as pure functions of the step."""

from __future__ import annotations

import math
from collections.abc import Callable

SCHEDULES = ("constant", "cosine")


def make_schedule(kind: str = "constant", total_steps: int | None = None, warmup_steps: int = 0,
                  final_factor: float = 0.0) -> Callable[[int], float]:
    """A function step -> factor on the learning rate.

    ``constant``: 1. ``cosine``: decays from 1 to ``final_factor`` over ``total_steps``.
    ``warmup_steps`` > 0 prepends a linear ramp from 1/warmup_steps to 1.
    """
    if kind not in SCHEDULES:
        raise ValueError(f"schedule={kind!r}; allowed: {SCHEDULES}")
    if kind == "cosine" and not total_steps:
        raise ValueError("schedule='cosine' needs total_steps > 0")
    if warmup_steps < 0:
        raise ValueError(f"warmup_steps={warmup_steps}; must be >= 0")

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        if kind == "constant":
            return 1.0
        t = min(max(step - warmup_steps, 0) / max(total_steps - warmup_steps, 1), 1.0)
        return final_factor + (1 - final_factor) * 0.5 * (1 + math.cos(math.pi * t))

    return factor

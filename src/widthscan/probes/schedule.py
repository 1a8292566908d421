"""When to probe: log-spaced steps (dense early) plus a linear grid, first and last always.

Step t means "after t optimizer updates": 0 is the initialization and ``total_steps``
the end of training. The steps depend only on their arguments, so every width of a
sweep is probed at the same steps.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np


def schedule_steps(total_steps: int, n_log: int = 20, n_linear: int = 10, first: int = 0,
                   every: int | None = None, steps: Iterable[int] | None = None) -> list[int]:
    """Sorted unique int steps in [first, total_steps].

    ``n_log`` points geometrically spaced from first + 1 to total_steps (rounded, so
    fewer survive early), ``n_linear`` points evenly spaced from first to total_steps,
    every ``every``-th step from first if given, explicit ``steps`` if given, and always
    ``first`` and ``total_steps``.
    """
    total, first = int(total_steps), int(first)
    if total < first:
        raise ValueError(f"total_steps={total} < first={first}")
    if n_log < 0 or n_linear < 0:
        raise ValueError(f"n_log={n_log} and n_linear={n_linear} must be >= 0")
    span = total - first
    out = {first, total}
    if span > 0 and n_log > 0:
        out.update((first + np.rint(np.geomspace(1, span, n_log))).astype(int).tolist())
    if n_linear > 0:
        out.update(np.rint(np.linspace(first, total, n_linear)).astype(int).tolist())
    if every:
        if every < 1:
            raise ValueError(f"every={every} must be >= 1")
        out.update(range(first, total + 1, int(every)))
    if steps is not None:
        out.update(int(s) for s in steps if first <= int(s) <= total)
    return sorted(out)

"""Chunk sizes that keep a probe's working memory under a budget.

A probe's budget (``memory_budget``, GiB) bounds the memory it allocates on top of the
model's own parameters: activations, gradients, Jacobian pieces and its result. Unset, it
is ``default_budget(device)``: 16 GiB on a GPU (at most 80% of the GPU's memory), half the
machine's RAM on the CPU. Each probe splits its work (examples, output units, members)
into the largest chunks whose estimated footprint fits ``HEADROOM`` (90%) of the budget
(the rest is left to the allocator's overheads), and raises ``MemoryBudgetError``, naming
the sizes, when even the smallest chunk does not.
"""

from __future__ import annotations

import os

import torch

GIB = 2**30
DEVICE_GIB = 16.0
DEVICE_FRACTION = 0.8
RAM_FRACTION = 0.5
HEADROOM = 0.9


class MemoryBudgetError(ValueError):
    """The smallest chunk a probe can work in does not fit the memory budget."""


def ram_bytes() -> int | None:
    """The machine's RAM (bytes), or None if unknown."""
    try:
        import psutil

        return int(psutil.virtual_memory().total)
    except ImportError:
        try:
            return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (ValueError, OSError, AttributeError):
            return None


def default_budget(device: torch.device | str) -> float:
    """GiB: 16 on a GPU (at most 80% of its memory); half the RAM on the CPU (16 if unknown)."""
    device = torch.device(device)
    if device.type == "cuda" and torch.cuda.is_available():
        total = torch.cuda.get_device_properties(device.index or 0).total_memory
        return min(DEVICE_GIB, DEVICE_FRACTION * total / GIB)
    if device.type in ("cpu", "meta"):
        ram = ram_bytes()
        return DEVICE_GIB if ram is None else RAM_FRACTION * ram / GIB
    return DEVICE_GIB


def resolve_budget(budget_gib: float | None, device: torch.device | str) -> float:
    """``budget_gib`` checked (a positive number), or the device's default."""
    if budget_gib is None:
        return default_budget(device)
    if isinstance(budget_gib, bool) or not isinstance(budget_gib, int | float) or \
            not 0 < budget_gib < float("inf"):
        raise ValueError(f"memory_budget={budget_gib!r}; allowed: a positive number of GiB")
    return float(budget_gib)


def usable(budget_gib: float) -> float:
    """Bytes the chunk planners fill: ``HEADROOM`` of the budget."""
    return HEADROOM * budget_gib * GIB


def gib(n: float) -> str:
    """Bytes in GiB, MiB or KiB (3 significant digits)."""
    for unit, size in (("GiB", GIB), ("MiB", 2**20)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{n / 1024:.3g} KiB"


def chunk_for(budget_gib: float | None, bytes_per_item: int, items: int, what: str,
              sizes: str, fixed: int = 0) -> int | None:
    """Largest chunk (1..items) whose working memory ``fixed + chunk * bytes_per_item``
    fits ``budget_gib``; None when there is no budget. Raises ``MemoryBudgetError`` naming
    ``what`` and its ``sizes`` when a single item does not fit."""
    if budget_gib is None:
        return None
    budget = resolve_budget(budget_gib, "cpu")
    fits = int((usable(budget) - fixed) // max(bytes_per_item, 1))
    if fits < 1:
        raise MemoryBudgetError(
            f"{what} needs {gib(fixed + bytes_per_item)} for the smallest chunk ({sizes}); "
            f"memory_budget={budget:g} GiB")
    return min(fits, items)


def grid_chunks(budget_gib: float, fixed: int, per_cell: int, rows: int, cols: int,
                what: str, sizes: str) -> tuple[int, int]:
    """Chunks (r, c) of a rows x cols grid (e.g. members x examples) whose working memory
    ``fixed + r * c * per_cell`` fits ``budget_gib``: all rows and as many columns as fit,
    else one column and as many rows. ``MemoryBudgetError`` naming ``what`` and its
    ``sizes`` when one cell does not fit."""
    room = usable(budget_gib) - fixed
    if room < per_cell:
        raise MemoryBudgetError(
            f"{what} needs {gib(fixed + per_cell)} for its smallest chunk ({sizes}); "
            f"memory_budget={budget_gib:g} GiB")
    per_cell = max(per_cell, 1)
    c = int(room // (rows * per_cell))
    if c >= 1:
        return rows, min(c, cols)
    return max(1, int(room // per_cell)), 1

"""Chunk sizes that keep a probe's working memory under a budget."""

from __future__ import annotations

GIB = 2**30


class MemoryBudgetError(ValueError):
    """The smallest chunk a probe can work in does not fit the memory budget."""


def chunk_for(budget_gib: float | None, bytes_per_item: int, items: int, what: str,
              sizes: str) -> int | None:
    """Largest chunk (1..items) whose working memory ``chunk * bytes_per_item`` fits
    ``budget_gib``; None when there is no budget. Raises ``MemoryBudgetError`` naming
    ``what`` and its ``sizes`` when a single item does not fit."""
    if budget_gib is None:
        return None
    if not budget_gib > 0:
        raise ValueError(f"memory_budget={budget_gib!r}; allowed: a positive number of GiB")
    fits = int(budget_gib * GIB // bytes_per_item)
    if fits < 1:
        raise MemoryBudgetError(
            f"{what} needs {bytes_per_item / GIB:.3g} GiB for the smallest chunk ({sizes}); "
            f"memory_budget={budget_gib:g} GiB")
    return min(fits, items)

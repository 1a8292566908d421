"""Moved to ``widthscan.stack.members_loop`` (the stacked core's "loop" strategy)."""

from widthscan.stack.members_loop import MemberLoop

__all__ = ["MemberLoop"]

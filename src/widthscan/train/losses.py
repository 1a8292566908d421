"""Moved to ``widthscan.stack.losses`` (the stacked core that training and probes share)."""

from widthscan.stack.losses import IGNORE_INDEX, LOSSES, member_losses

__all__ = ["IGNORE_INDEX", "LOSSES", "member_losses"]

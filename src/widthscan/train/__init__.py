"""Stacked K-seed ensembles, losses and schedules."""

from widthscan.stack.losses import LOSSES, member_losses
from widthscan.train.ensemble import Ensemble
from widthscan.train.schedules import SCHEDULES, make_schedule

__all__ = ["LOSSES", "SCHEDULES", "Ensemble", "make_schedule", "member_losses"]

"""Sweeps: expanding the grid, executing runs (local, Dask, submitit), resuming."""

from widthscan.sweep.api import ConfigChangedError, Sweep, SweepResult
from widthscan.sweep.executors import EXECUTORS, get_executor
from widthscan.sweep.plan import RunSpec, plan
from widthscan.sweep.run import execute

__all__ = ["EXECUTORS", "ConfigChangedError", "RunSpec", "Sweep", "SweepResult", "execute",
           "get_executor", "plan"]

"""Data streams addressed by (data seed, step), probe sets, online/offline modes, label noise.

    import widthscan as ws
    task = ws.tasks.make("gegenbauer", seed=0, dim=10, degree=3)
    x, y = task.batch(step=0, batch_size=256)   # a pure function of (seed, step)
    xp, yp = task.probe_set(512)                # fixed held-out examples
    task.spec                                   # TaskSpec: shapes, loss, pool size, ...

`names()` lists the registered tasks; `register` adds a `Task` subclass.
"""

from . import images, synthetic, synthetic_vision, text
from .base import Task, TaskSpec
from .errors import DatasetNotFoundError, PoolExhaustedError, TaskConfigError, TaskDataError
from .registry import get, make, names, options, register, unregister

__all__ = [
    "DatasetNotFoundError",
    "PoolExhaustedError",
    "Task",
    "TaskConfigError",
    "TaskDataError",
    "TaskSpec",
    "get",
    "images",
    "make",
    "names",
    "options",
    "register",
    "synthetic",
    "synthetic_vision",
    "text",
    "unregister",
]

"""widthscan: train one network family at many widths and seeds; measure how consistent they are.

    import widthscan as ws
    sweep = ws.Sweep.from_toml("sweep.toml")
    sweep.run("runs/demo")
    ds = ws.load("runs/demo")
    ws.report(ds, "runs/demo/report.html")
"""

import importlib

from widthscan import config, models, parametrization, store, sweep, tasks, train
from widthscan._version import __version__
from widthscan.parametrization import parametrize
from widthscan.store import load, load_scalars, load_status
from widthscan.sweep import Sweep
from widthscan.train import Ensemble

_LAZY = {"analysis", "probes", "report"}


def __getattr__(name: str):
    if name in _LAZY:
        module = importlib.import_module(f"widthscan.{name}")
        return module.report if name == "report" else module
    raise AttributeError(f"module 'widthscan' has no attribute {name!r}")


__all__ = ["Ensemble", "Sweep", "__version__", "analysis", "config", "load", "load_scalars",
           "load_status", "models", "parametrization", "parametrize", "probes", "report",
           "store", "sweep", "tasks", "train"]

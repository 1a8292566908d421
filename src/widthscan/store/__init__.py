"""widthscan.store: run directories, atomic writes, locks, and the loader.

Layout and schema: docs/data-model.md. Nothing here computes science.
"""

from widthscan.store.atomic import atomic_write_bytes, atomic_write_json, atomic_write_text
from widthscan.store.checkpoint import StoreWarning
from widthscan.store.layout import iter_run_dirs, run_dir
from widthscan.store.load import IncompleteSweepWarning, load
from widthscan.store.lock import SweepLock, SweepLockedError, lock_holder
from widthscan.store.probes import ProbeSeries
from widthscan.store.run import RunStore
from widthscan.store.tables import load_scalars, load_status

__all__ = [
    "IncompleteSweepWarning",
    "ProbeSeries",
    "RunStore",
    "StoreWarning",
    "SweepLock",
    "SweepLockedError",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "iter_run_dirs",
    "load",
    "load_scalars",
    "load_status",
    "lock_holder",
    "run_dir",
]

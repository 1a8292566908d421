"""Torch work on one intra-op thread, without changing the caller's thread count.

A multi-threaded GEMM's last bits can depend on the thread count, so the float decodes that
must be bit-identical in every process (synthetic_vision) run on one thread. Pinning the
process would also slow down whatever runs meanwhile in other threads (the training step,
while a prefetch thread makes the next batch).

With torch's OpenMP backend (every released wheel) the thread count is per thread, so
``single_threaded`` pins the calling thread alone for the duration of the call and restores
it; a caller that already runs on one thread (a prefetch worker, a one-thread process) runs
the work as it is. torch also remembers the last count set as the default of threads that
first use torch later, which the restore (and ``start_pinned``) puts back. (Handing the work
to a dedicated pinned thread instead cost 2-3 ms per batch on a loaded machine, waiting for
the thread to be scheduled.) Under another backend the count is process-wide: there the pin
is serialized by a lock and covers the whole process.
"""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Callable, Iterator
from typing import TypeVar

import torch

T = TypeVar("T")
_LOCK = threading.Lock()


@functools.cache
def per_thread_counts() -> bool:
    """True when ``torch.set_num_threads`` acts on the calling thread only (OpenMP backend)."""
    return "parallel backend: OpenMP" in torch.__config__.parallel_info()


def pin_this_thread() -> None:
    """One intra-op thread for the calling thread. torch sets a thread's count lazily from
    the process default on its first parallel query, which would undo an earlier pin: the
    query comes first."""
    torch.get_num_threads()
    torch.set_num_threads(1)


def start_pinned(target: Callable[[], None], name: str) -> threading.Thread:
    """Start a daemon thread that runs ``target`` on one intra-op thread; returns once the
    thread is pinned, with the default of later threads restored to the caller's count."""
    before = torch.get_num_threads()
    pinned = threading.Event()

    def run() -> None:
        pin_this_thread()
        pinned.set()
        target()

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    pinned.wait()
    torch.set_num_threads(before)
    return thread


@contextlib.contextmanager
def _pin(lock: bool) -> Iterator[None]:
    with _LOCK if lock else contextlib.nullcontext():
        before = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            yield
        finally:
            torch.set_num_threads(before)


def single_threaded(fn: Callable[..., T], *args, **kwargs) -> T:
    """``fn(*args, **kwargs)`` with torch on one intra-op thread; the caller's count is
    unchanged (see the module docstring)."""
    if torch.get_num_threads() == 1:
        return fn(*args, **kwargs)
    with _pin(lock=not per_thread_counts()):
        return fn(*args, **kwargs)

"""Make the batches of the next steps while the current step runs.

The batch of step t is a pure function of (data seed, t), so a background thread can make
steps t+1 .. t+depth ahead of the training loop; the loop gets exactly what ``batch(t)``
would have returned in its own thread. The worker runs torch on one intra-op thread (it
leaves the cores to the step and makes thread-count-sensitive decodes run in place); on
CUDA the tasks copy through pinned memory without blocking (``widthscan.tasks.transfer``),
so the copies overlap the step too.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any

import torch

from widthscan.tasks.threads import start_pinned

Batch = tuple[torch.Tensor, torch.Tensor]
_DONE = object()


class Prefetcher:
    """``batch(t)`` for t = start, start + 1, ... < stop, made ``depth`` steps ahead.

    Call it with consecutive steps (``prefetcher(t)``); an exception raised by ``batch(t)``
    is raised by ``prefetcher(t)``, at the step that asked for it. ``close()`` (or leaving a
    ``with`` block) stops the worker.
    """

    def __init__(self, batch: Callable[[int], Any], start: int, stop: int, depth: int = 2):
        if depth < 1:
            raise ValueError(f"prefetch depth={depth}; allowed: an integer >= 1")
        self.next_step = start
        self._stop = threading.Event()
        self._queue: queue.Queue = queue.Queue(maxsize=depth)

        def work() -> None:
            for t in range(start, stop):
                try:
                    item = (t, batch(t), None)
                except BaseException as err:
                    item = (t, None, err)
                if not self._put(item) or item[2] is not None:
                    return
            self._put((stop, _DONE, None))

        self._thread = start_pinned(work, "widthscan-prefetch")

    def _put(self, item: tuple) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def __call__(self, t: int) -> Any:
        if t != self.next_step:
            raise ValueError(f"prefetcher expected step {self.next_step}, was asked for {t}")
        step, value, err = self._queue.get()
        if err is not None:
            raise err
        if value is _DONE:
            raise IndexError(f"step {t} is past the prefetcher's last step {step - 1}")
        self.next_step = t + 1
        return value

    def close(self) -> None:
        self._stop.set()
        self._thread.join()

    def __enter__(self) -> Prefetcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


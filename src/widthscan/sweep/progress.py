"""Per-run progress of a running sweep (run, step, loss, ETA), read from what the runs
write, so it works the same for every executor.

On a terminal: one live bar over all training steps of the sweep, its label the run in
progress. Elsewhere (a pipe, a log file, CI): one plain line per event, a run starting
or ending, and every ``every_s`` seconds while one trains.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from widthscan.sweep.status import RunProgress, run_progress

FINISHED = ("done", "diverged", "failed")


def eta_text(seconds: float | None) -> str:
    """``1h02m``, ``3m05s``, ``12s``; ``?`` when unknown."""
    if seconds is None or seconds != seconds or seconds == float("inf"):
        return "?"
    s = round(seconds)
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"


def run_line(run: RunProgress, eta: float | None = None) -> str:
    """``mup w=256: step 120/400, loss 0.0213 (mean of 4 seeds), ETA 25s`` (ETA: seconds
    left for this run, left out when None)."""
    text = f"{run.name}: step {run.step}/{run.steps if run.steps is not None else '?'}"
    loss = run.mean_loss
    if loss is not None:
        n = len(run.losses)
        text += f", loss {loss:.4g}" + (f" (mean of {n} seeds)" if n > 1 else "")
    if eta is not None:
        text += f", ETA {eta_text(eta)}"
    return text


class SweepProgress:
    """Polls the runs of ``sweep_dir`` every ``poll_s`` seconds in a background thread.

    ``runs``: the (param, width) pairs to follow, ``steps`` training steps per run;
    ``live``: a bar (True) or plain lines (False); default: whether ``stream`` is a
    terminal. Use as a context manager around the sweep.
    """

    def __init__(self, sweep_dir: str | Path, runs: Sequence[tuple[str, int]], steps: int,
                 stream: TextIO | None = None, live: bool | None = None,
                 poll_s: float = 1.0, every_s: float = 15.0) -> None:
        self.sweep_dir = Path(sweep_dir)
        self.runs = list(runs)
        self.steps = int(steps)
        self.stream = stream or sys.stderr
        self.live = self.stream.isatty() if live is None else live
        self.poll_s, self.every_s = poll_s, every_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._states: dict[str, str] = {}
        self._bar = None
        self._t0 = time.monotonic()
        self._done0: int | None = None
        self._last_line = 0.0
        self._first: dict[str, tuple[float, int]] = {}

    def __enter__(self) -> SweepProgress:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop(final=exc[0] is None)

    def start(self) -> None:
        self._safe_poll()
        self._thread = threading.Thread(target=self._loop, name="widthscan-progress",
                                        daemon=True)
        self._thread.start()

    def stop(self, final: bool = True) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        if final:
            self._safe_poll()
        if self._bar is not None:
            self._bar.close()

    def _loop(self) -> None:
        while not self._stop.wait(self.poll_s):
            self._safe_poll()

    def _safe_poll(self) -> None:
        """``poll``; a progress display never stops a sweep (a file caught half-written is
        read whole by the next poll)."""
        try:
            self.poll()
        except Exception:
            pass

    def snapshot(self) -> list[RunProgress]:
        return [run_progress(self.sweep_dir, p, w, self.steps) for p, w in self.runs]

    def eta(self, runs: Sequence[RunProgress]) -> float | None:
        """Seconds left for the whole sweep at its rate since it started here, with a step
        of a run counted in proportion to its width (a wide run's step costs more, and the
        widest run first would otherwise make the first estimates several times too long)."""
        done = sum(r.width * self._done_steps(r) for r in runs)
        if self._done0 is None:
            self._done0 = done
        rate = (done - self._done0) / max(time.monotonic() - self._t0, 1e-9)
        left = sum(r.width * (r.steps or self.steps) for r in runs) - done
        return left / rate if rate > 0 else None

    def _done_steps(self, run: RunProgress) -> int:
        total = run.steps or self.steps
        return total if run.state in FINISHED else min(total, run.step)

    def run_eta(self, run: RunProgress) -> float | None:
        """Seconds left for ``run`` at its rate since this object first saw it train."""
        now = time.monotonic()
        t0, step0 = self._first.setdefault(run.name, (now, run.step))
        total = run.steps or self.steps
        if run.step <= step0 or now <= t0 or run.step >= total:
            return None
        return (total - run.step) * (now - t0) / (run.step - step0)

    def poll(self) -> None:
        runs = self.snapshot()
        done = sum(self._done_steps(r) for r in runs)
        eta = self.eta(runs)
        active = [r for r in runs if r.state == "running"]
        finished = sum(r.state in FINISHED for r in runs)
        if self.live:
            self._draw_bar(done, active, finished)
        else:
            self._print_lines(runs, active, finished, eta)

    def _draw_bar(self, done: int, active: list[RunProgress], finished: int) -> None:
        if self._bar is None:
            from tqdm import tqdm

            self._bar = tqdm(total=self.steps * len(self.runs), initial=done, unit="step",
                             file=self.stream, dynamic_ncols=True, smoothing=0.1)
        self._bar.update(done - self._bar.n)
        head = f"runs {finished}/{len(self.runs)}"
        self._bar.set_description(head + (f" · {active[0].name}" if active else ""),
                                  refresh=False)
        self._bar.set_postfix_str(" · ".join(run_line(r, self.run_eta(r)).split(": ", 1)[1]
                                             for r in active[:2]))

    def _print_lines(self, runs: list[RunProgress], active: list[RunProgress], finished: int,
                     eta: float | None) -> None:
        now = time.monotonic()
        head = f"[{finished}/{len(self.runs)} runs done]"
        events = []
        for r in runs:
            old = self._states.get(r.name)
            if r.state != old and (old is not None or r.state not in ("pending", *FINISHED)):
                events.append(r)
            self._states[r.name] = r.state
        tail = f" · sweep ETA {eta_text(eta)}" if finished < len(self.runs) else ""
        for r in events:
            word = {"running": "started"}.get(r.state, r.state)
            self._print(f"{head} {run_line(r)} ({word}){tail}")
        run_eta = {r.name: self.run_eta(r) for r in active}
        if active and not events and now - self._last_line >= self.every_s:
            for r in active:
                self._print(f"{head} {run_line(r, run_eta[r.name])}{tail}")
        if events or (active and now - self._last_line >= self.every_s):
            self._last_line = now

    def _print(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

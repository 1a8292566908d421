"""Cost of generating a batch vs. one training step, for every task (CPU, batch 256).

    python benchmarks/tasks.py [--batch-size 256] [--repeats 30] [--device cpu]

For each task: time of `task.batch(step, B)` over distinct steps (examples/second), time of
one SGD step (forward + backward + update) of a width-256 MLP with 3 linear layers on that
batch, and the ratio batch_time / step_time (target: < 10%, text < 20%). Batch and step calls
alternate, and the ratio uses the minimum of each (robust on a shared, loaded machine); the
ratio of medians is printed next to it.

The last two columns time whole training loops over the same steps, three ways in turn
(batches made beforehand, `task.batch` in the loop, and the loop fed by
`widthscan.train.prefetch.Prefetcher`, which makes the next batches in a background thread),
and report the data path's share of a step, (loop - loop on pre-made batches) / loop, made
inline and prefetched (min over `--loop-repeats` rounds; negative values are noise).

The MLP is `nn.Sequential(Flatten, Linear(d, 256), ReLU, Linear(256, 256), ReLU,
Linear(256, out))`. For `text` it is the same 3-layer MLP applied to every position after a
byte embedding (`Embedding(257, 256)`), predicting 256 bytes per position. CIFAR-10 uses a
generated folder in the real format (10000 random images) unless $WIDTHSCAN_CIFAR10 is set.
"""

from __future__ import annotations

import argparse
import os
import pickle
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import widthscan.tasks as ws_tasks
from widthscan.train.prefetch import Prefetcher


def fake_cifar(root: Path, n_per_batch: int = 2000) -> Path:
    rng = np.random.default_rng(0)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"data": rng.integers(0, 256, (n_per_batch, 3072), dtype=np.uint8),
                 b"labels": rng.integers(0, 10, n_per_batch).tolist()}
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f)
    return root


def model_for(task: ws_tasks.Task) -> nn.Module:
    spec = task.spec
    if spec.input_dtype == "int64":
        return nn.Sequential(nn.Embedding(spec.vocab_size, 256), nn.Linear(256, 256), nn.ReLU(),
                             nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, spec.output_dim))
    d = int(np.prod(spec.input_shape))
    return nn.Sequential(nn.Flatten(), nn.Linear(d, 256), nn.ReLU(), nn.Linear(256, 256),
                         nn.ReLU(), nn.Linear(256, spec.output_dim))


def loss_fn(task: ws_tasks.Task, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    if task.spec.loss == "mse":
        return F.mse_loss(out, y)
    if out.dim() == 3:
        return F.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1), ignore_index=-100)
    return F.cross_entropy(out, y)


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def interleaved_times(
    batch_fn: Any,
    step_fn: Any,
    repeats: int,
    device: torch.device,
    clock: str = "wall",
    budget_s: float = 4.0,
) -> tuple[list[float], list[float]]:
    """Seconds of alternating batch and step calls (after 3 warm-ups of each), so that both
    see the same machine load; stops early once `budget_s` is spent (at least 5 pairs)."""

    now = CLOCKS[clock]

    def timed(fn: Any, i: int) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = now()
        fn(i)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return now() - t0

    batch_t: list[float] = []
    step_t: list[float] = []
    for i in range(repeats + 3):
        b, s = timed(batch_fn, i), timed(step_fn, i)
        if i >= 3:
            batch_t.append(b)
            step_t.append(s)
            if len(batch_t) >= 5 and sum(batch_t) + sum(step_t) > budget_s:
                break
    return batch_t, step_t


def loop_shares(task: Any, bs: int, step: Any, steps: int | None, device: torch.device,
                rounds: int, n: int = 20) -> tuple[float, float]:
    """The data path's share of a training-loop step, made inline and prefetched: each of
    three loops over the same n steps (pre-made batches, `task.batch` inline, a Prefetcher)
    timed `rounds` times in turn; shares from the minima."""
    at = [(i % steps if steps else i) for i in range(n)]
    premade = [task.batch(t, bs, device=device) for t in at]
    model = model_for(task).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)

    def train(x: torch.Tensor, y: torch.Tensor) -> None:
        opt.zero_grad(set_to_none=True)
        loss_fn(task, model(x), y).backward()
        opt.step()

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    def run_premade() -> None:
        for x, y in premade:
            train(x, y)

    def run_inline() -> None:
        for t in at:
            train(*task.batch(t, bs, device=device))

    def run_prefetched() -> None:
        with Prefetcher(lambda i: task.batch(at[i], bs, device=device), 0, n) as ahead:
            for i in range(n):
                train(*ahead(i))

    times: dict[str, list[float]] = {"premade": [], "inline": [], "prefetched": []}
    runs = {"premade": run_premade, "inline": run_inline, "prefetched": run_prefetched}
    run_premade()
    for _ in range(rounds):
        for key, fn in runs.items():
            sync()
            t0 = time.perf_counter()
            fn()
            sync()
            times[key].append(time.perf_counter() - t0)
    base = min(times["premade"])
    inline, ahead = min(times["inline"]), min(times["prefetched"])
    return (inline - base) / inline, (ahead - base) / ahead


def bench(
    name: str, opts: dict, bs: int, repeats: int, device: torch.device, clock: str = "wall",
    loop_repeats: int = 5,
) -> dict:
    task = ws_tasks.make(name, seed=0, **opts)
    steps = task.steps_per_epoch(bs) if task.mode == "online" else None
    model = model_for(task).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x, y = task.batch(0, bs, device=device)

    def step(_: int) -> None:
        opt.zero_grad(set_to_none=True)
        loss_fn(task, model(x), y).backward()
        opt.step()

    batch_t, step_t = interleaved_times(
        lambda i: task.batch(i % steps if steps else i, bs, device=device), step, repeats, device,
        clock,
    )
    batch_s, step_s = min(batch_t), min(step_t)
    inline, ahead = loop_shares(task, bs, step, steps, device, loop_repeats)
    out = {"loop_inline": inline, "loop_prefetched": ahead,
           "batch_ms": 1e3 * batch_s, "ex_per_s": bs / batch_s, "step_ms": 1e3 * step_s,
           "ratio": batch_s / step_s, "median_ratio": statistics.median(batch_t) /
           statistics.median(step_t), "limit": 0.2 if name == "text" else 0.1}
    if name == "synthetic_vision":
        out["decode_ratio"] = decode_floor(task, bs, step, repeats, device, clock)
    return out


def decode_floor(task: Any, bs: int, step: Any, repeats: int, device: torch.device,
                 clock: str) -> float:
    """synthetic_vision's decode alone (the (bs x k) @ (k x d) product `batch` ends with, on
    latents made beforehand) over the step, timed like the batch: a floor for its ratio."""
    comps, offset = task.decoder(device, torch.float32)
    z = torch.randn(bs, comps.shape[0], device=device)
    decode_t, step_t = interleaved_times(lambda i: torch.addmm(offset, z, comps), step,
                                         repeats, device, clock)
    return min(decode_t) / min(step_t)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="wall",
                        help="wall time, or process CPU time (steadier on a busy machine)")
    parser.add_argument("--only", nargs="*", default=None, help="task names to run (default all)")
    parser.add_argument("--loop-repeats", type=int, default=5,
                        help="rounds of the three 20-step loops (data share inline/prefetched)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        cifar = os.environ.get("WIDTHSCAN_CIFAR10") or str(fake_cifar(Path(tmp)))
        cases = [
            ("gegenbauer", {}),
            ("polynomial", {}),
            ("teacher", {}),
            ("fashion_mnist", {}),
            ("fashion_mnist", {"augment": True}),
            ("fashion_mnist", {"mode": "offline", "n_train": 10000, "label_noise": 0.5}),
            ("cifar10", {"root": cifar}),
            ("cifar10", {"root": cifar, "augment": True}),
            ("synthetic_vision", {}),
            ("synthetic_vision", {"n_components": 32}),
            ("synthetic_vision", {"mode": "offline", "n_train": 10000, "label_noise": 0.5}),
            ("text", {}),
            ("text", {"objective": "masked"}),
        ]
        print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {device},"
              f" batch {args.batch_size}, {args.clock} clock")
        print("min over repeats (median ratio in brackets)")
        print(f"{'task':<58}{'batch ms':>9}{'ex/s':>11}{'step ms':>9}{'ratio':>8}{'(median)':>10}"
              f"{'loop inline':>12}{'prefetched':>11}")
        for name, opts in cases:
            if args.only and name not in args.only:
                continue
            try:
                r = bench(name, opts, args.batch_size, args.repeats, device, args.clock,
                          args.loop_repeats)
            except ws_tasks.TaskDataError as err:
                print(f"{name:<58} skipped: {err}")
                continue
            label = name + (" " + ", ".join(f"{k}={v}" for k, v in opts.items() if k != "root")
                            if opts else "")
            flag = "" if r["ratio"] < r["limit"] else "  (over target)"
            print(f"{label:<58}{r['batch_ms']:>9.3f}{r['ex_per_s']:>11.0f}{r['step_ms']:>9.3f}"
                  f"{100 * r['ratio']:>7.1f}%{100 * r['median_ratio']:>9.1f}%"
                  f"{100 * r['loop_inline']:>11.1f}%{100 * r['loop_prefetched']:>10.1f}%{flag}")
            if "decode_ratio" in r:
                print(f"{'  of which the decode GEMM alone':<58}{'':>29}"
                      f"{100 * r['decode_ratio']:>7.1f}%")


if __name__ == "__main__":
    main()

"""Stacked K-seed ensemble vs K sequential runs of a plain torch training loop.

For a 3-layer MLP (d_in -> width -> width -> d_out) and each width, times

* sequential: K runs one after another, each a plain ``nn.Module`` trained by a plain
  ``torch.optim.SGD`` loop (the baseline a user would write), and
* stacked: one ``ws.Ensemble`` holding the K seeds (SGD with the same momentum),

both for ``--steps`` steps on the same pre-drawn batches, and prints the speed-up
(sequential time / stacked time) as a markdown table. At the large widths it also prints
the achieved GFLOP/s of a stacked training step (forward + backward matmul FLOPs,
6 * batch * sum(fan_in * fan_out) per member) against a large square float32 matmul
timed in the same process.

    python benchmarks/ensemble.py                      # widths 64 256 1024 2048, K=8
    python benchmarks/ensemble.py --widths 64 256 --repeats 5 --loss ce
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

import widthscan as ws


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load() -> str:
    """1-minute load average (other processes on the machine skew every timing)."""
    try:
        return f"{os.getloadavg()[0]:.2f}"
    except OSError:
        return "n/a"


def median_time(fn: Callable[[], None], repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def matmul_gflops(n: int, repeats: int) -> float:
    """GFLOP/s of an n x n float32 matmul (2 n^3 FLOPs), median over repeats."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    out = torch.empty(n, n)
    inner = max(1, int(2e10 // (2 * n**3)))  # ~20 GFLOP per timed call

    def run():
        for _ in range(inner):
            torch.mm(a, b, out=out)

    return 2 * n**3 * inner / median_time(run, repeats, warmup=2) / 1e9


def make_batches(steps: int, batch: int, d_in: int, d_out: int, loss: str, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(steps):
        x = torch.randn(batch, d_in, generator=g)
        y = (torch.randn(batch, d_out, generator=g) if loss == "mse"
             else torch.randint(0, d_out, (batch,), generator=g))
        out.append((x, y))
    return out


def sequential(factory, seeds, batches, loss: str, lr: float, momentum: float) -> float:
    """K independent runs, one after another: the plain loop a user would write.
    Returns the time of the training steps only (models are built untimed)."""
    loss_fn = F.mse_loss if loss == "mse" else F.cross_entropy
    runs = []
    for s in seeds:
        torch.manual_seed(s)
        model = factory()  # a plain nn.Module at its own width
        runs.append((model, torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)))
    t0 = time.perf_counter()
    for model, opt in runs:
        for x, y in batches:
            opt.zero_grad(set_to_none=True)
            loss_fn(model(x), y).backward()
            opt.step()
    return time.perf_counter() - t0


def stacked(factory, width, base_width, seeds, batches, loss, lr, momentum) -> float:
    """One stacked ensemble; returns the time of its training steps only (built untimed)."""
    ens = ws.Ensemble(factory, width, base_width, "mup", "sgd", seeds, lr,
                      momentum=momentum, loss=loss)
    t0 = time.perf_counter()
    for x, y in batches:
        ens.step(x, y)
    return time.perf_counter() - t0


def step_flops(width: int, depth: int, d_in: int, d_out: int, batch: int, k: int) -> float:
    fans = [(d_in, width)] + [(width, width)] * (depth - 2) + [(width, d_out)]
    return 6.0 * batch * sum(a * b for a, b in fans) * k


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--widths", type=int, nargs="+", default=[64, 256, 1024, 2048])
    ap.add_argument("--k", type=int, default=8, help="seeds per ensemble")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--depth", type=int, default=3)
    ap.add_argument("--d-in", type=int, default=32)
    ap.add_argument("--d-out", type=int, default=10)
    ap.add_argument("--loss", choices=["mse", "ce"], default="mse")
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--momentum", type=float, default=0.9)
    ap.add_argument("--repeats", type=int, default=5, help="median over this many timings")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--flops-widths", type=int, nargs="*", default=[1024, 2048],
                    help="widths whose GFLOP/s is reported")
    ap.add_argument("--matmul-n", type=int, default=2048, help="size of the reference matmul")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    seeds = list(range(args.k))
    print(f"# ensemble benchmark: {time.strftime('%Y-%m-%d %H:%M')}")
    print(f"cpu: {cpu_name()} ({os.cpu_count()} logical cores); torch {torch.__version__}; "
          f"torch threads {torch.get_num_threads()} (interop {torch.get_num_interop_threads()})")
    print(f"MLP depth={args.depth} d_in={args.d_in} d_out={args.d_out} loss={args.loss}; "
          f"K={args.k} batch={args.batch} steps={args.steps}; SGD lr={args.lr} "
          f"momentum={args.momentum}; median of {args.repeats}\n")

    peak = matmul_gflops(args.matmul_n, args.repeats)
    print(f"reference: {args.matmul_n}x{args.matmul_n} float32 matmul {peak:.1f} GFLOP/s; "
          f"load {load()}\n", flush=True)

    batches = make_batches(args.steps, args.batch, args.d_in, args.d_out, args.loss)
    rows, flops_rows = [], []
    for width in args.widths:
        def factory(w: int = width) -> torch.nn.Module:
            return ws.models.mlp(w, depth=args.depth, d_in=args.d_in, d_out=args.d_out)

        warm = batches[: max(1, args.steps // 10)]
        sequential(factory, seeds[:1], warm, args.loss, args.lr, args.momentum)
        stacked(factory, width, 64, seeds, warm, args.loss, args.lr, args.momentum)
        seq_times, ens_times = [], []
        for _ in range(args.repeats):  # interleaved, so both see the same machine load
            seq_times.append(sequential(factory, seeds, batches, args.loss, args.lr,
                                        args.momentum))
            ens_times.append(stacked(factory, width, 64, seeds, batches, args.loss, args.lr,
                                     args.momentum))
        t_seq, t_ens = statistics.median(seq_times), statistics.median(ens_times)
        rows.append((width, t_seq, t_ens))
        print(f"width {width}: sequential {t_seq:.3f} s (min {min(seq_times):.3f}), "
              f"stacked {t_ens:.3f} s (min {min(ens_times):.3f}), x{t_seq / t_ens:.2f}; "
              f"load {load()}", flush=True)
        if width in args.flops_widths:
            flops = step_flops(width, args.depth, args.d_in, args.d_out, args.batch, args.k)
            flops_rows.append((width, flops, t_ens / args.steps, t_seq / args.steps))

    print(f"\n| width | {args.k} sequential runs (s) | stacked ensemble (s) | speed-up |")
    print("|---:|---:|---:|---:|")
    for width, t_seq, t_ens in rows:
        print(f"| {width} | {t_seq:.3f} | {t_ens:.3f} | {t_seq / t_ens:.2f}x |")
    if flops_rows:
        again = matmul_gflops(args.matmul_n, args.repeats)
        print(f"\nreference matmul again at the end: {again:.1f} GFLOP/s; the higher is used")
        peak = max(peak, again)
        print(f"\nmatmul reference ({args.matmul_n}^2 float32): {peak:.1f} GFLOP/s\n")
        print("| width | GFLOP per stacked step | stacked GFLOP/s | % of matmul "
              "| sequential GFLOP/s |")
        print("|---:|---:|---:|---:|---:|")
        for width, flops, t_step, t_seq_step in flops_rows:
            g = flops / t_step / 1e9
            print(f"| {width} | {flops / 1e9:.2f} | {g:.1f} | {100 * g / peak:.0f}% "
                  f"| {flops / t_seq_step / 1e9:.1f} |")


if __name__ == "__main__":
    main()

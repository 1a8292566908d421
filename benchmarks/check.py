"""Wall and CPU time of ``widthscan.check.check`` on an MLP and a small transformer (CPU).

    python benchmarks/check.py [--widths 64 128 256 512 1024] [--dynamics-steps 10]

For each model: the time of the coordinate check alone (``dynamics_steps=0``), then wall and
process CPU time of one check with the defaults (3 seeds, 3 coordinate-check steps, dynamics
with 2 seeds), and that wall time in units of one forward + backward of the widest model on
one batch (the work the check repeats; the ratio is what carries over between machines).
Target (issue 18): <= 60 s wall at widths 64..1024. On a shared machine report the load
average printed at the top next to the figures.
"""

from __future__ import annotations

import argparse
import os
import time

import torch

import widthscan as ws
from widthscan.check import check
from widthscan.check.data import match
from widthscan.stack.losses import member_losses


def mlp(width: int) -> torch.nn.Module:
    return ws.models.mlp(width, depth=4)


def small_transformer(width: int) -> torch.nn.Module:
    return ws.models.transformer(width, n_layers=2, seq_len=32)


def step_time(factory, width: int, base: int, repeats: int = 3) -> float:
    """Seconds of one forward + backward of ``factory(width)`` on the check's batch."""
    data = match(factory, base)
    p = ws.parametrize(factory, width, base)
    x, y = data.batch(0)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        member_losses(p.module(x).unsqueeze(0), y, data.loss)[0].backward()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--widths", type=int, nargs="+", default=[64, 128, 256, 512, 1024])
    parser.add_argument("--dynamics-steps", type=int, default=10)
    args = parser.parse_args()
    print(f"load average {os.getloadavg()[0]:.1f}, torch threads {torch.get_num_threads()}")
    for name, factory in (("mlp depth 4", mlp), ("transformer 2 layers", small_transformer)):
        unit = step_time(factory, args.widths[-1], args.widths[0])
        coords = check(factory, args.widths[0], args.widths, dynamics_steps=0)
        wall, cpu = time.perf_counter(), time.process_time()
        full = check(factory, args.widths[0], args.widths, dynamics_steps=args.dynamics_steps)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        print(f"{name}: coordinate check alone {coords.seconds:.1f} s; full check {wall:.1f} s "
              f"wall, {cpu:.1f} s CPU = {wall / unit:.0f} fwd+bwd steps of the widest model; "
              f"consistent: {coords.ok}, {full.ok}")


if __name__ == "__main__":
    main()

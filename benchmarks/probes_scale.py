"""Probes at scale: eNTK, kernels, sharpness and attention on widthscan's transformer at
width 1024 (2 layers, 4 heads, vocabulary 256, the text task's sequence length 128) with
64 probe sequences, each under a memory budget (default 16 GiB).

    python benchmarks/probes_scale.py [--budget 16] [--members 1] [--entk-units 8]
                                      [--max-iter 3] [--probes attention kernels ...]

Each probe runs in a fresh process so that its peak resident memory (``VmHWM``) is its
own; the table gives the chunks the probe's planner chose, its estimate of the
working memory, the peak RSS (and its growth over the process after the model and data
were built) and the wall time. Two probes are cut short to keep the run in minutes on a
CPU, with the same chunks as the full call: the eNTK runs ``--entk-units`` of its output
units (the logits at the last position, C = 256; time per unit is printed, the full
call takes C times that; all positions would be C = 32768), sharpness ``--max-iter``
Hessian-vector products (chunks planned for the default max_iter = 100; the table adds
the Lanczos vectors the remaining products would store to the measured peak).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import torch

import widthscan as ws
import widthscan.probes as probes
from widthscan.probes.budget import gib
from widthscan.probes.features import (
    attention_layers,
    capture_chunks,
    kernel_layers,
    pooled,
    whole,
)
from widthscan.probes.footprint import footprint
from widthscan.probes.hessian import plan_sharpness
from widthscan.probes.ntk import plan_entk

WIDTH, SEQ, VOCAB, P = 1024, 128, 256, 64
PROBES = ("attention", "kernels", "sharpness", "entk")
MAX_ITER = 100


def model(members: int, width: int = WIDTH):
    """The transformer under muP (base width 64), one Parametrized or an Ensemble of
    ``members`` seeds."""
    def net(w: int):
        return ws.models.transformer(w, vocab_size=VOCAB, seq_len=SEQ)

    if members == 1:
        return ws.parametrize(net, width, 64, "mup", "sgd", seed=0)
    return ws.Ensemble(net, width, 64, "mup", "sgd", list(range(members)), loss="ce")


def data() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, VOCAB, (P, SEQ), generator=gen)
    return x, torch.randint(0, VOCAB, (P, SEQ), generator=gen)


def rss() -> int:
    """Peak resident bytes of this process: VmHWM (``ru_maxrss`` would start at the
    parent's peak after fork)."""
    try:
        with open("/proc/self/status") as f:
            return 1024 * next(int(line.split()[1]) for line in f if line.startswith("VmHWM"))
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def child(probe: str, budget: float, members: int, units: int, max_iter: int,
          width: int = WIDTH) -> dict:
    """Run one probe; its plan, peak RSS and time."""
    m = model(members, width)
    net = m.net
    x, y = data()
    base = rss()
    out: dict = {"probe": probe, "base_rss": base}
    t = time.perf_counter()
    if probe == "attention":
        q, pe = capture_chunks(net, torch.float32, members, x[:1], attention_layers(net),
                               whole, budget)
        out["chunks"] = f"{q} member(s) x 1 sequence"
        probes.attention(m, x[0], memory_budget=budget)
        out["work"] = "1 sequence"
    elif probe == "kernels":
        q, pe = capture_chunks(net, torch.float32, members, x, kernel_layers(net, None),
                               pooled("mean"), budget)
        out["chunks"] = f"{q} member(s) x {pe} sequences"
        probes.kernels(m, x, memory_budget=budget)
        out["work"] = f"{P} sequences, 3 layers"
    elif probe == "sharpness":
        fp = footprint(net, x[:1], torch.float32, "ce")
        chunk = plan_sharpness(fp, members, P, MAX_ITER, 1, budget)
        out["chunks"] = f"{chunk} sequences per HVP graph"
        out["estimate"] = 4 * members * fp.n_params * (MAX_ITER + 1 + 8) + members * (
            fp.hessian_fixed + chunk * (fp.hessian + 3 * fp.activations))
        res = probes.sharpness(m, x, y, loss="ce", max_iter=max_iter, tol=1e-12,
                               memory_budget=budget)
        hvps = int(res["sharpness_hvps"].values.max())
        out["work"] = f"{hvps} HVPs on {P} sequences"
        out["basis"] = 4 * members * fp.n_params * (MAX_ITER - hvps)
        out["hvps"] = hvps
    elif probe == "entk":
        fp = footprint(net, x[:1], torch.float32)
        plan = plan_entk(fp, members, P, units, True, True, budget)
        out["chunks"] = f"{plan.examples} sequences x {plan.units} output units"
        out["estimate"] = plan.bytes
        probes.entk(m, x, position=-1, outputs=torch.arange(units), memory_budget=budget)
        out["work"] = f"{units} of C=256 output units (last position), {P} sequences"
        out["per_unit_s"] = None
    out["seconds"] = time.perf_counter() - t
    if probe == "entk":
        out["per_unit_s"] = out["seconds"] / units
    out["peak_rss"] = rss()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--budget", type=float, default=16.0, help="GiB per probe")
    ap.add_argument("--members", type=int, default=1, help="K seeds (1: one Parametrized)")
    ap.add_argument("--entk-units", type=int, default=8)
    ap.add_argument("--max-iter", type=int, default=3, help="sharpness HVPs to run")
    ap.add_argument("--probes", nargs="+", default=list(PROBES), choices=PROBES)
    ap.add_argument("--width", type=int, default=WIDTH, help="d_model (smaller for a smoke run)")
    ap.add_argument("--child", choices=PROBES, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.budget, args.members, args.entk_units,
                               args.max_iter, args.width)))
        return
    threads = os.environ.get("OMP_NUM_THREADS", str(torch.get_num_threads()))
    print(f"transformer width {args.width}, 2 layers, seq {SEQ}, vocab {VOCAB}, P={P} sequences, "
          f"K={args.members}, budget {args.budget:g} GiB, {threads} threads, load "
          f"{os.getloadavg()[0]:.1f} at start\n")
    print("| probe | work | chunks | estimate | peak RSS | growth | time (s) |")
    print("|---|---|---|---:|---:|---:|---:|")
    for probe in args.probes:
        cmd = [sys.executable, __file__, "--child", probe, "--budget", str(args.budget),
               "--members", str(args.members), "--entk-units", str(args.entk_units),
               "--max-iter", str(args.max_iter), "--width", str(args.width)]
        run = subprocess.run(cmd, capture_output=True, text=True)
        if run.returncode:
            err = (run.stderr.strip().splitlines() or ["?"])[-1]
            print(f"| {probe} | failed: {err} | | | | | |")
            continue
        r = json.loads(run.stdout.strip().splitlines()[-1])
        est = gib(r["estimate"]) if r.get("estimate") else ""
        grow = r["peak_rss"] - r["base_rss"]
        print(f"| {probe} | {r['work']} | {r['chunks']} | {est} | {gib(r['peak_rss'])} | "
              f"{gib(grow)} | {r['seconds']:.1f} |")
        if probe == "sharpness":
            rest = MAX_ITER - r["hvps"]
            print(f"|  | + the other {rest} Lanczos vectors of max_iter={MAX_ITER} | | | "
                  f"{gib(r['peak_rss'] + r['basis'])} (bound) | | |")
        if probe == "entk":
            print(f"|  | all C=256 units at {r['per_unit_s']:.1f} s/unit | | | | | "
                  f"{256 * r['per_unit_s']:.0f} (extrapolated) |")
    print(f"\nload {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()

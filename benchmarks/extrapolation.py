"""Infinite-width extrapolation: cost of what the report computes, before and after
(issue 13, item 4), and how far the per-example limits stray.

Baseline: ``widthscan.analysis.scaling`` as of commit 75def50 (loaded with ``git show``,
so run from a git checkout), whose report computed ``extrapolate(ds, var, logits="logits")``
once: a 200-draw bootstrap of the loss fit at every step and every probe example's
logits. Now: the report's two calls (the loss curve without logits, and the logits of
the one drawn example), and for reference the full per-example fit. Same process, same
synthetic sweep (a small transformer's shape by default: 3 params, 4 widths, 3 seeds,
100 probe-loss steps, 30 logits steps, 512 positions x 64 outputs).

    PYTHONPATH=src python benchmarks/extrapolation.py [--examples 512] [--outputs 64]
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import xarray as xr

from widthscan.analysis import extrapolate

BASELINE = "75def50"


def load_baseline():
    root = Path(__file__).resolve().parents[1]
    src = subprocess.run(["git", "show", f"{BASELINE}:src/widthscan/analysis/scaling.py"],
                         cwd=root, check=True, capture_output=True, text=True).stdout
    path = Path(tempfile.mkdtemp()) / "scaling_baseline.py"
    path.write_text(src)
    spec = importlib.util.spec_from_file_location("scaling_baseline", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["scaling_baseline"] = mod
    spec.loader.exec_module(mod)
    return mod


def sweep(n_ex: int, n_out: int, seed: int = 0) -> xr.Dataset:
    """Logits f_inf + B (64/N)^0.5 + seed noise ~ N^-1/2 (a fifth of the examples flat:
    no width dependence), probe loss 2 + (64/N)^0.7 with 1% noise."""
    rng = np.random.default_rng(seed)
    widths = np.array([64, 128, 256, 512])
    params, n_s, n_t, n_l = ["mup", "sp", "ntp"], 3, 30, 100
    r = (64 / widths.astype(float))[None, :, None, None, None, None]
    f_inf = rng.normal(size=(len(params), 1, 1, n_t, n_ex, n_out)).astype(np.float32)
    b = rng.normal(size=f_inf.shape).astype(np.float32)
    b[..., : n_ex // 5, :] = 0
    noise = rng.normal(size=(len(params), widths.size, n_s, n_t, n_ex, n_out))
    logits = (f_inf + b * r**0.5 + 0.1 * np.sqrt(r) * noise).astype(np.float32)
    loss = 2 + (64 / widths.astype(float))[None, :, None, None] ** 0.7
    loss = loss * (1 + 0.01 * rng.normal(size=(len(params), widths.size, n_s, n_l)))
    return xr.Dataset(
        {"logits": (("param", "width", "seed", "logits_step", "example", "output"), logits),
         "probe_loss": (("param", "width", "seed", "loss_step"), loss)},
        coords={"param": params, "width": widths, "seed": np.arange(n_s),
                "logits_step": np.arange(n_t), "loss_step": np.arange(n_l)})


def timed(fn):
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = fn()
    return out, time.perf_counter() - t0


def stray(ds: xr.Dataset, inf: xr.DataArray) -> tuple[float, float]:
    """Largest |f_inf - f_widest| / (spread across widths), and the share drawn (finite)."""
    mean = ds["logits"].mean("seed")
    widest = mean.isel(width=-1, drop=True)
    spread = abs(mean - widest).max("width")
    ratio = (abs(inf - widest) / spread).values
    return float(np.nanmax(ratio)), float(np.isfinite(inf.values).mean())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--examples", type=int, default=512)
    p.add_argument("--outputs", type=int, default=64)
    a = p.parse_args()
    ds = sweep(a.examples, a.outputs)
    old = load_baseline()
    first = {"example": [0], "output": [0]}
    before, t_before = timed(lambda: old.extrapolate(ds, var="probe_loss", logits="logits"))
    _, t_loss = timed(lambda: extrapolate(ds, var="probe_loss", logits=None))
    _, t_one = timed(lambda: extrapolate(ds, var="probe_loss", logits="logits", examples=first))
    after, t_all = timed(lambda: extrapolate(ds, var="probe_loss", logits="logits"))
    t_report = t_loss + t_one
    print(f"sweep: 3 params x 4 widths x 3 seeds, 100 loss steps, 30 logits steps, "
          f"{a.examples} examples x {a.outputs} outputs")
    print(f"before (report, {BASELINE}): {t_before:8.2f} s")
    print(f"after, report's calls:      {t_report:8.2f} s   ratio {t_before / t_report:8.1f}x")
    print(f"after, every example:       {t_all:8.2f} s   ratio {t_before / t_all:8.1f}x")
    for name, out in (("before", before), ("after", after)):
        worst, drawn = stray(ds, out["logits_inf"])
        print(f"{name}: largest |f_inf - f_widest| / spread across widths {worst:10.3g}, "
              f"share of (step, example, output) drawn {drawn:.3f}")


if __name__ == "__main__":
    main()

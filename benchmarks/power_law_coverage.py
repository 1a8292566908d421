"""Coverage of the power-law interval for alpha on planted laws (issue 13, item 3).

Protocol: ``--replicates`` planted laws L(N) = a N^-alpha + c over widths 64..4096 (x2),
alpha ~ U(0.3, 1.5), c ~ U(0.1, 2), gap at the narrowest width a 64^-alpha / c ~
log-U(0.3, 3); each of ``--seeds`` seeds sees L(N) (1 + 0.02 z), z ~ N(0, 1) independent
per width and seed. Prints the fraction of replicates whose nominal-90% interval of
fit_power_law holds the planted alpha (and c), the median interval width, and how many
replicates are not labelled a steadily decreasing power law. The target is >= 85%.

    PYTHONPATH=src python benchmarks/power_law_coverage.py [--replicates 300] [--seeds 4]
        [--n-widths 7] [--rng 0]
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import xarray as xr

from widthscan.analysis import fit_power_law

WIDTHS = 64 * 2 ** np.arange(7)


def planted(rng: np.random.Generator, n: int, n_seeds: int, noise: float = 0.02,
            widths: np.ndarray = WIDTHS) -> tuple[xr.DataArray, np.ndarray, np.ndarray]:
    """(replicate, width, seed) values of planted laws; returns them, alpha (n,), c (n,)."""
    alpha = rng.uniform(0.3, 1.5, n)
    c = rng.uniform(0.1, 2.0, n)
    gap = np.exp(rng.uniform(np.log(0.3), np.log(3.0), n))
    a = gap * c * widths[0] ** alpha
    law = a[:, None] * widths[None, :] ** -alpha[:, None] + c[:, None]
    vals = law[:, :, None] * (1 + noise * rng.normal(size=(n, widths.size, n_seeds)))
    da = xr.DataArray(vals, dims=("replicate", "width", "seed"), coords={"width": widths})
    return da, alpha, c


def coverage(n: int, n_seeds: int, seed: int = 0, ci: float = 0.9,
             widths: np.ndarray = WIDTHS) -> dict[str, float]:
    da, alpha, c = planted(np.random.default_rng(seed), n, n_seeds, widths=widths)
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = fit_power_law(da, ci=ci)
    seconds = time.perf_counter() - t0
    lo, hi = fit["alpha_lo"].values, fit["alpha_hi"].values
    out = {
        "alpha": float(np.mean((lo <= alpha) & (alpha <= hi))),
        "c": float(np.mean((fit["c_lo"].values <= c) & (c <= fit["c_hi"].values))),
        "median_width": float(np.median(hi - lo)),
        "seconds": seconds,
    }
    if "decreasing" in fit:
        out["not_decreasing"] = int((~fit["decreasing"].values.astype(bool)).sum())
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--replicates", type=int, default=300)
    p.add_argument("--seeds", type=int, default=4)
    p.add_argument("--ci", type=float, default=0.9)
    p.add_argument("--rng", type=int, default=0, help="seed of the planted draws")
    p.add_argument("--n-widths", type=int, default=WIDTHS.size, help="widths 64, 128, ...")
    a = p.parse_args()
    widths = 64 * 2 ** np.arange(a.n_widths)
    r = coverage(a.replicates, a.seeds, a.rng, a.ci, widths)
    print(f"{a.replicates} replicates, {a.seeds} seeds, widths {widths[0]}..{widths[-1]}, "
          f"2% noise, nominal {a.ci:.0%}")
    print(f"alpha coverage {r['alpha']:.3f}   c coverage {r['c']:.3f}   "
          f"median alpha interval width {r['median_width']:.3f}   fit time {r['seconds']:.2f} s")
    if "not_decreasing" in r:
        print(f"labelled 'no power law' (not steadily decreasing): {r['not_decreasing']}")


if __name__ == "__main__":
    main()

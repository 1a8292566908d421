"""Planted Datasets shaped like ``ws.load``'s output, for the verdicts of ``reproduce``.

Each builder plants a known width dependence: ``converging`` ones have finite-width
deviations that shrink like a power of the width (the paper's claims hold), ``flat`` ones
have width-independent deviations (the claims about convergence fail).
"""

from __future__ import annotations

import numpy as np
import xarray as xr

WIDTHS = (32, 64, 128, 256, 512)
SEEDS = (0, 1, 2, 3)


def _coords(params, widths, seeds, **extra):
    return {"param": list(params), "width": list(widths), "seed": list(seeds), **extra}


def logits(decay: float | dict[str, float], params=("mup",), widths=WIDTHS, seeds=SEEDS,
           n_steps: int = 5, n_ex: int = 12, n_out: int = 3, rng_seed: int = 0) -> xr.Dataset:
    """logits = limit(t) + width^-decay * noise, the noise drawn anew for every width and
    member (decay 0: deviations that do not shrink with width); decay per param or shared."""
    rng = np.random.default_rng(rng_seed)
    limit = rng.normal(size=(n_steps, n_ex, n_out)) * np.arange(1, n_steps + 1)[:, None, None]
    vals = np.empty((len(params), len(widths), len(seeds), n_steps, n_ex, n_out))
    for i, p in enumerate(params):
        d = decay[p] if isinstance(decay, dict) else decay
        for j, w in enumerate(widths):
            noise = rng.normal(size=(len(seeds), n_steps, n_ex, n_out))
            vals[i, j] = limit + float(w) ** -d * noise
    da = xr.DataArray(vals, dims=("param", "width", "seed", "logits_step", "example", "output"),
                      coords=_coords(params, widths, seeds, logits_step=np.arange(n_steps) * 10))
    targets = xr.DataArray(np.broadcast_to(rng.integers(0, n_out, n_ex).astype(float),
                                           (len(params), len(widths), len(seeds), 1, n_ex)),
                           dims=("param", "width", "seed", "targets_step", "example"),
                           coords={**_coords(params, widths, seeds), "targets_step": [0]})
    return xr.Dataset({"logits": da, "targets": targets})


def losses(values: dict[str, np.ndarray], widths=WIDTHS, seeds=SEEDS, steps=None,
           var: str = "probe_loss", seed_noise: float = 0.0, rng_seed: int = 0) -> xr.Dataset:
    """A loss variable from per-param curves values[param] of shape (width, step)."""
    rng = np.random.default_rng(rng_seed)
    params = list(values)
    n_steps = next(iter(values.values())).shape[1]
    steps = np.arange(n_steps) if steps is None else np.asarray(steps)
    arr = np.stack([np.repeat(values[p][:, None, :], len(seeds), 1) for p in params])
    arr = arr + seed_noise * rng.normal(size=arr.shape)
    sd = "step" if var == "loss" else "loss_step"
    da = xr.DataArray(arr, dims=("param", "width", "seed", sd),
                      coords={**_coords(params, widths, seeds), sd: steps})
    return xr.Dataset({var: da})


def power_curves(widths=WIDTHS, n_steps: int = 20, alpha: float = 1.0, c: float = 0.2,
                 a: float = 5.0, wiggle: float = 0.0, rng_seed: int = 0) -> np.ndarray:
    """(width, step) loss curves c + a width^-alpha (1 - t/T) + decay over t, with optional
    batch-noise wiggles that are the same for every width."""
    t = np.linspace(0, 1, n_steps)
    base = c + np.exp(-3 * t)
    shared = wiggle * np.random.default_rng(rng_seed).normal(size=n_steps)
    w = np.asarray(widths, float)[:, None]
    return base + shared + a * w**-alpha * t


def kernels(rotation: np.ndarray, widths=WIDTHS, seeds=SEEDS, n_ex: int = 16,
            rng_seed: int = 0, param: str = "ntp", mode: int = 0) -> xr.Dataset:
    """eNTKs with one spectrum whose eigenvector ``mode`` (the target; 0: the top one) is
    rotated toward the last eigenvector by ``rotation[j]`` radians at width j, and the
    regression target (example, output)."""
    rng = np.random.default_rng(rng_seed)
    q, _ = np.linalg.qr(rng.normal(size=(n_ex, n_ex)))
    lam = 2.0 ** -np.arange(n_ex)
    y = q[:, mode]
    vals = np.empty((1, len(widths), len(seeds), 1, n_ex, n_ex))
    for j, theta in enumerate(rotation):
        v = q.copy()
        v[:, mode] = np.cos(theta) * q[:, mode] + np.sin(theta) * q[:, -1]
        v[:, -1] = -np.sin(theta) * q[:, mode] + np.cos(theta) * q[:, -1]
        vals[0, j] = (v * lam) @ v.T
    entk = xr.DataArray(vals, dims=("param", "width", "seed", "entk_step", "example",
                                    "example2"),
                        coords={**_coords([param], widths, seeds), "entk_step": [100]})
    targets = xr.DataArray(np.broadcast_to(y[:, None], (1, len(widths), len(seeds), 1, n_ex, 1)),
                           dims=("param", "width", "seed", "targets_step", "example", "output"),
                           coords={**_coords([param], widths, seeds), "targets_step": [0]})
    return xr.Dataset({"entk": entk, "targets": targets})

"""Dynamics: a short run at every width (seeds stacked in one ``ws.Ensemble``), then the
scaled RMS distance of each width's probe outputs to the widest network's (seed by seed,
``widthscan.analysis.distance_to_widest``). Width-consistent training makes it fall with width.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import xarray as xr
from torch import nn

from widthscan.analysis import distance_to_widest
from widthscan.check.data import Data
from widthscan.check.verdict import Slope, fit_slope
from widthscan.train import Ensemble


@dataclass(frozen=True)
class Dynamics:
    """``loss`` (width, seed, step) training losses; ``distance`` (width, seed) scaled RMS
    distance of final probe outputs to the widest width's; ``slope`` its log-log slope over the
    narrower widths (expected < 0)."""

    loss: xr.DataArray
    distance: xr.DataArray
    slope: Slope

    @property
    def ok(self) -> bool:
        return bool(np.isfinite(self.loss.values).all()) and self.slope.value < 0

    def summary(self) -> str:
        if not np.isfinite(self.loss.values).all():
            return "diverged at some width: lower the learning rate"
        mean = self.distance.mean("seed").values
        cells = ", ".join(f"{int(w)}: {d:.3g}" for w, d in zip(self.distance["width"].values,
                                                                 mean))
        trend = "falls" if self.ok else "does not fall"
        return (f"distance to the widest {trend} with width (slope "
                f"{self.slope.value:+.2f} [{self.slope.low:+.2f}, {self.slope.high:+.2f}]; "
                f"{cells})")


def run_dynamics(factory: Callable[[int], nn.Module], widths: Sequence[int], base_width: int,
                 seeds: Sequence[int], data: Data, param: str, optimizer: str, lr: float,
                 steps: int, roles: Mapping[str, str] | None = None) -> Dynamics:
    """Train every width for ``steps`` updates on ``data``; distances of the probe outputs."""
    x_probe = data.probe()
    losses, outputs = [], []
    for width in widths:
        ens = Ensemble(factory, width, base_width, param, optimizer, seeds=list(seeds), lr=lr,
                       loss=data.loss, roles=roles)
        curve = []
        for step in range(steps):
            x, y = data.batch(step)
            curve.append(ens.step(x, y).double().numpy())
        losses.append(np.stack(curve, 1))
        with torch.no_grad():
            outputs.append(ens.forward(x_probe).double().reshape(len(seeds), -1).numpy())
    coords = {"width": list(widths), "seed": list(seeds)}
    loss = xr.DataArray(np.stack(losses), dims=("width", "seed", "step"),
                        coords={**coords, "step": np.arange(steps)}, name="loss")
    out = xr.DataArray(np.stack(outputs), dims=("width", "seed", "output"), coords=coords,
                       name="logits")
    dist = distance_to_widest(out, scaled=True)
    narrow = dist.sel(width=list(widths[:-1]))
    flat = narrow.transpose("width", "seed")
    slope = fit_slope(np.repeat(flat["width"].values, flat.sizes["seed"]),
                      flat.values.ravel(), 0.0)
    return Dynamics(loss, dist.transpose("width", "seed"), slope)

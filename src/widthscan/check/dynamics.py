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

    loss: xr.DataArray | None
    distance: xr.DataArray | None
    slope: Slope | None
    error: str = ""

    @property
    def ok(self) -> bool:
        """No member diverged (True, no evidence, when it could not run)."""
        return bool(self.error) or bool(np.isfinite(self.loss.values).all())

    def summary(self) -> str:
        if self.error:
            return f"not run: {self.error}"
        if not np.isfinite(self.loss.values).all():
            return "diverged at some width: lower the learning rate"
        mean = self.distance.mean("seed").values
        cells = ", ".join(f"{int(w)}: {d:.3g}" for w, d in zip(self.distance["width"].values,
                                                                 mean))
        trend = ("falls" if self.slope.high < 0 else "grows" if self.slope.low > 0
                 else "is flat within noise")
        return (f"distance to the widest {trend} with width (slope "
                f"{self.slope.value:+.2f} [{self.slope.low:+.2f}, {self.slope.high:+.2f}]; "
                f"{cells})")


def run_dynamics(factory: Callable[[int], nn.Module], widths: Sequence[int], base_width: int,
                 seeds: Sequence[int], data: Data, param: str, optimizer: str, lr: float,
                 steps: int, roles: Mapping[str, str] | None = None) -> Dynamics:
    """Train every width for ``steps`` updates on ``data``; distances of the probe outputs.

    A model that ``ws.Ensemble`` cannot stack (e.g. tied weights, ops ``vmap`` rejects) gives
    a Dynamics with ``error`` set instead of raising.
    """
    x_probe = data.probe()
    losses, outputs = [], []
    for width in widths:
        try:
            curve, out = _train(factory, width, base_width, seeds, data, param, optimizer, lr,
                                steps, roles, x_probe)
        except (RuntimeError, ValueError, TypeError, NotImplementedError) as err:
            return Dynamics(None, None, None, f"ws.Ensemble failed at width {width}: "
                            f"{type(err).__name__}: {str(err).splitlines()[0][:200]}")
        losses.append(curve)
        outputs.append(out)
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


def _train(factory: Callable[[int], nn.Module], width: int, base_width: int,
           seeds: Sequence[int], data: Data, param: str, optimizer: str, lr: float, steps: int,
           roles: Mapping[str, str] | None, x_probe: torch.Tensor
           ) -> tuple[np.ndarray, np.ndarray]:
    """Losses (seed, step) and flattened probe outputs (seed, -1) of one width."""
    ens = Ensemble(factory, width, base_width, param, optimizer, seeds=list(seeds), lr=lr,
                   loss=data.loss, roles=roles)
    curve = []
    for step in range(steps):
        x, y = data.batch(step)
        curve.append(ens.step(x, y).double().numpy())
    with torch.no_grad():
        out = ens.forward(x_probe).double().reshape(len(seeds), -1).numpy()
    return np.stack(curve, 1), out

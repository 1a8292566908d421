"""The rule table: init std, forward multiplier and learning-rate scale per role.

Every parameterization equals standard parameterization (SP) at the base width.
With fan-in ratio ``fi = fan_in / fan_in_base``, fan-out ratio ``fo`` and a
vector's ratio ``mv``, the *raw* parameter is drawn with std ``gain/sqrt(fan_in)``
("fan_in") or ``gain/sqrt(fan_in_base)`` ("base"), the forward pass uses
``multiplier * raw``, and the optimizer gets ``lr * lr_scale``,
``weight_decay * wd_scale`` (``wd_scale = 1 / lr_scale``, so the decay per step
``lr * wd`` is width-independent, as in microsoft/mup) and Adam's
``eps * eps_scale``.

| param | role | init | multiplier | SGD lr | Adam lr | Adam eps |
|---|---|---|---|---|---|---|
| sp  | all    | fan_in | 1         | 1     | 1         | 1 |
| mup | input  | fan_in | 1         | fo    | 1         | 1 |
| mup | hidden | fan_in | 1         | fo/fi | 1/fi      | 1 |
| mup | output | base   | 1/fi      | fi    | 1         | 1 |
| mup | vector | -      | 1         | mv    | 1         | 1 |
| ntp | input  | fan_in | 1         | 1     | fo^-1/2   | 1 |
| ntp | hidden | base   | fi^-1/2   | 1     | 1/fi      | 1 |
| ntp | output | base   | fi^-1/2   | 1     | fi^-1/2   | 1 |
| ntp | vector | -      | 1         | 1     | mv^-1/2   | 1 |
| mf  | input  | fan_in | 1         | fo    | 1         | 1 |
| mf  | hidden | base   | fi^-1/2   | fo    | fi^-1/2   | fi^-1/2 |
| mf  | output | base   | 1/fi      | fi    | 1         | 1 |
| mf  | vector | -      | 1         | mv    | 1         | 1 |

``fixed`` parameters get SP everywhere. ``mf`` (mean-field: NTK-style 1/sqrt(N)
layers, readout 1/N, learning rate scaled up by N) has exactly the effective
weights of ``mup`` at every step: under SGD the effective update is
``multiplier**2 * lr_scale``, under Adam ``multiplier * lr_scale`` (with eps
rescaled by the multiplier), and both agree with ``mup`` role by role.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from widthscan.parametrization.roles import ParamShape

PARAMS = ("mup", "sp", "ntp", "mf")
OPTIMIZERS = ("sgd", "adam", "adamw")


@dataclass(frozen=True)
class Scales:
    """Per-parameter numbers derived from the table (all dimensionless)."""

    init_std: float | None
    multiplier: float
    lr_scale: float
    eps_scale: float = 1.0

    @property
    def wd_scale(self) -> float:
        return 1.0 / self.lr_scale


def _check(param: str, optimizer: str) -> str:
    if param not in PARAMS:
        raise ValueError(f"param={param!r} is not a parameterization; allowed: {PARAMS}")
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer={optimizer!r} is not supported; allowed: {OPTIMIZERS}")
    return "sgd" if optimizer == "sgd" else "adam"


def scales(param: str, optimizer: str, shape: ParamShape, gain: float = 1.0) -> Scales:
    """Look up one parameter's row of the table.

    ``init_std`` is None for 1-d parameters (biases start at zero, gains keep
    the module's own initialization).
    """
    opt = _check(param, optimizer)
    role = shape.role
    fi, fo, mv = shape.fan_in_mult, shape.fan_out_mult, shape.width_mult
    std_fan_in = gain / math.sqrt(shape.fan_in)
    std_base = gain / math.sqrt(shape.fan_in_base)
    if role == "fixed" or param == "sp":
        return Scales(std_fan_in if shape.ndim >= 2 else None, 1.0, 1.0)
    sgd = opt == "sgd"
    if param == "mup":
        table = {
            "input": Scales(std_fan_in, 1.0, fo if sgd else 1.0),
            "hidden": Scales(std_fan_in, 1.0, fo / fi if sgd else 1.0 / fi),
            "output": Scales(std_base, 1.0 / fi, fi if sgd else 1.0),
            "vector": Scales(None, 1.0, mv if sgd else 1.0),
        }
    elif param == "ntp":
        table = {
            "input": Scales(std_fan_in, 1.0, 1.0 if sgd else fo**-0.5),
            "hidden": Scales(std_base, fi**-0.5, 1.0 if sgd else 1.0 / fi),
            "output": Scales(std_base, fi**-0.5, 1.0 if sgd else fi**-0.5),
            "vector": Scales(None, 1.0, 1.0 if sgd else mv**-0.5),
        }
    else:
        table = {
            "input": Scales(std_fan_in, 1.0, fo if sgd else 1.0),
            "hidden": Scales(std_base, fi**-0.5, fo if sgd else fi**-0.5,
                             1.0 if sgd else fi**-0.5),
            "output": Scales(std_base, 1.0 / fi, fi if sgd else 1.0),
            "vector": Scales(None, 1.0, mv if sgd else 1.0),
        }
    return table[role]


def attention_scale(param: str, head_dim: int, head_dim_base: int) -> float:
    """Factor on q.k attention logits: 1/d_head under muP/mf (equal to SP at the base
    width: sqrt(d_base)/d), 1/sqrt(d_head) under SP and NTP."""
    if param in ("mup", "mf"):
        return math.sqrt(head_dim_base) / head_dim
    return 1.0 / math.sqrt(head_dim)

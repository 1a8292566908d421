"""Rough cost estimates of a sweep config: training FLOPs from the model size, then time.

FLOPs per training example are 3x the forward pass (forward + backward). Forward FLOPs:
MLP 2 x parameters; transformer 2 x parameters x seq_len + 4 x layers x seq_len^2 x width;
ResNet-18 (CIFAR stem) 2 x 0.56e9 MACs at width 64 on 32x32 inputs, scaled by
(width / 64)^2 and the input area. Parameters are counted on the meta device (nothing is
allocated). Probes add ``PROBE_OVERHEAD``. Time = FLOPs / sustained throughput + a fixed
per-step overhead (small widths are launch- or Python-bound, not FLOP-bound). The CPU
throughput is calibrated on the measured CPU times in docs/reproduce.md (2-4 min per
experiment); the H100's is an assumption. Order-of-magnitude estimates.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

PROBE_OVERHEAD = 1.3
THROUGHPUT = {"cpu": 50e9, "gpu": 150e12}
STEP_OVERHEAD_S = {"cpu": 8e-3, "gpu": 2.5e-3}
INPUT_SHAPES = {"gegenbauer": None, "polynomial": None, "synthetic_vision": (1, 8, 8),
                "cifar5m": (3, 32, 32), "cifar10": (3, 32, 32), "fashion_mnist": (1, 28, 28)}


@dataclass(frozen=True)
class Cost:
    flops: float
    hours: float
    device: str

    def describe(self) -> str:
        if self.device == "cpu":
            minutes = self.hours * 60
            return f"~{minutes:.1f} min CPU" if minutes < 60 else f"~{self.hours:.1f} h CPU"
        return f"~{self.hours:.2g} GPU-h (H100)"


def _params(family: str, width: int, options: dict[str, Any]) -> int:
    from widthscan import models

    with torch.device("meta"):
        net = models.factory(family, **options)(width)
    return sum(p.numel() for p in net.parameters())


def _model_options(cfg: dict[str, Any]) -> dict[str, Any]:
    task, family = cfg["task"], cfg["model"]["family"]
    opts = dict(cfg["model"].get("options", {}))
    t_opts = task.get("options", {})
    shape = INPUT_SHAPES.get(task["name"])
    if family == "mlp":
        if shape is None:
            opts.setdefault("d_in", int(t_opts.get("dim", 10)))
            opts.setdefault("d_out", 1)
        else:
            opts.setdefault("d_in", math.prod(shape))
            opts.setdefault("d_out", 10)
    elif family == "resnet18":
        opts.setdefault("in_channels", (shape or (3,))[0])
    elif family == "transformer":
        opts.setdefault("seq_len", int(t_opts.get("seq_len", 128)))
    return opts


def forward_flops(cfg: dict[str, Any], width: int) -> float:
    """Forward FLOPs per training example of the config's model at ``width``."""
    family = cfg["model"]["family"]
    opts = _model_options(cfg)
    if family == "resnet18":
        shape = INPUT_SHAPES.get(cfg["task"]["name"]) or (3, 32, 32)
        return 2 * 0.56e9 * (width / 64) ** 2 * (shape[1] * shape[2] / 1024)
    params = _params(family, width, opts)
    if family == "transformer":
        seq = opts["seq_len"]
        return 2.0 * params * seq + 4.0 * opts.get("n_layers", 2) * seq**2 * width
    return 2.0 * params


def estimate(cfg: dict[str, Any], device: str) -> Cost:
    """Estimated cost of running every (param, width) of ``cfg`` on ``device``."""
    seeds = cfg["seeds"] if isinstance(cfg["seeds"], int) else len(cfg["seeds"])
    steps, batch = cfg["train"]["steps"], cfg["train"]["batch_size"]
    n_params = len(cfg["params"])
    flops = sum(3 * forward_flops(cfg, w) * batch * seeds * steps for w in cfg["widths"])
    flops *= n_params * PROBE_OVERHEAD
    seconds = flops / THROUGHPUT[device]
    seconds += STEP_OVERHEAD_S[device] * steps * len(cfg["widths"]) * n_params
    return Cost(flops, seconds / 3600, device)


def estimate_parts(parts: dict[str, dict[str, Any]], scale: str) -> Cost:
    device = "cpu" if scale in ("cpu", "smoke") else "gpu"
    costs = [estimate(cfg, device) for cfg in parts.values()]
    return Cost(sum(c.flops for c in costs), sum(c.hours for c in costs), device)

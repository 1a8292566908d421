"""Sweep configs of the paper's setups at each scale, as plain dicts (``SweepConfig`` input).

``cpu``: minutes on a 2-core laptop (small widths, short runs, stand-ins: an MLP on
Gegenbauer polynomials, a ResNet-18 on ``synthetic_vision`` with few channels, a small
byte-level transformer on the offline default corpus). ``gpu``: about an hour on one H100.
``paper``: the paper's own setups as far as its text gives them (App. A): ResNet-18 with
LayerNorm on CIFAR-5M (SGD lr 0.05, momentum 0.9, cosine over 20,000 steps, batch 250,
RandomCrop(32, 4) + flip), Figs. 6a/6b's lr/batch, Adam transformers on Wikitext-103 (a
local parquet file: edit ``task.options.paths``), 3-layer MLPs on Gegenbauer polynomials.
Where the paper's text lost a number (widths, depth, heads), the choice is ours and said so
in docs/reproduce.md. ``smoke`` is ``cpu`` shrunk to 2 widths and a handful of steps (tests).
"""

from __future__ import annotations

import copy
from typing import Any

Config = dict[str, Any]

WIKITEXT_PARQUET = "data/wikitext-103/train.parquet"
CPU_VISION_SOURCE = "digits"
"""``synthetic_vision``'s source at ``cpu`` scale: scikit-learn's 8x8 digits, bundled, so
the CPU configs are the same on every machine (``auto`` would pick Fashion-MNIST where its
files exist, 28x28 images: another task, and 12x the ResNet's cost)."""


def _sweep(widths: list[int], base_width: int, seeds: int, task: Config, model: Config,
           optimizer: Config, train: Config, probes: Config, params: tuple[str, ...] = ("mup",),
           schedule: Config | None = None) -> Config:
    return {
        "widths": list(widths), "base_width": base_width, "params": list(params),
        "seeds": seeds, "task": task, "model": model, "optimizer": optimizer,
        "schedule": schedule or {"kind": "constant"},
        "train": {"checkpoint_every": max(1, train["steps"] // 2), **train},
        "probes": probes,
    }


def mlp_gegenbauer(scale: str, probes: Config, params: tuple[str, ...] = ("mup",),
                   seeds: int | None = None, lr: float = 0.05, steps: int | None = None,
                   degree: int = 3, cpu_widths: list[int] | None = None) -> Config:
    """3-layer MLP on a Gegenbauer polynomial of a random direction (App. A.1), SGD;
    ``cpu_widths`` replaces the CPU widths (32-512)."""
    widths, base, k, n, batch, n_probe = {
        "cpu": ([32, 64, 128, 256, 512], 32, 4, 1000, 64, 128),
        "gpu": ([64, 128, 256, 512, 1024, 2048, 4096], 64, 8, 20000, 256, 1024),
        "paper": ([64, 128, 256, 512, 1024, 2048, 4096], 64, 8, 20000, 256, 1024),
    }[scale]
    if cpu_widths and scale == "cpu":
        widths, base = cpu_widths, min(cpu_widths)
    return _sweep(widths, base, seeds or k,
                  {"name": "gegenbauer", "probe_examples": n_probe,
                   "options": {"dim": 10, "degree": degree}},
                  {"family": "mlp", "options": {"depth": 3}},
                  {"name": "sgd", "lr": lr},
                  {"steps": steps or n, "batch_size": batch}, probes, params)


def mlp_polynomial(scale: str, probes: Config, params: tuple[str, ...] = ("mup", "sp"),
                   lr: float = 0.12) -> Config:
    """3-layer MLP on a quadratic polynomial, small batch and a large learning rate
    (App. E.1, Fig. 15): the regime of batch-noise and large-lr fluctuations. lr 0.2 was
    past the edge on CPU (a muP member diverged at width 512), hence 0.12."""
    widths, base, k, n, batch, n_probe = {
        "cpu": ([32, 64, 128, 256, 512], 32, 4, 600, 8, 128),
        "gpu": ([64, 128, 256, 512, 1024, 2048, 4096], 64, 8, 5000, 8, 1024),
        "paper": ([64, 128, 256, 512, 1024, 2048, 4096], 64, 8, 5000, 8, 1024),
    }[scale]
    return _sweep(widths, base, k,
                  {"name": "polynomial", "probe_examples": n_probe,
                   "options": {"dim": 10, "degree": 2}},
                  {"family": "mlp", "options": {"depth": 3}},
                  {"name": "sgd", "lr": lr},
                  {"steps": n, "batch_size": batch}, probes, params)


def mlp_eos(scale: str, probes: Config, lr: float = 0.2) -> Config:
    """3-layer muP MLP on a Gegenbauer polynomial with a large batch, where the edge of
    stability appears (Fig. 6a used batch 2000: EoS "only occurs at high batch sizes")."""
    widths, base, k, n, batch = {
        "cpu": ([32, 64, 128, 256, 512], 32, 3, 400, 512),
        "gpu": ([64, 128, 256, 512, 1024, 2048, 4096], 64, 4, 2000, 2000),
        "paper": ([64, 128, 256, 512, 1024, 2048, 4096], 64, 4, 2000, 2000),
    }[scale]
    return _sweep(widths, base, k,
                  {"name": "gegenbauer", "probe_examples": 128,
                   "options": {"dim": 10, "degree": 3}},
                  {"family": "mlp", "options": {"depth": 3}},
                  {"name": "sgd", "lr": lr}, {"steps": n, "batch_size": batch}, probes)


def resnet_vision(scale: str, probes: Config, params: tuple[str, ...] = ("mup",),
                  seeds: int | None = None, lr_scale: float = 1.0, batch: int | None = None,
                  steps: int | None = None, mode: Config | None = None) -> Config:
    """ResNet-18 (LayerNorm) on CIFAR-5M (``paper``) or its ``synthetic_vision`` stand-in,
    SGD momentum 0.9, cosine schedule (App. A.2.1): lr 0.05 times ``lr_scale`` (Fig. 6b:
    0.3, ``lr_scale`` 6). On CPU (8-64 channels, base 8, 8x8 images) the lr is 0.02: at
    0.05 the 16-channel network stayed at the chance loss for all 200 steps."""
    widths, base, k, n, bs, n_probe, lr = {
        "cpu": ([8, 16, 32, 64], 8, 4, 200, 32, 64, 0.02),
        "gpu": ([16, 32, 64, 128, 256], 64, 4, 4000, 250, 512, 0.05),
        "paper": ([16, 32, 64, 128, 256, 512], 64, 4, 20000, 250, 1000, 0.05),
    }[scale]
    if scale == "paper":
        task = {"name": "cifar5m", "probe_examples": n_probe, "options": {"augment": True}}
    else:
        task = {"name": "synthetic_vision", "probe_examples": n_probe,
                "options": {"source": CPU_VISION_SOURCE} if scale == "cpu" else {}}
    if mode:
        task["options"] = {**task["options"], **mode}
    return _sweep(widths, base, seeds or k, task, {"family": "resnet18", "options": {}},
                  {"name": "sgd", "lr": round(lr * lr_scale, 6), "momentum": 0.9},
                  {"steps": steps or n, "batch_size": batch or bs}, probes, params,
                  schedule={"kind": "cosine"})


def mlp_vision(scale: str, probes: Config, params: tuple[str, ...] = ("mup",),
               seeds: int | None = None, lr: float = 0.1, steps: int | None = None,
               mode: Config | None = None, widths: tuple[int, ...] = (16, 32, 64, 128, 256),
               cosine: bool = False) -> Config:
    """The CPU stand-in for vision ensembles: a 3-layer MLP on flattened
    ``synthetic_vision`` images, SGD momentum 0.9 (ResNet-18 on CIFAR-5M at
    ``gpu``/``paper``)."""
    if scale in ("gpu", "paper"):
        return resnet_vision(scale, probes, params, seeds, mode=mode)
    task = {"name": "synthetic_vision", "probe_examples": 256,
            "options": {"source": CPU_VISION_SOURCE, "flatten": True, **(mode or {})}}
    return _sweep(list(widths), min(widths), seeds or 8, task,
                  {"family": "mlp", "options": {"depth": 3}},
                  {"name": "sgd", "lr": lr, "momentum": 0.9},
                  {"steps": steps or 600, "batch_size": 64}, probes, params,
                  schedule={"kind": "cosine" if cosine else "constant"})


def mlp_teacher(scale: str, probes: Config, seeds: int = 8, lr: float = 0.05,
                steps: int = 1000, widths: tuple[int, ...] = (8, 16, 32, 64, 128, 256, 512)
                ) -> Config:
    """The CPU stand-in for online vision ensembles (Fig. 7, App. H): a 3-layer MLP student
    of a fixed random ReLU network (``teacher``: 16 Gaussian inputs, 2 hidden layers of 128,
    10 classes), SGD momentum 0.9, cosine decay; ResNet-18 on CIFAR-5M at ``gpu``/``paper``.
    The teacher is a nonlinear target that narrow students cannot represent (the paper:
    harder tasks give larger bias gaps); on ``synthetic_vision``'s linear teacher a width-16
    MLP was already at the widest's loss."""
    if scale in ("gpu", "paper"):
        return resnet_vision(scale, probes, seeds=seeds)
    task = {"name": "teacher", "probe_examples": 256,
            "options": {"dim": 16, "hidden": 128, "depth": 2, "n_classes": 10}}
    return _sweep(list(widths), min(widths), seeds, task,
                  {"family": "mlp", "options": {"depth": 3}},
                  {"name": "sgd", "lr": lr, "momentum": 0.9},
                  {"steps": steps, "batch_size": 64}, probes, schedule={"kind": "cosine"})


def transformer_text(scale: str, probes: Config, params: tuple[str, ...] = ("mup",),
                     optimizer: str = "adam", seeds: int | None = None,
                     cpu_widths: list[int] | None = None) -> Config:
    """A pre-LayerNorm transformer (fixed heads, d_model = width) trained online on text:
    the offline default corpus (``cpu``, ``gpu``) or Wikitext-103 as a local parquet file
    (``paper``; masked LM as in App. A.3.1), Adam (or SGD, Fig. 13); ``cpu_widths``
    replaces the CPU widths (16-128)."""
    widths, base, k, n, batch, seq, layers, heads, n_probe = {
        "cpu": ([16, 32, 64, 128], 16, 3, 300, 16, 32, 2, 2, 8),
        "gpu": ([64, 128, 256, 512, 1024], 64, 4, 5000, 64, 128, 4, 4, 32),
        "paper": ([128, 256, 512, 1024, 2048, 4096], 128, 4, 100000, 32, 128, 6, 4, 64),
    }[scale]
    if cpu_widths and scale == "cpu":
        widths, base = cpu_widths, min(cpu_widths)
    options: Config = {"seq_len": seq}
    if scale == "paper":
        options.update(paths=WIKITEXT_PARQUET, objective="masked")
    opt = ({"name": "adam", "lr": 1e-3 if scale == "paper" else 3e-3}
           if optimizer == "adam" else {"name": "sgd", "lr": 0.5})
    return _sweep(widths, base, seeds or k,
                  {"name": "text", "probe_examples": n_probe, "options": options},
                  {"family": "transformer", "options": {"n_layers": layers, "n_heads": heads}},
                  opt, {"steps": n, "batch_size": batch}, probes, params)


def shrink(cfg: Config) -> Config:
    """A ``smoke`` version of a config: its two narrowest widths, 2 seeds (3 where the
    config asks for more than 4: ensemble sizes), 6 steps, small probe sets."""
    out = copy.deepcopy(cfg)
    out["widths"] = sorted(out["widths"])[:2]
    out["base_width"] = min(out["base_width"], out["widths"][0])
    out["seeds"] = 3 if int(out["seeds"]) > 4 else 2
    out["train"] = {**out["train"], "steps": 6, "checkpoint_every": 3,
                    "batch_size": min(out["train"]["batch_size"], 16)}
    out["task"] = {**out["task"], "probe_examples": min(out["task"]["probe_examples"], 16)}
    probes = {}
    for name, probe in out.get("probes", {}).items():
        probe = dict(probe)
        if "n_log" in probe or "n_linear" in probe or name not in ("loss", "logits"):
            probe.update(n_log=2, n_linear=1)
        opts = dict(probe.get("options", {}))
        if "n_examples" in opts:
            opts["n_examples"] = min(opts["n_examples"], 16)
        if name == "sharpness":
            opts.update(max_iter=5, batch_size=16)
        if opts:
            probe["options"] = opts
        probes[name] = probe
    out["probes"] = probes
    return out

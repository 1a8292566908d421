"""A synthetic sweep Dataset laid out exactly as docs/data-model.md says ``ws.load`` returns.

muP widths converge like 1/width to a common limit; SP widths like 1/sqrt(width)
with a width-dependent drift, so the two parameterizations look different in the
report. Everything is seeded and small (2 params x 4 widths x 3 seeds, 50 steps).
Also used by docs/screenshot.sh.
"""

from __future__ import annotations

import numpy as np
import xarray as xr

PARAMS = ("mup", "sp")
WIDTHS = (64, 128, 256, 512)
SEEDS = (0, 1, 2)
N_STEPS = 50
N_EX = 8
LR = 0.5

CONFIG = f"""\
name = "synthetic"
widths = {list(WIDTHS)}
base_width = 64
params = ["mup", "sp"]
seeds = {len(SEEDS)}

[task]
name = "gegenbauer"
seed = 0
probe_examples = {N_EX}

[model]
family = "mlp"
options = {{ depth = 3 }}

[optimizer]
name = "sgd"
lr = {LR}

[train]
steps = {N_STEPS}
batch_size = 64
loss = "mse"
"""


def _probe_steps(n_log: int) -> np.ndarray:
    steps = np.unique(np.round(np.geomspace(1, N_STEPS - 1, n_log)).astype(int))
    return np.concatenate([[0], steps])


def _scale(param: str, width: int, t: np.ndarray) -> np.ndarray:
    """Size of the finite-width deviation at time t (fraction of training done)."""
    frac = t / (N_STEPS - 1)
    if param == "mup":
        return (64 / width) * (0.05 + 0.6 * frac)
    return np.sqrt(64 / width) * (0.15 + 1.2 * frac)


def synthetic_dataset(seed: int = 0, *, attention: bool = False, targets: bool = False,
                      diverge: bool = True) -> xr.Dataset:
    """The Dataset; ``attention`` / ``targets`` add those variables, ``diverge`` makes one
    SP member (width 256, seed 1) diverge at step 44 (NaN from there on, listed in
    attrs["diverged"] as the store does)."""
    rng = np.random.default_rng(seed)
    n_p, n_w, n_s = len(PARAMS), len(WIDTHS), len(SEEDS)
    steps = np.arange(N_STEPS)
    loss_steps = _probe_steps(10)
    logit_steps = _probe_steps(8)
    kernel_steps = _probe_steps(5)
    pre_steps = np.array([0, 24, N_STEPS - 1])
    sharp_steps = np.array([0, 5, 10, 20, 30, 40, N_STEPS - 1])
    entk_steps = np.array([N_STEPS - 1])

    def limit_loss(t):
        return 0.08 + 0.9 * np.exp(-t / 12.0)

    batch_noise = 1 + 0.15 * rng.standard_normal(N_STEPS)  # shared by widths and seeds
    loss = np.empty((n_p, n_w, n_s, N_STEPS))
    probe = np.empty((n_p, n_w, n_s, loss_steps.size))
    for i, p in enumerate(PARAMS):
        for j, w in enumerate(WIDTHS):
            for k in range(n_s):
                amp = 0.5 + 0.1 * rng.standard_normal() / np.sqrt(w / 64)
                loss[i, j, k] = limit_loss(steps) * batch_noise + 0.3 * amp * _scale(
                    p, w, steps) * np.exp(-steps / 40)
                probe[i, j, k] = limit_loss(loss_steps) + 0.3 * amp * _scale(
                    p, w, loss_steps) * np.exp(-loss_steps / 40) + 0.02
    lr = np.full((n_p, n_w, n_s, N_STEPS), LR)

    # logits: f_inf(t, x) + deviation/width with a seed part and a width-bias part
    y = rng.standard_normal((N_EX, 1))
    bias_dir = rng.standard_normal((N_EX, 1))
    logits = np.empty((n_p, n_w, n_s, logit_steps.size, N_EX, 1))
    for i, p in enumerate(PARAMS):
        for j, w in enumerate(WIDTHS):
            s = _scale(p, w, logit_steps)[:, None, None]
            for k in range(n_s):
                noise = rng.standard_normal((logit_steps.size, N_EX, 1))
                base = y[None] * (1 - np.exp(-logit_steps / 10.0))[:, None, None]
                logits[i, j, k] = base + s * (0.6 * bias_dir[None] + 0.5 * noise)

    # feature kernels: K = phi phi^T, phi drifting from random features to task-aligned ones
    d = 16
    phi0 = rng.standard_normal((N_EX, d)) / np.sqrt(d)
    phi1 = np.concatenate([np.repeat(y, d // 2, 1), phi0[:, d // 2:]], 1) / np.sqrt(d / 2)
    kernel = np.empty((n_p, n_w, n_s, kernel_steps.size, 1, N_EX, N_EX))
    for i, p in enumerate(PARAMS):
        for j, w in enumerate(WIDTHS):
            for k in range(n_s):
                for t_i, t in enumerate(kernel_steps):
                    a = t / (N_STEPS - 1) * (1.0 if p == "mup" else 0.4 * 64 / w)
                    phi = (1 - a) * phi0 + a * phi1 + _scale(p, w, np.array(t))[()] * (
                        0.3 * rng.standard_normal((N_EX, d)) / np.sqrt(d))
                    kernel[i, j, k, t_i, 0] = phi @ phi.T

    # preactivations: histograms of width * N_EX samples, their own edges per member
    n_bins = 30
    hist = np.empty((n_p, n_w, n_s, pre_steps.size, 1, n_bins))
    edges = np.empty((n_p, n_w, n_s, pre_steps.size, 1, n_bins + 1))
    stats = np.empty((n_p, n_w, n_s, pre_steps.size, 1, 3))
    for i, p in enumerate(PARAMS):
        for j, w in enumerate(WIDTHS):
            for k in range(n_s):
                for t_i, t in enumerate(pre_steps):
                    frac = t / (N_STEPS - 1)
                    n = w * N_EX
                    spread = 1 + (0.8 * frac if p == "mup" else 0.8 * frac * 64 / w)
                    x = rng.standard_normal(n) * spread + frac * np.sign(rng.standard_normal(n))
                    c, e = np.histogram(x, bins=n_bins)
                    hist[i, j, k, t_i, 0], edges[i, j, k, t_i, 0] = c, e
                    m, sd = x.mean(), x.std()
                    stats[i, j, k, t_i, 0] = [m, sd, ((x - m) ** 4).mean() / sd**4 - 3]

    # sharpness: rises towards 2/lr and hovers there (edge of stability)
    sharp = np.empty((n_p, n_w, n_s, sharp_steps.size, 1))
    for i, p in enumerate(PARAMS):
        for j, w in enumerate(WIDTHS):
            for k in range(n_s):
                top = (2 / LR) * (1 - 0.7 * np.exp(-sharp_steps / 8.0))
                top = top * (1 + 0.03 * rng.standard_normal(sharp_steps.size))
                if p == "sp":
                    top = top * (w / 64) ** 0.25
                sharp[i, j, k, :, 0] = top

    # eNTK at the end: psi psi^T, the task more aligned with the top modes when wider
    d2 = 24
    psi0 = rng.standard_normal((N_EX, d2)) / np.sqrt(d2)
    entk = np.empty((n_p, n_w, n_s, entk_steps.size, N_EX, N_EX))
    for i, p in enumerate(PARAMS):
        for j, w in enumerate(WIDTHS):
            align = 0.8 * (1 - _scale(p, w, np.array(N_STEPS - 1))[()] / 2)
            for k in range(n_s):
                psi = psi0 + 0.3 * _scale(p, w, np.array(0))[()] * (
                    rng.standard_normal((N_EX, d2)) / np.sqrt(d2))
                psi[:, :2] += align * y / np.sqrt(N_EX)
                entk[i, j, k, 0] = psi @ psi.T

    core = ("param", "width", "seed")
    ex = ("example", "example2")
    data = {
        "loss": ((*core, "step"), loss),
        "lr": ((*core, "step"), lr),
        "probe_loss": ((*core, "loss_step"), probe),
        "logits": ((*core, "logits_step", "example", "output"), logits),
        "kernel": ((*core, "kernels_step", "layer", *ex), kernel),
        "preact_hist": ((*core, "preactivations_step", "layer", "bin"), hist),
        "preact_edges": ((*core, "preactivations_step", "layer", "bin_edge"), edges),
        "preact_stats": ((*core, "preactivations_step", "layer", "stat"), stats),
        "sharpness": ((*core, "sharpness_step", "eigen"), sharp),
        "entk": ((*core, "entk_step", *ex), entk),
    }
    coords = {
        "param": np.array(PARAMS), "width": np.array(WIDTHS, np.int64),
        "seed": np.array(SEEDS, np.int64), "step": steps, "loss_step": loss_steps,
        "logits_step": logit_steps, "kernels_step": kernel_steps,
        "preactivations_step": pre_steps, "sharpness_step": sharp_steps,
        "entk_step": entk_steps, "layer": np.array(["layers.1"]),
        "stat": np.array(["mean", "std", "kurtosis"]),
    }
    if attention:
        n_q, heads = 6, 2
        base = rng.standard_normal((heads, n_q, n_q))
        att = np.empty((n_p, n_w, n_s, kernel_steps.size, 1, heads, n_q, n_q))
        for i, p in enumerate(PARAMS):
            for j, w in enumerate(WIDTHS):
                for k in range(n_s):
                    for t_i, t in enumerate(kernel_steps):
                        sc = 3 * t / (N_STEPS - 1) * base + _scale(p, w, np.array(t))[()] * (
                            rng.standard_normal((heads, n_q, n_q)))
                        sc = sc - sc.max(-1, keepdims=True)
                        att[i, j, k, t_i, 0] = np.exp(sc) / np.exp(sc).sum(-1, keepdims=True)
        data["attention"] = ((*core, "attention_step", "layer", "head", "query", "key"), att)
        coords["attention_step"] = kernel_steps
    if targets:
        data["targets"] = (("example", "output"), y)

    ds = xr.Dataset(data, coords=coords)
    diverged = []
    if diverge:
        at = 44
        sel = {"param": "sp", "width": 256, "seed": 1}
        for name, da in ds.data_vars.items():
            if name == "targets":
                continue
            sd = next(d for d in da.dims if d == "step" or str(d).endswith("_step"))
            mask = (da[sd] >= at) & (da["param"] == sel["param"]) & (
                da["width"] == sel["width"]) & (da["seed"] == sel["seed"])
            ds[name] = da.where(~mask)
        diverged.append(f"param=sp,width=256,seed=1,step={at}")
    ds.attrs.update(incomplete=[], diverged=diverged, config=CONFIG,
                    widthscan_version="0.1.0+synthetic")
    return ds

"""Ensembles on one device: per-seed loop, functorch recipe and ws.Ensemble side by side.

For each family (mlp, sequential = a user's nn.Sequential MLP, resnet18, transformer;
small_transformer = 2 layers, d_model 64, the issue's CPU case) x
width x precision, times K seeds trained three ways on the same pre-made batches: a plain
per-seed torch loop, the functorch "model ensembling" recipe (``stack_module_state`` +
``vmap(grad)`` + SGD by hand), and ``ws.Ensemble`` (stacking "auto"); prints seconds,
speed-ups, samples/s over all members and the Ensemble's share of the device's matmul peak
(FLOPs of one member's step counted by ``torch.utils.flop_counter``, peak measured in this
run for the same precision), the loop's share, and the ceiling: the loop's time over the time
its FLOPs take at that peak, the most any stacking can gain (counted FLOPs are the matmuls;
elementwise work is not free, so the real bound is lower). Then the data path's share of an
Ensemble step in ``train_loop`` (batches from the family's task, made inline and
prefetched), and the wall time of the issue's sweep (resnet18 on synthetic_vision, widths
16-128, mup + sp, 4 seeds, 400 steps, probes loss/logits/kernels).

    python benchmarks/gpu.py                     # everything, on cuda
    python benchmarks/gpu.py --parts perf --families transformer --precisions bfloat16
    python benchmarks/gpu.py --device cpu --smoke  # tiny shapes, seconds (tests run this)

Every number comes from this process; ratios are medians of interleaved repeats.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.func import functional_call, grad_and_value, stack_module_state, vmap
from torch.utils.flop_counter import FlopCounterMode

import widthscan as ws
import widthscan.tasks as ws_tasks
from widthscan.train.loop import train_loop


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_time(fn: Callable[[], None], device: torch.device, repeats: int) -> float:
    fn()
    sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def matmul_peak(device: torch.device, dtype: torch.dtype, n: int) -> float:
    """FLOP/s of an n x n matmul in ``dtype`` (TF32 off for float32)."""
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    inner = 10
    t = median_time(lambda: [a @ b for _ in range(inner)], device, 3)
    return 2 * n**3 * inner / t


# ---------------------------------------------------------------- families
def family(name: str, smoke: bool) -> dict:
    """factory(width), base width, widths, batch maker, loss, per-member batch size."""
    if name in ("mlp", "sequential"):
        d_in, d_out, batch = 32, 10, 256

        def factory(w: int) -> torch.nn.Module:
            if name == "mlp":
                return ws.models.mlp(w, depth=3, d_in=d_in, d_out=d_out)
            return torch.nn.Sequential(torch.nn.Linear(d_in, w), torch.nn.ReLU(),
                                       torch.nn.Linear(w, w), torch.nn.ReLU(),
                                       torch.nn.Linear(w, d_out))

        def make(g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
            return torch.randn(batch, d_in, generator=g), torch.randn(batch, d_out, generator=g)

        widths = [64, 128] if smoke else [256, 1024, 4096, 8192]
        return {"factory": factory, "base": 64, "widths": widths, "make": make, "loss": "mse",
                "batch": batch, "task": ("synthetic_vision", {"flatten": True}, d_out)}
    if name == "resnet18":
        batch = 8 if smoke else 128
        side = 8 if smoke else 32

        def factory(w: int) -> torch.nn.Module:
            return ws.models.resnet18(w, n_classes=10, in_channels=3,
                                      blocks=(1, 1, 1, 1) if smoke else (2, 2, 2, 2))

        def make(g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
            return (torch.randn(batch, 3, side, side, generator=g),
                    torch.randint(0, 10, (batch,), generator=g))

        return {"factory": factory, "base": 8 if smoke else 16,
                "widths": [8] if smoke else [32, 64, 128], "make": make, "loss": "ce",
                "batch": batch, "task": ("synthetic_vision", {}, 10)}
    if name in ("transformer", "small_transformer"):
        small = smoke or name == "small_transformer"
        batch, seq, vocab = (16, 32, 64) if small else (32, 128, 256)
        layers, heads = (2, 4) if small else (4, 8)

        def factory(w: int) -> torch.nn.Module:
            return ws.models.transformer(w, vocab_size=vocab, seq_len=seq, n_layers=layers,
                                         n_heads=heads)

        def make(g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
            x = torch.randint(0, vocab, (batch, seq), generator=g)
            return x, torch.roll(x, -1, 1)

        widths = [32] if smoke else [64] if small else [256, 512, 1024]
        return {"factory": factory, "base": 32 if smoke else 64 if small else 256,
                "widths": widths, "make": make, "loss": "ce", "batch": batch, "task": None}
    raise ValueError(f"family={name!r}; allowed: mlp, sequential, resnet18, transformer, "
                     "small_transformer")


def loss_of(out: torch.Tensor, y: torch.Tensor, loss: str) -> torch.Tensor:
    if loss == "mse":
        return F.mse_loss(out, y)
    return F.cross_entropy(out.reshape(-1, out.shape[-1]).float(), y.reshape(-1))


def per_seed_loop(fam: dict, width: int, k: int, data: list, device: torch.device,
                  amp: bool) -> Callable[[], None]:
    runs = []
    for s in range(k):
        torch.manual_seed(s)
        m = fam["factory"](width).to(device)
        runs.append((m, torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9)))

    def go() -> None:
        for m, opt in runs:
            for x, y in data:
                opt.zero_grad(set_to_none=True)
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                    value = loss_of(m(x), y, fam["loss"])
                value.backward()
                opt.step()
    return go


def functorch_recipe(fam: dict, width: int, k: int, data: list, device: torch.device,
                     amp: bool) -> Callable[[], None]:
    models = []
    for s in range(k):
        torch.manual_seed(s)
        models.append(fam["factory"](width).to(device))
    params, buffers = stack_module_state(models)
    base = copy.deepcopy(models[0]).to("meta")
    momentum = {n: torch.zeros_like(p) for n, p in params.items()}

    def member_loss(p, b, x, y):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            return loss_of(functional_call(base, (p, b), (x,)), y, fam["loss"])

    grads = vmap(grad_and_value(member_loss), in_dims=(0, 0, None, None))
    names = list(params)

    def go() -> None:
        for x, y in data:
            g, _ = grads(params, buffers, x, y)
            with torch.no_grad():
                torch._foreach_mul_([momentum[n] for n in names], 0.9)
                torch._foreach_add_([momentum[n] for n in names], [g[n] for n in names])
                torch._foreach_add_([params[n] for n in names], [momentum[n] for n in names],
                                    alpha=-0.01)
    return go


def ensemble(fam: dict, width: int, k: int, data: list, device: torch.device,
             precision: str) -> tuple[Callable[[], None], ws.Ensemble]:
    ens = ws.Ensemble(fam["factory"], width, fam["base"], "mup", "sgd", list(range(k)), 0.01,
                      momentum=0.9, loss=fam["loss"], device=device, precision=precision)

    def go() -> None:
        for x, y in data:
            ens.step(x, y)
    return go, ens


def member_step_flops(fam: dict, width: int, x: torch.Tensor, y: torch.Tensor) -> float:
    """Forward + backward FLOPs of one member's step (float32, on the CPU, counted)."""
    m = fam["factory"](width)
    with FlopCounterMode(display=False) as counter:
        loss_of(m(x.cpu()), y.cpu(), fam["loss"]).backward()
    return float(counter.get_total_flops())


def perf(args: argparse.Namespace, device: torch.device) -> None:
    peaks = {}
    for precision in args.precisions:
        dtype = torch.bfloat16 if precision == "bfloat16" else torch.float32
        n = 512 if args.smoke else 8192 if device.type == "cuda" else 2048
        peaks[precision] = matmul_peak(device, dtype, n)
        print(f"matmul peak {precision}: {peaks[precision] / 1e12:.2f} TFLOP/s", flush=True)
    print("\n| family | width | K | precision | per-seed loop (s) | functorch (s) | Ensemble (s) "
          "| vs loop | vs functorch | strategy | samples/s | % of matmul peak | loop % of peak "
          "| ceiling vs loop |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    g = torch.Generator().manual_seed(0)
    for name in args.families:
        fam = family(name, args.smoke)
        k = args.k or (8 if name in ("mlp", "sequential") else 4)
        data = [tuple(t.to(device) for t in fam["make"](g)) for _ in range(args.steps)]
        for width in args.widths or fam["widths"]:
            flops = member_step_flops(fam, width, *data[0]) * k * len(data)
            for precision in args.precisions:
                amp = precision == "bfloat16"
                row = {}
                try:
                    loop = per_seed_loop(fam, width, k, data, device, amp)
                    try:
                        recipe = functorch_recipe(fam, width, k, data, device, amp)
                    except Exception as err:
                        print(f"<!-- functorch recipe failed: {type(err).__name__}: {err} -->")
                        recipe = None
                    ens_go, ens = ensemble(fam, width, k, data, device, precision)
                    ens_go()
                    for _ in range(args.repeats):  # interleaved: all see the same load
                        for key, fn in (("loop", loop), ("recipe", recipe), ("ens", ens_go)):
                            if fn is not None:
                                row.setdefault(key, []).append(
                                    median_time(fn, device, 1))
                except Exception as err:
                    print(f"| {name} | {width} | {k} | {precision} | ERROR "
                          f"{type(err).__name__}: {str(err)[:200]} |", flush=True)
                    continue
                t = {key: statistics.median(v) for key, v in row.items()}
                t_rec = t.get("recipe", float("nan"))
                samples = k * fam["batch"] * len(data) / t["ens"]
                print(f"| {name} | {width} | {k} | {precision} | {t['loop']:.4f} | {t_rec:.4f} "
                      f"| {t['ens']:.4f} | {t['loop'] / t['ens']:.2f}x | {t_rec / t['ens']:.2f}x "
                      f"| {ens.stacking} | {samples:.0f} "
                      f"| {100 * flops / t['ens'] / peaks[precision]:.0f}% "
                      f"| {100 * flops / t['loop'] / peaks[precision]:.0f}% "
                      f"| {t['loop'] * peaks[precision] / flops:.2f}x |", flush=True)
                if device.type == "cuda":
                    torch.cuda.empty_cache()


# ---------------------------------------------------------------- data path
def data_share(args: argparse.Namespace, device: torch.device) -> None:
    """The data path's share of a training-loop step: loops on pre-made batches, on batches
    made inline and on prefetched ones, interleaved; share = (loop - premade) / loop."""
    print("\n| family | task | width | step ms (pre-made) | data share inline | prefetched |")
    print("|---|---|---|---|---|---|")
    steps = 4 if args.smoke else 40
    for name in args.families:
        fam = family(name, args.smoke)
        if fam["task"] is None:
            task = ws_tasks.make("text", seed=0, seq_len=fam["make"](
                torch.Generator().manual_seed(0))[0].shape[1])
            batch = fam["batch"]
        else:
            task_name, opts, _ = fam["task"]
            task = ws_tasks.make(task_name, seed=0, source="digits", **opts)
            batch = fam["batch"]
        width = (args.widths or fam["widths"])[0]
        spec = task.spec
        x0, _ = task.batch(0, 2)

        def factory(w: int, name: str = name, spec=spec, x0=x0) -> torch.nn.Module:
            if name in ("mlp", "sequential"):
                return ws.models.mlp(w, depth=3, d_in=x0[0].numel(), d_out=spec.output_dim)
            if name == "resnet18":
                return ws.models.resnet18(w, n_classes=spec.output_dim,
                                          in_channels=x0.shape[1], blocks=(1, 1, 1, 1))
            return ws.models.transformer(w, vocab_size=spec.vocab_size, seq_len=spec.seq_len,
                                         n_layers=2, n_heads=4)

        def batch_at(t: int, task=task, batch=batch) -> tuple[torch.Tensor, torch.Tensor]:
            return task.batch(t, batch, device=device)

        premade = [batch_at(t) for t in range(steps)]
        times: dict[str, list[float]] = {"premade": [], "inline": [], "prefetched": []}
        for _ in range(args.repeats):
            for key in times:
                ens = ws.Ensemble(factory, width, fam["base"], "mup", "sgd", [0, 1, 2, 3],
                                  0.01, loss=spec.loss, device=device, stacking="vmap"
                                  if name == "resnet18" else "auto")
                ens.step(*premade[0])
                ens.step_count = 0
                source = (lambda t, p=premade: p[t]) if key == "premade" else batch_at
                sync(device)
                t0 = time.perf_counter()
                train_loop(ens, source, steps, prefetch=2 if key == "prefetched" else 0)
                sync(device)
                times[key].append(time.perf_counter() - t0)
        base = min(times["premade"])
        inline, ahead = min(times["inline"]), min(times["prefetched"])
        print(f"| {name} | {spec.name} | {width} | {1e3 * base / steps:.2f} "
              f"| {100 * (inline - base) / inline:.1f}% | {100 * (ahead - base) / ahead:.1f}% |",
              flush=True)


# ---------------------------------------------------------------- the sweep
SWEEP = """\
name = "gpu-resnet-synthetic-vision"
widths = {widths}
base_width = {base}
params = ["mup", "sp"]
seeds = {seeds}
[task]
name = "synthetic_vision"
seed = 0
probe_examples = {probe}
options = {{ source = "{source}" }}
[model]
family = "resnet18"
[optimizer]
name = "sgd"
lr = 0.05
momentum = 0.9
[train]
steps = {steps}
batch_size = {batch}
device = "{device}"
checkpoint_every = {every}
[probes.loss]
[probes.logits]
[probes.kernels]
n_log = 3
n_linear = 2
options = {{ n_examples = {kernel} }}
"""


def sweep(args: argparse.Namespace, device: torch.device) -> None:
    if args.smoke:
        text = SWEEP.format(widths=[8], base=8, seeds=2, probe=16, source="digits", steps=4,
                            batch=8, device=device.type, every=2, kernel=8)
    else:
        text = SWEEP.format(widths=[16, 32, 64, 128], base=16, seeds=4, probe=256,
                            source=args.sweep_source, steps=400, batch=128, device=device.type,
                            every=200, kernel=128)
    source = "digits" if args.smoke else args.sweep_source
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        ws.Sweep.from_string(text).run(Path(tmp) / "sweep", progress=False)
        wall = time.perf_counter() - t0
    print(f"\nsweep (resnet18 on synthetic_vision, source {source}): {wall:.1f} s wall, "
          "all runs", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--smoke", action="store_true", help="tiny shapes: seconds, on the CPU too")
    ap.add_argument("--parts", nargs="+", default=["perf", "data", "sweep"],
                    choices=["perf", "data", "sweep"])
    ap.add_argument("--families", nargs="+",
                    default=["mlp", "sequential", "resnet18", "transformer"])
    ap.add_argument("--widths", type=int, nargs="*", default=None)
    ap.add_argument("--precisions", nargs="+", default=None,
                    choices=["float32", "bfloat16"])
    ap.add_argument("--k", type=int, default=None, help="seeds (default 8 for MLPs, else 4)")
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--sweep-source", default="digits",
                    help="synthetic_vision source of the sweep (the issue used fashion_mnist)")
    args = ap.parse_args()
    device = torch.device(args.device)
    args.steps = args.steps or (2 if args.smoke else 20)
    args.precisions = args.precisions or (
        ["float32"] if args.smoke or device.type == "cpu" else ["float32", "bfloat16"])
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False
        print(f"device: {torch.cuda.get_device_name(device)}; torch {torch.__version__}")
    else:
        print(f"device: cpu, {torch.get_num_threads()} threads; torch {torch.__version__}")
    parts = {"perf": perf, "data": data_share, "sweep": sweep}
    for part in args.parts:
        parts[part](args, device)


if __name__ == "__main__":
    main()

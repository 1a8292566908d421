"""Peak memory and time of ``ws.load`` on a generated store of a few hundred MB.

The store mimics a transformer text sweep: params x widths runs of K seeds, probes
logits (per-token logits on 32 positions, target_logit on 512), kernels (3 layers x
P x P), attention (2 layers x 4 heads x S x S) and loss, written with ``RunStore``
(no training). Each case runs in a fresh process and reports its peak RSS above the
RSS after imports (``resource.getrusage``) and its wall time:

- ``load``: ``ws.load`` alone (lazy: no shard is read);
- ``one step``: load, then the kernel at the last step (one shard per run);
- ``logits``: load, then every logits value (what a consistency panel reads);
- ``everything``: load, then ``ds.load()`` (every probe value, the eager path);
- ``before``: the loader of ``--before REV`` (git revision, e.g. the eager one), if given.

    python benchmarks/load.py [--dir /tmp/widthscan-load-bench] [--before 75def50]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

PARAMS, WIDTHS, SEEDS = ("mup", "sp"), (32, 64, 128, 256, 512, 1024, 2048, 4096), (0, 1)
LOGIT_STEPS, KERNEL_STEPS = range(41), range(13)
P, S, V, N_FULL, N_TOKENS = 256, 64, 256, 32, 512

CASES = {
    "load": "ds = load(root)",
    "one step": "ds = load(root); ds['kernel'].isel(kernels_step=-1).values",
    "logits": "ds = load(root); ds['logits'].values",
    "everything": "ds = load(root); ds.load()",
}

CHILD = """
import json, resource, sys, time, warnings
import psutil
warnings.simplefilter("ignore")
sys.path.insert(0, {src!r})
{imports}
root = {root!r}
base = psutil.Process().memory_info().rss
t0 = time.perf_counter()
{code}
wall = time.perf_counter() - t0
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({{"peak_mb": (peak - base) / 2**20, "wall_s": wall}}))
"""


def write_store(root: Path) -> int:
    """Write the synthetic sweep; return its size in bytes."""
    from widthscan.measurement import Measurement
    from widthscan.store import RunStore, run_dir

    rng = np.random.default_rng(0)
    k = len(SEEDS)
    for param in PARAMS:
        for width in WIDTHS:
            rs = RunStore(run_dir(root, param, width))
            rs.write_config({"param": param, "width": width, "seeds": list(SEEDS)})
            rs.append_scalars({"step": t, "seed": s, "loss": 1.0 / (t + 1), "lr": 0.01}
                              for t in range(max(LOGIT_STEPS) + 1) for s in SEEDS)
            positions = np.arange(N_TOKENS)
            for t in LOGIT_STEPS:
                rs.write_probe("logits", t, {
                    "logits": Measurement(("position", "output"),
                                          rng.standard_normal((k, N_FULL, V), np.float32),
                                          {"position": positions[:N_FULL]}),
                    "target_logit": Measurement(("position",),
                                                rng.standard_normal((k, N_TOKENS), np.float32),
                                                {"position": positions}),
                })
                rs.write_probe("loss", t, {"probe_loss": Measurement(
                    (), rng.random(k).astype(np.float32))})
            layers = np.array(["blocks.0", "blocks.1", "readout:in"])
            for t in KERNEL_STEPS:
                rs.write_probe("kernels", t, {"kernel": Measurement(
                    ("layer", "example", "example2"),
                    rng.standard_normal((k, 3, P, P), np.float32), {"layer": layers})})
                rs.write_probe("attention", t, {"attention": Measurement(
                    ("layer", "head", "query", "key"),
                    rng.random((k, 2, 4, S, S), np.float32),
                    {"layer": np.array(["blocks.0.attn", "blocks.1.attn"])})})
            rs.finalize()
            rs.write_status({"state": "done", "step": max(LOGIT_STEPS), "seeds": list(SEEDS)})
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def run_case(src: str, imports: str, root: Path, code: str) -> dict:
    script = CHILD.format(src=src, imports=imports, root=str(root), code=code)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"benchmark case failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", default=None, help="where to write the store (default: a temp dir)")
    ap.add_argument("--before", default=None, help="git revision of an older loader to compare")
    args = ap.parse_args()
    src = str(Path(__file__).resolve().parents[1] / "src")
    sys.path.insert(0, src)
    root = Path(args.dir or tempfile.mkdtemp(prefix="widthscan-load-bench-")) / "sweep"
    if not (root / "runs").exists():
        size = write_store(root)
    else:
        size = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
    print(f"store: {root}, {size / 2**20:.0f} MB, {len(PARAMS) * len(WIDTHS)} runs")
    imports = "from widthscan.store import load"
    rows = {name: run_case(src, imports, root, code) for name, code in CASES.items()}
    if args.before:
        old = Path(tempfile.mkdtemp()) / "old_load.py"
        text = subprocess.run(["git", "show", f"{args.before}:src/widthscan/store/load.py"],
                              capture_output=True, text=True, check=True).stdout
        old.write_text(text)
        imports = ("import importlib.util\n"
                   f"spec = importlib.util.spec_from_file_location('old_load', {str(old)!r})\n"
                   "mod = importlib.util.module_from_spec(spec)\n"
                   "sys.modules['old_load'] = mod; spec.loader.exec_module(mod)\n"
                   "load = mod.load")
        rows[f"before ({args.before})"] = run_case(src, imports, root, "ds = load(root)")
    print(f"{'case':<22} {'peak MB':>9} {'wall s':>8}")
    for name, r in rows.items():
        print(f"{name:<22} {r['peak_mb']:>9.0f} {r['wall_s']:>8.2f}")


if __name__ == "__main__":
    main()

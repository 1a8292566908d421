"""Probe costs, measured in one run: schedule overhead, Lanczos vs PyHessian, eNTK vs vmap(jacrev).

    python benchmarks/probes.py [--steps 2000] [--threads 1] [--skip-entk-reference]

Prints a markdown table of ratios. The overhead is measured in process CPU time (robust
to other load on a shared machine with one thread), the rest in wall-clock time, with
``--threads`` intra-op threads; the eNTK methods each run in a fresh subprocess so
that their peak resident memory (``ru_maxrss``) can be compared.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import time

import torch
import torch.nn.functional as F
from torch.func import functional_call, jacrev, vmap

import widthscan as ws
import widthscan.probes as probes
from widthscan.probes.hessian import make_hvp, member_loss_fn
from widthscan.probes.members import members

D_IN = 10


def gegenbauer_data(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """x uniform on the sphere of radius sqrt(d); y = normalized Gegenbauer C_3 of beta.x."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, D_IN, generator=g)
    x = x / x.norm(dim=1, keepdim=True) * math.sqrt(D_IN)
    beta = torch.randn(D_IN, generator=torch.Generator().manual_seed(12345))
    z = x @ (beta / beta.norm()) / math.sqrt(D_IN)
    a = (D_IN - 2) / 2
    c3 = 4 / 3 * a * (a + 1) * (a + 2) * z**3 - 2 * a * (a + 1) * z
    return x, (c3 / c3.std()).unsqueeze(1)


def mlp(width: int):
    return ws.models.mlp(width, depth=3, d_in=D_IN, d_out=1)


def ensemble(width: int = 256) -> ws.Ensemble:
    return ws.Ensemble(mlp, width, 64, "mup", "sgd", [0, 1, 2, 3], lr=0.05, momentum=0.9,
                       loss="mse")


def train(steps: int, suite: probes.ProbeSuite | None, batch: int = 128):
    ens = ensemble()
    probe_x, probe_y = gegenbauer_data(512, seed=-1)
    batch_x, batch_y = gegenbauer_data(batch, seed=-2)
    spent: dict[str, float] = {}
    calls: dict[str, int] = {}
    train_time = 0.0
    for step in range(steps + 1):
        if suite is not None:
            due = suite.due(step)
            outputs = [n for n in due if n in ("loss", "logits")]
            for group in ([outputs] if outputs else []) + [[n] for n in due if n not in outputs]:
                t = time.process_time()
                suite.measure(group, ens, step, probe_x, probe_y, batch_x, batch_y)
                key = "+".join(group)
                spent[key] = spent.get(key, 0.0) + time.process_time() - t
                calls[key] = calls.get(key, 0) + 1
        if step < steps:
            data = gegenbauer_data(batch, seed=step)
            t = time.process_time()
            ens.step(*data)
            train_time += time.process_time() - t
    return ens, train_time, spent, calls


def overhead(steps: int) -> tuple[list[tuple[str, str]], ws.Ensemble]:
    _, plain, _, _ = train(steps, None)
    suite = probes.ProbeSuite(None, steps)
    ens, trained, spent, calls = train(steps, suite)
    total = sum(spent.values())
    parts = ", ".join(f"{k} {v:.2f} s/{calls[k]}" for k, v in spent.items())
    return [
        ("training steps alone, run without probes (CPU s)",
         f"{plain:.2f} s ({steps} steps, K=4, width 256, batch 128)"),
        ("training steps, run with probes (CPU s)", f"{trained:.2f} s"),
        ("default probes (CPU s / calls)", parts),
        ("probe time / training time, same run", f"{total / trained:.1%} (target <= 10%)"),
    ], ens


def single_member(ens: ws.Ensemble) -> ws.parametrization.Parametrized:
    p = ws.parametrize(mlp, ens.width, ens.base_width, ens.param, "sgd", seed=ens.seeds[0])
    with torch.no_grad():
        for name, t in p.net.named_parameters():
            t.copy_(ens.params[name][0])
    return p


def lanczos_hvps_to(p, x, y, target: float, rel: float) -> tuple[int, float]:
    """Fewest Lanczos HVPs whose top Ritz value is within ``rel`` of ``target``, and the
    time of that run."""
    for m in range(1, 200):
        t = time.perf_counter()
        val = probes.eigenpairs(p, x, y, loss="mse", tol=0.0, max_iter=m).values[0, 0].item()
        elapsed = time.perf_counter() - t
        if abs(val - target) <= rel * abs(target):
            return m, elapsed
    return -1, float("nan")


def power_hvps_to(p, x, y, target: float, rel: float) -> tuple[int, float, dict]:
    """PyHessian's power iteration: HVPs to reach ``rel`` of ``target`` (its own loop,
    replayed with its utilities), the time of ``eigenvalues(maxIter=that, tol=0)``, and
    what its default stopping rule (tol=1e-3) returns."""
    from pyhessian import hessian
    from pyhessian.utils import group_product, hessian_vector_product, normalization

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        h = hessian(p.module, F.mse_loss, data=(x, y), cuda=False)
        v = normalization([torch.randn_like(q) for q in h.params])
        needed = -1
        for i in range(1, 2001):
            hv = hessian_vector_product(h.gradsH, h.params, v)
            val = group_product(hv, v).item()
            v = normalization(hv)
            if abs(val - target) <= rel * abs(target):
                needed = i
                break
        torch.manual_seed(0)
        t = time.perf_counter()
        h = hessian(p.module, F.mse_loss, data=(x, y), cuda=False)
        h.eigenvalues(maxIter=max(needed, 1), tol=0.0)
        elapsed = time.perf_counter() - t
        torch.manual_seed(0)
        h = hessian(p.module, F.mse_loss, data=(x, y), cuda=False)
        counted = {"n": 0}
        ph = sys.modules["pyhessian.hessian"]
        original = ph.hessian_vector_product

        def counting(*args):
            counted["n"] += 1
            return original(*args)

        ph.hessian_vector_product = counting
        try:
            (default_val,), _ = h.eigenvalues()
        finally:
            ph.hessian_vector_product = original
    for q in p.module.parameters():
        q.grad = None
    return needed, elapsed, {"hvps": counted["n"], "err": abs(default_val - target) / target}


def sharpness_rows(ens: ws.Ensemble) -> list[tuple[str, str]]:
    p = single_member(ens)
    x, y = gegenbauer_data(128, seed=-2)
    exact = probes.eigenpairs(p, x, y, loss="mse", tol=1e-10, max_iter=300)
    target = exact.values[0, 0].item()
    ours_n, ours_t = lanczos_hvps_to(p, x, y, target, 1e-3)
    default = probes.eigenpairs(p, x, y, loss="mse")
    d_err = abs(default.values[0, 0].item() - target) / target
    power_n, power_t, power_default = power_hvps_to(p, x, y, target, 1e-3)
    m = members(ens)
    hvp = make_hvp(m, member_loss_fn(m, x, y, "mse"))
    v = torch.randn(ens.k, m.flat_size())
    t = time.perf_counter()
    for _ in range(20):
        hvp(v)
    batched = (time.perf_counter() - t) / 20
    single = make_hvp(members(p), member_loss_fn(members(p), x, y, "mse"))
    t = time.perf_counter()
    for _ in range(20):
        single(v[:1])
    one = (time.perf_counter() - t) / 20
    return [
        ("top Hessian eigenvalue (width 256, batch 128, trained)", f"{target:.6g}"),
        ("HVPs to 1e-3 rel: Lanczos / PyHessian power",
         f"{ours_n} / {power_n} = {power_n / ours_n:.1f}x fewer (target >= 5x)"),
        ("time to 1e-3 rel: Lanczos / PyHessian", f"{ours_t * 1e3:.1f} ms / {power_t * 1e3:.1f} ms"
         f" = {power_t / ours_t:.1f}x"),
        ("default stop (tol=1e-3): Lanczos HVPs, rel err",
         f"{int(default.hvps[0])}, {d_err:.1e}"),
        ("default stop (tol=1e-3): PyHessian HVPs, rel err",
         f"{power_default['hvps']}, {power_default['err']:.1e}"),
        ("one batched HVP for K=4 / one single-model HVP",
         f"{batched * 1e3:.2f} ms / {one * 1e3:.2f} ms ({4 * one / batched:.1f}x vs 4 singles)"),
    ]


def entk_worker(method: str) -> None:
    torch.manual_seed(0)
    factory = lambda w: ws.models.mlp(w, depth=3, d_in=D_IN, d_out=10)  # noqa: E731
    p = ws.parametrize(factory, 512, 64, "mup", "sgd", seed=0)
    x, _ = gegenbauer_data(256, seed=-3)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t = time.perf_counter()
    if method == "structured":
        theta = torch.as_tensor(probes.entk(p, x, method="structured")["entk"].values)
    else:
        params = {n: q.detach() for n, q in p.net.named_parameters()}

        def f(raw, inp):
            eff = ws.parametrization.scale_params(raw, p.multipliers)
            return functional_call(p.net, eff, (inp.unsqueeze(0),))[0]

        jac = vmap(jacrev(f), in_dims=(None, 0))(params, x)
        theta = sum(torch.einsum("acn,bcn->ab", j.flatten(2), j.flatten(2))
                    for j in jac.values()) / 10
    elapsed = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    torch.save(theta, f"/tmp/widthscan_entk_{method}.pt")
    print(json.dumps({"time": elapsed, "peak_mb": peak / 1024, "delta_mb": (peak - before) / 1024}))


def entk_rows(threads: int, skip_reference: bool) -> list[tuple[str, str]]:
    def run(method):
        out = subprocess.run([sys.executable, __file__, "--entk-worker", method,
                              "--threads", str(threads)], capture_output=True, text=True,
                             check=True)
        return json.loads(out.stdout.strip().splitlines()[-1])

    s = run("structured")
    rows = [("eNTK structured (P=256, width 512, C=10)",
             f"{s['time'] * 1e3:.0f} ms, peak RSS {s['peak_mb']:.0f} MB "
             f"(+{s['delta_mb']:.0f} MB)")]
    if not skip_reference:
        r = run("jacrev")
        a = torch.load("/tmp/widthscan_entk_structured.pt")
        b = torch.load("/tmp/widthscan_entk_jacrev.pt")
        err = ((a - b).abs().max() / b.abs().max()).item()
        rows += [
            ("eNTK vmap(jacrev) + einsum", f"{r['time'] * 1e3:.0f} ms, peak RSS "
             f"{r['peak_mb']:.0f} MB (+{r['delta_mb']:.0f} MB)"),
            ("speedup structured vs vmap(jacrev)",
             f"{r['time'] / s['time']:.1f}x (target >= 10x); max rel diff {err:.1e}"),
        ]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--skip-entk-reference", action="store_true")
    parser.add_argument("--entk-worker", choices=["structured", "jacrev"])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.entk_worker:
        entk_worker(args.entk_worker)
        return
    rows, ens = overhead(args.steps)
    rows += sharpness_rows(ens)
    rows += entk_rows(args.threads, args.skip_entk_reference)
    print(f"torch {torch.__version__}, {args.threads} thread(s)\n")
    print("| measurement | result |\n|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")


if __name__ == "__main__":
    main()

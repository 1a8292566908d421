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
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.func import functional_call, jacrev, vmap

import widthscan as ws
import widthscan.probes as probes
from widthscan.config.schema import TaskConfig, TrainConfig
from widthscan.probes.hessian import (
    hessian_product,
    lanczos,
    make_hvp,
    member_loss_fn,
    start_vectors,
)
from widthscan.probes.members import members

D_IN = 10
RULE_TOLS, RULE_CAP = (1e-3, 1e-4, 1e-5, 1e-6), 3000


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


BATCH = TrainConfig().batch_size
PROBE_EXAMPLES = TaskConfig().probe_examples


def train(steps: int, suite: probes.ProbeSuite | None, batch: int = BATCH,
          probe_examples: int = PROBE_EXAMPLES):
    ens = ensemble()
    probe_x, probe_y = gegenbauer_data(probe_examples, seed=-1)
    batch_x, batch_y = gegenbauer_data(batch, seed=-2)
    spent: dict[str, float] = {}
    calls: dict[str, int] = {}
    sharp: list[tuple[dict[str, torch.Tensor], float, int]] = []
    train_time = 0.0
    for step in range(steps + 1):
        if suite is not None:
            due = suite.due(step)
            outputs = [n for n in due if n in ("loss", "logits")]
            for group in ([outputs] if outputs else []) + [[n] for n in due if n not in outputs]:
                t = time.process_time()
                out = suite.measure(group, ens, step, probe_x, probe_y, batch_x, batch_y)
                key = "+".join(group)
                spent[key] = spent.get(key, 0.0) + time.process_time() - t
                calls[key] = calls.get(key, 0) + 1
                if "sharpness" in out:
                    snap = {n: p[0].detach().clone() for n, p in ens.params.items()}
                    sharp.append((snap, float(out["sharpness"]["sharpness"].values[0, 0]),
                                  int(out["sharpness"]["sharpness_hvps"].values[0])))
        if step < steps:
            data = gegenbauer_data(batch, seed=step)
            t = time.process_time()
            ens.step(*data)
            train_time += time.process_time() - t
    return ens, train_time, spent, calls, sharp


def overhead(steps: int, probe_examples: int = PROBE_EXAMPLES
             ) -> tuple[list[tuple[str, str]], ws.Ensemble, list]:
    """The sweep's defaults (probe set of ``TaskConfig().probe_examples``, sharpness on the
    training batch) on a width-256 MLP; ``probe_examples`` overrides the probe set size."""
    plain = train(steps, None, probe_examples=probe_examples)[1]
    # the raw Hessian, so that the run's sharpness calls can be set against PyHessian below
    # (the default under SGD, P^1/2 H P^1/2, costs two more elementwise products per HVP)
    chosen = {name: {} for name in probes.suite.DEFAULT_PROBES}
    suite = probes.ProbeSuite({**chosen, "sharpness": {"preconditioned": False}}, steps)
    ens, trained, spent, calls, sharp = train(steps, suite, probe_examples=probe_examples)
    total = sum(spent.values())
    parts = ", ".join(f"{k} {v:.2f} s/{calls[k]}" for k, v in spent.items())
    return [
        ("training steps alone, run without probes (CPU s)",
         f"{plain:.2f} s ({steps} steps, K=4, width 256, batch {BATCH}, "
         f"{probe_examples} probe examples)"),
        ("training steps, run with probes (CPU s)", f"{trained:.2f} s"),
        ("default probes (CPU s / calls)", parts),
        ("probe time / training time, same run", f"{total / trained:.1%} (target <= 10%)"),
    ], ens, sharp


def suite_vs_pyhessian(ens: ws.Ensemble, sharp: list) -> list[tuple[str, str]]:
    """The suite's warm-started sharpness calls (member 0) against PyHessian's default
    (tol=1e-3, cold) on the same states and batch."""
    x, y = gegenbauer_data(128, seed=-2)
    ours = theirs = 0
    ours_err = theirs_err = 0.0
    for params, value, hvps in sharp:
        p = as_parametrized(mlp, ens, params, torch.float32)
        exact = probes.eigenpairs(p, x, y, loss="mse", tol=1e-7, max_iter=300).values[0, 0]
        (val,), n = PyHessian(p, x, y, F.mse_loss).default(1)
        ours, theirs = ours + hvps, theirs + n
        ours_err = max(ours_err, abs(value - exact.item()) / exact.item())
        theirs_err = max(theirs_err, abs(val - exact.item()) / exact.item())
    return [(f"sharpness over the run ({len(sharp)} calls, member 0): HVPs (max rel err)",
             f"suite, warm Lanczos {ours} ({ours_err:.0e}) / PyHessian default {theirs} "
             f"({theirs_err:.0e}) = {theirs / ours:.1f}x fewer")]


def as_parametrized(factory, ens: ws.Ensemble, raw: dict[str, torch.Tensor],
                    dtype: torch.dtype) -> ws.parametrization.Parametrized:
    """A Parametrized of ``ens``'s width and parameterization holding the raw parameters
    ``raw`` (name -> one member's tensor), in ``dtype``."""
    p = ws.parametrize(factory, ens.width, ens.base_width, ens.param, "sgd", seed=ens.seeds[0],
                       dtype=dtype)
    with torch.no_grad():
        for name, t in p.net.named_parameters():
            t.copy_(raw[name])
    return p


def as_member(factory, ens: ws.Ensemble, k: int = 0, dtype: torch.dtype = torch.float64
              ) -> ws.parametrization.Parametrized:
    """Member k of ``ens`` as a Parametrized (same raw parameters), float64 by default."""
    return as_parametrized(factory, ens, {n: p[k] for n, p in ens.params.items()}, dtype)


def lanczos_hvps_to(p, x, y, loss: str, target: float, rel: float) -> tuple[int, float]:
    """Fewest Lanczos HVPs whose top Ritz value is within ``rel`` of ``target``, and the
    wall time of that run (graph build included)."""
    for m in range(1, 300):
        t = time.perf_counter()
        val = probes.eigenpairs(p, x, y, loss=loss, tol=0.0, max_iter=m).values[0, 0].item()
        elapsed = time.perf_counter() - t
        if abs(val - target) <= rel * abs(target):
            return m, elapsed
    return -1, float("nan")


class PyHessian:
    """PyHessian on ``p.module`` (forward applies the multipliers), float64, seeded, with
    the module's grads cleared before each construction (PyHessian accumulates into
    .grad) and a count of its Hessian-vector products."""

    def __init__(self, p, x, y, criterion):
        self.p, self.x, self.y, self.criterion = p, x, y, criterion

    def _build(self):
        from pyhessian import hessian

        self.p.module.zero_grad(set_to_none=True)
        return hessian(self.p.module, self.criterion, data=(self.x, self.y), cuda=False)

    def run(self, fn):
        ph = sys.modules.get("pyhessian.hessian")
        if ph is None:
            import pyhessian  # noqa: F401

            ph = sys.modules["pyhessian.hessian"]
        original, count = ph.hessian_vector_product, {"n": 0}

        def counting(*args):
            count["n"] += 1
            return original(*args)

        default = torch.get_default_dtype()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            torch.set_default_dtype(torch.float64)
            ph.hessian_vector_product = counting
            try:
                out = fn(self._build())
            finally:
                ph.hessian_vector_product = original
                torch.set_default_dtype(default)
                self.p.module.zero_grad(set_to_none=True)
        return out, count["n"]

    def replay(self, target: float | None = None, rel: float = 1e-3,
               tols: tuple[float, ...] = (), cap: int = RULE_CAP, oracle_cap: int = 2000
               ) -> tuple[int, dict[float, tuple[int, float]]]:
        """One replay of PyHessian's ``eigenvalues(top_n=1)`` power iteration (its own
        utilities, same start), read two ways:

        - oracle: the first HVP count whose Rayleigh quotient is within ``rel`` of
          ``target`` (-1 if none within ``oracle_cap``; no oracle without a target). The
          quotient is divided by |v|^2: PyHessian normalizes by (|v| + 1e-6), which biases
          its own estimate by about -2e-6 / |lambda| relative;
        - its stopping rule: for every t in ``tols``, (HVPs after which its relative-change
          test stops ``eigenvalues(tol=t, maxIter=cap)``, the value it returns); a tol never
          met within ``cap`` gets (cap, last value), as PyHessian returns at maxIter.
        """
        from pyhessian.utils import group_product, hessian_vector_product, normalization, orthnormal

        def loop(h):
            stops: dict[float, tuple[int, float]] = {}
            oracle = -1
            searching = target is not None
            v = normalization([torch.randn(q.size()) for q in h.params])
            value = None
            for i in range(cap):
                v = orthnormal(v, [])
                h.model.zero_grad()
                hv = hessian_vector_product(h.gradsH, h.params, v)
                current = group_product(hv, v).item()
                if searching:
                    quotient = current / group_product(v, v).item()
                    if abs(quotient - target) <= rel * abs(target):
                        oracle, searching = i + 1, False
                    elif i + 1 >= oracle_cap:
                        searching = False
                v = normalization(hv)
                if value is not None:
                    for t in tols:
                        if t not in stops and abs(value - current) / (abs(value) + 1e-6) < t:
                            stops[t] = (i + 1, value)
                value = current
                if not searching and len(stops) == len(tols):
                    break
            return oracle, {t: stops.get(t, (cap, value)) for t in tols}

        return self.run(loop)[0]

    def hvps_to(self, target: float, rel: float, cap: int = 2000) -> int:
        """Power-iteration HVPs until the Rayleigh quotient is within ``rel`` of ``target``;
        -1 if not within ``cap`` (see :meth:`replay`)."""
        return self.replay(target, rel, cap=cap, oracle_cap=cap)[0]

    def timed(self, iters: int) -> float:
        t = time.perf_counter()
        self.run(lambda h: h.eigenvalues(maxIter=iters, tol=0.0))
        return time.perf_counter() - t

    def default(self, top_n: int) -> tuple[list[float], int]:
        (values, _), n = self.run(lambda h: h.eigenvalues(top_n=top_n))
        return values, n


def own_rule_rows(name: str, calls: list[dict]) -> list[tuple[str, str]]:
    """Each method with its own stopping rule, over ``calls`` (dicts with ``exact`` top
    eigenvalue, ``warm`` / ``cold`` (HVPs, value) of the library's Lanczos at the default
    tol 1e-3, ``rule`` PyHessian's t -> (HVPs, value)): total HVPs, worst relative error
    and calls off by more than 1e-3; then the HVPs each needs for every call within 1e-3,
    PyHessian at the loosest of its tols that delivers it (a user cannot know which in
    advance: it depends on lambda_2 / lambda_1)."""
    def summary(pairs):
        errs = [abs(v - c["exact"]) / abs(c["exact"]) for (_, v), c in zip(pairs, calls)]
        return sum(n for n, _ in pairs), max(errs), sum(e > 1e-3 for e in errs)

    cells, totals = [], {}
    for label, pairs in (("suite warm Lanczos", [c["warm"] for c in calls]),
                         ("cold Lanczos", [c["cold"] for c in calls]),
                         *((f"PyHessian tol {t:.0e}", [c["rule"][t] for c in calls])
                           for t in RULE_TOLS)):
        n, worst, off = summary(pairs)
        totals[label] = (n, off)
        cells.append(f"{label}: {n} ({worst:.0e}; {off} off)")
    ok = [t for t in RULE_TOLS if totals[f"PyHessian tol {t:.0e}"][1] == 0]
    warm, cold = totals["suite warm Lanczos"], totals["cold Lanczos"]
    if ok and warm[1] == 0:
        n = totals[f"PyHessian tol {ok[0]:.0e}"][0]
        verdict = (f"PyHessian tol {ok[0]:.0e}: {n} / suite warm Lanczos {warm[0]} = "
                   f"**{n / warm[0]:.1f}x fewer** (cold Lanczos {cold[0]} with {cold[1]} "
                   f"off: {n / cold[0]:.1f}x)")
    else:
        verdict = "not delivered by " + ", ".join(
            label for label, (_, off) in totals.items() if off) + f" (PyHessian cap {RULE_CAP})"
    return [(f"{name}: own stopping rules, HVPs (worst rel err; calls off by > 1e-3)",
             "; ".join(cells)),
            (f"{name}: HVPs for every call within 1e-3, own stopping rules", verdict)]


def rule_call(p, x, y, loss: str, criterion, exact: float, v0=None,
              power_cap: int = 2000) -> dict:
    """One probe call's entries for :func:`own_rule_rows`, plus ``power``, PyHessian's
    oracle count to 1e-3 from the same replay (-1 past ``power_cap``), and the warm start."""
    warm = probes.eigenpairs(p, x, y, loss=loss, v0=v0)
    cold = probes.eigenpairs(p, x, y, loss=loss)
    power, rule = PyHessian(p, x, y, criterion).replay(exact, 1e-3, RULE_TOLS,
                                                       oracle_cap=power_cap)
    return dict(exact=exact, warm=(int(warm.hvps[0]), warm.values[0, 0].item()),
                cold=(int(cold.hvps[0]), cold.values[0, 0].item()), rule=rule, power=power,
                next_v0=warm.warm[0])


def hvp_cell(n: int, cap: int = 2000) -> str:
    return f">{cap}" if n < 0 else str(n)


def compare(name: str, p, x, y, loss: str, criterion) -> list[tuple[str, str]]:
    exact = probes.eigenpairs(p, x, y, loss=loss, k=3, tol=1e-11, max_iter=400).values[0]
    target = exact[0].item()
    ref = PyHessian(p, x, y, criterion)
    rows = [(f"{name}: top-3 Hessian eigenvalues", ", ".join(f"{v:.6g}" for v in exact))]
    for rel in (1e-3, 1e-6):
        ours, ours_t = lanczos_hvps_to(p, x, y, loss, target, rel)
        power = ref.hvps_to(target, rel)
        cell = f"{ours} / {hvp_cell(power)}"
        if power > 0:
            cell += f" = {power / ours:.1f}x fewer"
            if rel == 1e-3:
                cell += f"; time {ours_t * 1e3:.0f} ms / {ref.timed(power) * 1e3:.0f} ms"
        rows.append((f"{name}: HVPs to {rel:.0e} rel, Lanczos / PyHessian power", cell))
    rows += own_rule_rows(f"{name} (one cold call)",
                          [rule_call(p, x, y, loss, criterion, target)])[:1]
    pairs = probes.eigenpairs(p, x, y, loss=loss, k=3)
    err = ((pairs.values[0] - exact).abs() / exact.abs()).max().item()
    values, n = ref.default(3)
    perr = max(abs(v - e) / abs(e) for v, e in zip(values, exact.tolist()))
    rows.append((f"{name}: top-3 at default tol 1e-3, HVPs (max rel err)",
                 f"Lanczos {int(pairs.hvps[0])} ({err:.0e}) / PyHessian top_n=3 {n} "
                 f"({perr:.0e}) = {n / int(pairs.hvps[0]):.1f}x fewer"))
    return rows


def classifier(width: int):
    return ws.models.mlp(width, depth=3, d_in=D_IN, d_out=10)


def sharpness_rows(ens: ws.Ensemble) -> list[tuple[str, str]]:
    x, y = gegenbauer_data(128, seed=-2)
    rows = compare("MSE regression, width 256, after training", as_member(mlp, ens),
                   x.double(), y.double(), "mse", F.mse_loss)
    labels = (x[:, :3] > 0).long() @ torch.tensor([1, 2, 4])
    clf = ws.parametrize(classifier, 256, 64, "mup", "sgd", seed=0, dtype=torch.float64)
    rows += compare("8-class CE, width 256, init", clf, x.double(), labels, "ce",
                    F.cross_entropy)
    m = members(ens)
    v = torch.randn(ens.k, m.flat_size())
    one = members(as_member(mlp, ens, 0, torch.float32))

    def per_call(fn, *args) -> float:
        t = time.perf_counter()
        for _ in range(20):
            fn(*args)
        return (time.perf_counter() - t) / 20

    closed = hessian_product(m, x, y, "mse", "closed")
    autograd = hessian_product(m, x, y, "mse", "rev-rev")
    times = {
        "closed form": per_call(closed, v),
        "autograd rev-rev": per_call(autograd, v),
        "single-model rev-rev": per_call(hessian_product(one, x, y, "mse", "rev-rev"), v[:1]),
        "closed-form build": per_call(hessian_product, m, x, y, "mse", "closed"),
        "rev-rev build": per_call(hessian_product, m, x, y, "mse", "rev-rev"),
    }
    diff = ((closed(v) - autograd(v)).norm(dim=1) / autograd(v).norm(dim=1)).max().item()
    rows.append(("one HVP (float32, K=4 batched unless said; build: per sharpness call)",
                 ", ".join(f"{k} {t * 1e3:.2f} ms" for k, t in times.items())
                 + f"; closed vs rev-rev rel diff {diff:.0e}"))
    return rows


def fmnist_mlp(width: int):
    return ws.models.mlp(width, depth=3, d_in=784, d_out=10)


def classifier_run_rows(steps: int, every: int) -> list[tuple[str, str]]:
    """Sharpness along a real training run, as the probe is used (Fig. 6a): a width-256 muP
    MLP on Fashion-MNIST (10-class CE, SGD lr 0.5, batch 128), the top Hessian eigenvalue on
    256 held-out images every ``every`` steps (float64 copies of the weights). Per call:
    the suite's warm-started Lanczos at the default tol, Lanczos and PyHessian power
    iteration each stopped at the first iterate within 1e-3 of the exact value (an oracle
    count: a user cannot know when that is), and PyHessian's own default stopping rule."""
    try:
        task = ws.tasks.make("fashion_mnist", seed=0, flatten=True, mode="offline",
                             n_train=20000)
    except ws.tasks.TaskDataError as err:
        return [("Fashion-MNIST run", f"skipped: {err}")]
    ens = ws.Ensemble(fmnist_mlp, 256, 64, "mup", "sgd", [0], 0.5, loss="ce")
    x, y = task.probe_set(256)
    x = x.double()
    v0 = None
    totals = dict.fromkeys(("lanczos_oracle", "power_oracle"), 0)
    calls: list[dict] = []
    for step in range(steps + 1):
        if step % every == 0:
            p = as_member(fmnist_mlp, ens)
            exact = probes.eigenpairs(p, x, y, loss="ce", tol=1e-10, max_iter=300).values[0, 0]
            exact = exact.item()
            calls.append(rule_call(p, x, y, "ce", F.cross_entropy, exact, v0))
            v0 = calls[-1]["next_v0"]
            totals["lanczos_oracle"] += lanczos_hvps_to(p, x, y, "ce", exact, 1e-3)[0]
            totals["power_oracle"] += calls[-1]["power"]
        if step < steps:
            ens.step(*task.batch(step, 128))
    name = f"Fashion-MNIST CE run, {len(calls)} calls (steps 0..{steps} every {every})"
    power, lanczos = totals["power_oracle"], totals["lanczos_oracle"]
    return [
        (f"{name}: HVPs to 1e-3 rel (oracle stop), Lanczos / PyHessian power",
         f"{lanczos} / {power} = {power / lanczos:.1f}x fewer"),
        *own_rule_rows(name, calls),
    ]


class _Reached(Exception):
    pass


def lanczos_oracle(p, x, y, loss: str, target: float, rel: float, max_iter: int = 300) -> int:
    """``lanczos_hvps_to``'s count from one run: the library's Lanczos (same start vector
    as ``eigenpairs``, tol 0) on a product that records each basis vector q_j and H q_j;
    after m products the top Ritz value is the top eigenvalue of the projection
    Q_m H Q_m^T (the recurrence's tridiagonal T_m, up to rounding). Stops at the first m
    within ``rel`` of ``target``; -1 if none within ``max_iter``."""
    m = members(p)
    product = make_hvp(m, member_loss_fn(m, x, y, loss))
    qs: list[torch.Tensor] = []
    hqs: list[torch.Tensor] = []

    def recording(q: torch.Tensor) -> torch.Tensor:
        hq = product(q)
        qs.append(q[0].clone())
        hqs.append(hq[0].clone())
        proj = torch.stack(qs) @ torch.stack(hqs).T
        top = torch.linalg.eigvalsh((proj + proj.T) / 2)[-1].item()
        if abs(top - target) <= rel * abs(target):
            raise _Reached
        return hq

    try:
        with torch.no_grad():
            lanczos(recording, start_vectors(m, None), 1, 0.0, max_iter)
    except _Reached:
        return len(qs)
    return -1


EOS_LR = {"mse": 0.25, "ce": 0.03}
EOS_N, EOS_WIDTH, EOS_CAP = 1000, 256, 400


def eos_run_rows(steps: int, every: int, loss: str = "mse", cap: int = EOS_CAP
                 ) -> tuple[list[tuple[str, str]], list[str]]:
    """The Fig. 6(a) regime at CPU scale: full-batch GD (no momentum) on a fixed subset of
    ``EOS_N`` Fashion-MNIST images, a width-256 depth-3 muP MLP at its base width (so muP
    is SP and every parameter gets the same lr: the stability threshold on the raw-
    parameter Hessian is exactly 2/lr), lr ``EOS_LR[loss]`` (MSE on one-hot targets or
    10-class CE). The sharpness sharpens progressively to 2/lr and then hovers there with
    lambda_2, lambda_3 close below (edge of stability, Cohen et al. 2021). Every ``every``
    steps, on the training batch and a float64 copy of the weights: the exact top-3
    eigenvalues, oracle HVP counts to 1e-3 relative for Lanczos and PyHessian's power
    iteration (capped at ``cap``), and both methods at default settings. Totals are split at
    the first call with lambda_1 >= 0.9 * 2/lr that follows a call below it (MSE starts
    above 2/lr: a catapult in the first steps brings the sharpness down). Returns the table
    rows and a per-call markdown table."""
    try:
        task = ws.tasks.make("fashion_mnist", seed=0, flatten=True, mode="offline",
                             n_train=EOS_N)
    except ws.tasks.TaskDataError as err:
        return [(f"Fashion-MNIST EoS run ({loss})", f"skipped: {err}")], []
    lr = EOS_LR[loss]
    threshold = 2 / lr
    x, y = task.batch(0, EOS_N)
    if loss == "mse":
        y = F.one_hot(y, 10).to(x.dtype)
    criterion = F.mse_loss if loss == "mse" else F.cross_entropy
    x64, y64 = x.double(), (y.double() if loss == "mse" else y)
    ens = ws.Ensemble(fmnist_mlp, EOS_WIDTH, EOS_WIDTH, "mup", "sgd", [0], lr, loss=loss)
    v0 = None
    t0 = time.perf_counter()
    calls: list[dict] = []
    for step in range(steps + 1):
        if step % every == 0:
            p = as_member(fmnist_mlp, ens)
            exact = probes.eigenpairs(p, x64, y64, loss=loss, k=3, tol=1e-10,
                                      max_iter=400).values[0].tolist()
            top = exact[0]
            own = rule_call(p, x64, y64, loss, criterion, top, v0, power_cap=cap)
            v0 = own["next_v0"]
            ref = PyHessian(p, x64, y64, criterion)
            (val,), n_default = ref.default(1)
            if n_default < 100 and own["rule"][1e-3] != (n_default, val):
                raise RuntimeError(f"replayed PyHessian rule {own['rule'][1e-3]} differs from "
                                   f"PyHessian's eigenvalues() {(n_default, val)}")
            calls.append(dict(
                step=step, loss=ens.losses(x, y).item(), exact=exact, own=own,
                lanczos=lanczos_oracle(p, x64, y64, loss, top, 1e-3),
                power=own["power"],
                warm=own["warm"][0], warm_err=abs(own["warm"][1] - top) / top,
                pyh=n_default, pyh_err=abs(val - top) / top, pyh_val=val))
        if step < steps:
            ens.step(x, y)
    elapsed = time.perf_counter() - t0
    # The first call with lambda_1 >= 0.9 * 2/lr after one below it: MSE starts above 2/lr
    # (a catapult in the first steps brings the sharpness down), which is not EoS.
    below = [c["exact"][0] < 0.9 * threshold for c in calls]
    split = next((i for i in range(1, len(calls)) if not below[i] and any(below[:i])),
                 len(calls))
    name = (f"EoS run, {loss.upper()}, full-batch GD lr {lr} on {EOS_N} Fashion-MNIST images,"
            f" width {EOS_WIDTH}, 2/lr = {threshold:g}")
    rows = [(f"{name}: setup", f"{len(calls)} calls (steps 0..{steps} every {every}), "
             f"{elapsed:.0f} s wall; lambda_1 >= 0.9 * 2/lr (after a call below) first at step "
             + (str(calls[split]["step"]) if split < len(calls) else "never"))]
    for label, part in (("before", calls[:split]), ("at EoS (from then on)", calls[split:])):
        if not part:
            rows.append((f"{name}: {label}", "no calls"))
            continue
        lan = sum(c["lanczos"] for c in part)
        over = sum(c["power"] < 0 for c in part)
        power = sum(cap if c["power"] < 0 else c["power"] for c in part)
        tops = [c["exact"][0] / threshold for c in part]
        r21 = sorted(c["exact"][1] / c["exact"][0] for c in part)
        r31 = [c["exact"][2] / c["exact"][0] for c in part]
        per_call = sorted((cap if c["power"] < 0 else c["power"]) / c["lanczos"] for c in part)
        bias = sum((c["pyh_val"] - c["exact"][0]) / c["exact"][0] for c in part) / len(part)
        power_cell = f">{power} ({over} call(s) >{cap})" if over else str(power)
        ratio = f"{'>' if over else ''}{power / lan:.1f}x fewer"
        rows += [
            (f"{name}: {label}, {len(part)} calls: lambda_1 / (2/lr); lambda_2/lambda_1; "
             "lambda_3/lambda_1 (min-max; median lambda_2/lambda_1)",
             f"{min(tops):.3f}-{max(tops):.3f}; {r21[0]:.3f}-{r21[-1]:.3f}; "
             f"{min(r31):.3f}-{max(r31):.3f}; median {r21[len(r21) // 2]:.3f}"),
            (f"{name}: {label}: HVPs to 1e-3 rel (oracle stop), Lanczos / PyHessian power",
             f"{lan} / {power_cell} = {ratio}; per call Lanczos "
             f"{min(c['lanczos'] for c in part)}-{max(c['lanczos'] for c in part)}, power "
             f"{hvp_cell(min((c['power'] for c in part if c['power'] >= 0), default=-1), cap)}-"
             f"{hvp_cell(-1 if over else max(c['power'] for c in part), cap)}, median ratio "
             f"{per_call[len(per_call) // 2]:.1f}x"),
            (f"{name}: {label}: default settings, HVPs (max rel err)",
             f"suite warm Lanczos tol 1e-3: {sum(c['warm'] for c in part)} "
             f"({max(c['warm_err'] for c in part):.0e}) / PyHessian tol 1e-3: "
             f"{sum(c['pyh'] for c in part)} ({max(c['pyh_err'] for c in part):.0e}; mean "
             f"signed err of PyHessian's value {bias:+.1e})"),
            *own_rule_rows(f"{name}: {label}", [c["own"] for c in part]),
        ]
    rows += own_rule_rows(f"{name}: whole run", [c["own"] for c in calls])
    detail = [f"Per call, {name} (oracle HVPs to 1e-3 rel; power capped at {cap}):", "",
              "| step | loss | lambda_1 | lambda_2 | lambda_3 | 2/lr | Lanczos oracle | "
              "power oracle | warm Lanczos | PyHessian default (value) | PyHessian rule, "
              "HVPs (rel err) at tol " + ", ".join(f"{t:.0e}" for t in RULE_TOLS) + " |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for c in calls:
        l1, l2, l3 = c["exact"]
        power = hvp_cell(c["power"], cap)
        detail.append(f"| {c['step']} | {c['loss']:.4f} | {l1:.4f} | {l2:.4f} | {l3:.4f} | "
                      f"{threshold:g} | {c['lanczos']} | {power} | {c['warm']} | "
                      f"{c['pyh']} ({c['pyh_val']:.4f}) | "
                      + ", ".join(f"{n} ({abs(v - l1) / l1:.0e})"
                                  for n, v in c["own"]["rule"].values()) + " |")
    return rows, detail


def entk_worker(method: str) -> None:
    p = ws.parametrize(classifier, 512, 64, "mup", "sgd", seed=0)
    x, _ = gegenbauer_data(256, seed=-3)
    params = {n: q.detach() for n, q in p.net.named_parameters()}

    def f(raw, inp):
        eff = ws.parametrization.scale_params(raw, p.multipliers)
        return functional_call(p.net, eff, (inp.unsqueeze(0),))[0]

    def compute(inp):
        if method == "structured":
            return torch.as_tensor(probes.entk(p, inp, method="structured",
                                               weighting="raw")["entk"].values)
        jac = vmap(jacrev(f), in_dims=(None, 0))(params, inp)
        return sum(torch.einsum("acn,bcn->ab", j.flatten(2), j.flatten(2))
                   for j in jac.values()) / 10

    compute(x[:4])
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t = time.perf_counter()
    theta = compute(x)
    elapsed = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    torch.save(theta, Path(tempfile.gettempdir()) / f"widthscan_entk_{method}.pt")
    print(json.dumps({"time": elapsed, "peak_mb": peak / 1024, "delta_mb": (peak - before) / 1024}))


def entk_rows(threads: int, skip_reference: bool) -> list[tuple[str, str]]:
    def run(method):
        out = subprocess.run([sys.executable, __file__, "--entk-worker", method,
                              "--threads", str(threads)], capture_output=True, text=True,
                             check=True)
        return json.loads(out.stdout.strip().splitlines()[-1])

    s = run("structured")
    rows = [("eNTK traced, structured (P=256, width 512, C=10, after a warm-up call)",
             f"{s['time'] * 1e3:.0f} ms, peak RSS {s['peak_mb']:.0f} MB "
             f"(+{s['delta_mb']:.0f} MB)")]
    if not skip_reference:
        r = run("jacrev")
        a = torch.load(Path(tempfile.gettempdir()) / "widthscan_entk_structured.pt",
                       weights_only=True)
        b = torch.load(Path(tempfile.gettempdir()) / "widthscan_entk_jacrev.pt", weights_only=True)
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
    parser.add_argument("--probe-examples", type=int, default=PROBE_EXAMPLES,
                        help="probe set size of the overhead run (default: the sweep's)")
    parser.add_argument("--skip-entk-reference", action="store_true")
    parser.add_argument("--entk-worker", choices=["structured", "jacrev"])
    parser.add_argument("--run-steps", type=int, default=600,
                        help="length of the Fashion-MNIST sharpness run (0: skip it)")
    parser.add_argument("--run-every", type=int, default=50)
    parser.add_argument("--eos-steps", type=int, default=600,
                        help="length of each edge-of-stability run (0: skip them)")
    parser.add_argument("--eos-every", type=int, default=25)
    parser.add_argument("--eos-loss", choices=["mse", "ce", "both"], default="both")
    parser.add_argument("--eos-only", action="store_true",
                        help="run only the edge-of-stability rows")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.entk_worker:
        entk_worker(args.entk_worker)
        return
    rows: list[tuple[str, str]] = []
    if not args.eos_only:
        rows, ens, sharp = overhead(args.steps, args.probe_examples)
        rows += suite_vs_pyhessian(ens, sharp)
        rows += sharpness_rows(ens)
        if args.run_steps:
            rows += classifier_run_rows(args.run_steps, args.run_every)
    details: list[str] = []
    if args.eos_steps:
        for loss in ("mse", "ce") if args.eos_loss == "both" else (args.eos_loss,):
            eos, detail = eos_run_rows(args.eos_steps, args.eos_every, loss)
            rows += eos
            details += ["", *detail] if detail else []
    if not args.eos_only:
        rows += entk_rows(args.threads, args.skip_entk_reference)
    print(f"torch {torch.__version__}, {args.threads} thread(s)\n")
    print("| measurement | result |\n|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")
    print("\n".join(details))


if __name__ == "__main__":
    main()

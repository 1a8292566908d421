"""Empirical neural tangent kernel of every member on probe examples.

Theta_k(x_i, x_j)_{c c'} = sum_l s_l sum_{theta in l} d f_c(x_i) / d theta  d f_c'(x_j) / d theta,
with theta the member's *raw* (trained) parameters (a tensor used with forward multiplier
m contributes m^2 times the kernel of its effective weights) and s_l a weight per
parameter tensor:

- ``weighting="lr"`` (default): s_l = the parameterization's learning-rate scale of
  tensor l. SGD updates tensor l by -lr s_l dL/dtheta_l, so to first order in lr the
  outputs move by df = -lr Theta dL/df: this is the kernel SGD's function-space dynamics
  follow (under muP / mf away from the base width it differs from the raw one).
- ``weighting="raw"``: s_l = 1, the Jacobian Gram matrix of the raw parameters.

Adam has no fixed kernel of this form (its step is normalized by running second
moments, and its size does not scale with the gradient), so ``weighting="lr"`` refuses
models trained with Adam; use ``weighting="raw"`` there.

Outputs (P, ...) are flattened to C = prod(...) units per example; a sequence model's
(P, S, V) outputs give C = S V, or V with ``position`` (the logits at one position of each
sequence). ``trace=True`` returns the mean over output units, (1 / C) sum_c Theta_{cc}:
the best kernel of the form K (x) I_C, equal to s X X^T for a linear model f(x) = W x.

Layerwise ("structured") form: a Linear layer with inputs A (S positions x fan_in) and
output gradients G_c (S x fan_out) of unit c on each example contributes
s m^2 sum_{s,t} (A_s . A'_t)(G_{c,s} . G'_{c',t}) (one position: from P x P Gram
matrices, never a Jacobian), or, with several positions, the Gram matrix of its
per-example Jacobians G_c^T A (one layer at a time); an Embedding is a Linear layer on
one-hot tokens. The other parameters (LayerNorm, position tables, convolutions) enter
through their per-example Jacobians. The work is chunked over examples and output units
to fit a memory budget (``budget``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.func import vjp, vmap

from widthscan.measurement import Measurement
from widthscan.probes.budget import MemoryBudgetError, gib, resolve_budget, usable
from widthscan.probes.footprint import Footprint, Layer, footprint
from widthscan.probes.hooks import perturb
from widthscan.probes.members import Members, members, public

METHODS = ("auto", "structured", "jacobian")
WEIGHTINGS = ("lr", "raw")
CODES = {"raw": 0.0, "lr": 1.0}


def weighting_problem(m: Members, weighting: str) -> str | None:
    """Why the kernel ``weighting`` cannot be formed for ``m``, or None when it can."""
    if weighting not in WEIGHTINGS:
        return f"weighting={weighting!r}; allowed: {WEIGHTINGS}"
    if weighting == "raw":
        return None
    if m.lr_scales is None:
        return ("weighting='lr' needs the parameterization's learning-rate scales: pass a "
                "ws.parametrize(...) result or a ws.Ensemble, or weighting='raw'")
    if m.optimizer not in (None, "sgd"):
        return (f"weighting='lr' is SGD's function-space kernel; this model trains with "
                f"{m.optimizer!r}, whose normalized steps follow no fixed kernel: use "
                "weighting='raw'")
    return None


def tensor_weights(m: Members, weighting: str) -> dict[str, float]:
    """s_l of every raw parameter tensor (module docstring)."""
    problem = weighting_problem(m, weighting)
    if problem is not None:
        raise ValueError(problem)
    if weighting == "raw":
        return {n: 1.0 for n in m.params}
    return {n: float(m.lr_scales[n]) for n in m.params}


def n_outputs(shape: tuple[int, ...], position: int | None) -> int:
    """Output units C per example of outputs shaped ``shape`` (no batch axis): all of them,
    or those at sequence ``position`` (outputs (S, V, ...): V...)."""
    if position is None:
        return math.prod(shape)
    if len(shape) < 2:
        raise ValueError(f"position={position}: outputs of shape {shape} per example have no "
                         "sequence axis; allowed: position=None")
    if not -shape[0] <= position < shape[0]:
        raise ValueError(f"position={position}; allowed: -{shape[0]}..{shape[0] - 1}")
    return math.prod(shape[1:])


@dataclass(frozen=True)
class Plan:
    """Chunks of one eNTK call: ``examples`` and output ``units`` at a time, and the
    working memory (bytes) they are estimated to take."""

    examples: int
    units: int
    bytes: int


def plan_entk(fp: Footprint, k: int, p: int, c: int, trace: bool, structured: bool,
              budget_gib: float, chunk: int | None = None) -> Plan:
    """The largest chunks that fit ``budget_gib``: all ``p`` examples at once when one
    output unit allows it (no Jacobian is computed twice), else fewer; then as many of the
    ``c`` output units as fit. Raises ``MemoryBudgetError`` naming the sizes when one
    example and one unit do not fit.

    Per member and example: its activations and the layer inputs; per example and output
    unit: the backward's activation gradients (twice the activations), the output
    gradients of the structured layers, the Jacobian of the other parameters (twice) and
    the widest layer's Jacobian (layers on sequences); the kernel itself and one block of
    it; everything per chunk twice when the examples take several chunks (two chunks'
    features are held at once). Measured peaks are below this (``benchmarks/README.md``).
    """
    item = fp.itemsize
    layers = fp.layers.values() if structured else ()
    rest = fp.rest(structured)
    per_example = fp.activations + item * sum(la.positions * la.fan_in for la in layers)
    widest = max((la.fan_in * la.fan_out for la in layers if la.positions > 1), default=0)
    per_unit = 2 * fp.activations + item * (sum(la.positions * la.fan_out for la in layers)
                                            + 2 * rest + widest)
    result = item * k * p * p * (1 if trace else c * c)

    def need(pe: int, cu: int) -> int:
        copies = 1 if pe >= p else 2
        return 2 * result + k * copies * pe * (per_example + cu * per_unit)

    budget = usable(budget_gib)
    if chunk:
        pe = min(int(chunk), p)
    elif need(p, 1) <= budget:
        pe = p
    else:
        pe = max(1, int((budget - 2 * result) // (2 * k * (per_example + per_unit))))
    if need(pe, 1) > budget:
        raise MemoryBudgetError(
            f"eNTK needs {gib(need(pe, 1))} for its smallest chunk of {pe} example(s) and 1 "
            f"output unit (K={k} members, P={p} examples, C={c} outputs, n={fp.n_params} "
            f"parameters per member ({rest} outside structured layers), activations "
            f"{gib(fp.activations)} per example, kernel {gib(result)}, {item}-byte numbers); "
            f"memory_budget={budget_gib:g} GiB")
    copies = 1 if pe >= p else 2
    room = budget - 2 * result - k * copies * pe * per_example
    cu = max(1, min(c, int(room // (k * copies * pe * max(per_unit, 1)))))
    return Plan(pe, cu, need(pe, cu))


def _features(m: Members, x: torch.Tensor, units: torch.Tensor, n_out: int,
              layers: dict[str, Layer], rest: list[str], position: int | None
              ) -> tuple[dict, dict, dict]:
    """Per member and example of ``x`` (p, ...), for output units ``units`` (c,): inputs of
    the structured ``layers`` (K, p, [1,] ..., fan_in), gradients of the units with respect
    to their outputs (K, p, c, [1,] ..., fan_out), and with respect to the effective
    ``rest`` parameters (K, p, c, ...). Without ``rest`` parameters the examples run as
    one batch (they must not interact), else one at a time under ``vmap``."""
    cot = torch.zeros(len(units), n_out, dtype=m.dtype, device=m.device)
    cot[torch.arange(len(units)), units] = 1.0

    def pulled(eff: dict[str, torch.Tensor], xs: torch.Tensor, shape0: int,
               cotangents: torch.Tensor):
        others = {n: eff[n] for n in rest}
        deltas = {n: torch.zeros((shape0, *la.out_shape[1:]), dtype=m.dtype, device=m.device)
                  for n, la in layers.items()}

        def f(ds: dict[str, torch.Tensor], rs: dict[str, torch.Tensor]):
            inputs: dict[str, torch.Tensor] = {}
            with perturb(m.net, ds, inputs):
                out = m.call({**eff, **rs}, xs)
            return (out if position is None else out[:, position]).reshape(-1), inputs

        _, pullback, inputs = vjp(f, deltas, others, has_aux=True)
        grads, rest_grads = vmap(pullback)(cotangents)
        return inputs, grads, rest_grads

    def one(eff: dict[str, torch.Tensor], xs: torch.Tensor):
        if not rest:
            p = xs.shape[0]
            every = cot[:, None, :].expand(len(units), p, n_out).reshape(len(units), -1)
            inputs, grads, _ = pulled(eff, xs, p, every)
            return inputs, {n: g.movedim(0, 1) for n, g in grads.items()}, {}
        return vmap(lambda x1: pulled(eff, x1.unsqueeze(0), 1, cot))(xs)

    with torch.no_grad():
        return m.map(one, m.effective(), x)


def _flat_inputs(a: torch.Tensor, layer: Layer, dtype: torch.dtype) -> torch.Tensor:
    """Recorded inputs (K, p, 1, ...) -> (K, p, S, fan_in); token ids become one-hot rows."""
    k, p = a.shape[:2]
    if layer.kind == "embedding":
        return F.one_hot(a.reshape(k, p, -1), layer.fan_in).to(dtype)
    return a.reshape(k, p, -1, layer.fan_in)


def _gram(fa: tuple, fb: tuple, layers: dict[str, Layer], scale: dict[str, float],
          trace: bool, dtype: torch.dtype) -> torch.Tensor:
    """Kernel block (K, pa, pb) (``trace``: summed over the units) or (K, pa, pb, ca, cb)
    between two chunks' features, each tensor's term times its ``scale`` (s m^2)."""
    (ia, ga, ra), (ib, gb, rb) = fa, fb
    block = None

    def add(term: torch.Tensor) -> None:
        nonlocal block
        block = term if block is None else block + term

    for name, la in layers.items():
        a1, a2 = _flat_inputs(ia[name], la, dtype), _flat_inputs(ib[name], la, dtype)
        k, pa, s = a1.shape[:3]
        g1 = ga[name].reshape(k, pa, -1, s, la.fan_out)
        g2 = gb[name].reshape(k, a2.shape[1], -1, s, la.fan_out)
        w = scale[la.params[0]]
        if s == 1:
            aa = torch.einsum("kisf,kjtf->kijst", a1, a2)
            if trace:
                add(w * (aa * torch.einsum("kicso,kjcto->kijst", g1, g2)).sum((3, 4)))
            else:
                add(w * torch.einsum("kijst,kicso,kjdto->kijcd", aa, g1, g2))
        else:
            j1 = torch.einsum("kicso,kisf->kicof", g1, a1)
            j2 = j1 if fb is fa else torch.einsum("kicso,kisf->kicof", g2, a2)
            add(w * _jacobian_gram(j1, j2, trace))
            del j1, j2
        if len(la.params) == 2:
            spec = "kico,kjco->kij" if trace else "kico,kjdo->kijcd"
            add(scale[la.params[1]] * torch.einsum(spec, g1.sum(3), g2.sum(3)))
    for name in ra:
        add(scale[name] * _jacobian_gram(ra[name], rb[name], trace))
    return block


def _jacobian_gram(j1: torch.Tensor, j2: torch.Tensor, trace: bool) -> torch.Tensor:
    """sum_n J1[k, i, c, n] J2[k, j, c', n] of Jacobians (K, p, c, ...): (K, pa, pb) summed
    over c = c' (``trace``), else (K, pa, pb, ca, cb); one batched matmul, no copies."""
    k, pa, ca = j1.shape[:3]
    pb, cb = j2.shape[1:3]
    if trace:
        return j1.reshape(k, pa, -1) @ j2.reshape(k, pb, -1).transpose(1, 2)
    out = j1.reshape(k, pa * ca, -1) @ j2.reshape(k, pb * cb, -1).transpose(1, 2)
    return out.reshape(k, pa, ca, pb, cb).permute(0, 1, 3, 2, 4)


def chunked_entk(m: Members, x: torch.Tensor, trace: bool, weights: dict[str, float],
                 fp: Footprint, structured: bool, plan: Plan, position: int | None = None,
                 units: torch.Tensor | None = None) -> torch.Tensor:
    """eNTK (K, P, P) or (K, P, P, C, C) from chunks of ``plan.examples`` examples and
    ``plan.units`` output units; each item's features are computed once per pass over
    the chunks that pair with it (all of them when every example fits one chunk)."""
    p = x.shape[0]
    n_out = n_outputs(fp.output_shape, position)
    units = torch.arange(n_out) if units is None else torch.as_tensor(units).reshape(-1)
    units = units.to(m.device)
    c = len(units)
    layers = fp.layers if structured else {}
    owned = {n for la in layers.values() for n in la.params}
    rest = [n for n in m.params if n not in owned]
    scale = {n: weights[n] * m.multipliers[n] ** 2 for n in m.params}
    shape = (m.k, p, p) if trace else (m.k, p, p, c, c)
    theta = torch.zeros(shape, dtype=m.dtype, device=m.device)
    ex = [slice(i, min(i + plan.examples, p)) for i in range(0, p, plan.examples)]
    us = [slice(i, min(i + plan.units, c)) for i in range(0, c, plan.units)]
    items = [(e, u) for u in us for e in ex]
    for i, (ea, ua) in enumerate(items):
        fa = _features(m, x[ea], units[ua], n_out, layers, rest, position)
        for eb, ub in items[i:]:
            if trace and ub != ua:
                continue
            same = (eb, ub) == (ea, ua)
            fb = fa if same else _features(m, x[eb], units[ub], n_out, layers, rest, position)
            block = _gram(fa, fb, layers, scale, trace, m.dtype)
            if trace:
                theta[:, ea, eb] += block
                if ea != eb:
                    theta[:, eb, ea] += block.transpose(1, 2)
            else:
                theta[:, ea, eb, ua, ub] = block
                if not same:
                    theta[:, eb, ea, ub, ua] = block.permute(0, 2, 1, 4, 3)
            del fb, block
    return theta / c if trace else theta


def measure_entk(m: Members, x: torch.Tensor, trace: bool = True, chunk: int | None = None,
                 method: str = "auto", weighting: str = "lr",
                 memory_budget: float | None = None, position: int | None = None,
                 outputs: torch.Tensor | None = None) -> dict[str, Measurement]:
    """``entk`` (K, P, P) dims ("example", "example2") with ``trace``, else
    (K, P, P, C, C) dims ("example", "example2", "output", "output2"); kernel units
    (output units^2 per unit learning rate); ``entk_weighting`` (K,) dims (): which
    kernel, as ``CODES`` (0 raw, 1 lr-weighted)."""
    if method not in METHODS:
        raise ValueError(f"method={method!r}; allowed: {METHODS}")
    weights = tensor_weights(m, weighting)
    x = m.prepare(x)
    budget = resolve_budget(memory_budget, m.device)
    fp = footprint(m.net, x[:1], m.dtype)
    structured = method != "jacobian"
    if method == "structured" and not fp.layers:
        raise ValueError("method='structured' needs a Linear or Embedding layer that runs once "
                         "per forward on (examples, ..., features) inputs")
    c = n_outputs(fp.output_shape, position) if outputs is None else len(outputs)
    plan = plan_entk(fp, m.k, x.shape[0], c, trace, structured, budget, chunk)
    theta = chunked_entk(m, x, trace, weights, fp, structured, plan, position, outputs)
    p = theta.shape[1]
    dims = ("example", "example2") if trace else ("example", "example2", "output", "output2")
    coords = {"example": np.arange(p), "example2": np.arange(p)}
    code = torch.full((m.k,), CODES[weighting], dtype=torch.float64)
    return {"entk": m.measurement(dims, theta, coords),
            "entk_weighting": m.measurement((), code)}


def entk(model: Any, x: torch.Tensor, trace: bool = True, chunk: int | None = None,
         average: bool = False, method: str = "auto", weighting: str = "lr",
         memory_budget: float | None = None, position: int | None = None,
         outputs: torch.Tensor | None = None) -> dict[str, Measurement]:
    """Empirical NTK on probe examples x (P, ...), w.r.t. raw parameters, each tensor
    weighted by its learning-rate scale (``weighting="lr"``: the kernel SGD follows) or
    not (``"raw"``); see the module docstring.

    Returns ``entk``: (K, P, P) (``trace=True``: mean over output units) or
    (K, P, P, C, C) for an Ensemble, without K for a Parametrized. ``average=True``
    returns the ensemble average instead (mean over members with a finite kernel; no
    member axis). ``method``: "structured" (Linear and Embedding layers that run once
    per forward in the layerwise form, from their inputs and output gradients; every
    other parameter from its per-example Jacobian), "jacobian" (per-example Jacobians
    of every parameter), or "auto" (= "structured"). ``position`` (sequence models,
    outputs (P, S, V)): the kernel of the outputs at that position only (e.g. -1, the
    last; C = V), None: all S x V. ``outputs``: indices of the output units (after
    ``position``) to keep, None: all.

    Memory: the work goes in chunks of examples and output units that fit
    ``memory_budget`` GiB (default ``budget.default_budget``: 16 GiB on a GPU, half the
    RAM on the CPU); ``chunk`` fixes the examples per chunk. ``MemoryBudgetError``
    (naming the sizes) when one example and one output unit do not fit. Time: one
    backward pass per example and output unit (more when the examples need several
    chunks). Also returns ``entk_weighting``: 1.0 (lr-weighted) or 0.0 (raw), (K,) or ().
    """
    m = members(model)
    result = measure_entk(m, x, trace, chunk, method, weighting, memory_budget, position,
                          outputs)
    if not average:
        return public(m, result)
    meas = result["entk"]
    vals = meas.values
    finite = np.isfinite(vals.reshape(vals.shape[0], -1)).all(1)
    mean = vals[finite].mean(0) if finite.any() else np.full(vals.shape[1:], np.nan)
    code = result["entk_weighting"]
    return {"entk": meas._replace(values=mean), "entk_weighting": code._replace(
        values=code.values[0])}

"""Empirical neural tangent kernel of every member on probe examples.

Theta_k(x_i, x_j)_{c c'} = sum_theta d f_c(x_i) / d theta  d f_c'(x_j) / d theta, with theta
the member's *raw* (trained) parameters: a layer used with forward multiplier m
contributes m^2 times the kernel of its effective weights. Outputs (P, ...) are
flattened to C = prod(...) units per example. ``trace=True`` returns the mean over
output units, (1 / C) sum_c Theta_{cc}: the best kernel of the form K (x) I_C, equal to
X X^T for a linear model f(x) = W x.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn
from torch.func import jacrev, vjp, vmap

from widthscan.measurement import Measurement
from widthscan.probes.budget import chunk_for
from widthscan.probes.hooks import Unstructured, perturb
from widthscan.probes.members import Members, members, public

METHODS = ("auto", "structured", "jacobian")


def linear_only(net: nn.Module) -> list[str] | None:
    """Names of the nn.Linear modules holding every parameter of ``net``, or None."""
    modules = dict(net.named_modules())
    owners: list[str] = []
    for name, _ in net.named_parameters():
        owner = name.rpartition(".")[0]
        if not isinstance(modules.get(owner), nn.Linear):
            return None
        if owner not in owners:
            owners.append(owner)
    return owners or None


def _pname(module: str, leaf: str) -> str:
    return f"{module}.{leaf}" if module else leaf


def _outputs(out: torch.Tensor, p: int) -> torch.Tensor:
    return out.reshape(p, -1)


def structured(m: Members, x: torch.Tensor, linears: list[str], trace: bool) -> torch.Tensor:
    """Layerwise eNTK of a network whose parameters all sit in Linear layers.

    Per layer l with inputs A_l (P, fan_in) and output gradients G_{l,c} = d f_c / d z_l
    (P, fan_out): Theta += (m_W^2 A_l A_l^T + m_b^2) * (G_{l,c} G_{l,c'}^T). Needs
    examples that do not interact and each Linear called once on (P, fan_in) inputs,
    else raises ``Unstructured``. Memory O(K C P (fan_out + P) + K P fan_in) per layer,
    independent of the parameter count.
    """
    p = x.shape[0]
    fan_out = {n: m.params[_pname(n, "weight")].shape[1] for n in linears}

    def one(eff: dict[str, torch.Tensor], inp: torch.Tensor):
        deltas = {n: torch.zeros(p, fan_out[n], dtype=m.dtype, device=m.device)
                  for n in linears}

        def f(ds: dict[str, torch.Tensor]):
            inputs: dict[str, torch.Tensor] = {}
            with perturb(m.net, ds, inputs):
                out = m.call(eff, inp)
            return _outputs(out, p), inputs

        out, pullback, inputs = vjp(f, deltas, has_aux=True)
        c = out.shape[1]
        basis = torch.eye(c, dtype=out.dtype, device=out.device)
        cotangents = basis.unsqueeze(1).expand(c, p, c)
        (grads,) = vmap(pullback)(cotangents)
        return inputs, grads

    with torch.no_grad():
        inputs, grads = m.map(one, m.effective(), x)
    theta = None
    for n in linears:
        a = inputs[n]
        if a.ndim != 3:
            raise Unstructured(n)
        g = grads[n]
        aa = m.multipliers[_pname(n, "weight")] ** 2 * (a @ a.transpose(1, 2))
        if _pname(n, "bias") in m.params:
            aa = aa + m.multipliers[_pname(n, "bias")] ** 2
        if trace:
            gg = torch.einsum("kcpo,kcqo->kpq", g, g) / g.shape[1]
            term = aa * gg
        else:
            gg = torch.einsum("kcpo,kdqo->kpqcd", g, g)
            term = aa[..., None, None] * gg
        theta = term if theta is None else theta + term
    return theta


def jacobian(m: Members, x: torch.Tensor, trace: bool, chunk: int | None,
             memory_budget: float | None = None) -> torch.Tensor:
    """eNTK from raw-parameter Jacobians of chunks of examples (any module).

    Memory O(2 K chunk C n) for n parameters per member (one chunk's Jacobian and
    another's); chunk=None takes all P examples at once (O(K P C n)), or the largest chunk
    whose two Jacobians fit ``memory_budget`` GiB. Time: (P / chunk) * (P / chunk + 1) / 2
    chunk Jacobians.
    """
    p = x.shape[0]

    def f(raw: dict[str, torch.Tensor], inp: torch.Tensor) -> torch.Tensor:
        eff = {n: t * m.multipliers[n] if m.multipliers[n] != 1.0 else t for n, t in raw.items()}
        return _outputs(m.call(eff, inp), inp.shape[0])

    if not chunk and memory_budget is not None:
        with torch.no_grad():
            c = f({n: t[0] for n, t in m.params.items()}, x[:1]).shape[1]
        n_params, size = m.flat_size(), m.dtype.itemsize
        chunk = chunk_for(memory_budget, 2 * m.k * c * n_params * size, p,
                          "eNTK by Jacobians",
                          f"2 Jacobians of K={m.k} members x 1 example x C={c} outputs x "
                          f"n={n_params} parameters x {size} bytes")
    step = p if not chunk else min(int(chunk), p)

    def jac(inp: torch.Tensor) -> dict[str, torch.Tensor]:
        j = m.map(jacrev(f), m.params, inp)
        return {n: t.flatten(3) for n, t in j.items()}

    starts = list(range(0, p, step))
    blocks: dict[tuple[int, int], torch.Tensor] = {}
    with torch.no_grad():
        for bi, i in enumerate(starts):
            ji = jac(x[i:i + step])
            for j in starts[bi:]:
                jj = ji if j == i else jac(x[j:j + step])
                spec = "kacn,kbcn->kab" if trace else "kacn,kbdn->kabcd"
                block = sum(torch.einsum(spec, ji[n], jj[n]) for n in ji)
                if trace:
                    block = block / next(iter(ji.values())).shape[2]
                blocks[(i, j)] = block
    rows = []
    for i in starts:
        row = []
        for j in starts:
            b = blocks[(i, j)] if j >= i else blocks[(j, i)].transpose(1, 2)
            if j < i and not trace:
                b = b.transpose(3, 4)
            row.append(b)
        rows.append(torch.cat(row, 2))
    return torch.cat(rows, 1)


def measure_entk(m: Members, x: torch.Tensor, trace: bool = True, chunk: int | None = None,
                 method: str = "auto", memory_budget: float | None = None
                 ) -> dict[str, Measurement]:
    """``entk`` (K, P, P) dims ("example", "example2") with ``trace``, else
    (K, P, P, C, C) dims ("example", "example2", "output", "output2"); kernel units
    (output units^2)."""
    if method not in METHODS:
        raise ValueError(f"method={method!r}; allowed: {METHODS}")
    x = m.prepare(x)
    theta = None
    linears = linear_only(m.net) if method != "jacobian" else None
    if method == "structured" and linears is None:
        raise ValueError("method='structured' needs every parameter in an nn.Linear")
    if linears is not None:
        try:
            theta = structured(m, x, linears, trace)
        except Unstructured:
            if method == "structured":
                raise ValueError("method='structured': a Linear runs more than once or on "
                                 "inputs that are not (examples, features)") from None
    if theta is None:
        theta = jacobian(m, x, trace, chunk, memory_budget)
    p = theta.shape[1]
    dims = ("example", "example2") if trace else ("example", "example2", "output", "output2")
    coords = {"example": np.arange(p), "example2": np.arange(p)}
    return {"entk": m.measurement(dims, theta, coords)}


def entk(model: Any, x: torch.Tensor, trace: bool = True, chunk: int | None = None,
         average: bool = False, method: str = "auto", memory_budget: float | None = None
         ) -> dict[str, Measurement]:
    """Empirical NTK on probe examples x (P, ...), w.r.t. raw parameters (module docstring).

    Returns ``entk``: (K, P, P) (``trace=True``: mean over output units) or
    (K, P, P, C, C) for an Ensemble, without K for a Parametrized. ``average=True``
    returns the ensemble average instead (mean over members with a finite kernel; no
    member axis). ``method``: "structured" (layerwise form, networks made only of
    Linear layers; memory independent of the parameter count), "jacobian" (chunked
    Jacobian contraction, any module; ``chunk`` examples at a time, memory
    O(2 K chunk C n) for n parameters), or "auto" (structured when it applies).
    ``memory_budget`` (GiB): with ``chunk=None``, the Jacobian method takes the largest
    chunk that fits, and raises ``MemoryBudgetError`` (naming the sizes) when one example
    does not.
    """
    m = members(model)
    result = measure_entk(m, x, trace, chunk, method, memory_budget)
    if not average:
        return public(m, result)
    meas = result["entk"]
    vals = meas.values
    finite = np.isfinite(vals.reshape(vals.shape[0], -1)).all(1)
    mean = vals[finite].mean(0) if finite.any() else np.full(vals.shape[1:], np.nan)
    return {"entk": meas._replace(values=mean)}

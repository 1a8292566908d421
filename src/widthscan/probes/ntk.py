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

Outputs (P, ...) are flattened to C = prod(...) units per example. ``trace=True``
returns the mean over output units, (1 / C) sum_c Theta_{cc}: the best kernel of the
form K (x) I_C, equal to s X X^T for a linear model f(x) = W x.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn
from torch.func import jacrev, vjp, vmap

from widthscan.measurement import Measurement
from widthscan.probes.hooks import Unstructured, perturb
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


def structured(m: Members, x: torch.Tensor, linears: list[str], trace: bool,
               weights: dict[str, float]) -> torch.Tensor:
    """Layerwise eNTK of a network whose parameters all sit in Linear layers.

    Per layer l with inputs A_l (P, fan_in) and output gradients G_{l,c} = d f_c / d z_l
    (P, fan_out): Theta += (s_W m_W^2 A_l A_l^T + s_b m_b^2) * (G_{l,c} G_{l,c'}^T), with s
    the tensor ``weights``. Needs
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
        wn, bn = _pname(n, "weight"), _pname(n, "bias")
        aa = weights[wn] * m.multipliers[wn] ** 2 * (a @ a.transpose(1, 2))
        if bn in m.params:
            aa = aa + weights[bn] * m.multipliers[bn] ** 2
        if trace:
            gg = torch.einsum("kcpo,kcqo->kpq", g, g) / g.shape[1]
            term = aa * gg
        else:
            gg = torch.einsum("kcpo,kdqo->kpqcd", g, g)
            term = aa[..., None, None] * gg
        theta = term if theta is None else theta + term
    return theta


def jacobian(m: Members, x: torch.Tensor, trace: bool, chunk: int | None,
             weights: dict[str, float]) -> torch.Tensor:
    """eNTK from raw-parameter Jacobians of chunks of examples (any module), each tensor's
    Gram term times its ``weights`` entry.

    Memory O(2 K chunk C n) for n parameters per member (one chunk's Jacobian and
    another's); chunk=None takes all P examples at once (O(K P C n)). Time: (P / chunk)
    * (P / chunk + 1) / 2 chunk Jacobians.
    """
    p = x.shape[0]
    step = p if not chunk else min(int(chunk), p)

    def f(raw: dict[str, torch.Tensor], inp: torch.Tensor) -> torch.Tensor:
        eff = {n: t * m.multipliers[n] if m.multipliers[n] != 1.0 else t for n, t in raw.items()}
        return _outputs(m.call(eff, inp), inp.shape[0])

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
                block = sum(weights[n] * torch.einsum(spec, ji[n], jj[n]) for n in ji)
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
                 method: str = "auto", weighting: str = "lr") -> dict[str, Measurement]:
    """``entk`` (K, P, P) dims ("example", "example2") with ``trace``, else
    (K, P, P, C, C) dims ("example", "example2", "output", "output2"); kernel units
    (output units^2 per unit learning rate); ``entk_weighting`` (K,) dims (): which
    kernel, as ``CODES`` (0 raw, 1 lr-weighted)."""
    if method not in METHODS:
        raise ValueError(f"method={method!r}; allowed: {METHODS}")
    weights = tensor_weights(m, weighting)
    x = m.prepare(x)
    theta = None
    linears = linear_only(m.net) if method != "jacobian" else None
    if method == "structured" and linears is None:
        raise ValueError("method='structured' needs every parameter in an nn.Linear")
    if linears is not None:
        try:
            theta = structured(m, x, linears, trace, weights)
        except Unstructured:
            if method == "structured":
                raise ValueError("method='structured': a Linear runs more than once or on "
                                 "inputs that are not (examples, features)") from None
    if theta is None:
        theta = jacobian(m, x, trace, chunk, weights)
    p = theta.shape[1]
    dims = ("example", "example2") if trace else ("example", "example2", "output", "output2")
    coords = {"example": np.arange(p), "example2": np.arange(p)}
    code = torch.full((m.k,), CODES[weighting], dtype=torch.float64)
    return {"entk": m.measurement(dims, theta, coords),
            "entk_weighting": m.measurement((), code)}


def entk(model: Any, x: torch.Tensor, trace: bool = True, chunk: int | None = None,
         average: bool = False, method: str = "auto", weighting: str = "lr"
         ) -> dict[str, Measurement]:
    """Empirical NTK on probe examples x (P, ...), w.r.t. raw parameters, each tensor
    weighted by its learning-rate scale (``weighting="lr"``: the kernel SGD follows) or
    not (``"raw"``); see the module docstring.

    Returns ``entk``: (K, P, P) (``trace=True``: mean over output units) or
    (K, P, P, C, C) for an Ensemble, without K for a Parametrized. ``average=True``
    returns the ensemble average instead (mean over members with a finite kernel; no
    member axis). ``method``: "structured" (layerwise form, networks made only of
    Linear layers; memory independent of the parameter count), "jacobian" (chunked
    Jacobian contraction, any module; ``chunk`` examples at a time, memory
    O(2 K chunk C n) for n parameters), or "auto" (structured when it applies).
    Also returns ``entk_weighting``: 1.0 (lr-weighted) or 0.0 (raw), (K,) or ().
    """
    m = members(model)
    result = measure_entk(m, x, trace, chunk, method, weighting)
    if not average:
        return public(m, result)
    meas = result["entk"]
    vals = meas.values
    finite = np.isfinite(vals.reshape(vals.shape[0], -1)).all(1)
    mean = vals[finite].mean(0) if finite.any() else np.full(vals.shape[1:], np.nan)
    code = result["entk_weighting"]
    return {"entk": meas._replace(values=mean), "entk_weighting": code._replace(
        values=code.values[0])}

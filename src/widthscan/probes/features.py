"""Internal representations: feature kernels, preactivation histograms, attention maps.

Features are captured by forward hooks inside each member's functional forward (see
``hooks``). Results carry a leading member axis K for an Ensemble, none for a
Parametrized.

Default layers (module names) per family:

==============  ====================================  ====================================
family          kernels (features)                    preactivations
==============  ====================================  ====================================
MLP             ``input``, ``hidden.*``: post-         ``input``, ``hidden.*``: Linear
                activation, act(Linear output)        outputs (before the activation)
ResNet18        ``stages.i`` outputs and              ``stem`` and the last ``conv2`` of
                ``readout:in`` (pooled features)      each stage
Transformer     ``blocks.i`` outputs and              ``blocks.i.ffn_in``
                ``readout:in``
other           ``<last Linear>:in``                  every Linear / Conv but the last
==============  ====================================  ====================================

In an MLP, a kernel layer naming one of its hidden Linear modules means that layer's
post-activation features (the MLP applies its activation functionally, so the
activation is applied to the hooked Linear output).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from widthscan.measurement import Measurement
from widthscan.models.mlp import ACTIVATIONS, MLP
from widthscan.models.resnet import ResNet18
from widthscan.models.transformer import Transformer
from widthscan.probes.budget import gib, grid_chunks, resolve_budget
from widthscan.probes.footprint import footprint, meta_copy
from widthscan.probes.hooks import Layer, capture, resolve, split
from widthscan.probes.members import Members, members, public

STATS = ("mean", "std", "kurtosis")
POOLS = ("mean", "flatten")


def _linears(net: nn.Module) -> list[str]:
    return [n for n, mod in net.named_modules() if isinstance(mod, nn.Linear)]


def default_kernel_layers(net: nn.Module) -> list[str]:
    """Default kernel layers of a family (see the module docstring)."""
    if isinstance(net, MLP):
        return [name for name, _ in net.layers()[:-1]]
    if isinstance(net, ResNet18):
        return [f"stages.{i}" for i in range(len(net.stages))] + ["readout:in"]
    if isinstance(net, Transformer):
        return [f"blocks.{i}" for i in range(len(net.blocks))] + ["readout:in"]
    linears = _linears(net)
    if not linears:
        raise ValueError("no default kernel layers for this module: pass layers=[...]")
    return [linears[-1] + ":in"]


def default_preact_layers(net: nn.Module) -> list[str]:
    """Default preactivation layers of a family (see the module docstring)."""
    if isinstance(net, MLP):
        return [name for name, _ in net.layers()[:-1]]
    if isinstance(net, ResNet18):
        return ["stem"] + [f"stages.{i}.{len(s) - 1}.conv2" for i, s in enumerate(net.stages)]
    if isinstance(net, Transformer):
        return [f"blocks.{i}.ffn_in" for i in range(len(net.blocks))]
    kinds = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
    names = [n for n, mod in net.named_modules() if isinstance(mod, kinds)]
    if len(names) < 2:
        raise ValueError("no default preactivation layers for this module: pass layers=[...]")
    return names[:-1]


def kernel_layers(net: nn.Module, layers: Sequence[str] | None) -> list[Layer]:
    """Kernel features to capture; MLP hidden Linear layers get their activation."""
    names = resolve(net, default_kernel_layers(net) if layers is None else layers)
    act_of: dict[str, Any] = {}
    if isinstance(net, MLP):
        act = ACTIVATIONS[net.activation]
        act_of = {name: act for name, _ in net.layers()[:-1]}
    out = []
    for name in names:
        module, where = split(name)
        transform = act_of.get(module) if where == "output" else None
        out.append(Layer(name, module, where, transform))
    return out


def preact_layers(net: nn.Module, layers: Sequence[str] | None) -> list[Layer]:
    names = resolve(net, default_preact_layers(net) if layers is None else layers)
    return [Layer(name, *split(name)) for name in names]


def capture_chunks(net: nn.Module, dtype: torch.dtype, k: int, x: torch.Tensor,
                   layers: Sequence[Layer], reduce, budget_gib: float) -> tuple[int, int]:
    """Members and examples per chunk of ``_capture`` on ``x`` (P, ...) that fit
    ``budget_gib``: per member and example its activations and features as captured and
    as reduced (measured by a meta-device forward of one example, nothing allocated), plus
    every reduced feature of the result. ``MemoryBudgetError`` naming the sizes when one
    member on one example does not fit."""
    fp = footprint(net, x[:1], dtype)
    twin = meta_copy(net, dtype)
    store: dict[str, torch.Tensor] = {}
    x1 = x[:1].to("meta", dtype=dtype if x.is_floating_point() else x.dtype)
    with torch.no_grad(), capture(twin, layers, store):
        twin(x1)
    raw = sum(t.numel() * t.element_size() for t in store.values())
    reduced = sum(reduce(layer, store[layer.label]).numel() * fp.itemsize
                  for layer in layers if layer.label in store)
    p = x.shape[0]
    return grid_chunks(budget_gib, k * p * reduced, fp.activations + raw + reduced, k, p,
                       "feature capture", f"K={k} members x P={p} examples; per member and "
                       f"example: activations {gib(fp.activations)}, features {gib(raw)}")


def _capture(m: Members, layers: Sequence[Layer], x: torch.Tensor, reduce,
             memory_budget: float | None = None) -> list[torch.Tensor]:
    """Per member: forward with hooks, ``reduce(layer, feature)`` each, stacked over K.

    ``reduce`` must return per-example rows (concatenated over example chunks along the
    axis after K). Runs in chunks of members and examples whose activations and features
    fit ``memory_budget`` GiB (``budget``)."""
    x = m.prepare(x)
    p = x.shape[0]

    def one(eff: dict[str, torch.Tensor], inp: torch.Tensor) -> tuple[torch.Tensor, ...]:
        store: dict[str, torch.Tensor] = {}
        with capture(m.net, layers, store):
            m.call(eff, inp)
        missing = [layer.label for layer in layers if layer.label not in store]
        if missing:
            raise ValueError(f"layers {missing} did not run in the forward pass")
        return tuple(reduce(layer, store[layer.label]) for layer in layers)

    q, pe = capture_chunks(m.net, m.dtype, m.k, x, layers, reduce,
                           resolve_budget(memory_budget, m.device))
    eff = m.effective()
    rows = []
    with torch.no_grad(), m.autocast():
        for i in range(0, m.k, q):
            sub = {n: t[i:i + q] for n, t in eff.items()}
            parts = [m.map(one, sub, x[j:j + pe]) for j in range(0, p, pe)]
            rows.append([torch.cat(ts, 1) for ts in zip(*parts)])
    return [torch.cat(ts, 0) for ts in zip(*rows)]


def pool_features(t: torch.Tensor, pool: str) -> torch.Tensor:
    """(P, ...) features -> (P, D). ``mean``: average over positions, i.e. over H, W of
    an (P, C, H, W) map and over S of a (P, S, D) sequence; ``flatten``: every
    (position, channel) entry is a feature."""
    if t.ndim <= 2 or pool == "flatten":
        return t.reshape(t.shape[0], -1)
    if t.ndim == 3:
        return t.mean(1)
    return t.flatten(2).mean(2)


def pooled(pool: str):
    """The kernel probe's reduction: a layer's features (after its transform) pooled to
    (P, D) (``pool_features``), in float32 at least."""

    def reduce(layer: Layer, t: torch.Tensor) -> torch.Tensor:
        if layer.transform is not None:
            t = layer.transform(t)
        return pool_features(t.float() if t.dtype == torch.bfloat16 else t, pool)

    return reduce


def flat(_layer: Layer, t: torch.Tensor) -> torch.Tensor:
    """The preactivation probe's reduction: every value of a layer."""
    return t.reshape(-1)


def whole(_layer: Layer, t: torch.Tensor) -> torch.Tensor:
    """The attention probe's reduction: the probabilities as they are."""
    return t


def measure_kernels(m: Members, x: torch.Tensor, layers: Sequence[str] | None = None,
                    pool: str = "mean", memory_budget: float | None = None
                    ) -> dict[str, Measurement]:
    """``kernel`` (K, L, P, P): K_l = Phi_l Phi_l^T / D_l with Phi_l (P, D_l) the pooled
    features of layer l (D_l their dimension), dims ("layer", "example", "example2").
    Features are computed in chunks that fit ``memory_budget`` GiB (see ``_capture``)."""
    if pool not in POOLS:
        raise ValueError(f"pool={pool!r}; allowed: {POOLS}")
    specs = kernel_layers(m.net, layers)
    grams = []
    for phi in _capture(m, specs, x, pooled(pool), memory_budget):
        with torch.autocast(phi.device.type, enabled=False):
            grams.append(phi @ phi.transpose(1, 2) / phi.shape[2])
    values = torch.stack(grams, 1)
    p = values.shape[-1]
    coords = {"layer": np.array([s.label for s in specs]), "example": np.arange(p),
              "example2": np.arange(p)}
    return {"kernel": m.measurement(("layer", "example", "example2"), values, coords)}


def preact_edges(values: Sequence[torch.Tensor], bins: int, range_std: float) -> torch.Tensor:
    """Bin edges (L, bins + 1): mean +- range_std * std of each layer's values, pooled over
    members (NaNs ignored; a degenerate layer gets edges +-1 around its mean)."""
    rows = []
    for v in values:
        flat = v.detach().double().flatten()
        flat = flat[torch.isfinite(flat)]
        mu = flat.mean() if flat.numel() else torch.tensor(0.0, dtype=torch.float64)
        sd = flat.std(correction=0) if flat.numel() > 1 else torch.tensor(0.0, dtype=torch.float64)
        half = range_std * sd if sd > 0 else torch.tensor(1.0, dtype=torch.float64)
        rows.append(torch.linspace(float(mu - half), float(mu + half), bins + 1,
                                   dtype=torch.float64))
    return torch.stack(rows)


def histogram(values: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
    """Counts (K, B) of values (K, N) in bins [e_i, e_i+1) (the last closed), like
    ``np.histogram``; values outside the edges (and NaN) are not counted. Evenly spaced
    edges use ``torch.histc`` (a value within rounding of an inner edge may land in the
    neighbouring bin); others an exact search."""
    k, b = values.shape[0], edges.numel() - 1
    v = values.double().nan_to_num(nan=float("inf"))
    width = edges[1:] - edges[:-1]
    lo, hi = float(edges[0]), float(edges[-1])
    if torch.allclose(width, width[0], rtol=1e-9, atol=0.0) and hi > lo:
        return torch.stack([torch.histc(row, b, lo, hi) for row in v]).long()
    idx = torch.bucketize(v, edges, right=True) - 1
    idx = torch.where(v == edges[-1], b - 1, idx)
    idx = torch.where((v < edges[0]) | (v > edges[-1]), b, idx)
    offset = (b + 1) * torch.arange(k, device=v.device).unsqueeze(1)
    counts = torch.bincount((idx + offset).flatten(), minlength=k * (b + 1))
    return counts.reshape(k, b + 1)[:, :b]


def moments(values: torch.Tensor) -> torch.Tensor:
    """(K, 3): mean, std (ddof 0) and excess kurtosis (0 for a Gaussian) of (K, N) values."""
    v = values.double()
    mu = v.mean(1, keepdim=True)
    c = v - mu
    c2 = c * c
    var = c2.mean(1)
    kurt = (c2 * c2).mean(1) / (var * var) - 3.0
    return torch.stack([mu[:, 0], var.sqrt(), kurt], 1)


def measure_preactivations(m: Members, x: torch.Tensor, layers: Sequence[str] | None = None,
                           bins: int = 50, edges: torch.Tensor | np.ndarray | None = None,
                           range_std: float = 5.0, memory_budget: float | None = None
                           ) -> dict[str, Measurement]:
    """Histograms of each layer's outputs over (neurons x positions x probe inputs).

    ``edges`` (L, bins + 1) fixes the bins; by default (and in a sweep) they span
    mean +- ``range_std`` std of this call's values, pooled over members. Returns
    ``preact_hist`` (K, L, B) int64 counts (values outside the edges are not counted),
    ``preact_edges`` (K, L, B + 1) and ``preact_stats`` (K, L, 3): mean, std and excess
    kurtosis over all values, in preactivation units.
    """
    specs = preact_layers(m.net, layers)
    vals = [v.reshape(v.shape[0], -1)
            for v in _capture(m, specs, x, flat, memory_budget)]
    if edges is None:
        e = preact_edges(vals, bins, range_std)
    else:
        e = torch.as_tensor(np.asarray(edges), dtype=torch.float64)
        if e.ndim != 2 or e.shape[0] != len(specs):
            raise ValueError(f"edges of shape {tuple(e.shape)} for {len(specs)} layers")
    e = e.to(vals[0].device)
    hist = torch.stack([histogram(v, e[i]) for i, v in enumerate(vals)], 1)
    stats = torch.stack([moments(v) for v in vals], 1)
    k = m.k
    labels = np.array([s.label for s in specs])
    return {
        "preact_hist": m.measurement(("layer", "bin"), hist, {"layer": labels}),
        "preact_edges": m.measurement(("layer", "bin_edge"), e.unsqueeze(0).expand(k, -1, -1),
                                 {"layer": labels}),
        "preact_stats": m.measurement(("layer", "stat"), stats,
                                 {"layer": labels, "stat": np.array(STATS)}),
    }


def attention_layers(net: nn.Module) -> list[Layer]:
    """One layer per attention module (``head_dim`` and ``qk_scale`` attributes and an
    identity child ``probs`` that its forward passes the probabilities through)."""
    out = []
    for name, mod in net.named_modules():
        if hasattr(mod, "head_dim") and hasattr(mod, "qk_scale") and hasattr(mod, "probs"):
            out.append(Layer(name, f"{name}.probs" if name else "probs"))
    if not out:
        raise ValueError("the model has no attention module with a 'probs' identity to hook")
    return out


def measure_attention(m: Members, x: torch.Tensor, memory_budget: float | None = None
                      ) -> dict[str, Measurement]:
    """``attention`` (K, L, H, S, S): probabilities of every head of every attention layer
    on one probe sequence x (S,) or (1, S); dims ("layer", "head", "query", "key").
    Members run in chunks that fit ``memory_budget`` GiB (see ``_capture``)."""
    x = torch.as_tensor(x)
    if x.ndim == 1:
        x = x.unsqueeze(0)
    if x.shape[0] != 1:
        raise ValueError(f"attention takes one probe sequence, got a batch of {x.shape[0]}")
    specs = attention_layers(m.net)
    maps = _capture(m, specs, x, whole, memory_budget)
    maps = [t[:, 0] for t in maps]
    values = torch.stack(maps, 1)
    return {"attention": m.measurement(("layer", "head", "query", "key"), values,
                                  {"layer": np.array([s.label for s in specs])})}


def kernels(model: Any, x: torch.Tensor, layers: Sequence[str] | None = None,
            pool: str = "mean", memory_budget: float | None = None) -> dict[str, Measurement]:
    """Feature Gram matrices K_l = Phi_l Phi_l^T / D_l of each layer on probe inputs x.

    Returns ``kernel`` with dims ("layer", "example", "example2"): (K, L, P, P) for an
    Ensemble, (L, P, P) for a Parametrized. Keep P <= 512. See the module docstring for
    layer names and defaults; ``pool`` is "mean" (average over spatial / sequence
    positions) or "flatten". ``memory_budget`` (GiB; default ``budget.default_budget``):
    members and examples run in chunks whose activations and features fit it
    (``MemoryBudgetError`` naming the sizes when one member on one example does not); the
    same for ``preactivations`` and ``attention``.
    """
    m = members(model)
    return public(m, measure_kernels(m, x, layers, pool, memory_budget))


def preactivations(model: Any, x: torch.Tensor, layers: Sequence[str] | None = None,
                   bins: int = 50, edges: torch.Tensor | np.ndarray | None = None,
                   range_std: float = 5.0, memory_budget: float | None = None
                   ) -> dict[str, Measurement]:
    """Preactivation histograms and moments (see :func:`measure_preactivations`);
    the member axis is dropped for a Parametrized."""
    m = members(model)
    return public(m, measure_preactivations(m, x, layers, bins, edges, range_std,
                                            memory_budget))


def attention(model: Any, x: torch.Tensor, memory_budget: float | None = None
              ) -> dict[str, Measurement]:
    """Attention probabilities (see :func:`measure_attention`); (L, H, S, S) for a
    Parametrized."""
    m = members(model)
    return public(m, measure_attention(m, x, memory_budget))


def edges_of(result: Mapping[str, Measurement]) -> np.ndarray:
    """The (L, B + 1) edges of a preactivation result (first member; all share them)."""
    e = result["preact_edges"].values
    return e[0] if e.ndim == 3 else e

"""Consistency across widths (paper Figs. 3-5): distances to the widest network.

Every function compares widths within one ``param`` only. The reference is, per
param, the widest width holding any finite value (see ``dims.reference_width``);
it is recorded as the ``reference_width`` coordinate. ``ensemble=False`` compares
member with member of the same ``seed`` value (all widths share the seed list);
``ensemble=True`` first averages over ``seed``.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import Literal

import numpy as np
import xarray as xr

from widthscan.analysis.dims import (
    ensemble_mean,
    find_step_dim,
    get_var,
    layer_dim,
    ordered,
    reduced_dims,
    reference_width,
    select_reference,
    step_dim,
)
from widthscan.analysis.kernels import center_gram, relative_frobenius

_LEAD = ("param", "width", "seed")
_CHUNK_ELEMS = 1 << 22


def _rms(x: xr.DataArray, dims: Sequence[str]) -> xr.DataArray:
    return np.sqrt((x**2).mean(list(dims), skipna=False)) if dims else abs(x)


def _prepare(
    ds: xr.Dataset | xr.DataArray, var: str, ensemble: bool
) -> tuple[xr.DataArray, xr.DataArray, xr.DataArray]:
    da = get_var(ds, var)
    if ensemble:
        da = ensemble_mean(da)
    ref_w = reference_width(da)
    return da, ref_w, select_reference(da, ref_w)


def _finish(out: xr.DataArray, da: xr.DataArray, ref_w: xr.DataArray, name: str, **attrs):
    out = out.assign_coords(reference_width=ref_w)
    lead = (*_LEAD, *(d for d in (find_step_dim(da), layer_dim(da)) if d))
    out = ordered(out, *lead)
    out.name = name
    out.attrs.update(attrs)
    return out


def distance_to_widest(
    ds: xr.Dataset | xr.DataArray,
    var: str = "logits",
    scaled: bool = False,
    ensemble: bool = False,
    keep: Sequence[str] = (),
) -> xr.DataArray:
    """RMS distance of each width's ``var`` to the widest network's, per step.

    RMS over every dim but param, width, seed, the step dim, ``layer`` and ``keep``
    (e.g. over example and output for logits; head, query, key for attention).
    ``scaled`` divides by the widest network's RMS over the same dims (Fig. 3).
    Returns (param, width, [seed,] <step dim>, [layer, ...]) in the units of ``var``
    (dimensionless when scaled); 0 at the reference width.
    """
    da, ref_w, ref = _prepare(ds, var, ensemble)
    ref = ref.astype(np.float64)
    red = reduced_dims(da, keep)
    parts = [_rms(da.sel(width=w).astype(np.float64) - ref, red) for w in da["width"].values]
    out = xr.concat(parts, dim="width")
    if scaled:
        out = out / _rms(ref, red)
    return _finish(out, da, ref_w, f"{da.name or var}_distance",
                   metric="rms", scaled=int(scaled), ensemble=int(ensemble))


def successive_differences(
    ds: xr.Dataset | xr.DataArray,
    var: str = "logits",
    ensemble: bool = False,
    scaled: bool = False,
    keep: Sequence[str] = (),
) -> xr.DataArray:
    """RMS difference between successive widths, RMS(f[w_next] - f[w]) (Fig. 4).

    Labelled by the narrower width ``w`` with coordinate ``width_next``; ``scaled``
    divides by RMS(f[w_next]). Returns (param, width, [seed,] <step dim>, [layer]),
    one entry fewer along width than ``var``.
    """
    da = get_var(ds, var)
    if ensemble:
        da = ensemble_mean(da)
    red = reduced_dims(da, keep)
    widths = da["width"].values
    parts = []
    for w, w_next in itertools.pairwise(widths):
        nxt = da.sel(width=w_next).drop_vars("width").astype(np.float64)
        d = _rms(da.sel(width=w).astype(np.float64) - nxt, red)
        parts.append(d / _rms(nxt, red) if scaled else d)
    if not parts:
        raise ValueError("successive differences need at least two widths")
    out = xr.concat(parts, dim="width").assign_coords(width_next=("width", widths[1:]))
    lead = (*_LEAD, *(d for d in (find_step_dim(da), layer_dim(da)) if d))
    out = ordered(out, *lead)
    out.name = f"{da.name or var}_successive"
    out.attrs.update(metric="rms", scaled=int(scaled), ensemble=int(ensemble))
    return out


def _chunked_pairs(fn: Callable, a: np.ndarray, b: np.ndarray, core: int) -> np.ndarray:
    """Apply ``fn`` over the leading dims of (..., *core) arrays in bounded chunks."""
    a, b = np.broadcast_arrays(a, b)
    lead = a.shape[:-core]
    tail = a.shape[-core:]
    fa, fb = a.reshape(-1, *tail), b.reshape(-1, *tail)
    step = max(1, _CHUNK_ELEMS // max(1, int(np.prod(tail))))
    out = np.concatenate([np.atleast_1d(fn(fa[i:i + step], fb[i:i + step]))
                          for i in range(0, fa.shape[0], step)]) if fa.shape[0] else np.empty(0)
    return out.reshape(lead)


def _cka_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    ka, kb = center_gram(a), center_gram(b)
    hsic = np.einsum("...ij,...ij->...", ka, kb)
    na = np.sqrt(np.einsum("...ij,...ij->...", ka, ka))
    nb = np.sqrt(np.einsum("...ij,...ij->...", kb, kb))
    with np.errstate(invalid="ignore", divide="ignore"):
        return 1.0 - hsic / (na * nb)


def kernel_distance(
    ds: xr.Dataset | xr.DataArray,
    var: str = "kernel",
    metric: Literal["cka", "frobenius"] = "cka",
    ensemble: bool = False,
    dims: tuple[str, str] | None = None,
) -> xr.DataArray:
    """Distance of each width's Gram matrices to the widest network's (Fig. 5).

    metric="cka": 1 - CKA (centered kernel alignment, float64; 0 = same up to
    scale); metric="frobenius": ||K_w - K_ref||_F / ||K_ref||_F. ``dims`` are the two
    example dims of ``var`` (default: its last two, e.g. kernel_example, kernel_example2).
    Returns (param, width, [seed,] <step dim>, [layer, ...]).
    """
    if metric not in ("cka", "frobenius"):
        raise ValueError(f"metric={metric!r}; allowed: 'cka', 'frobenius'")
    da, ref_w, ref = _prepare(ds, var, ensemble)
    dims = tuple(dims) if dims is not None else tuple(str(d) for d in da.dims[-2:])
    fn = _cka_distance if metric == "cka" else relative_frobenius

    def apply(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return _chunked_pairs(fn, x, y, core=2)

    parts = [xr.apply_ufunc(apply, da.sel(width=w), ref, input_core_dims=[list(dims)] * 2)
             for w in da["width"].values]
    out = xr.concat(parts, dim="width")
    return _finish(out, da, ref_w, f"{da.name or var}_{metric}_distance",
                   metric=metric, ensemble=int(ensemble))


def _hist_cdf(x: np.ndarray, edges: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Pooled CDF at ``x`` of histograms edges (M, B+1), counts (M, B), uniform within bins."""
    total = counts.sum()
    cdf = np.zeros_like(x)
    for e, c in zip(edges, counts):
        cum = np.concatenate([[0.0], np.cumsum(c)])
        cdf += np.interp(x, e, cum)
    return cdf / total


def histogram_wasserstein(
    counts1: np.ndarray, edges1: np.ndarray, counts2: np.ndarray, edges2: np.ndarray
) -> float:
    """Wasserstein-1 distance between two histograms with their own bin edges.

    counts (B,), edges (B+1,) increasing; 2-D inputs (M, B), (M, B+1) pool M
    histograms (counts add). The density is taken uniform within each bin, so both
    CDFs are piecewise linear and W1 = integral |F1 - F2| dx is integrated exactly
    on the union of the edges. Units of the edges; NaN on NaN input or empty counts.
    """
    e1, c1, e2, c2 = (np.atleast_2d(np.asarray(a, np.float64))
                      for a in (edges1, counts1, edges2, counts2))
    arrays = (e1, c1, e2, c2)
    if any(not np.all(np.isfinite(a)) for a in arrays) or c1.sum() <= 0 or c2.sum() <= 0:
        return float("nan")
    grid = np.unique(np.concatenate([e1.ravel(), e2.ravel()]))
    d = _hist_cdf(grid, e1, c1) - _hist_cdf(grid, e2, c2)
    h = np.diff(grid)
    lo, hi = d[:-1], d[1:]
    same = lo * hi >= 0
    absum = np.abs(lo) + np.abs(hi)
    with np.errstate(invalid="ignore", divide="ignore"):
        crossing = np.where(absum > 0, (lo**2 + hi**2) / (2 * absum), 0.0)
    return float(np.sum(h * np.where(same, absum / 2, crossing)))


def preactivation_distance(
    ds: xr.Dataset,
    hist: str = "preact_hist",
    edges: str = "preact_edges",
    ensemble: bool = False,
) -> xr.DataArray:
    """Wasserstein-1 distance of each width's preactivation histogram to the widest's.

    ``hist`` (..., bin) counts and ``edges`` (..., bin_edge) may have different
    edges per width, seed and step (see :func:`histogram_wasserstein`).
    ``ensemble=True`` pools the members' histograms of a width before comparing.
    Returns (param, width, [seed,] <step dim>, layer) in preactivation units.
    """
    h = get_var(ds, hist)
    e = get_var(ds, edges)
    lh, le = layer_dim(h), layer_dim(e)
    if lh and le and lh != le:
        e = e.rename({le: lh})
    h, e = xr.broadcast(h, e, exclude=("bin", "bin_edge"))
    ref_w = reference_width(h)
    pool = ["seed"] if ensemble and "seed" in h.dims else []
    core_h, core_e = [*pool, "bin"], [*pool, "bin_edge"]
    rh, re_ = select_reference(h, ref_w), select_reference(e, ref_w)

    k = len(core_h)

    def pair_w1(c1, e1, c2, e2):
        lead = np.broadcast_shapes(*(a.shape[:-k] for a in (c1, e1, c2, e2)))
        c1, e1, c2, e2 = (np.broadcast_to(a, lead + a.shape[-k:]) for a in (c1, e1, c2, e2))
        out = np.empty(lead)
        for idx in np.ndindex(*lead):
            out[idx] = histogram_wasserstein(c1[idx], e1[idx], c2[idx], e2[idx])
        return out

    parts = []
    for w in h["width"].values:
        hw, ew = h.sel(width=w), e.sel(width=w)
        parts.append(xr.apply_ufunc(pair_w1, hw, ew, rh, re_,
                                    input_core_dims=[core_h, core_e, core_h, core_e]))
    out = xr.concat(parts, dim="width")
    return _finish(out, h, ref_w, f"{h.name or hist}_w1_distance",
                   metric="wasserstein1", ensemble=int(ensemble))


def consistency_width(
    ds: xr.Dataset | xr.DataArray,
    var: str = "logits",
    tol: float = 0.1,
    scaled: bool = True,
    cumulative: bool = False,
    ensemble: bool = False,
    keep: Sequence[str] = (),
) -> xr.DataArray:
    """Smallest width that behaves like the widest within ``tol``, per step.

    With d(w, t) = :func:`distance_to_widest` (scaled or not), width w is
    consistent at step t when d(w', t) <= tol for every width w' >= w up to the
    reference (so a lucky narrow width cannot qualify while a wider one fails);
    with ``cumulative`` also at every earlier step t' <= t. The reference width
    itself is never an answer: NaN means no narrower width is consistent (the
    answer is >= the widest trained). NaN distances count as inconsistent. If
    ``var`` is a DataArray it is taken as the distances themselves when it is
    named ``*_distance``. Returns float widths (param, [seed,] <step dim>, [layer]).
    """
    if isinstance(ds, xr.DataArray) and str(ds.name or "").endswith("_distance"):
        d = ds.sortby("width")
    else:
        d = distance_to_widest(ds, var, scaled=scaled, ensemble=ensemble, keep=keep)
    sd = step_dim(d)
    d = d.sortby(sd)
    ref = d["reference_width"]
    widths = d["width"]
    ok = (d <= tol) & d.notnull()
    if cumulative:
        ok = ok.astype(int).cumprod(sd).astype(bool)
    ok = ok | (widths > ref)
    ok_np = ok.transpose(..., "width").values
    suffix = np.flip(np.logical_and.accumulate(np.flip(ok_np, -1), -1), -1)
    ok_all = ok.transpose(..., "width").copy(data=suffix)
    candidate = ok_all & (widths < ref)
    first = candidate.argmax("width")
    result = widths.isel(width=first).where(candidate.any("width")).astype(np.float64)
    result = result.drop_vars(["width", "width_next"], errors="ignore")
    result.name = f"{d.name}_consistency_width"
    result.attrs.update(tol=tol, cumulative=int(cumulative), units="width")
    return ordered(result, "param", "seed", sd, *filter(None, [layer_dim(result)]))

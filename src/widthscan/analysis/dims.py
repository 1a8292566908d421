"""Dimension conventions shared by the analysis functions.

A loaded sweep (``ws.load``) has dims ``param``, ``width``, ``seed``, one step dim
per variable (``step`` or ``<probe>_step``) and measurement dims. Sample dims (which
probe examples or token positions) and layer dims belong to one variable and carry
its name (``logits_example``, ``logits_position``, ``kernel_layer``; plain
``example``, ``position`` and ``layer`` in hand-built arrays); the others are
shared (``output``, ``head``, ``bin``, ...). Every analysis keeps ``param``,
``width``, ``seed``, the step dim and the layer dim and reduces the rest, unless
told otherwise. Widths are only ever compared within one ``param``.

NaN (diverged members, runs not yet at that step) propagates: a mean over seeds
of a variable with a NaN member is NaN.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import xarray as xr

KEPT_DIMS = ("param", "width", "seed", "layer")
SAMPLE_DIMS = ("example", "position")


def is_layer_dim(dim: str) -> bool:
    """``layer`` or a variable's own ``<var>_layer``."""
    return dim == "layer" or dim.endswith("_layer")


def layer_dim(da: xr.DataArray) -> str | None:
    """The layer dim of ``da`` (see :func:`is_layer_dim`), or None."""
    found = [str(d) for d in da.dims if is_layer_dim(str(d))]
    if len(found) > 1:
        raise ValueError(f"more than one layer dim in {tuple(da.dims)}: {found}")
    return found[0] if found else None


def sample_dims(da: xr.DataArray) -> list[str]:
    """Dims of ``da`` that index probe examples or token positions: ``example``,
    ``position`` and their second copies (``example2``), plain or ``<var>_`` prefixed."""
    out = []
    for d in map(str, da.dims):
        base = d.rstrip("0123456789")
        if any(base == s or base.endswith(f"_{s}") for s in SAMPLE_DIMS):
            out.append(d)
    return out


def step_dim(da: xr.DataArray) -> str:
    """Name of the step dim of ``da``: the one dim named ``step`` or ending in ``_step``."""
    found = find_step_dim(da)
    if found is None:
        raise ValueError(f"no step dim (named 'step' or '*_step') among {tuple(da.dims)}")
    return found


def find_step_dim(da: xr.DataArray) -> str | None:
    """Like :func:`step_dim` but None when there is no step dim."""
    dims = [str(d) for d in da.dims if d == "step" or str(d).endswith("_step")]
    if len(dims) > 1:
        raise ValueError(f"more than one step dim in {tuple(da.dims)}: {dims}")
    return dims[0] if dims else None


def get_var(data: xr.Dataset | xr.DataArray, var: str | None) -> xr.DataArray:
    """The DataArray ``data[var]`` (or ``data`` itself), sorted by width, in memory (a
    lazily loaded variable is read here, once per call)."""
    da = data if isinstance(data, xr.DataArray) else data[var]
    if "width" not in da.dims:
        raise ValueError(f"{da.name or var!r} has no 'width' dim: {tuple(da.dims)}")
    da = da.sortby("width")
    return da.compute() if da.chunks is not None else da


def reduced_dims(da: xr.DataArray, keep: Iterable[str] = ()) -> list[str]:
    """Dims of ``da`` that an analysis averages over (all but the kept ones)."""
    kept = {*KEPT_DIMS, *keep}
    sd = find_step_dim(da)
    if sd is not None:
        kept.add(sd)
    return [str(d) for d in da.dims if d not in kept and not is_layer_dim(str(d))]


def ensemble_mean(da: xr.DataArray) -> xr.DataArray:
    """Mean over ``seed`` (NaN members propagate); ``da`` unchanged without a seed dim."""
    return da.mean("seed", skipna=False) if "seed" in da.dims else da


def reference_width(da: xr.DataArray) -> xr.DataArray:
    """Per param, the widest width holding any finite value of ``da``.

    Returns an int DataArray over ``param`` (a 0-d one without a param dim).
    """
    finite = np.isfinite(da) if np.issubdtype(da.dtype, np.floating) else xr.ones_like(da, bool)
    other = [d for d in da.dims if d not in ("param", "width")]
    has = finite.any(other) if other else finite
    widths = da["width"].values

    def widest(mask: np.ndarray) -> int:
        idx = np.flatnonzero(mask)
        if idx.size == 0:
            raise ValueError("no width holds any finite value")
        return int(widths[idx[-1]])

    if "param" not in da.dims:
        return xr.DataArray(widest(has.values), name="reference_width")
    has = has.transpose("param", "width")
    vals = [widest(row) for row in has.values]
    return xr.DataArray(vals, dims="param", coords={"param": da["param"].values},
                        name="reference_width")


def select_reference(da: xr.DataArray, ref: xr.DataArray) -> xr.DataArray:
    """``da`` at each param's reference width, without the width dim."""
    if "param" not in da.dims:
        return da.sel(width=int(ref)).drop_vars("width")
    parts = [da.sel(param=p, width=int(ref.sel(param=p))).drop_vars("width")
             for p in da["param"].values]
    return xr.concat(parts, dim="param").transpose(*[d for d in da.dims if d != "width"])


def ordered(da: xr.DataArray, *first: str) -> xr.DataArray:
    """``da`` with the dims in ``first`` (those present) moved to the front."""
    lead = [d for d in first if d in da.dims]
    return da.transpose(*lead, ...)

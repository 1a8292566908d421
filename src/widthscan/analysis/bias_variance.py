"""Bias and variance over initializations (paper Section 3, Appendices F and H).

Losses follow ``widthscan.train.losses``: ``mse`` is the mean of (f - y)^2 over
examples and outputs; ``ce`` the mean over examples of -sum_c y_c log softmax(f)_c
(integer labels become one-hot; label -100 is ignored). Ensembles average logits.

Targets are an argument (numpy (example,) or (example, output), or a DataArray
with an ``example`` dim) or ``ds["targets"]``. For ``mse``, integer labels of
shape (example,) are one-hot encoded when ``output`` has more than one entry.
"""

from __future__ import annotations

import itertools
import warnings
from math import comb
from typing import Literal

import numpy as np
import xarray as xr
from scipy.special import logsumexp

from widthscan.analysis.dims import get_var, ordered, reference_width, select_reference

Loss = Literal["mse", "ce"]
ArrayLike = np.ndarray | xr.DataArray
IGNORE_INDEX = -100


def _targets(
    ds: xr.Dataset | xr.DataArray, targets: ArrayLike | None, f: xr.DataArray, loss: str
) -> tuple[xr.DataArray, xr.DataArray]:
    """Targets as float64 (example[, output]) and a validity mask (example,)."""
    if targets is None:
        if not isinstance(ds, xr.Dataset) or "targets" not in ds:
            raise ValueError("pass targets=..., or put a 'targets' variable in the Dataset")
        targets = ds["targets"]
    if not isinstance(targets, xr.DataArray):
        t = np.asarray(targets)
        targets = xr.DataArray(t, dims=("example", "output")[: t.ndim])
    targets = _shared(targets)
    if "example" in f.coords and "example" in targets.coords:
        targets = targets.sel(example=f["example"])
    n_out = f.sizes.get("output", 1)
    if targets.dims == ("example",) and n_out > 1 and not np.issubdtype(targets.dtype,
                                                                         np.integer):
        v = targets.values
        if np.isfinite(v).all() and np.array_equal(v, np.round(v)):
            targets = targets.astype(np.int64)
    is_label = np.issubdtype(targets.dtype, np.integer) and targets.dims == ("example",)
    mask = xr.ones_like(targets.isel(output=0) if "output" in targets.dims else targets, float)
    if is_label and (loss == "ce" or n_out > 1):
        labels = targets.values
        mask = xr.DataArray((labels != IGNORE_INDEX).astype(float), dims="example")
        onehot = np.zeros((labels.size, n_out))
        valid = labels != IGNORE_INDEX
        onehot[np.flatnonzero(valid), labels[valid]] = 1.0
        targets = xr.DataArray(onehot, dims=("example", "output"))
        if "example" in f.coords:
            targets = targets.assign_coords(example=f["example"].values)
            mask = mask.assign_coords(example=f["example"].values)
    elif loss == "ce" and "output" not in targets.dims:
        raise ValueError("ce needs integer labels (example,) or probabilities (example, output)")
    elif loss == "mse" and "output" not in targets.dims and n_out > 1:
        raise ValueError("mse with several outputs needs targets (example, output) or labels")
    return targets.astype(np.float64), mask


def _shared(targets: xr.DataArray) -> xr.DataArray:
    """Targets as ``ws.load`` stores them, (param, width, seed, targets_step, example[,
    output]) and the same for every run, reduced to (example[, output]). NaN entries (a
    diverged member, masked by the loader) are skipped; targets that differ between
    runs raise."""
    extra = [d for d in targets.dims
             if d in ("param", "width", "seed") or d == "step" or str(d).endswith("_step")]
    if not extra:
        return targets
    lo = targets.min(extra, skipna=True)
    hi = targets.max(extra, skipna=True)
    if not bool(((lo == hi) | lo.isnull()).all()):
        raise ValueError(f"targets differ along {extra}: pass targets=... explicitly")
    return hi.astype(targets.dtype) if np.issubdtype(targets.dtype, np.integer) else hi


def _loss(f: xr.DataArray, y: xr.DataArray, mask: xr.DataArray, loss: str) -> xr.DataArray:
    """Mean loss over example (and output) of predictions f against targets y."""
    if loss == "mse":
        red = [d for d in ("example", "output") if d in f.dims or d in y.dims]
        return ((f - y) ** 2).mean(red, skipna=False)
    if loss == "ce":
        lse = xr.apply_ufunc(logsumexp, f, input_core_dims=[["output"]], kwargs={"axis": -1})
        nll = -(y * (f - lse)).sum("output", skipna=False)
        return (nll * mask).sum("example", skipna=False) / mask.sum()
    raise ValueError(f"loss={loss!r}; allowed: 'mse', 'ce'")


def _logits(ds: xr.Dataset | xr.DataArray, var: str) -> xr.DataArray:
    f = get_var(ds, var).astype(np.float64)
    if "seed" not in f.dims:
        raise ValueError(f"{var!r} has no 'seed' dim: ensembles need several members")
    return f


def bias_variance(
    ds: xr.Dataset | xr.DataArray,
    targets: ArrayLike | None = None,
    loss: Loss = "mse",
    var: str = "logits",
) -> xr.Dataset:
    """Decompose the loss of single networks into bias and variance over seeds.

    With M seeds, f_s the members' logits and f_bar their mean, per (param, width,
    step):

    - ``single_loss``: mean over members of L(f_s), unbiased for E L(f).
    - ``ensemble_loss``: L(f_bar), the loss of the M-member logit-averaged ensemble.
    - ``variance_naive``: single_loss - ensemble_loss (biased low at small M).
    - ``variance``: mse: mean over elements of the sample variance over seeds with
      the M/(M-1) correction, an unbiased estimate of E||f - E f||^2;
      ce: the gap single_loss - ensemble_loss (no closed form; it is biased low at
      small M, by about (M-1)/M to second order).
    - ``bias2``: mse: ||f_bar - y||^2 - variance/M, an unbiased estimate of the
      infinite-ensemble loss ||E f - y||^2 (so single_loss = bias2 + variance
      exactly); ce: ensemble_loss.
    - ``width_bias``: bias2 minus bias2 of the widest width of the same param
      (the bias of narrower width).

    Work on the training set or a probe/test set by choosing ``var`` and the
    matching ``targets``. NaN members propagate. Returns a Dataset over
    (param, width, <step dim>) in loss units.
    """
    f = _logits(ds, var)
    y, mask = _targets(ds, targets, f, loss)
    m = f.sizes["seed"]
    single = _loss(f, y, mask, loss).mean("seed", skipna=False)
    ensemble = _loss(f.mean("seed", skipna=False), y, mask, loss)
    gap = single - ensemble
    if loss == "mse" and m >= 2:
        red = [d for d in ("example", "output") if d in f.dims]
        variance = f.var("seed", ddof=1, skipna=False).mean(red, skipna=False)
        bias2 = ensemble - variance / m
    else:
        if loss == "mse":
            warnings.warn("one seed: no variance estimate", stacklevel=2)
            variance = xr.full_like(gap, np.nan)
        else:
            variance = gap
        bias2 = ensemble
    ref = select_reference(bias2, reference_width(bias2))
    out = xr.Dataset(
        {
            "single_loss": single,
            "ensemble_loss": ensemble,
            "variance": variance,
            "variance_naive": gap,
            "bias2": bias2,
            "width_bias": bias2 - ref,
        }
    )
    out.attrs.update(loss=loss, n_seeds=m, var=var)
    return ordered(out, "param", "width")


def _subsets(m: int, k: int, n_subsets: int, rng: np.random.Generator) -> list[list[int]]:
    if comb(m, k) <= n_subsets:
        return [list(c) for c in itertools.combinations(range(m), k)]
    return [sorted(rng.choice(m, size=k, replace=False).tolist()) for _ in range(n_subsets)]


def variance_vs_ensemble_size(
    ds: xr.Dataset | xr.DataArray,
    targets: ArrayLike | None = None,
    loss: Loss = "mse",
    n_subsets: int = 20,
    var: str = "logits",
    seed: int = 0,
) -> xr.Dataset:
    """Loss of k-member ensembles and their variance for k = 1..M (Appendix H).

    For each k, members are subsampled without replacement: every subset when
    there are at most ``n_subsets`` of them, else ``n_subsets`` random ones
    (``seed``). ``ensemble_loss`` is the mean of L(f_bar_k) over subsets;
    ``variance`` = ensemble_loss - ``loss_inf``, the loss in excess of the
    infinite ensemble; ``reference`` = variance(k=1) / k, the law for
    uncorrelated members. ``loss_inf``: mse: the unbiased bias2 of
    :func:`bias_variance` (then variance(k) = s^2/k exactly when all subsets are
    used); ce: the intercept of a least-squares fit of ensemble_loss against 1/k.
    Returns a Dataset over (param, width, <step dim>, ensemble_size).
    """
    f = _logits(ds, var)
    y, mask = _targets(ds, targets, f, loss)
    m = f.sizes["seed"]
    if m < 2:
        raise ValueError("variance against ensemble size needs at least two seeds")
    rng = np.random.default_rng(seed)
    sizes = np.arange(1, m + 1)
    per_k = []
    for k in sizes:
        subs = _subsets(m, int(k), n_subsets, rng)
        losses = [_loss(f.isel(seed=s).mean("seed", skipna=False), y, mask, loss) for s in subs]
        per_k.append(sum(losses) / len(losses))
    ens = xr.concat(per_k, dim=xr.DataArray(sizes, dims="ensemble_size", name="ensemble_size"))
    if loss == "mse":
        loss_inf = bias_variance(f, y, "mse")["bias2"]
    else:
        x = xr.DataArray(1.0 / sizes, dims="ensemble_size", coords={"ensemble_size": sizes})
        xc = x - x.mean()
        slope = (xc * (ens - ens.mean("ensemble_size"))).sum("ensemble_size") / (xc**2).sum()
        loss_inf = ens.mean("ensemble_size") - slope * x.mean()
    variance = ens - loss_inf
    reference = variance.sel(ensemble_size=1, drop=True) / variance["ensemble_size"]
    out = xr.Dataset(
        {"ensemble_loss": ens, "variance": variance, "reference": reference, "loss_inf": loss_inf}
    )
    out.attrs.update(loss=loss, n_seeds=m, var=var, n_subsets=n_subsets)
    return ordered(out.transpose(..., "ensemble_size"), "param", "width")

"""Bias and variance over initializations (paper Section 3, Appendices F and H).

Losses follow ``widthscan.stack.losses``: ``mse`` is the mean of (f - y)^2 over
examples and outputs; ``ce`` the mean over examples of -sum_c y_c log softmax(f)_c
(integer labels become one-hot; label -100 is ignored). Ensembles average logits.

Targets are an argument (numpy (example,) or (example, output), or a DataArray
with an ``example`` dim) or ``ds["targets"]``. For ``mse``, integer labels of
shape (example,) are one-hot encoded when ``output`` has more than one entry.

Language models are scored per token, as the paper does for masked tokens: the
logits probe stores (position, output) logits at predicted token positions and the
targets variable the target token at each position; a position plays the part of
an example (losses are means over tokens), and predictions and targets are matched
by their position labels. Loaded sample dims (``logits_example``,
``logits_position``, ``targets_position``, ...) are matched the same way.
"""

from __future__ import annotations

import warnings
from typing import Literal

import numpy as np
import xarray as xr
from scipy.special import logsumexp

from widthscan.analysis.dims import (
    get_var,
    ordered,
    reference_width,
    sample_dims,
    select_reference,
)

Loss = Literal["mse", "ce"]
ArrayLike = np.ndarray | xr.DataArray
IGNORE_INDEX = -100


def _as_example(da: xr.DataArray) -> xr.DataArray:
    """``da`` with its one sample dim (example or token position, see dims.sample_dims)
    named ``example``."""
    found = sample_dims(da)
    if len(found) > 1:
        raise ValueError(f"{da.name!r} has several sample dims {found}; expected one")
    return da.rename({found[0]: "example"}) if found and found[0] != "example" else da


def stored_targets(t: xr.DataArray) -> xr.DataArray:
    """Targets as ``ws.load`` stores them (the same for every member, see ``_shared``) as
    (example[, output]), the sample dim (``targets_example``, ``targets_position``, ...)
    named ``example``, in memory; integral floats become int64 labels."""
    t = _as_example(_shared(t)).compute()
    if t.ndim == 1 and not np.issubdtype(t.dtype, np.integer):
        v = t.values
        if np.isfinite(v).all() and np.array_equal(v, np.round(v)):
            t = t.astype(np.int64)
    return t


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
    targets = stored_targets(targets)
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
    f = _as_example(get_var(ds, var).astype(np.float64))
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


def _partitions(m: int, k: int, repeats: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Disjoint groups of k of m members: floor(m / k) groups from each of ``repeats``
    random permutations (one partition when k is 1 or m), each (groups, m) with weight
    1/k on its members."""
    n_groups = m // k
    count = 1 if k in (1, m) else repeats
    out = []
    for _ in range(count):
        order = rng.permutation(m)[: n_groups * k].reshape(n_groups, k)
        w = np.zeros((n_groups, m))
        np.put_along_axis(w, order, 1.0 / k, axis=1)
        out.append(w)
    return out


def variance_vs_ensemble_size(
    ds: xr.Dataset | xr.DataArray,
    targets: ArrayLike | None = None,
    loss: Loss = "mse",
    n_subsets: int = 20,
    var: str = "logits",
    seed: int = 0,
) -> xr.Dataset:
    """Loss of k-member ensembles against k = 1..M, measured (Appendix H).

    For each k the M members are split into floor(M / k) disjoint sub-ensembles of k
    (``n_subsets`` random permutations, ``seed``; one split for k = 1 and k = M); each
    sub-ensemble averages its members' logits. Returns a Dataset over (param, width,
    <step dim>, ensemble_size):

    - ``ensemble_loss``: mean over sub-ensembles of L(f_bar_k) against the targets: the
      loss curve against ensemble size of App. H (flat beyond k ~ 3-4 when a few members
      suffice). For members = truth + bias + iid noise of variance s^2 (mse): bias^2 +
      s^2 / k.
    - ``distance_to_full``: mean over sub-ensembles of the mean over examples and outputs of
      (f_bar_k - f_bar_M)^2 (logit units^2), how far k members are from all M: for
      exchangeable members with independent parts of variance s^2, s^2 (1/k - 1/M).
    - ``n_groups``: sub-ensembles averaged per k.
    - ``loss_inf`` (no ensemble_size dim): the infinite-ensemble loss estimated from all M
      members. mse: the unbiased bias2 of :func:`bias_variance`, which assumes independent
      members (a part of the noise shared by every member counts as bias); ce: the
      intercept of a least-squares fit of ensemble_loss against 1/k.
    """
    f = _logits(ds, var)
    y, mask = _targets(ds, targets, f, loss)
    m = f.sizes["seed"]
    if m < 2:
        raise ValueError("variance against ensemble size needs at least two seeds")
    rng = np.random.default_rng(seed)
    sizes = np.arange(1, m + 1)
    full = f.mean("seed", skipna=False)
    red = [d for d in ("example", "output") if d in f.dims]
    losses, distances, counts = [], [], []
    for k in sizes:
        total_loss = total_dist = 0.0
        n = 0
        for w in _partitions(m, int(k), n_subsets, rng):
            weights = xr.DataArray(w, dims=("group", "seed"))
            means = xr.dot(weights, f, dim="seed")
            total_loss = total_loss + _loss(means, y, mask, loss).sum("group")
            total_dist = total_dist + ((means - full) ** 2).mean(red, skipna=False).sum("group")
            n += w.shape[0]
        losses.append(total_loss / n)
        distances.append(total_dist / n)
        counts.append(n)
    size_dim = xr.DataArray(sizes, dims="ensemble_size", name="ensemble_size")
    ens = xr.concat(losses, dim=size_dim)
    if loss == "mse":
        loss_inf = bias_variance(f, y, "mse")["bias2"]
    else:
        x = xr.DataArray(1.0 / sizes, dims="ensemble_size", coords={"ensemble_size": sizes})
        xc = x - x.mean()
        slope = (xc * (ens - ens.mean("ensemble_size"))).sum("ensemble_size") / (xc**2).sum()
        loss_inf = ens.mean("ensemble_size") - slope * x.mean()
    out = xr.Dataset({
        "ensemble_loss": ens,
        "distance_to_full": xr.concat(distances, dim=size_dim),
        "n_groups": xr.DataArray(counts, dims="ensemble_size",
                                 coords={"ensemble_size": sizes}),
        "loss_inf": loss_inf,
    })
    out.attrs.update(loss=loss, n_seeds=m, var=var, n_subsets=n_subsets)
    return ordered(out.transpose(..., "ensemble_size"), "param", "width")

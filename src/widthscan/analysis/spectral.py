"""Spectral view of finite-width bias (paper Section 5, Fig. 10).

Kernels are (P, P) over P probe examples (the trace over outputs: Theta ~ K (x) I_C),
taken as a proxy for the population: an expectation over inputs becomes a mean over the
P examples. Under SGD with learning rate lr on widthscan's MSE, L = mean over the P
examples and C outputs of (f - y)^2, the outputs follow df/dt = -lr Theta dL/df, i.e.

    dr/dt = -(2 lr / (P C)) K r,      r = f - y  (P, C),

with Theta the lr-weighted eNTK (``ws.probes.entk``'s default: each parameter tensor's
Jacobian Gram matrix times its learning-rate scale). ``loss="half_sse"`` takes the
textbook L = ||f - y||^2 / (2P) instead (rate lr / P).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import xarray as xr

from widthscan.analysis.dims import ensemble_mean, get_var, step_dim

ArrayLike = np.ndarray | xr.DataArray
_KDIMS = ("example", "example2")


def _eigh_desc(k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues (..., P) descending and eigenvectors (..., P, P) as columns; all NaN for
    a matrix with a non-finite entry (e.g. the kernel of a diverged member)."""
    k = np.asarray(k, np.float64)
    sym = (k + np.swapaxes(k, -1, -2)) / 2
    finite = np.isfinite(sym).all(axis=(-2, -1))
    vals = np.full(sym.shape[:-1], np.nan)
    vecs = np.full(sym.shape, np.nan)
    if finite.any():
        vals[finite], vecs[finite] = np.linalg.eigh(sym[finite])
    return vals[..., ::-1], vecs[..., ::-1]


def _target_matrix(target: ArrayLike, p: int) -> np.ndarray:
    """Target as float64 (P, C): integer labels (P,) become one-hot."""
    t = np.asarray(target.values if isinstance(target, xr.DataArray) else target)
    if t.shape[0] != p:
        raise ValueError(f"target has {t.shape[0]} examples, the kernel {p}")
    if t.ndim == 1 and np.issubdtype(t.dtype, np.integer):
        onehot = np.zeros((p, int(t.max()) + 1))
        onehot[np.arange(p), t] = 1.0
        return onehot
    return t.astype(np.float64).reshape(p, -1)


def _cumulative_power(vecs: np.ndarray, y: np.ndarray) -> np.ndarray:
    proj = np.einsum("...pk,pc->...kc", vecs, y)
    return np.cumsum((proj**2).sum(-1), -1) / (y**2).sum()


def _kernel_core(kernel: xr.DataArray) -> list[str]:
    if all(d in kernel.dims for d in _KDIMS):
        return list(_KDIMS)
    return [str(d) for d in kernel.dims[-2:]]


def task_power(kernel: ArrayLike, target: ArrayLike) -> xr.DataArray:
    """Cumulative task power C(k), k = 1..P (Canatar et al. 2021).

    C(k) = sum_{i<=k} ||v_i^T y||^2 / ||y||^2 with v_i the kernel's eigenvectors by
    descending eigenvalue: the fraction of the target's squared norm in the top-k
    eigenspace. kernel (P, P) (a DataArray may carry batch dims, its kernel dims
    are example/example2 or the last two); target (P,) or (P, C), or integer labels
    (one-hot). Returns a DataArray over ([batch dims,] k), dimensionless.
    """
    if isinstance(kernel, xr.DataArray):
        core = _kernel_core(kernel)
        p = kernel.sizes[core[0]]
        y = _target_matrix(target, p)
        out = xr.apply_ufunc(lambda k: _cumulative_power(_eigh_desc(k)[1], y), kernel,
                             input_core_dims=[core], output_core_dims=[["k"]])
    else:
        k = np.asarray(kernel)
        y = _target_matrix(target, k.shape[-1])
        out = xr.DataArray(_cumulative_power(_eigh_desc(k)[1], y),
                           dims=[f"dim_{i}" for i in range(k.ndim - 2)] + ["k"])
    out = out.assign_coords(k=np.arange(1, out.sizes["k"] + 1))
    out.name = "task_power"
    return out


FLOW_LOSSES = ("mse", "half_sse")


def _steps(steps: int | Sequence[int] | np.ndarray) -> np.ndarray:
    return np.arange(int(steps) + 1) if np.ndim(steps) == 0 else np.asarray(steps, np.float64)


def flow_rate(lr: float, n_examples: int, n_outputs: int, loss: str = "mse") -> float:
    """a in dr/dt = -a K r for the loss convention ``loss`` (module docstring): "mse", the
    mean of (f - y)^2 over examples and outputs (widthscan's): 2 lr / (P C); "half_sse",
    ||f - y||^2 / (2P): lr / P."""
    if loss not in FLOW_LOSSES:
        raise ValueError(f"loss={loss!r}; allowed: {FLOW_LOSSES}")
    return 2.0 * lr / (n_examples * n_outputs) if loss == "mse" else lr / n_examples


def _mode_factors(vals: np.ndarray, a: float, t: np.ndarray, discrete: bool,
                  momentum: float) -> tuple[np.ndarray, np.ndarray]:
    """Per eigenvalue lambda (P,) and time t (T,): the residual's decay d(t) = r(t) / r(0)
    and g(t) with a * (sum or integral of r up to t) = g(t) r(0), both (T, P).

    Flow: d = exp(-a' lambda t), g = (1 - d) / lambda, a' = a / (1 - momentum) (heavy ball
    at a slowly varying gradient). Discrete: SGD's recursion v <- momentum v + r,
    r <- r - a lambda v, step by step (g: a times the sum of the v's).
    """
    lam = np.maximum(vals, 0.0)
    if not discrete:
        eff = a / (1.0 - momentum)
        x = eff * t[:, None] * lam[None, :]
        small = lam <= 1e-300
        g = np.where(small, eff * t[:, None], -np.expm1(-x) / np.where(small, 1.0, lam))
        return np.exp(-x), g
    ti = t.astype(np.int64)
    if np.any(ti != t) or np.any(ti < 0):
        raise ValueError("discrete=True needs integer steps >= 0")
    decay = np.empty((t.size, lam.size))
    g = np.empty_like(decay)
    r, v, acc = np.ones_like(lam), np.zeros_like(lam), np.zeros_like(lam)
    step = 0
    for i in np.argsort(ti):
        while step < ti[i]:
            v = momentum * v + r
            r = r - a * lam * v
            acc = acc + a * v
            step += 1
        decay[i], g[i] = r, acc
    return decay, g


def learning_time(lr_steps: ArrayLike, lr_values: ArrayLike, steps: ArrayLike) -> np.ndarray:
    """tau(t) = sum_{s < t} lr_s at each of ``steps``: the time of kernel flow with lr = 1
    under a learning-rate schedule. lr_values (logged at lr_steps, held constant up to the
    next logged step; the first value before it)."""
    ls = np.asarray(lr_steps, np.int64)
    lv = np.asarray(lr_values, np.float64)
    t = np.asarray(steps, np.int64)
    grid = np.arange(int(max(t.max(initial=0), 0)) + 1)
    idx = np.clip(np.searchsorted(ls, grid, side="right") - 1, 0, len(ls) - 1)
    tau = np.concatenate([[0.0], np.cumsum(lv[idx])])
    return tau[t]


def kernel_flow_loss(
    kernel: ArrayLike,
    target: ArrayLike,
    f0: ArrayLike | None = None,
    lr: float = 1.0,
    steps: int | Sequence[int] | np.ndarray = 100,
    discrete: bool = False,
    loss: str = "mse",
    momentum: float = 0.0,
    fit: ArrayLike | None = None,
) -> xr.DataArray:
    """MSE loss curve of training with a fixed kernel (Section 5).

    Trains on the examples ``fit`` (indices or a boolean mask; default all P):
    r(t) = exp(-a t K) r(0), r(0) = f0 - y, a = :func:`flow_rate` (``loss``: "mse",
    widthscan's mean of (f - y)^2 over examples and outputs, a = 2 lr / (P C);
    "half_sse", ||f - y||^2 / (2P), a = lr / P); ``discrete`` gives SGD's steps instead,
    r(t) = (I - a K)^t r(0) (with ``momentum``: heavy ball; the flow uses
    lr / (1 - momentum)). kernel (P, P), in output units^2 per unit learning rate (the
    lr-weighted eNTK); target and f0 (P,) or (P, C) (f0 defaults to 0; integer labels
    become one-hot); ``steps``: an int T (t = 0..T) or the step values (or any increasing
    times, e.g. the cumulative learning rate with lr = 1).

    Returns loss(t) over dim ``step``: the mean over examples and outputs of r(t)^2 on the
    fit examples, or, when ``fit`` leaves some out, on those held-out examples B, which
    move through the kernel's cross block: f_B(t) = f_B(0) - a K_BA sum_s r_A(s).
    """
    k = np.asarray(kernel.values if isinstance(kernel, xr.DataArray) else kernel, np.float64)
    p = k.shape[-1]
    y = _target_matrix(target, p)
    r0 = -y if f0 is None else _target_matrix(f0, p) - y
    train = np.ones(p, bool)
    if fit is not None:
        train = np.zeros(p, bool)
        train[np.asarray(fit)] = True
    held = ~train
    if not train.any():
        raise ValueError("fit selects no example")
    a = flow_rate(lr, int(train.sum()), y.shape[1], loss)
    vals, vecs = _eigh_desc(k[np.ix_(train, train)])
    coef = vecs.T @ r0[train]
    t = _steps(steps)
    decay, g = _mode_factors(vals, a, t, discrete, momentum)
    if held.any():
        cross = k[np.ix_(held, train)] @ vecs
        r_b = r0[held][None] - np.einsum("bk,tk,kc->tbc", cross, g, coef)
        out = (r_b**2).mean((1, 2))
    else:
        out = np.einsum("tk,kc->t", decay**2, coef**2) / r0.size
    rate = "2 lr / (P C)" if loss == "mse" else "lr / P"
    return xr.DataArray(out, dims="step", coords={"step": t}, name="kernel_flow_loss",
                        attrs={"lr": lr, "discrete": int(discrete), "loss": loss,
                               "momentum": momentum, "held_out": int(held.any()),
                               "normalization": f"dr/dt = -a K r, a = {rate}; loss(t) = "
                               "mean over examples and outputs of r(t)^2"})


def _ensembled_kernel(ds: xr.Dataset | xr.DataArray, var: str, ensemble: bool) -> xr.DataArray:
    k = get_var(ds, var).astype(np.float64)
    if ensemble:
        k = ensemble_mean(k)
    if "output" in k.dims and "output2" in k.dims:
        k = k.transpose(..., "example", "output", "example2", "output2")
        lead = k.dims[:-4]
        n = k.sizes["example"] * k.sizes["output"]
        k = xr.DataArray(k.values.reshape(*k.shape[:-4], n, n), dims=(*lead, *_KDIMS),
                         coords={d: k[d] for d in lead if d in k.coords}, name=k.name)
    return k


def entk_spectrum(
    ds: xr.Dataset | xr.DataArray,
    var: str = "entk",
    targets: ArrayLike | None = None,
    ensemble: bool = True,
    vectors: bool = False,
) -> xr.Dataset:
    """Eigen-decomposition of the (seed-ensembled) eNTK per param, width and step.

    ``var`` (param, width, seed, entk_step, example, example2) is averaged over seed
    (``ensemble``); with output/output2 dims, (example, output) pairs are flattened.
    Returns ``eigenvalues`` (param, width, entk_step, eigen) descending (eigen 0 =
    largest, kernel units), ``eigenvectors`` (..., example, eigen) if ``vectors``,
    and, given ``targets`` ((P,), (P, C) or labels), ``task_power`` (..., k).
    """
    k = _ensembled_kernel(ds, var, ensemble)

    def values(x: np.ndarray) -> np.ndarray:
        return _eigh_desc(x)[0]

    out = xr.Dataset({"eigenvalues": xr.apply_ufunc(
        values, k, input_core_dims=[list(_KDIMS)], output_core_dims=[["eigen"]])})
    out = out.assign_coords(eigen=np.arange(out.sizes["eigen"]))
    if vectors:
        out["eigenvectors"] = xr.apply_ufunc(
            lambda x: _eigh_desc(x)[1], k, input_core_dims=[list(_KDIMS)],
            output_core_dims=[["example", "eigen"]])
    if targets is not None:
        out["task_power"] = task_power(k, targets)
    return out


def entk_flow_loss(
    ds: xr.Dataset | xr.DataArray,
    targets: ArrayLike,
    lr: float,
    steps: int | Sequence[int] | np.ndarray,
    var: str = "entk",
    kernel_step: int | None = None,
    f0: ArrayLike | None = None,
    ensemble: bool = True,
    discrete: bool = False,
    loss: str = "mse",
    momentum: float = 0.0,
    fit: ArrayLike | None = None,
) -> xr.DataArray:
    """:func:`kernel_flow_loss` of the ensembled eNTK of every param and width.

    The kernel is taken at ``kernel_step`` (nearest logged step; default the last,
    i.e. the after-kernel); it should be the lr-weighted eNTK (``entk_weighting`` 1, the
    probe's default under SGD), the kernel SGD follows. ``f0``: (P[, C]) shared by all, or
    a DataArray over some of the kernel's batch dims (param, width) and (example[,
    output]). Returns (param, width, step) MSE loss curves (on the held-out examples when
    ``fit`` leaves some out), to set against the observed ones.
    """
    k = _ensembled_kernel(ds, var, ensemble)
    sd = step_dim(k)
    k = k.isel({sd: -1}) if kernel_step is None else k.sel({sd: kernel_step}, method="nearest")
    t = _steps(steps)

    def flow(x: np.ndarray, *start: np.ndarray) -> np.ndarray:
        init = start[0] if start else f0
        return kernel_flow_loss(x, targets, init, lr, t, discrete, loss, momentum, fit).values

    if isinstance(f0, xr.DataArray):
        core = [d for d in f0.dims if d not in k.dims or d in _KDIMS]
        f0_da = f0.astype(np.float64).rename({d: f"f0_{d}" for d in core})
        out = xr.apply_ufunc(flow, k, f0_da, vectorize=True,
                             input_core_dims=[list(_KDIMS), [f"f0_{d}" for d in core]],
                             output_core_dims=[["step"]])
    else:
        out = xr.apply_ufunc(flow, k, vectorize=True, input_core_dims=[list(_KDIMS)],
                             output_core_dims=[["step"]])
    out = out.assign_coords(step=t)
    out.name = "kernel_flow_loss"
    out.attrs.update(lr=lr, discrete=int(discrete), loss=loss, momentum=momentum,
                     held_out=int(fit is not None))
    return out

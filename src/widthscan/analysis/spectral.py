"""Spectral view of finite-width bias (paper Section 5, Fig. 10).

Kernels are (P, P) over P probe examples, taken as a proxy for the population:
an expectation over inputs becomes a mean over the P examples, so kernel
gradient flow on L = ||f - y||^2 / (2P) with learning rate eta reads
dr/dt = -(eta / P) K r for the residual r = f - y.
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


def _steps(steps: int | Sequence[int] | np.ndarray) -> np.ndarray:
    return np.arange(int(steps) + 1) if np.ndim(steps) == 0 else np.asarray(steps, np.float64)


def kernel_flow_loss(
    kernel: ArrayLike,
    target: ArrayLike,
    f0: ArrayLike | None = None,
    lr: float = 1.0,
    steps: int | Sequence[int] | np.ndarray = 100,
    discrete: bool = False,
) -> xr.DataArray:
    """MSE loss curve of kernel gradient flow with a fixed kernel (Section 5).

    r(t) = exp(-lr t K / P) r(0), r(0) = f0 - y, from gradient flow on
    ||f - y||^2 / (2P) over the P examples; ``discrete`` gives gradient descent
    instead, r(t) = (I - lr K / P)^t r(0). kernel (P, P); target and f0 (P,) or
    (P, C) (f0 defaults to 0; integer labels become one-hot); ``steps``: an int T
    (t = 0..T) or the step values. Returns loss(t) = ||r(t)||_F^2 / P, the mean
    over examples of the squared error summed over outputs, over dim ``step``.
    """
    k = np.asarray(kernel.values if isinstance(kernel, xr.DataArray) else kernel, np.float64)
    p = k.shape[-1]
    y = _target_matrix(target, p)
    r0 = -y if f0 is None else _target_matrix(f0, p) - y
    vals, vecs = _eigh_desc(k)
    power = ((vecs.T @ r0) ** 2).sum(-1)
    t = _steps(steps)
    if discrete:
        decay = (1.0 - lr * vals[None, :] / p) ** t[:, None]
    else:
        decay = np.exp(-lr * t[:, None] * vals[None, :] / p)
    loss = (decay**2 * power).sum(-1) / p
    return xr.DataArray(loss, dims="step", coords={"step": t}, name="kernel_flow_loss",
                        attrs={"lr": lr, "discrete": int(discrete), "normalization":
                               "dr/dt = -(lr/P) K r; loss = ||r||^2 / P"})


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
) -> xr.DataArray:
    """:func:`kernel_flow_loss` of the ensembled eNTK of every param and width.

    The kernel is taken at ``kernel_step`` (nearest logged step; default the last,
    i.e. the after-kernel). Returns (param, width, step) MSE loss curves, to set
    against the observed ones.
    """
    k = _ensembled_kernel(ds, var, ensemble)
    sd = step_dim(k)
    k = k.isel({sd: -1}) if kernel_step is None else k.sel({sd: kernel_step}, method="nearest")
    t = _steps(steps)

    def flow(x: np.ndarray) -> np.ndarray:
        flat = x.reshape(-1, *x.shape[-2:])
        curves = [kernel_flow_loss(m, targets, f0, lr, t, discrete).values for m in flat]
        return np.stack(curves).reshape(*x.shape[:-2], t.size)

    out = xr.apply_ufunc(flow, k, input_core_dims=[list(_KDIMS)], output_core_dims=[["step"]])
    out = out.assign_coords(step=t)
    out.name = "kernel_flow_loss"
    out.attrs.update(lr=lr, discrete=int(discrete))
    return out

"""Spectra, task power and kernel gradient flow against direct computations."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
from scipy.stats import ortho_group

from widthscan.analysis import entk_flow_loss, entk_spectrum, kernel_flow_loss, task_power


def planted_kernel(p: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """K = V diag(lam) V^T with distinct descending lam; returns K, lam, V."""
    rng = np.random.default_rng(seed)
    lam = np.sort(rng.uniform(0.1, 10.0, p))[::-1]
    v = ortho_group.rvs(p, random_state=seed)
    return (v * lam) @ v.T, lam, v


def test_task_power_of_an_eigenvector_is_a_step_at_its_rank():
    p = 12
    k, _, v = planted_kernel(p, 0)
    for rank in (1, 4, 12):
        c = task_power(k, 3.0 * v[:, rank - 1])
        assert c.dims == ("k",)
        np.testing.assert_array_equal(c["k"], np.arange(1, p + 1))
        want = (np.arange(1, p + 1) >= rank).astype(float)
        np.testing.assert_allclose(c, want, atol=1e-12)
    two = task_power(k, np.stack([v[:, 1], v[:, 6]], axis=1))
    np.testing.assert_allclose(two.sel(k=[1, 2, 6, 7, 12]), [0, 0.5, 0.5, 1, 1], atol=1e-12)


def test_task_power_is_monotone_and_batched():
    rng = np.random.default_rng(1)
    kernels = np.stack([planted_kernel(10, s)[0] for s in range(3)])
    y = rng.normal(size=10)
    da = xr.DataArray(kernels, dims=("width", "example", "example2"),
                      coords={"width": [8, 16, 32]})
    c = task_power(da, y)
    assert c.dims == ("width", "k")
    assert np.all(c.diff("k") >= -1e-12)
    np.testing.assert_allclose(c.sel(k=10), 1.0)
    for i in range(3):
        np.testing.assert_allclose(c.isel(width=i), task_power(kernels[i], y), atol=1e-12)


def test_kernel_flow_loss_matches_gradient_descent_and_flow():
    rng = np.random.default_rng(2)
    p, c, lr = 8, 3, 0.5
    k, _, _ = planted_kernel(p, 2)
    y, f0 = rng.normal(size=(p, c)), rng.normal(size=(p, c))

    r, direct = f0 - y, []
    for _ in range(51):
        direct.append((r**2).sum() / p)
        r = r - lr / p * k @ r
    gd = kernel_flow_loss(k, y, f0, lr=lr, steps=50, discrete=True)
    assert gd.dims == ("step",)
    np.testing.assert_allclose(gd, direct, rtol=1e-10)

    substeps = 200
    r, euler = f0 - y, []
    for t in range(51 * substeps):
        if t % substeps == 0:
            euler.append((r**2).sum() / p)
        r = r - lr / p / substeps * k @ r
    flow = kernel_flow_loss(k, y, f0, lr=lr, steps=50)
    np.testing.assert_allclose(flow, euler, rtol=2e-3)
    assert flow[0] == pytest.approx(((f0 - y) ** 2).sum() / p)


def test_kernel_flow_loss_of_an_eigenvector_decays_exponentially():
    p = 10
    k, lam, v = planted_kernel(p, 3)
    steps = np.array([0, 1, 5, 40])
    got = kernel_flow_loss(k, v[:, 3], lr=2.0, steps=steps)
    np.testing.assert_array_equal(got["step"], steps)
    np.testing.assert_allclose(got, np.exp(-2 * 2.0 * steps * lam[3] / p) / p, rtol=1e-10,
                               atol=1e-25)


def entk_ds(p=9, widths=(16, 64), n_seeds=3, n_steps=2):
    rng = np.random.default_rng(4)
    means = np.empty((1, len(widths), 1, n_steps, p, p))
    for i in range(len(widths)):
        for t in range(n_steps):
            means[0, i, 0, t] = planted_kernel(p, 10 * i + t)[0]
    e = rng.normal(size=(p, p))
    offsets = (np.arange(n_seeds) - (n_seeds - 1) / 2)[:, None, None, None] * (e + e.T)
    vals = means + offsets[None, None]
    dims = ("param", "width", "seed", "entk_step", "example", "example2")
    ds = xr.Dataset({"entk": (dims, vals)},
                    coords={"param": ["mup"], "width": list(widths), "seed": np.arange(n_seeds),
                            "entk_step": 10 * np.arange(n_steps)})
    return ds, means[:, :, 0]


def test_entk_spectrum_of_ensembled_kernel():
    ds, means = entk_ds()
    y = np.random.default_rng(5).normal(size=9)
    out = entk_spectrum(ds, targets=y, vectors=True)
    assert out["eigenvalues"].dims == ("param", "width", "entk_step", "eigen")
    assert out["task_power"].dims == ("param", "width", "entk_step", "k")
    for i, t in np.ndindex(2, 2):
        _, lam, _ = planted_kernel(9, 10 * i + t)
        np.testing.assert_allclose(out["eigenvalues"].isel(param=0, width=i, entk_step=t), lam,
                                   rtol=1e-10)
        np.testing.assert_allclose(out["task_power"].isel(param=0, width=i, entk_step=t),
                                   task_power(means[0, i, t], y), atol=1e-10)
        vecs = out["eigenvectors"].isel(param=0, width=i, entk_step=t).values
        np.testing.assert_allclose(means[0, i, t] @ vecs, vecs * lam, atol=1e-9)


def test_entk_spectrum_of_a_diverged_member_is_nan_and_the_rest_intact():
    ds, _ = entk_ds()
    clean = entk_spectrum(ds, targets=np.arange(9.0))
    ds["entk"][0, 0, 1, 1, 2, 3] = np.nan
    out = entk_spectrum(ds, targets=np.arange(9.0))
    for var in ("eigenvalues", "task_power"):
        bad = out[var].isel(param=0, width=0, entk_step=1)
        assert np.isnan(bad).all()
        keep = {"width": 1}
        np.testing.assert_array_equal(out[var].isel(keep), clean[var].isel(keep))
        np.testing.assert_array_equal(out[var].isel(width=0, entk_step=0),
                                      clean[var].isel(width=0, entk_step=0))
    single = task_power(ds["entk"][0, 0, 1, 1].values, np.arange(9.0))
    assert np.isnan(single).all()


def test_entk_flow_loss_uses_the_after_kernel():
    ds, means = entk_ds()
    y = np.random.default_rng(6).normal(size=9)
    out = entk_flow_loss(ds, y, lr=1.0, steps=20)
    assert out.dims == ("param", "width", "step")
    for i in range(2):
        np.testing.assert_allclose(out.isel(param=0, width=i),
                                   kernel_flow_loss(means[0, i, -1], y, lr=1.0, steps=20),
                                   rtol=1e-10)
    first = entk_flow_loss(ds, y, lr=1.0, steps=20, kernel_step=0)
    np.testing.assert_allclose(first.isel(param=0, width=0),
                               kernel_flow_loss(means[0, 0, 0], y, lr=1.0, steps=20), rtol=1e-10)


def test_entk_with_output_dims_is_flattened():
    p, c = 4, 2
    k, lam, _ = planted_kernel(p * c, 7)
    four = k.reshape(p, c, p, c)
    dims = ("width", "seed", "entk_step", "example", "output", "example2", "output2")
    ds = xr.Dataset({"entk": (dims, four[None, None, None])},
                    coords={"width": [8], "seed": [0], "entk_step": [0]})
    out = entk_spectrum(ds)
    np.testing.assert_allclose(out["eigenvalues"].squeeze(), lam, rtol=1e-10)

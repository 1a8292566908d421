"""Spectra, task power and kernel gradient flow against direct computations."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
from scipy.stats import ortho_group

from widthscan.analysis import (
    entk_flow_loss,
    entk_spectrum,
    kernel_flow_loss,
    learning_time,
    task_power,
)


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


@pytest.mark.parametrize("loss", ["mse", "half_sse"])
def test_kernel_flow_loss_matches_gradient_descent_and_flow(loss):
    """Direct recursions on the loss itself: f <- f - lr K dL/df with dL/df = 2 r / (P C)
    for the mean squared error over examples and outputs, r / P for ||r||^2 / (2P)."""
    rng = np.random.default_rng(2)
    p, c, lr = 8, 3, 0.5
    k, _, _ = planted_kernel(p, 2)
    y, f0 = rng.normal(size=(p, c)), rng.normal(size=(p, c))

    def grad(r):
        return 2 * r / (p * c) if loss == "mse" else r / p

    r, direct = f0 - y, []
    for _ in range(51):
        direct.append((r**2).mean())
        r = r - lr * k @ grad(r)
    gd = kernel_flow_loss(k, y, f0, lr=lr, steps=50, discrete=True, loss=loss)
    assert gd.dims == ("step",)
    np.testing.assert_allclose(gd, direct, rtol=1e-10)

    substeps = 200
    r, euler = f0 - y, []
    for t in range(51 * substeps):
        if t % substeps == 0:
            euler.append((r**2).mean())
        r = r - lr / substeps * k @ grad(r)
    flow = kernel_flow_loss(k, y, f0, lr=lr, steps=50, loss=loss)
    np.testing.assert_allclose(flow, euler, rtol=2e-3)
    assert flow[0] == pytest.approx(((f0 - y) ** 2).mean())


def test_kernel_flow_loss_of_an_eigenvector_decays_exponentially():
    p = 10
    k, lam, v = planted_kernel(p, 3)
    steps = np.array([0, 1, 5, 40])
    got = kernel_flow_loss(k, v[:, 3], lr=2.0, steps=steps)
    np.testing.assert_array_equal(got["step"], steps)
    np.testing.assert_allclose(got, np.exp(-2 * (2 * 2.0 / p) * steps * lam[3]) / p,
                               rtol=1e-10, atol=1e-25)


def test_held_out_loss_follows_the_cross_block():
    """Train on A, report B: the direct recursion moves every example by
    -lr K[:, A] 2 r_A / (P_A C), on the fit examples only through the kernel."""
    rng = np.random.default_rng(12)
    p, c, lr = 10, 2, 0.3
    k, _, _ = planted_kernel(p, 12)
    y, f0 = rng.normal(size=(p, c)), rng.normal(size=(p, c))
    fit = np.arange(6)
    f, direct = f0.copy(), []
    for _ in range(41):
        direct.append(((f[6:] - y[6:]) ** 2).mean())
        f = f - lr * k[:, fit] @ (2 * (f[fit] - y[fit]) / (6 * c))
    got = kernel_flow_loss(k, y, f0, lr=lr, steps=40, discrete=True, fit=fit)
    np.testing.assert_allclose(got, direct, rtol=1e-10)
    assert got.attrs["held_out"] == 1
    mask = np.zeros(p, bool)
    mask[fit] = True
    flow = kernel_flow_loss(k, y, f0, lr=lr, steps=40, fit=mask)
    np.testing.assert_allclose(flow, direct, rtol=0.05)


def test_discrete_momentum_is_heavy_ball_sgd():
    """torch.optim.SGD's momentum on the function-space loss of a fixed kernel: v <- beta v
    + g, f <- f - lr K v (g = dL/df); the flow, with lr / (1 - beta), approximates it
    where a lambda << (1 - beta)^2."""
    rng = np.random.default_rng(13)
    p, c, lr, beta = 8, 1, 0.2, 0.9
    k, _, _ = planted_kernel(p, 13)
    y = rng.normal(size=(p, c))
    f, v, direct = np.zeros((p, c)), np.zeros((p, c)), []
    for _ in range(61):
        direct.append(((f - y) ** 2).mean())
        v = beta * v + 2 * (f - y) / (p * c)
        f = f - lr * k @ v
    got = kernel_flow_loss(k, y, lr=lr, steps=60, discrete=True, momentum=beta)
    np.testing.assert_allclose(got, direct, rtol=1e-10)
    slow = dict(lr=0.02, momentum=0.5, steps=np.array([50, 200]))
    np.testing.assert_allclose(kernel_flow_loss(k, y, **slow),
                               kernel_flow_loss(k, y, discrete=True, **slow), rtol=0.05)


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
    f0 = xr.DataArray(np.random.default_rng(7).normal(size=(2, 9)), dims=("width", "example"),
                      coords={"width": [16, 64]})
    held = entk_flow_loss(ds, y, lr=1.0, steps=20, f0=f0, fit=np.arange(5))
    for i in range(2):
        np.testing.assert_allclose(held.isel(param=0, width=i), kernel_flow_loss(
            means[0, i, -1], y, f0[i].values, lr=1.0, steps=20, fit=np.arange(5)), rtol=1e-10)
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


def test_kernel_flow_tracks_a_lazy_ntp_network_over_the_whole_run():
    """Full-batch SGD on widthscan's MSE of a wide NTP net (width 4096, lazy) against the
    flow with its initial lr-weighted eNTK: within 5% at every step. The textbook rate
    lr / P (half the right one for a mean over examples of (f - y)^2) is far off."""
    import torch

    import widthscan as ws
    import widthscan.probes as probes

    p_ex, d, lr, steps = 32, 4, 0.01, 300
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(p_ex, d, generator=gen, dtype=torch.float64)
    x = x / x.norm(dim=1, keepdim=True) * d**0.5
    y = x[:, :1] * x[:, 1:2] + 0.5 * x[:, 2:3]
    net = ws.parametrize(lambda w: ws.models.mlp(w, depth=2, d_in=d, d_out=1), 4096, 64,
                         "ntp", "sgd", seed=0, dtype=torch.float64)
    kernel = probes.entk(net, x)["entk"].values
    with torch.no_grad():
        f0 = net.module(x).numpy()
    opt = torch.optim.SGD(net.param_groups(lr), lr=lr)
    observed = []
    for t in range(steps + 1):
        opt.zero_grad()
        loss = ((net.module(x) - y) ** 2).mean()
        observed.append(loss.item())
        if t < steps:
            loss.backward()
            opt.step()
    observed = np.array(observed)
    assert observed[-1] < 0.05 * observed[0]
    predicted = kernel_flow_loss(kernel, y.numpy(), f0, lr=lr, steps=steps)
    assert np.abs(predicted.values / observed - 1).max() < 0.05
    textbook = kernel_flow_loss(kernel, y.numpy(), f0, lr=lr, steps=steps, loss="half_sse")
    assert np.abs(textbook.values / observed - 1).max() > 0.5


def test_learning_time_sums_the_schedule():
    """lr logged at steps 0, 2, 5 (1, 0.5, 0.1), held until the next log: tau(t) = sum_{s<t}."""
    tau = learning_time([0, 2, 5], [1.0, 0.5, 0.1], [0, 1, 2, 3, 5, 7])
    np.testing.assert_allclose(tau, [0.0, 1.0, 2.0, 2.5, 3.5, 3.7], rtol=1e-12)
    k, _, _ = planted_kernel(6, 14)
    y = np.random.default_rng(14).normal(size=6)
    steps = np.arange(11)
    const = kernel_flow_loss(k, y, lr=0.3, steps=steps)
    np.testing.assert_allclose(kernel_flow_loss(k, y, lr=1.0, steps=learning_time(
        [0], [0.3], steps)), const, rtol=1e-12)

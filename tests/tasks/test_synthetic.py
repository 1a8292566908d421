"""Synthetic streams against independent references (scipy, numpy Hermite polynomials)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from numpy.polynomial import hermite_e
from scipy import integrate, special

import widthscan.tasks as ws_tasks


def _reference_second_moment(k: int, alpha: float) -> float:
    """E[C_k^alpha(z)^2] under the density of beta.x/sqrt(D) on the sphere, by quadrature."""

    def weight(z: float) -> float:
        return (1.0 - z * z) ** (alpha - 0.5)

    num = integrate.quad(lambda z: special.eval_gegenbauer(k, alpha, z) ** 2 * weight(z), -1, 1,
                         epsabs=0, epsrel=1e-13, limit=200)[0]
    den = integrate.quad(weight, -1, 1, epsabs=0, epsrel=1e-13, limit=200)[0]
    return num / den


@pytest.mark.parametrize(("dim", "degree"), [(10, 3), (3, 2), (5, 1), (25, 5)])
def test_gegenbauer_matches_scipy(dim: int, degree: int) -> None:
    task = ws_tasks.make("gegenbauer", seed=3, dim=dim, degree=degree)
    x, y = task.batch(7, 2000, dtype=torch.float64)
    assert x.shape == (2000, dim) and y.shape == (2000, 1) and y.dtype == torch.float64
    xn = x.numpy()
    np.testing.assert_allclose(np.linalg.norm(xn, axis=1), math.sqrt(dim), rtol=1e-12)
    beta = task.beta.numpy()
    assert abs(np.linalg.norm(beta) - 1) < 1e-12
    alpha = (dim - 2) / 2
    z = xn @ beta / math.sqrt(dim)
    expected = special.eval_gegenbauer(degree, alpha, z) / math.sqrt(
        _reference_second_moment(degree, alpha)
    )
    np.testing.assert_allclose(y.numpy()[:, 0], expected, rtol=0, atol=1e-10)


def _assert_unit_variance(y: np.ndarray) -> None:
    """Sample variance is 1 within 5 standard errors (se of the mean of (y - mean)^2)."""
    centred_sq = (y - y.mean()) ** 2
    se = centred_sq.std() / math.sqrt(len(y))
    assert abs(centred_sq.mean() - 1.0) < 5 * se, (centred_sq.mean(), se)
    assert abs(y.mean()) < 5 / math.sqrt(len(y))


@pytest.mark.parametrize("name", ["gegenbauer", "polynomial"])
def test_unit_variance(name: str) -> None:
    y = ws_tasks.make(name, seed=1).batch(0, 200_000, dtype=torch.float64)[1].numpy()[:, 0]
    _assert_unit_variance(y)


@pytest.mark.parametrize("degree", [2, 3])
def test_polynomial_matches_hermite_reference(degree: int) -> None:
    task = ws_tasks.make("polynomial", seed=5, dim=6, degree=degree)
    x, y = task.batch(2, 500, dtype=torch.float64)
    w, a = task.weights.numpy(), task.coef.numpy()
    u = x.numpy() @ w.T
    basis = np.zeros(degree + 1)
    basis[degree] = 1.0
    expected = hermite_e.hermeval(u, basis) @ a
    np.testing.assert_allclose(y.numpy()[:, 0], expected, rtol=1e-10, atol=1e-10)
    if degree == 2:
        amat = (w.T * a) @ w
        quad = np.einsum("ni,ij,nj->n", x.numpy(), amat, x.numpy()) - np.trace(amat)
        np.testing.assert_allclose(y.numpy()[:, 0], quad, atol=1e-10)
    big = ws_tasks.make("polynomial", seed=5, dim=6, degree=degree)
    _assert_unit_variance(big.batch(0, 200_000, dtype=torch.float64)[1].numpy()[:, 0])


def test_teacher_classification_and_regression() -> None:
    task = ws_tasks.make("teacher", seed=0, dim=8, hidden=32, depth=2, n_classes=5,
                         activation="tanh")
    assert task.spec.loss == "ce" and task.spec.output_dim == 5
    x, y = task.batch(0, 4000)
    assert y.dtype == torch.int64 and y.shape == (4000,)
    counts = torch.bincount(y, minlength=5)
    assert (counts > 100).all(), counts
    h = x.double().numpy()
    for layer in task.layers[:-1]:
        h = np.tanh(h @ layer.double().numpy())
    out = h @ task.layers[-1].double().numpy()
    reference = (out - out.mean(0)).argmax(1)  # centring by this sample's mean, not the task's
    assert (reference == y.numpy()).mean() > 0.95
    reg = ws_tasks.make("teacher", seed=0, dim=8, n_classes=0)
    assert reg.spec.loss == "mse" and reg.spec.output_dim == 1
    yr = reg.batch(0, 100_000, dtype=torch.float64)[1]
    assert yr.shape == (100_000, 1)
    _assert_unit_variance(yr.numpy()[:, 0])


def test_dtype_and_device_arguments() -> None:
    task = ws_tasks.make("gegenbauer", seed=0)
    x32, y32 = task.batch(4, 16)
    x64, y64 = task.batch(4, 16, device="cpu", dtype=torch.float64)
    assert x32.dtype == torch.float32 and x64.dtype == torch.float64
    assert torch.equal(x64.float(), x32) and torch.equal(y64.float(), y32)

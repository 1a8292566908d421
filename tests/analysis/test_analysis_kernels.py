"""CKA and relative Frobenius distance against definitions and invariances."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import ortho_group

from widthscan.analysis import cka, relative_frobenius


def reference_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Textbook linear CKA: HSIC with an explicit centering matrix, float64."""
    p = x.shape[0]
    h = np.eye(p) - np.ones((p, p)) / p
    k, l_ = h @ x @ x.T @ h, h @ y @ y.T @ h
    return float(np.sum(k * l_) / np.sqrt(np.sum(k * k) * np.sum(l_ * l_)))


def reference_unbiased_hsic(k: np.ndarray, l_: np.ndarray) -> float:
    """Song et al. (2012), eq. 5: the unbiased HSIC estimator."""
    n = k.shape[0]
    kt, lt = k - np.diag(np.diag(k)), l_ - np.diag(np.diag(l_))
    one = np.ones(n)
    return float((np.trace(kt @ lt) + (one @ kt @ one) * (one @ lt @ one) / ((n - 1) * (n - 2))
                  - 2 / (n - 2) * one @ kt @ lt @ one) / (n * (n - 3)))


def features(rng, p=60, d1=7, d2=11):
    x = rng.normal(size=(p, d1))
    y = x @ rng.normal(size=(d1, d2)) + 0.7 * rng.normal(size=(p, d2))
    return x, y


def test_cka_self_is_one():
    rng = np.random.default_rng(0)
    x, _ = features(rng)
    assert cka(x, x) == pytest.approx(1.0, abs=1e-12)
    assert cka(x @ x.T, x @ x.T, kind="gram") == pytest.approx(1.0, abs=1e-12)
    assert cka(x, x, debiased=True) == pytest.approx(1.0, abs=1e-12)


def test_cka_matches_textbook_in_both_forms():
    rng = np.random.default_rng(1)
    for d1, d2 in [(3, 5), (80, 90), (5, 120)]:
        x, y = features(rng, p=40, d1=d1, d2=d2)
        want = reference_cka(x, y)
        assert cka(x, y) == pytest.approx(want, abs=1e-12)
        assert cka(x @ x.T, y @ y.T, kind="gram") == pytest.approx(want, abs=1e-12)


def test_cka_of_orthogonal_features_is_zero():
    rng = np.random.default_rng(2)
    p, d = 50, 6
    z = rng.normal(size=(p, 2 * d))
    q, _ = np.linalg.qr(z - z.mean(0))
    x = q[:, :d] @ rng.normal(size=(d, d)) + 5.0
    y = q[:, d:] @ rng.normal(size=(d, 9)) - 2.0
    assert cka(x, y) == pytest.approx(0.0, abs=1e-12)
    assert cka(x @ x.T, y @ y.T, kind="gram") == pytest.approx(0.0, abs=1e-12)
    assert reference_cka(x, x) == pytest.approx(1.0)


def test_cka_invariances():
    rng = np.random.default_rng(3)
    x, y = features(rng)
    base = cka(x, y)
    rot = ortho_group.rvs(y.shape[1], random_state=4)
    assert cka(x, 3.7 * y @ rot) == pytest.approx(base, abs=1e-12)
    assert cka(0.01 * x, y + 100.0) == pytest.approx(base, abs=1e-10)
    assert cka(x, y, debiased=True) == pytest.approx(
        cka(2.0 * x - 50.0, y @ rot, debiased=True), abs=1e-10)


def test_cka_batched():
    rng = np.random.default_rng(5)
    pairs = [features(rng, p=30) for _ in range(4)]
    xs = np.stack([x for x, _ in pairs])
    ys = np.stack([y for _, y in pairs])
    got = cka(xs, ys)
    assert got.shape == (4,)
    np.testing.assert_allclose(got, [reference_cka(x, y) for x, y in pairs], atol=1e-12)


def test_debiased_cka_matches_unbiased_hsic_and_removes_bias():
    rng = np.random.default_rng(6)
    x, y = rng.normal(size=(20, 200)), rng.normal(size=(20, 200))
    k, l_ = x @ x.T, y @ y.T
    want = reference_unbiased_hsic(k, l_) / np.sqrt(
        reference_unbiased_hsic(k, k) * reference_unbiased_hsic(l_, l_))
    assert cka(x, y, debiased=True) == pytest.approx(want, abs=1e-10)
    assert cka(k, l_, kind="gram", debiased=True) == pytest.approx(want, abs=1e-10)

    pairs = [(rng.normal(size=(20, 200)), rng.normal(size=(20, 200))) for _ in range(200)]
    assert np.mean([cka(a, b) for a, b in pairs]) > 0.3
    assert abs(np.mean([cka(a, b, debiased=True) for a, b in pairs])) < 0.02


def test_float32_features_with_large_offset_give_float64_answer():
    rng = np.random.default_rng(7)
    z, y = features(rng, p=500, d1=64, d2=32)
    want = cka(z, y)
    z32 = (z + 1000.0).astype(np.float32)
    y32 = (y + 1000.0).astype(np.float32)
    assert cka(z32, y32) == pytest.approx(want, abs=1e-3)
    assert cka(z32, y32, debiased=True) == pytest.approx(cka(z, y, debiased=True), abs=1e-3)

    k32, l32 = z32 @ z32.T, y32 @ y32.T
    uncentered = np.sum(k32 * l32) / np.sqrt(np.sum(k32 * k32)) / np.sqrt(np.sum(l32 * l32))
    assert abs(uncentered - want) > 0.1

    def center32(k):
        k = k - k.mean(1, keepdims=True, dtype=np.float32)
        return k - k.mean(0, keepdims=True, dtype=np.float32)

    kc, lc = center32(k32), center32(l32)
    naive32 = np.sum(kc * lc) / np.sqrt(np.sum(kc * kc)) / np.sqrt(np.sum(lc * lc))
    assert abs(naive32 - want) > 0.05


def test_relative_frobenius():
    rng = np.random.default_rng(8)
    k2 = rng.normal(size=(10, 10))
    k1 = k2 + 0.1 * rng.normal(size=(10, 10))
    assert relative_frobenius(k1, k2) == pytest.approx(
        np.linalg.norm(k1 - k2) / np.linalg.norm(k2), rel=1e-12)
    assert relative_frobenius(3 * k2, k2) == pytest.approx(2.0)
    assert relative_frobenius(k2, k2) == 0.0
    batch = relative_frobenius(np.stack([k1, k2]), np.stack([k2, k2]))
    assert batch.shape == (2,)

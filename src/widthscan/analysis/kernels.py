"""Kernel similarities: centered kernel alignment (CKA) and relative Frobenius distance.

Everything is cast to float64 before centering. Centering features (or Gram
matrices) in float64 matters: features with a large common offset (post-ReLU
activations) make an uncentered or float32 HSIC meaningless. A Gram matrix
already formed in float32 from offset features has lost that information; pass
features, or Grams formed in float64, when you can.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import xarray as xr

ArrayLike = np.ndarray | xr.DataArray


def _f64(x: ArrayLike) -> np.ndarray:
    return np.asarray(x.values if isinstance(x, xr.DataArray) else x, dtype=np.float64)


def _scalar(x: np.ndarray) -> float | np.ndarray:
    return float(x) if np.ndim(x) == 0 else x


def center_gram(k: np.ndarray) -> np.ndarray:
    """Double-centered Gram matrices H K H, shape (..., P, P), float64."""
    k = _f64(k)
    k = k - k.mean(-1, keepdims=True)
    return k - k.mean(-2, keepdims=True)


def u_center_gram(k: np.ndarray) -> np.ndarray:
    """U-centered Gram matrices (Szekely and Rizzo 2014), shape (..., P, P), P >= 4.

    <U(K), U(L)> / (P (P - 3)) is the unbiased HSIC estimator of Song et al. (2012).
    """
    k = center_gram(k)
    p = k.shape[-1]
    if p < 4:
        raise ValueError(f"debiased CKA needs at least 4 examples, got {p}")
    diag = np.arange(p)
    k[..., diag, diag] = 0.0
    means = k.sum(-1) / (p - 2)
    means = means - means.sum(-1, keepdims=True) / (2 * (p - 1))
    k = k - means[..., :, None] - means[..., None, :]
    k[..., diag, diag] = 0.0
    return k


def _cka_from_grams(kc: np.ndarray, lc: np.ndarray) -> np.ndarray:
    hsic = np.einsum("...ij,...ij->...", kc, lc)
    nk = np.sqrt(np.einsum("...ij,...ij->...", kc, kc))
    nl = np.sqrt(np.einsum("...ij,...ij->...", lc, lc))
    with np.errstate(invalid="ignore", divide="ignore"):
        return hsic / (nk * nl)


def _cka_features(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    x = x - x.mean(-2, keepdims=True)
    y = y - y.mean(-2, keepdims=True)
    xy = np.einsum("...pi,...pj->...ij", x, y)
    xx = np.einsum("...pi,...pj->...ij", x, x)
    yy = np.einsum("...pi,...pj->...ij", y, y)
    hsic = np.einsum("...ij,...ij->...", xy, xy)
    nx = np.sqrt(np.einsum("...ij,...ij->...", xx, xx))
    ny = np.sqrt(np.einsum("...ij,...ij->...", yy, yy))
    with np.errstate(invalid="ignore", divide="ignore"):
        return hsic / (nx * ny)


def cka(
    x: ArrayLike,
    y: ArrayLike,
    debiased: bool = False,
    kind: Literal["features", "gram"] = "features",
) -> float | np.ndarray:
    """Linear centered kernel alignment (Kornblith et al. 2019), in [0, 1].

    kind="features": x (..., P, D1), y (..., P, D2), rows are the P examples; the
    feature form ||Xc^T Yc||^2 / (||Xc^T Xc|| ||Yc^T Yc||) is used when cheaper than
    the Gram form. kind="gram": x, y are Gram matrices (..., P, P). Leading dims
    are batch dims. ``debiased`` uses the unbiased HSIC estimator (U-centering,
    needs P >= 4; can be slightly negative). Returns a float for unbatched input.
    """
    x, y = _f64(x), _f64(y)
    if kind == "features":
        if x.shape[-2] != y.shape[-2]:
            raise ValueError(f"different numbers of examples: {x.shape[-2]} vs {y.shape[-2]}")
        p, d1, d2 = x.shape[-2], x.shape[-1], y.shape[-1]
        if not debiased and d1 * d2 + d1 * d1 + d2 * d2 <= p * (d1 + d2):
            return _scalar(_cka_features(x, y))
        x = x - x.mean(-2, keepdims=True)
        y = y - y.mean(-2, keepdims=True)
        x = np.einsum("...pi,...qi->...pq", x, x)
        y = np.einsum("...pi,...qi->...pq", y, y)
    elif kind != "gram":
        raise ValueError(f"kind={kind!r}; allowed: 'features', 'gram'")
    if x.shape[-2:] != y.shape[-2:] or x.shape[-1] != x.shape[-2]:
        raise ValueError(f"Gram matrices must be (..., P, P) of equal P: {x.shape}, {y.shape}")
    center = u_center_gram if debiased else center_gram
    return _scalar(_cka_from_grams(center(x), center(y)))


def relative_frobenius(k1: ArrayLike, k2: ArrayLike) -> float | np.ndarray:
    """||k1 - k2||_F / ||k2||_F over the last two axes (k2 is the reference), float64."""
    a, b = _f64(k1), _f64(k2)
    num = np.sqrt(((a - b) ** 2).sum((-2, -1)))
    den = np.sqrt((b**2).sum((-2, -1)))
    with np.errstate(invalid="ignore", divide="ignore"):
        return _scalar(num / den)

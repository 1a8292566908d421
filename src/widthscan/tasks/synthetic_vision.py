"""`synthetic_vision`: an unbounded stream of images in the spirit of CIFAR-5m.

A generator is fitted once on real images (train split): PCA to `n_components` dimensions,
then one Gaussian per class in PCA space. Each step samples fresh images (class ~ class
frequencies, z ~ N(mean_c, cov_c), image = pixel mean + z @ components, not clipped) and
labels them with a fixed teacher fitted on the same real data: the linear discriminant
(Gaussian classes with their pooled covariance; argmax_c z.W_c + b_c). Since z is the PCA
projection of the image, the label is a deterministic function of the image, and it need not
be the class the image was sampled from (`info["teacher_agreement"]` gives how often it is).
The fit is cached on disk (see `cache.py`).

Latents (float32), labels and every random draw are computed on the CPU, identically on any
machine; the decode to pixels is one matrix product in the requested dtype on the requested
device. On the CPU it runs on one thread, so its bits do not depend on the thread count (x
may still differ in the last bit between CPU models or devices). torch's thread count is
process-wide: training in another Python thread while `batch` runs would briefly run on one
thread too (slower, and its last bits could change), so draw batches from the training
thread, as `widthscan run` does.

Sources: "fashion_mnist" (idx files), "cifar10" (python pickle folder, `root` required),
"digits" (scikit-learn's bundled 8x8 digits), "auto" (Fashion-MNIST if found, else digits).
`task.info["source"]` and `task.spec.source` say which was used.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from .base import Latent, Task
from .cache import cache_dir, cache_key, load_npz, save_npz
from .errors import (
    DatasetNotFoundError,
    TaskConfigError,
    TaskDataError,
    check_bool,
    check_choice,
    check_int,
)
from .images import FASHION_MNIST_ROOT
from .readers import (
    CIFAR_TEST,
    CIFAR_TRAIN,
    cifar_dir,
    file_stamp,
    idx_paths,
    load_cifar10,
    load_idx_dataset,
)
from .registry import register
from .seeding import generator
from .threads import single_threaded
from .transfer import to_device

FIT_VERSION = 3
F64 = torch.float64


class Source(NamedTuple):
    """A resolved fit source: its description, a cache stamp, and a loader of its train split.

    `load()` returns (images (N, C, H, W), labels int64 (N,), scale): pixel value = images / scale.
    """

    used: str
    stamp: Any
    load: Callable[[], tuple[np.ndarray, np.ndarray, float]]


def _digits() -> tuple[np.ndarray, np.ndarray, float]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    return digits.images[:, None], digits.target.astype(np.int64), 16.0


def resolve_source(source: str, root: str | os.PathLike | None) -> Source:
    """Locate `source` ("auto", "fashion_mnist", "cifar10", "digits") without loading it."""
    if source == "auto":
        try:
            return resolve_source("fashion_mnist", root)
        except DatasetNotFoundError:
            return resolve_source("digits", None)
    if source == "digits":
        try:
            import sklearn
        except ImportError as err:
            raise DatasetNotFoundError(
                "synthetic_vision source 'digits' (the fallback) needs scikit-learn; install it or"
                " give source='fashion_mnist' or 'cifar10' with root"
            ) from err
        return Source("digits (scikit-learn load_digits)", sklearn.__version__, _digits)
    if source == "fashion_mnist":
        folder = Path(root or os.environ.get("WIDTHSCAN_FASHION_MNIST", FASHION_MNIST_ROOT))
        files = list(idx_paths(folder).values())

        def load() -> tuple[np.ndarray, np.ndarray, float]:
            data = load_idx_dataset(folder)
            return data.train_x, data.train_y, 255.0

    else:
        if root is None:
            raise TaskConfigError("root is required with source='cifar10' (cifar-10-batches-py/)")
        folder = cifar_dir(root)
        files = [folder / f for f in (*CIFAR_TRAIN, CIFAR_TEST)]

        def load() -> tuple[np.ndarray, np.ndarray, float]:
            data = load_cifar10(folder)
            return data.train_x, data.train_y, 255.0

    return Source(f"{source}:{folder}", file_stamp(files), load)


def _chunks(n: int, size: int = 4096) -> list[slice]:
    return [slice(i, min(i + size, n)) for i in range(0, n, size)]


def _float32_grid(t: torch.Tensor) -> np.ndarray:
    """float64 values rounded to float32 precision: absorbs last-bit differences between
    machines, so a fit made elsewhere gives the same samples."""
    return t.to(torch.float32).to(F64).numpy()


def _principal_axes(
    rows: Callable[[slice], torch.Tensor], n: int, d: int, mean: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigenvalues (m,) and unit eigenvectors (m, d) of the covariance of n integer-valued rows.

    Uses the d x d covariance when n >= d, else the n x n Gram matrix of the samples. The raw
    products X'X or XX' are exact in float64 (integer values), so they do not depend on the
    summation order; centring is done elementwise afterwards.
    """
    if n >= d:
        gram = torch.zeros(d, d, dtype=F64)
        for sl in _chunks(n):
            r = rows(sl)
            gram += r.T @ r
        cov = (gram - n * torch.outer(mean, mean)) / (n - 1)
        evals, evecs = torch.linalg.eigh(cov)
        return evals, evecs.T
    x = rows(slice(0, n))
    gram = x @ x.T
    row_mean = gram.mean(1)
    centred = gram - row_mean[:, None] - row_mean[None, :] + row_mean.mean()
    evals, evecs = torch.linalg.eigh(centred / (n - 1))
    axes = evecs.T @ (x - mean)
    return evals, axes / axes.norm(dim=1, keepdim=True).clamp_min(1e-300)


def fit_generator(
    images: np.ndarray, y: np.ndarray, n_components: int, scale: float = 1.0
) -> dict[str, np.ndarray]:
    """Fit PCA + class-conditional Gaussians to images (N, C, H, W) / scale and labels y (N,).

    `images` hold integer values (uint8 pixels, or digits 0..16), so the pixel sums and the
    Gram matrix are exact in float64 in any summation order; the rest runs on one thread and
    the fitted values are rounded to float32 precision, making the fit reproducible.
    """
    return single_threaded(_fit, images, y, n_components, scale)


def _fit(
    images: np.ndarray, y: np.ndarray, n_components: int, scale: float
) -> dict[str, np.ndarray]:
    n, shape = len(images), images.shape[1:]
    flat = images.reshape(n, -1)
    classes = np.unique(y)
    if len(classes) < 2:
        raise TaskDataError(f"synthetic_vision needs >= 2 classes in its source, got {classes}")
    counts = np.array([(y == c).sum() for c in classes])
    k = min(n_components, flat.shape[1], int(counts.min()) - 1)
    if k < 1:
        raise TaskDataError("synthetic_vision source has too few examples per class to fit")

    def rows(sl: slice) -> torch.Tensor:
        return torch.from_numpy(np.asarray(flat[sl], dtype=np.float64))

    d = flat.shape[1]
    total = torch.zeros(d, dtype=F64)
    square = torch.zeros(d, dtype=F64)
    for sl in _chunks(n):
        r = rows(sl)
        total += r.sum(0)
        square += r.square().sum(0)
    mean = total / n
    evals, comps = _principal_axes(rows, n, d, mean)
    top = torch.argsort(evals, descending=True)[:k]
    comps = comps[top]
    evals = evals / scale**2
    mean = mean / scale
    comps = comps * torch.sign(comps[torch.arange(k), comps.abs().argmax(1)])[:, None]
    comps = torch.from_numpy(_float32_grid(comps))
    z = torch.cat([(rows(sl) / scale - mean) @ comps.T for sl in _chunks(n)])
    yt = torch.from_numpy(y)
    means, chols = [], []
    pooled = torch.zeros(k, k, dtype=F64)
    for c, count in zip(classes, counts):
        zc = z[yt == int(c)]
        cov_c = torch.cov(zc.T).reshape(k, k)
        pooled += (int(count) - 1) * cov_c
        cov_c = cov_c + (1e-6 * cov_c.diagonal().mean() + 1e-12) * torch.eye(k, dtype=F64)
        means.append(zc.mean(0))
        chols.append(torch.from_numpy(_float32_grid(torch.linalg.cholesky(cov_c))))
    chol = torch.stack(chols)
    class_mean = torch.from_numpy(_float32_grid(torch.stack(means)))
    pooled = pooled / (n - len(classes))
    pooled = pooled + (1e-6 * pooled.diagonal().mean() + 1e-12) * torch.eye(k, dtype=F64)
    weight = torch.from_numpy(_float32_grid(torch.linalg.solve(pooled, class_mean.T)))
    log_prior = torch.from_numpy(np.log(counts / counts.sum()))
    bias = torch.from_numpy(
        _float32_grid(log_prior - 0.5 * (class_mean * weight.T).sum(1))
    )
    sq = (square / (n * scale**2)).reshape(shape[0], -1).mean(1)
    ch_mean = mean.reshape(shape[0], -1).mean(1)
    ch_std = ((sq - ch_mean**2) * n / (n - 1)).clamp_min(1e-24).sqrt()
    return {
        "image_shape": np.array(shape, dtype=np.int64),
        "mean": mean.numpy(),
        "components": comps.numpy(),
        "explained": (evals[top].clamp_min(0).sum() / evals.clamp_min(0).sum()).reshape(1).numpy(),
        "class_mean": class_mean.numpy(),
        "class_chol": chol.numpy(),
        "teacher_weight": weight.numpy(),
        "teacher_bias": bias.numpy(),
        "log_prior": log_prior.numpy(),
        "pixel_mean": ch_mean.numpy(),
        "pixel_std": ch_std.numpy(),
    }


@register
class SyntheticVision(Task):
    """Fresh generated images every step, labelled by a fixed teacher (see module docstring).

    Options: source ("auto"), root, n_components (64), flatten (False), cache (True).
    x: (batch, C, H, W) normalized per channel with the real data's mean/std (flat with
    flatten=True); y: int64 (batch,) in 0..9. Probe sets are draws from a separate stream.
    """

    name = "synthetic_vision"

    def __init__(
        self,
        seed: int = 0,
        *,
        source: str = "auto",
        root: str | os.PathLike | None = None,
        n_components: int = 64,
        flatten: bool = False,
        cache: bool = True,
        **common: Any,
    ) -> None:
        super().__init__(seed, **common)
        check_choice("source", source, ("auto", "fashion_mnist", "cifar10", "digits"))
        n_components = check_int("n_components", n_components, 1, 4096)
        self.flatten = check_bool("flatten", flatten)
        cache = check_bool("cache", cache)
        used, fitted, cache_path = self._fitted(source, root, n_components, cache)
        self.fit = {k: torch.from_numpy(v) for k, v in fitted.items()}
        self.image_shape = tuple(int(s) for s in fitted["image_shape"])
        self._prior = self.fit["log_prior"].exp()
        self._mean = self.fit["class_mean"].to(torch.float32)
        self._chol_t = self.fit["class_chol"].to(torch.float32).transpose(1, 2).contiguous()
        self._device_fit: dict[tuple[torch.device, torch.dtype], tuple[torch.Tensor, ...]] = {}
        z, cls = self.sample(generator(self.seed, "agreement"), 4096)
        self.info.update(source=used, cache=cache_path, n_components=len(fitted["components"]),
                         explained_variance=float(fitted["explained"][0]),
                         teacher_agreement=float((self.labels(z) == cls).double().mean()))
        n_classes = len(fitted["log_prior"])
        shape = (math.prod(self.image_shape),) if self.flatten else self.image_shape
        self._finish(input_shape=shape, n_classes=n_classes, source=used)

    @staticmethod
    def _fitted(
        source: str, root: Any, n_components: int, use_cache: bool
    ) -> tuple[str, dict[str, np.ndarray], str | None]:
        src = resolve_source(source, root)
        key = cache_key(v=FIT_VERSION, source=src.used, stamp=src.stamp, n_components=n_components)
        path = cache_dir() / f"synthetic_vision-{key}.npz"
        if use_cache:
            hit = load_npz(path)
            if hit is not None:
                return src.used, hit, str(path)
        images, labels, scale = src.load()
        fitted = fit_generator(images, labels, n_components, scale)
        saved = use_cache and save_npz(path, fitted)
        return src.used, fitted, str(path) if saved else None

    def labels(self, z: torch.Tensor) -> torch.Tensor:
        """Teacher labels int64 (n,) for PCA coordinates z (n, k) float64 (linear discriminant)."""
        scores = torch.addmm(self.fit["teacher_bias"], z.to(F64), self.fit["teacher_weight"])
        return scores.argmax(1)

    def project(self, images: torch.Tensor) -> torch.Tensor:
        """PCA coordinates (n, k) float64 of raw (unnormalized) images (n, C, H, W)."""
        flat = images.reshape(len(images), -1).to(F64).cpu()
        return (flat - self.fit["mean"]) @ self.fit["components"].T

    def raw_images(self, x: torch.Tensor) -> torch.Tensor:
        """Undo the per-channel normalization of inputs x from `batch` (any layout)."""
        c = self.image_shape[0]
        img = x.reshape(len(x), c, -1).to(F64).cpu()
        std, mean = self.fit["pixel_std"][None, :, None], self.fit["pixel_mean"][None, :, None]
        return (img * std + mean).reshape(len(x), *self.image_shape)

    def sample(self, gen: torch.Generator, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(PCA coordinates z (n, k) float32, the class each was sampled from (n,)).

        Classes c ~ prior and eps ~ N(0, I) are drawn first; z = mean_c + eps @ chol_c' for all
        classes in one batched product (examples grouped by class, zero-padded to the largest
        group), on one thread, so the bits do not depend on the thread count.
        """
        mean, chol_t = self._mean, self._chol_t
        cls = torch.multinomial(self._prior, n, replacement=True, generator=gen)
        eps = torch.randn(n, mean.shape[1], generator=gen)
        # rank: how many examples of the same class come before this one
        rank = F.one_hot(cls, len(mean)).cumsum(0).gather(1, cls.unsqueeze(1)).squeeze(1) - 1
        padded = eps.new_zeros(len(mean), int(rank.max()) + 1, mean.shape[1])
        padded[cls, rank] = eps
        z = single_threaded(torch.baddbmm, mean.unsqueeze(1), padded, chol_t)
        return z[cls, rank], cls

    def _draw(self, gen: torch.Generator, n: int) -> tuple[Latent, torch.Tensor]:
        z, _ = self.sample(gen, n)
        return z, self.labels(z)

    def _render(
        self, latent: Latent, device: torch.device, dtype: torch.dtype, augment: Any
    ) -> torch.Tensor:
        """One product in ``dtype``; on the CPU on one thread, since a multi-threaded GEMM's
        last bits depend on the thread count (bit-identical batches across processes)."""
        comps, offset = self.decoder(device, dtype)
        z = to_device(latent, device, dtype)
        x = (single_threaded(torch.addmm, offset, z, comps) if device.type == "cpu"
             else torch.addmm(offset, z, comps))
        return x if self.flatten else x.reshape(len(x), *self.image_shape)

    def decoder(self, device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
        """Decoder on device: x = z @ comps + offset equals (pixels - channel mean) / channel std,
        with comps = components / std (k, d) and offset = (mean - channel mean) / std (d,)."""
        key = (device, dtype)
        if key not in self._device_fit:
            per_pixel = math.prod(self.image_shape[1:])
            ch_mean = self.fit["pixel_mean"].repeat_interleave(per_pixel)
            ch_std = self.fit["pixel_std"].repeat_interleave(per_pixel)
            comps = self.fit["components"] / ch_std
            offset = (self.fit["mean"] - ch_mean) / ch_std
            self._device_fit[key] = (comps.to(device, dtype), offset.to(device, dtype))
        return self._device_fit[key]

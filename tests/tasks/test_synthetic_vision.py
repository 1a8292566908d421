"""synthetic_vision: fallback source, on-disk cache, labels as a function of the image."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

import widthscan.tasks as ws_tasks
from widthscan.tasks.seeding import generator
from widthscan.tasks.synthetic_vision import fit_generator

from .helpers import make_cifar_dir, make_idx_dir


def test_digits_fallback_and_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WIDTHSCAN_FASHION_MNIST", str(tmp_path / "absent"))
    task = ws_tasks.make("synthetic_vision", seed=0)
    assert "digits" in task.info["source"] and "digits" in task.spec.source
    assert task.spec.input_shape == (1, 8, 8) and task.spec.output_dim == 10
    cache = Path(task.info["cache"])
    assert cache.parent == Path(os.environ["WIDTHSCAN_CACHE"]) and cache.suffix == ".npz"
    with np.load(cache, allow_pickle=False) as f:
        assert {"components", "class_mean", "class_chol"} <= set(f.files)
    stamp = cache.stat().st_mtime_ns
    again = ws_tasks.make("synthetic_vision", seed=0)
    assert again.info["cache"] == str(cache) and cache.stat().st_mtime_ns == stamp
    assert all(torch.equal(a, b) for a, b in zip(task.batch(3, 32), again.batch(3, 32)))
    other = ws_tasks.make("synthetic_vision", seed=0, n_components=16)
    assert other.info["cache"] != str(cache) and other.info["n_components"] == 16


def test_labels_are_a_function_of_the_image() -> None:
    task = ws_tasks.make("synthetic_vision", seed=2, source="digits")
    x, y = task.batch(0, 512, dtype=torch.float64)
    z = task.project(task.raw_images(x))
    assert torch.equal(task.labels(z), y)
    counts = torch.bincount(y, minlength=10)
    assert (counts > 20).all(), counts
    x2, _ = task.batch(1, 512)
    assert not torch.equal(x2, x.float())


def test_samples_follow_the_fitted_class_statistics() -> None:
    """Class means of many generated images match the class means of the real data's PCA."""
    from sklearn.datasets import load_digits

    task = ws_tasks.make("synthetic_vision", seed=0, source="digits", n_components=20)
    digits = load_digits()
    real = digits.images[:, None] / 16.0
    x, y = task.batch(0, 20000, dtype=torch.float64)
    raw = task.raw_images(x).numpy()
    assert raw.mean() == pytest.approx(real.mean(), abs=0.01)
    for c in (0, 3, 7):
        gen_mean = raw[y.numpy() == c].mean(0)
        real_mean = real[digits.target == c].mean(0)
        assert np.abs(gen_mean - real_mean).mean() < 0.03


def test_fit_from_idx_and_cifar_sources(tmp_path: Path) -> None:
    make_idx_dir(tmp_path / "idx", 400, 10, seed=0, gz=True)
    task = ws_tasks.make("synthetic_vision", source="fashion_mnist", root=tmp_path / "idx",
                         n_components=8, flatten=True)
    assert task.info["source"].startswith("fashion_mnist:") and task.spec.input_shape == (784,)
    make_cifar_dir(tmp_path / "c", per_batch=40, n_test=5)
    cif = ws_tasks.make("synthetic_vision", source="cifar10", root=tmp_path / "c", n_components=4)
    assert cif.spec.input_shape == (3, 32, 32) and cif.batch(0, 5)[0].shape == (5, 3, 32, 32)


@pytest.mark.parametrize(("n", "side"), [(300, 4), (30, 8)])
def test_fit_is_reproducible_and_recovers_pca(n: int, side: int) -> None:
    """Both the covariance (n >= d) and the sample-Gram (n < d) paths find the top PCA axes."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, 1, side, side)).astype(np.uint8)
    labels = np.repeat(np.arange(3), n // 3)
    a = fit_generator(images, labels, n_components=5, scale=255.0)
    b = fit_generator(images, labels, n_components=5, scale=255.0)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    flat = images.reshape(n, -1) / 255.0
    _, sv, vt = np.linalg.svd(flat - flat.mean(0), full_matrices=False)
    np.testing.assert_allclose(np.abs(a["components"] @ vt[:5].T), np.eye(5), atol=1e-5)
    np.testing.assert_allclose(a["explained"][0], (sv[:5] ** 2).sum() / (sv**2).sum())


def test_offline_noisy_subset(tmp_path: Path) -> None:
    task = ws_tasks.make("synthetic_vision", source="digits", mode="offline", n_train=40,
                         label_noise=0.5)
    assert task.spec.pool_size == 40 and task.spec.label_noise == 0.5
    first = task.batch(0, 40)
    second = task.batch(1, 40)
    assert sorted(first[1].tolist()) == sorted(second[1].tolist())


def test_fit_latents_and_labels_do_not_depend_on_thread_count() -> None:
    """Only the final float decode may use multi-threaded BLAS; everything before it is exact."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    small = np.random.default_rng(1).integers(0, 256, (40, 1, 10, 10)).astype(np.uint8)
    before = torch.get_num_threads()
    fits, draws = [], []
    try:
        for threads in (1, max(before, 2)):
            torch.set_num_threads(threads)
            fits.append(fit_generator(digits.images[:, None], digits.target, 64, scale=16.0))
            fits.append(fit_generator(small, np.arange(40) % 4, n_components=8, scale=255.0))
            task = ws_tasks.make("synthetic_vision", seed=3, source="digits", cache=False)
            draws.append(task._draw(generator(3, "train", 0), 7))
    finally:
        torch.set_num_threads(before)
    for key in fits[0]:
        assert np.array_equal(fits[0][key], fits[2][key]), key
        assert np.array_equal(fits[1][key], fits[3][key]), key
    assert torch.equal(draws[0][0], draws[1][0]) and torch.equal(draws[0][1], draws[1][1])

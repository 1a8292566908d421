"""fashion_mnist and cifar10 tasks: loading, normalization, augmentation, probe sets."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import widthscan.tasks as ws_tasks
from widthscan.tasks import DatasetNotFoundError

from .helpers import REAL_FASHION, make_idx_dir, row_hashes
from .test_augment import naive_crop_flip


def _raw(task: ws_tasks.Task, x: torch.Tensor) -> np.ndarray:
    """Undo per-channel normalization and [0, 1] scaling: uint8 images (N, C, H, W)."""
    shape = (1, -1, 1, 1)
    img = x.double() * task.channel_std.reshape(shape) + task.channel_mean.reshape(shape)
    return np.rint(img.numpy() * 255).astype(np.uint8)


@pytest.mark.skipif(not REAL_FASHION.is_dir(), reason="dataset-fashion-mnist is not installed")
def test_real_fashion_mnist() -> None:
    task = ws_tasks.make("fashion_mnist", seed=0)
    assert task.spec.pool_size == 60000 and task.info["n_test"] == 10000
    assert task.spec.input_shape == (1, 28, 28) and task.spec.output_dim == 10
    x, y = task.batch(233, 256)
    assert x.shape == (256, 1, 28, 28) and y.shape == (256,)
    with pytest.raises(ws_tasks.PoolExhaustedError, match="60000"):
        task.batch(234, 256)
    assert abs(float(x.mean())) < 0.2 and 0.8 < float(x.std()) < 1.2
    xp, yp = task.probe_set(10000)
    assert xp.shape == (10000, 1, 28, 28) and torch.bincount(yp).tolist() == [1000] * 10
    flat = ws_tasks.make("fashion_mnist", seed=0, flatten=True)
    assert flat.spec.input_shape == (784,) and flat.batch(0, 4)[0].shape == (4, 784)


def test_tiny_idx_set_in_both_encodings(tmp_path) -> None:
    for gz in (True, False):
        root = tmp_path / f"gz{gz}"
        arrays = make_idx_dir(root, 50, 20, seed=3, gz=gz)
        task = ws_tasks.make("fashion_mnist", seed=0, root=root)
        x, y = task.batch(0, 50)
        raw = _raw(task, x)[:, 0]
        pool = {r.tobytes(): label for r, label in zip(arrays["train-images-idx3-ubyte"],
                                                      arrays["train-labels-idx1-ubyte"])}
        assert {r.tobytes() for r in raw} == set(pool)
        assert all(pool[r.tobytes()] == label for r, label in zip(raw, y.tolist()))
        pixels = arrays["train-images-idx3-ubyte"] / 255.0
        np.testing.assert_allclose(float(task.channel_mean[0]), pixels.mean(), rtol=1e-12)
        np.testing.assert_allclose(float(task.channel_std[0]), pixels.std(ddof=1), rtol=1e-9)


def test_wrong_fashion_root_names_path_and_files(tmp_path) -> None:
    with pytest.raises(DatasetNotFoundError) as err:
        ws_tasks.make("fashion_mnist", root=tmp_path / "missing")
    assert str(tmp_path / "missing") in str(err.value)
    for name in ("train-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        assert name in str(err.value)


def test_probe_set_is_held_out_and_excludes_duplicates(tmp_path) -> None:
    root = tmp_path / "dup"
    arrays = make_idx_dir(root, 60, 12, seed=4, gz=False)
    # plant two train images in the test split: they must never be probe examples
    test = arrays["t10k-images-idx3-ubyte"].copy()
    test[[2, 7]] = arrays["train-images-idx3-ubyte"][[5, 9]]
    from .helpers import write_idx

    write_idx(root / "t10k-images-idx3-ubyte", test, gz=False)
    task = ws_tasks.make("fashion_mnist", seed=1, root=root)
    assert task.spec.probe_pool_size == 10
    train = set(row_hashes(task.batch(0, 60)[0]))
    probe = row_hashes(task.probe_set(10)[0])
    assert len(set(probe)) == 10 and not train & set(probe)
    assert probe[:4] == row_hashes(task.probe_set(4)[0])
    assert probe != row_hashes(ws_tasks.make("fashion_mnist", seed=2, root=root).probe_set(10)[0])


def test_cifar_tiny_folder(cifar_dir) -> None:
    root, written = cifar_dir
    task = ws_tasks.make("cifar10", seed=0, root=root)
    assert task.spec.pool_size == 20 and task.spec.input_shape == (3, 32, 32)
    x, y = task.batch(0, 20)
    raw = _raw(task, x).reshape(20, 3072)
    train = np.concatenate([written[f"data_batch_{i}"][0] for i in range(1, 6)])
    labels = [v for i in range(1, 6) for v in written[f"data_batch_{i}"][1]]
    lookup = {r.tobytes(): label for r, label in zip(train, labels)}
    assert [lookup[r.tobytes()] for r in raw] == y.tolist()
    probe = {r.tobytes() for r in _raw(task, task.probe_set(10)[0]).reshape(10, 3072)}
    assert probe == {r.tobytes() for r in written["test_batch"][0]}
    assert not probe & set(lookup)
    per_channel = train.reshape(20, 3, 1024) / 255.0
    np.testing.assert_allclose(task.channel_mean.numpy(), per_channel.mean((0, 2)), rtol=1e-12)


def test_cifar_augmentation_matches_naive_reference(cifar_dir) -> None:
    root, _ = cifar_dir
    plain = ws_tasks.make("cifar10", seed=5, root=root, mode="offline", n_train=20)
    aug = ws_tasks.make("cifar10", seed=5, root=root, mode="offline", n_train=20, augment=True)
    for step in (0, 3):
        x_plain, y_plain = plain.batch(step, 16)
        x_aug, y_aug = aug.batch(step, 16)
        assert torch.equal(y_plain, y_aug)
        draws = aug.augmentation(step, 16)
        std, mean = plain.channel_std.reshape(1, -1, 1, 1), plain.channel_mean.reshape(1, -1, 1, 1)
        raw = x_plain.double() * std + mean
        for i in range(16):
            ref = naive_crop_flip(raw[i].numpy(), int(draws.top[i]), int(draws.left[i]),
                                  bool(draws.flip[i]), padding=4)
            ref = (ref - aug.channel_mean.numpy()[:, None, None]) / aug.channel_std.numpy()[
                :, None, None
            ]
            np.testing.assert_allclose(x_aug[i].numpy(), ref, atol=1e-5)


def test_augmented_examples_are_crops_and_flips_of_the_originals(cifar_dir) -> None:
    """Independent of the draws: each output equals one of the 81 x 2 candidate crops."""
    root, _ = cifar_dir
    plain = ws_tasks.make("cifar10", seed=1, root=root, mode="offline", n_train=20)
    aug = ws_tasks.make("cifar10", seed=1, root=root, mode="offline", n_train=20, augment=True)
    x_plain, _ = plain.batch(0, 20)
    x_aug, _ = aug.batch(0, 20)
    raw = _raw(plain, x_plain).astype(np.int64)
    got = _raw(aug, x_aug).astype(np.int64)
    offsets = set()
    for i in range(20):
        matches = [
            (t, l, f)
            for t in range(9)
            for l in range(9)
            for f in (False, True)
            if np.array_equal(naive_crop_flip(raw[i], t, l, f, 4), got[i])
        ]
        assert matches, f"example {i} is not a crop/flip of its source"
        offsets.add(matches[0][:2])
    assert len(offsets) > 5


def test_augmentation_changes_per_step_in_offline_mode(cifar_dir) -> None:
    root, _ = cifar_dir
    aug = ws_tasks.make("cifar10", seed=1, root=root, mode="offline", n_train=20, augment=True)
    a = aug.augmentation(0, 20)
    b = aug.augmentation(1, 20)
    assert not (torch.equal(a.top, b.top) and torch.equal(a.left, b.left))

"""CIFAR-5M part files (npz: uint8 'X' (n, 32, 32, 3), labels 'Y'): the reader and the task,
tested on generated files in that layout."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from widthscan import tasks
from widthscan.tasks import DatasetNotFoundError, TaskConfigError, TaskDataError
from widthscan.tasks.readers import load_cifar5m, read_cifar5m_part


def write_parts(root: Path, sizes=(12, 9, 7), seed: int = 0) -> list[tuple[np.ndarray, ...]]:
    """Part files cifar5m_part<i>.npz with random images (NHWC) and labels."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    parts = []
    for i, n in enumerate(sizes):
        x = rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)
        y = rng.integers(0, 10, size=n).astype(np.int64)
        np.savez(root / f"cifar5m_part{i}.npz", X=x, Y=y)
        parts.append((x, y))
    return parts


def test_parts_load_as_nchw_with_the_last_part_held_out(tmp_path):
    parts = write_parts(tmp_path)
    data = load_cifar5m(tmp_path)
    train_x = np.concatenate([x for x, _ in parts[:-1]])
    np.testing.assert_array_equal(data.train_x, train_x.transpose(0, 3, 1, 2))
    np.testing.assert_array_equal(data.train_y, np.concatenate([y for _, y in parts[:-1]]))
    np.testing.assert_array_equal(data.test_x, parts[-1][0].transpose(0, 3, 1, 2))
    np.testing.assert_array_equal(data.held_out, np.arange(len(parts[-1][0])))
    pixels = train_x.reshape(-1, 3) / 255.0  # channels last: an independent route
    np.testing.assert_allclose(data.channel_mean, pixels.mean(0), rtol=1e-12)
    np.testing.assert_allclose(data.channel_std, pixels.std(0, ddof=1), rtol=1e-9)


def test_choosing_train_and_test_parts(tmp_path):
    parts = write_parts(tmp_path)
    data = load_cifar5m(tmp_path, parts=(2,), test_part=0)
    np.testing.assert_array_equal(data.train_y, parts[2][1])
    np.testing.assert_array_equal(data.test_y, parts[0][1])
    with pytest.raises(TaskDataError, match="both a train part and the test part"):
        load_cifar5m(tmp_path, parts=(0, 1), test_part=1)
    with pytest.raises(DatasetNotFoundError, match="part 7"):
        load_cifar5m(tmp_path, parts=(7,))


def test_task_batches_and_probe_set_come_from_the_files(tmp_path, monkeypatch):
    parts = write_parts(tmp_path)
    monkeypatch.setenv("WIDTHSCAN_CIFAR5M", str(tmp_path))
    task = tasks.make("cifar5m", seed=3, augment=True)
    assert task.spec.input_shape == (3, 32, 32) and task.spec.n_classes == 10
    x, y = task.batch(0, 8)
    assert x.shape == (8, 3, 32, 32) and y.dtype == torch.int64
    assert set(y.tolist()) <= set(np.concatenate([p[1] for p in parts[:-1]]).tolist())
    xp, yp = task.probe_set(7)
    order = [int(np.flatnonzero((parts[-1][0].transpose(0, 3, 1, 2) == img).all((1, 2, 3)))[0])
             for img in np.round(xp.numpy() * task.channel_std.numpy()[:, None, None] * 255
                                 + task.channel_mean.numpy()[:, None, None] * 255
                                 ).astype(np.uint8)]
    np.testing.assert_array_equal(yp.numpy(), parts[-1][1][order])


def test_missing_root_and_files_name_what_is_expected(tmp_path, monkeypatch):
    monkeypatch.delenv("WIDTHSCAN_CIFAR5M", raising=False)
    with pytest.raises(TaskConfigError, match="root is required"):
        tasks.make("cifar5m")
    with pytest.raises(DatasetNotFoundError, match=r"cifar5m_part\*\.npz"):
        load_cifar5m(tmp_path / "empty")


@pytest.mark.parametrize(("x", "y", "message"), [
    (np.zeros((2, 32, 32, 3), np.float32), np.zeros(2, np.int64), "uint8"),
    (np.zeros((2, 3, 32, 32), np.uint8), np.zeros(2, np.int64), r"\(n, 32, 32, 3\)"),
    (np.zeros((2, 32, 32, 3), np.uint8), np.zeros(3, np.int64), "2 integer labels"),
    (np.zeros((2, 32, 32, 3), np.uint8), np.array([0, 10]), "0..9"),
])
def test_bad_part_files_are_clear_errors(tmp_path, x, y, message):
    path = tmp_path / "cifar5m_part0.npz"
    np.savez(path, X=x, Y=y)
    with pytest.raises(TaskDataError, match=message):
        read_cifar5m_part(path)


def test_missing_arrays_and_corrupt_files(tmp_path):
    np.savez(tmp_path / "cifar5m_part0.npz", images=np.zeros((1, 32, 32, 3), np.uint8))
    with pytest.raises(TaskDataError, match="'X' or 'Y'"):
        read_cifar5m_part(tmp_path / "cifar5m_part0.npz")
    (tmp_path / "cifar5m_part1.npz").write_bytes(b"not a zip")
    with pytest.raises(TaskDataError, match="corrupt"):
        read_cifar5m_part(tmp_path / "cifar5m_part1.npz")

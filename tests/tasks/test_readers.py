"""idx and CIFAR-10 readers: real formats written by the tests, and clear errors for bad files."""

from __future__ import annotations

import gzip
import pickle
import pickletools
from pathlib import Path

import numpy as np
import pytest

from widthscan.tasks import DatasetNotFoundError, TaskDataError
from widthscan.tasks.readers import load_cifar10, load_idx_dataset, read_idx, safe_unpickle

from .helpers import make_cifar_dir, make_idx_dir, write_idx

IDX_NAMES = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
             "t10k-labels-idx1-ubyte"]


@pytest.mark.parametrize("gz", [True, False, None])
def test_idx_roundtrip(tmp_path: Path, gz: bool | None) -> None:
    arrays = make_idx_dir(tmp_path, 30, 7, seed=1, gz=gz)
    data = load_idx_dataset(tmp_path)
    np.testing.assert_array_equal(data.train_x[:, 0], arrays["train-images-idx3-ubyte"])
    np.testing.assert_array_equal(data.train_y, arrays["train-labels-idx1-ubyte"])
    np.testing.assert_array_equal(data.test_x[:, 0], arrays["t10k-images-idx3-ubyte"])
    np.testing.assert_array_equal(data.test_y, arrays["t10k-labels-idx1-ubyte"])
    pixels = arrays["train-images-idx3-ubyte"] / 255.0
    np.testing.assert_allclose(data.channel_mean, [pixels.mean()], rtol=1e-12)
    np.testing.assert_allclose(data.channel_std, [pixels.std(ddof=1)], rtol=1e-9)


def test_wrong_path_names_path_and_expected_files(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(DatasetNotFoundError) as err:
        load_idx_dataset(missing)
    assert str(missing) in str(err.value)
    for name in IDX_NAMES:
        assert name in str(err.value)
    assert isinstance(err.value, FileNotFoundError) and isinstance(err.value, ValueError)
    make_idx_dir(tmp_path / "partial", 5, 5, seed=0, gz=False)
    (tmp_path / "partial" / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DatasetNotFoundError, match=r"lacks t10k-labels-idx1-ubyte\[.gz\]"):
        load_idx_dataset(tmp_path / "partial")


def test_corrupt_idx_files_are_named(tmp_path: Path) -> None:
    bad_magic = tmp_path / "bad"
    bad_magic.write_bytes(b"\x00\x00\x09\x03" + b"\x00" * 20)
    with pytest.raises(TaskDataError, match=rf"{bad_magic}.*magic"):
        read_idx(bad_magic)
    truncated = tmp_path / "trunc"
    write_idx(truncated, np.zeros((4, 3, 3), np.uint8), gz=False)
    truncated.write_bytes(truncated.read_bytes()[:-5])
    with pytest.raises(TaskDataError, match=rf"{truncated}.*declares shape \(4, 3, 3\)"):
        read_idx(truncated)
    broken_gz = tmp_path / "x-idx1-ubyte.gz"
    broken_gz.write_bytes(gzip.compress(b"\x00\x00\x08\x01\x00\x00\x00\x02ab")[:-6])
    with pytest.raises(TaskDataError, match=rf"{broken_gz}"):
        read_idx(broken_gz)
    folder = tmp_path / "set"
    make_idx_dir(folder, 6, 3, seed=0, gz=True)
    labels = folder / "train-labels-idx1-ubyte.gz"
    labels.write_bytes(b"not gzip at all")
    with pytest.raises(TaskDataError, match=r"train-labels-idx1-ubyte\.gz"):
        load_idx_dataset(folder)


def test_cifar_reads_the_real_layout(tmp_path: Path) -> None:
    written = make_cifar_dir(tmp_path)
    data = load_cifar10(tmp_path)
    assert data.train_x.shape == (20, 3, 32, 32) and data.test_x.shape == (10, 3, 32, 32)
    train = np.concatenate([written[f"data_batch_{i}"][0] for i in range(1, 6)])
    np.testing.assert_array_equal(data.train_x.reshape(20, 3072), train)
    # row layout: 1024 red, then 1024 green, then 1024 blue values, each row-major 32x32
    np.testing.assert_array_equal(data.train_x[3, 1, 2, 5], train[3, 1024 + 2 * 32 + 5])
    labels = [v for i in range(1, 6) for v in written[f"data_batch_{i}"][1]]
    assert data.train_y.tolist() == labels
    assert data.test_y.tolist() == written["test_batch"][1]
    assert load_cifar10(tmp_path / "cifar-10-batches-py").train_x.shape[0] == 20


def test_cifar_python2_style_pickle(tmp_path: Path) -> None:
    """Protocol 2 with numpy.core module names and _codecs, as the published files have."""
    arr = np.arange(2 * 3072, dtype=np.uint8).reshape(2, 3072)
    blob = pickle.dumps({b"data": arr, b"labels": [1, 2]}, protocol=2)
    blob = blob.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    globals_used = [a for op, a, _ in pickletools.genops(blob) if op.name == "GLOBAL"]
    assert "numpy.core.multiarray _reconstruct" in globals_used
    path = tmp_path / "batch"
    path.write_bytes(blob)
    out = safe_unpickle(path)
    np.testing.assert_array_equal(out[b"data"], arr)


class _Evil:
    def __reduce__(self):
        import os

        return (os.system, ("touch PWNED",))


def test_cifar_unpickler_refuses_code(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil"
    path.write_bytes(pickle.dumps({b"data": _Evil(), b"labels": []}))
    with pytest.raises(TaskDataError, match=r"evil.*refusing to load global (posix|os|nt)\.system"):
        safe_unpickle(path)
    assert not (tmp_path / "PWNED").exists()


def test_cifar_corrupt_and_missing_files_are_named(tmp_path: Path) -> None:
    make_cifar_dir(tmp_path)
    folder = tmp_path / "cifar-10-batches-py"
    bad = folder / "data_batch_3"
    bad.write_bytes(bad.read_bytes()[: len(bad.read_bytes()) // 2])
    with pytest.raises(TaskDataError, match=r"data_batch_3.*corrupt"):
        load_cifar10(tmp_path)
    with open(bad, "wb") as f:
        pickle.dump({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}, f)
    with pytest.raises(TaskDataError, match=r"data_batch_3.*\(N, 3072\)"):
        load_cifar10(tmp_path)
    (folder / "test_batch").unlink()
    with pytest.raises(DatasetNotFoundError) as err:
        load_cifar10(tmp_path)
    assert str(tmp_path) in str(err.value) and "test_batch" in str(err.value)
    assert "data_batch_1" in str(err.value)

"""Helpers shared by the widthscan.tasks tests."""

from __future__ import annotations

import gzip
import hashlib
import pickle
import struct
from pathlib import Path

import numpy as np
import torch

REAL_FASHION = Path("/usr/share/datasets/fashion-mnist")


def row_hashes(x: torch.Tensor) -> list[str]:
    """One digest per example (row) of a tensor, from its bytes."""
    flat = x.detach().cpu().contiguous().reshape(len(x), -1).numpy()
    return [hashlib.sha256(row.tobytes()).hexdigest() for row in flat]


def tensor_digest(*tensors: torch.Tensor) -> str:
    """Digest of the bytes, dtypes and shapes of tensors."""
    h = hashlib.sha256()
    for t in tensors:
        t = t.detach().cpu().contiguous()
        h.update(f"{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


def write_idx(path: Path, array: np.ndarray, gz: bool) -> None:
    """Write a uint8 array in the idx format (magic 0x0000 08 ndim, big-endian dims)."""
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    if gz:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(payload))
    else:
        path.write_bytes(payload)


def make_idx_dir(root: Path, n_train: int, n_test: int, seed: int, gz: bool | None) -> dict:
    """A Fashion-MNIST-like folder of random 28x28 images; gz=None mixes gz and plain files."""
    rng = np.random.default_rng(seed)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    root.mkdir(parents=True, exist_ok=True)
    for i, (name, array) in enumerate(arrays.items()):
        write_idx(root / name, array, gz if gz is not None else i % 2 == 0)
    return arrays


def make_cifar_dir(root: Path, per_batch: int = 4, n_test: int = 10, seed: int = 0) -> dict:
    """A `cifar-10-batches-py` folder in the real format: pickled dicts with bytes keys."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    out: dict[str, tuple[np.ndarray, list[int]]] = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        n = n_test if name == "test_batch" else per_batch
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, n)]
        batch = {
            b"batch_label": name.encode(),
            b"labels": labels,
            b"data": data,
            b"filenames": [f"img_{i}.png".encode() for i in range(n)],
        }
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f)
        out[name] = (data, labels)
    return out

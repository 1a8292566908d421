"""Readers for image data sets on disk: idx files (MNIST / Fashion-MNIST) and the python-pickle
CIFAR-10 folder (read with an unpickler that only reconstructs numpy arrays).

Each loader returns uint8 images (N, C, H, W) and int64 labels (N,) for train and test, and is
cached per process by (path, size, mtime) of its files.
"""

from __future__ import annotations

import functools
import gzip
import pickle
import struct
import zlib
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from .errors import DatasetNotFoundError, TaskDataError

IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
CIFAR_DIR = "cifar-10-batches-py"
CIFAR_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR_TEST = "test_batch"


class ImageData(NamedTuple):
    """A labelled image data set held in memory, with statistics of its train split."""

    train_x: np.ndarray  # uint8 (N, C, H, W)
    train_y: np.ndarray  # int64 (N,)
    test_x: np.ndarray  # uint8 (M, C, H, W)
    test_y: np.ndarray  # int64 (M,)
    files: tuple[Path, ...]
    channel_mean: np.ndarray  # float64 (C,): mean of train pixels scaled to [0, 1]
    channel_std: np.ndarray  # float64 (C,): their standard deviation
    held_out: np.ndarray  # int64: test images that do not occur byte for byte in train


def image_data(
    train_x: np.ndarray,
    train_y: np.ndarray,
    test_x: np.ndarray,
    test_y: np.ndarray,
    files: tuple[Path, ...] = (),
) -> ImageData:
    """Bundle uint8 images (N, C, H, W) and labels with train statistics and held-out rows."""
    channels = np.ascontiguousarray(train_x.transpose(1, 0, 2, 3)).reshape(train_x.shape[1], -1)
    n = channels.shape[1]
    total = channels.sum(1, dtype=np.uint64).astype(np.float64)
    squares = (channels.astype(np.uint32) ** 2).sum(1, dtype=np.uint64).astype(np.float64)
    mean = total / n
    var = (squares - n * mean**2) / max(n - 1, 1)
    return ImageData(
        train_x, train_y, test_x, test_y, tuple(files),
        mean / 255.0, np.sqrt(np.maximum(var, 0.0)) / 255.0, unseen_rows(test_x, train_x),
    )


def unseen_rows(test: np.ndarray, train: np.ndarray) -> np.ndarray:
    """Indices of test images that do not occur (byte for byte) among the train images."""
    seen = set(map(bytes, train.reshape(len(train), -1)))
    rows = map(bytes, test.reshape(len(test), -1))
    return np.array([i for i, r in enumerate(rows) if r not in seen], dtype=np.int64)


def file_stamp(paths: list[Path]) -> tuple[tuple[str, int, int], ...]:
    return tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in paths)


# ---- idx ---------------------------------------------------------------------------------


def idx_paths(root: str | Path) -> dict[str, Path]:
    """The four idx files under `root` (each may be gzipped), or an error naming what is missing."""
    root = Path(root).expanduser()
    expected = ", ".join(f"{n}[.gz]" for n in IDX_FILES.values())
    if not root.is_dir():
        raise DatasetNotFoundError(f"idx data directory {root} does not exist; expected {expected}")
    found: dict[str, Path] = {}
    for key, stem in IDX_FILES.items():
        for candidate in (root / stem, root / f"{stem}.gz"):
            if candidate.is_file():
                found[key] = candidate
                break
    missing = [f"{IDX_FILES[k]}[.gz]" for k in IDX_FILES if k not in found]
    if missing:
        raise DatasetNotFoundError(
            f"idx data directory {root} lacks {', '.join(missing)}; expected {expected}"
        )
    return found


def read_idx(path: str | Path) -> np.ndarray:
    """An idx file (optionally .gz) as a uint8 array with the shape its header declares."""
    path = Path(path)
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, zlib.error) as err:
        raise TaskDataError(f"{path}: cannot read idx file ({err})") from err
    if len(raw) < 4:
        raise TaskDataError(f"{path}: not an idx file (only {len(raw)} bytes)")
    zero, code, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or code != 0x08 or not 1 <= ndim <= 4:
        raise TaskDataError(
            f"{path}: bad idx magic number 0x{raw[:4].hex()} (expected 0x00000801..0x00000804,"
            " unsigned bytes)"
        )
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise TaskDataError(f"{path}: idx header truncated")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    size = int(np.prod(shape))
    if len(raw) - header != size:
        raise TaskDataError(
            f"{path}: idx header declares shape {shape} ({size} bytes) but the file holds"
            f" {len(raw) - header} bytes of data"
        )
    return np.frombuffer(bytearray(raw), dtype=np.uint8, offset=header).reshape(shape)


def load_idx_dataset(root: str | Path) -> ImageData:
    """Fashion-MNIST / MNIST from an idx directory: images (N, 1, 28, 28), labels (N,)."""
    paths = idx_paths(root)
    return _load_idx_cached(file_stamp(list(paths.values())))


@functools.lru_cache(maxsize=2)
def _load_idx_cached(stamp: tuple[tuple[str, int, int], ...]) -> ImageData:
    paths = dict(zip(IDX_FILES, (Path(s[0]) for s in stamp)))
    arrays = {key: read_idx(p) for key, p in paths.items()}
    for split in ("train", "test"):
        x, y = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        xp, yp = paths[f"{split}_images"], paths[f"{split}_labels"]
        if x.ndim != 3:
            raise TaskDataError(f"{xp}: expected 3-d images (N, H, W), got shape {x.shape}")
        if y.ndim != 1:
            raise TaskDataError(f"{yp}: expected 1-d labels, got shape {y.shape}")
        if len(x) != len(y):
            raise TaskDataError(f"{xp} holds {len(x)} images but {yp} holds {len(y)} labels")
        if len(y) and y.max() > 9:
            raise TaskDataError(f"{yp}: labels must be in 0..9, found {int(y.max())}")
    return image_data(
        arrays["train_images"][:, None],
        arrays["train_labels"].astype(np.int64),
        arrays["test_images"][:, None],
        arrays["test_labels"].astype(np.int64),
        tuple(paths.values()),
    )


# ---- CIFAR-10 ----------------------------------------------------------------------------


def _numpy_helpers() -> dict[tuple[str, str], Any]:
    try:
        from numpy._core import multiarray, numeric
    except ImportError:  # numpy < 2
        from numpy.core import multiarray, numeric  # type: ignore[no-redef]
    allowed: dict[tuple[str, str], Any] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): __import__("codecs").encode,
    }
    for module in ("numpy.core", "numpy._core"):
        allowed[(f"{module}.multiarray", "_reconstruct")] = multiarray._reconstruct
        allowed[(f"{module}.multiarray", "scalar")] = multiarray.scalar
        allowed[(f"{module}.numeric", "_frombuffer")] = numeric._frombuffer
    return allowed


class SafeUnpickler(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays only; any other global is refused."""

    ALLOWED = _numpy_helpers()

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self.ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refusing to load global {module}.{name}: only numpy arrays are allowed"
            ) from None


def safe_unpickle(path: Path) -> Any:
    """Load a pickle file with `SafeUnpickler` (py2 strings decoded as bytes)."""
    try:
        with open(path, "rb") as f:
            return SafeUnpickler(f, encoding="bytes").load()
    except OSError as err:
        raise TaskDataError(f"{path}: cannot read ({err})") from err
    except Exception as err:
        raise TaskDataError(f"{path}: corrupt or not a CIFAR-10 pickle ({err})") from err


def cifar_dir(root: str | Path) -> Path:
    """The `cifar-10-batches-py` folder: `root` itself or `root/cifar-10-batches-py`."""
    root = Path(root).expanduser()
    expected = ", ".join((*CIFAR_TRAIN, CIFAR_TEST))
    for folder in (root / CIFAR_DIR, root):
        if folder.is_dir() and all((folder / f).is_file() for f in (*CIFAR_TRAIN, CIFAR_TEST)):
            return folder
    raise DatasetNotFoundError(
        f"no CIFAR-10 python data at {root}: expected a folder {CIFAR_DIR}/ (or {root} itself)"
        f" holding {expected}; download cifar-10-python.tar.gz and extract it there"
    )


def _cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    obj = safe_unpickle(path)
    if not isinstance(obj, dict):
        raise TaskDataError(f"{path}: expected a dict, got {type(obj).__name__}")
    obj = {k.decode() if isinstance(k, bytes) else k: v for k, v in obj.items()}
    if "data" not in obj or "labels" not in obj:
        raise TaskDataError(f"{path}: missing key 'data' or 'labels' (found {sorted(obj)})")
    data, labels = obj["data"], np.asarray(obj["labels"])
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 \
            or data.shape[1] != 3072:
        shape = getattr(data, "shape", None)
        raise TaskDataError(f"{path}: 'data' must be a uint8 array (N, 3072), got {shape}")
    if labels.shape != (len(data),) or labels.dtype.kind not in "iu":
        raise TaskDataError(f"{path}: 'labels' must be {len(data)} integers, got {labels.shape}")
    if len(labels) and (labels.min() < 0 or labels.max() > 9):
        raise TaskDataError(f"{path}: labels must be in 0..9")
    return data.reshape(-1, 3, 32, 32), labels.astype(np.int64)


def load_cifar10(root: str | Path) -> ImageData:
    """CIFAR-10 from the python-pickle folder: images (N, 3, 32, 32) uint8, labels (N,)."""
    folder = cifar_dir(root)
    paths = [folder / f for f in (*CIFAR_TRAIN, CIFAR_TEST)]
    return _load_cifar_cached(file_stamp(paths))


@functools.lru_cache(maxsize=2)
def _load_cifar_cached(stamp: tuple[tuple[str, int, int], ...]) -> ImageData:
    paths = [Path(s[0]) for s in stamp]
    batches = [_cifar_batch(p) for p in paths]
    train = batches[:-1]
    return image_data(
        np.concatenate([b[0] for b in train]),
        np.concatenate([b[1] for b in train]),
        np.array(batches[-1][0]),
        batches[-1][1],
        tuple(paths),
    )


# ---- CIFAR-5M part files -------------------------------------------------------------------

CIFAR5M_GLOB = "cifar5m_part*.npz"


def cifar5m_parts(root: str | Path) -> list[Path]:
    """The part files `cifar5m_part<i>.npz` under `root`, ordered by i."""
    root = Path(root).expanduser()
    found = sorted(root.glob(CIFAR5M_GLOB), key=lambda p: _part_number(p))
    if not found:
        raise DatasetNotFoundError(
            f"no CIFAR-5M part files at {root}: expected {CIFAR5M_GLOB} (npz with uint8 images"
            " 'X' (n, 32, 32, 3) and labels 'Y' (n,)); nothing is downloaded"
        )
    return found


def _part_number(path: Path) -> int:
    digits = path.stem.removeprefix("cifar5m_part")
    if not digits.isdigit():
        raise TaskDataError(f"{path}: expected a name cifar5m_part<number>.npz")
    return int(digits)


def _open_part(path: Path, key: str) -> np.ndarray:
    try:
        with np.load(path, allow_pickle=False) as z:
            if "X" not in z.files or "Y" not in z.files:
                raise TaskDataError(f"{path}: missing array 'X' or 'Y' (found {z.files})")
            return z[key]
    except (OSError, ValueError, zlib.error) as err:
        raise TaskDataError(f"{path}: corrupt or not an npz file ({err})") from err


def _part_labels(path: Path) -> np.ndarray:
    y = _open_part(path, "Y")
    if y.ndim != 1 or y.dtype.kind not in "iu":
        raise TaskDataError(f"{path}: 'Y' must be integer labels (n,), got {y.dtype} {y.shape}")
    if len(y) and (y.min() < 0 or y.max() > 9):
        raise TaskDataError(f"{path}: labels must be in 0..9")
    return y.astype(np.int64)


def _part_images(path: Path, n: int) -> np.ndarray:
    """The images of one part as stored, uint8 (n, 32, 32, 3)."""
    x = _open_part(path, "X")
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[1:] != (32, 32, 3):
        raise TaskDataError(f"{path}: 'X' must be uint8 (n, 32, 32, 3), got {x.dtype} {x.shape}")
    if len(x) != n:
        raise TaskDataError(f"{path}: 'Y' must be {len(x)} integer labels, got {n}")
    return x


def read_cifar5m_part(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """One part file: images uint8 (n, 3, 32, 32) (stored (n, 32, 32, 3)), labels int64 (n,)."""
    path = Path(path)
    y = _part_labels(path)
    return np.ascontiguousarray(_part_images(path, len(y)).transpose(0, 3, 1, 2)), y


def _read_parts(paths: list[Path]) -> tuple[np.ndarray, np.ndarray]:
    """Parts concatenated into one preallocated (N, 3, 32, 32) array: the peak memory is
    the result plus one part as stored, not twice the result."""
    labels = [_part_labels(p) for p in paths]
    out = np.empty((sum(len(y) for y in labels), 3, 32, 32), np.uint8)
    start = 0
    for path, y in zip(paths, labels):
        out[start:start + len(y)] = _part_images(path, len(y)).transpose(0, 3, 1, 2)
        start += len(y)
    return out, np.concatenate(labels)


def load_cifar5m(root: str | Path, parts: tuple[int, ...] | None = None,
                 test_part: int | None = None) -> ImageData:
    """CIFAR-5M from its part files: the train split is the parts `parts` (default: all but
    the test part), the test split part `test_part` (default: the last). Every test row
    counts as held out (the parts are disjoint samples; the byte-for-byte check of the
    small data sets would cost minutes on 5 million images)."""
    files = cifar5m_parts(root)
    numbers = [_part_number(p) for p in files]
    test = numbers[-1] if test_part is None else test_part
    train = [n for n in numbers if n != test] if parts is None else list(parts)
    for n in (*train, test):
        if n not in numbers:
            raise DatasetNotFoundError(f"CIFAR-5M part {n} is not at {root} (found {numbers})")
    if test in train:
        raise TaskDataError(f"CIFAR-5M part {test} is both a train part and the test part")
    chosen = [files[numbers.index(n)] for n in (*train, test)]
    return _load_cifar5m_cached(file_stamp(chosen))


@functools.lru_cache(maxsize=1)
def _load_cifar5m_cached(stamp: tuple[tuple[str, int, int], ...]) -> ImageData:
    paths = [Path(s[0]) for s in stamp]
    train_x, train_y = _read_parts(paths[:-1])
    test_x, test_y = read_cifar5m_part(paths[-1])
    mean, std = channel_stats(train_x)
    return ImageData(train_x, train_y, test_x, test_y, tuple(paths), mean, std,
                     np.arange(len(test_x), dtype=np.int64))


def channel_stats(images: np.ndarray, chunk: int = 65536) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std (ddof=1) of uint8 images (N, C, H, W) scaled to [0, 1],
    accumulated in chunks of images in float64."""
    c = images.shape[1]
    total, squares, n = np.zeros(c), np.zeros(c), 0
    for start in range(0, len(images), chunk):
        block = images[start:start + chunk].astype(np.float64)
        total += block.sum((0, 2, 3))
        squares += (block**2).sum((0, 2, 3))
        n += block.shape[0] * block.shape[2] * block.shape[3]
    mean = total / max(n, 1)
    var = (squares - n * mean**2) / max(n - 1, 1)
    return mean / 255.0, np.sqrt(np.maximum(var, 0.0)) / 255.0

"""Probe shards: one atomic ``.npz`` per (probe, step) plus ``dims.json`` per probe.

A shard holds every variable of one probe at one step, each of shape (K, *sizes)
with K the member axis. ``dims.json`` maps each variable to its dims after the
member axis, its coordinates (JSON lists, so strings are fine), and its ``shape``
(sizes after the member axis), ``members`` (K) and ``dtype``, so that a reader can
lay out a variable without opening a shard (stores written before these keys
existed are read by peeking at one shard's array header).
"""

from __future__ import annotations

import json
import logging
import re
import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from widthscan.measurement import Measurement
from widthscan.store.atomic import atomic_open, atomic_write_json

DIMS_FILE = "dims.json"
_SHARD_RE = re.compile(r"^(\d+)\.npz$")
log = logging.getLogger(__name__)


class ProbeSeries(NamedTuple):
    """One probe variable of one run over its logged steps.

    dims: names of the axes after the member axis; coords: labels for some of them.
    steps: (n_steps,) int64; values: (n_steps, K, *sizes), NaN where a shard lacks it.
    """

    dims: tuple[str, ...]
    coords: dict[str, np.ndarray]
    steps: np.ndarray
    values: np.ndarray


def check_name(name: str, what: str) -> str:
    """A file-system-safe probe or variable name."""
    if not name or "/" in name or "\\" in name or name.startswith("."):
        raise ValueError(f"invalid {what} name {name!r}")
    return name


def shard_path(probe_dir: Path, step: int) -> Path:
    return probe_dir / f"{int(step):09d}.npz"


def shard_steps(probe_dir: Path) -> list[tuple[int, Path]]:
    """``(step, path)`` of every shard in ``probe_dir``, sorted by step; temp files skipped."""
    if not probe_dir.is_dir():
        return []
    found = []
    for p in probe_dir.iterdir():
        m = _SHARD_RE.match(p.name)
        if m is not None:
            found.append((int(m.group(1)), p))
    return sorted(found)


def _coord_list(values: Any) -> list[Any]:
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"coordinates must be 1-D, got shape {arr.shape}")
    return arr.tolist()


def var_spec(var: str, m: Measurement) -> tuple[dict[str, Any], np.ndarray]:
    """Validated ``({"dims", "coords"}, values)`` for one measurement."""
    check_name(var, "probe variable")
    values = np.asarray(m.values)
    dims = tuple(m.dims)
    if values.dtype.hasobject:
        raise TypeError(f"probe variable {var!r} has object dtype; use numeric arrays")
    if values.ndim != 1 + len(dims):
        raise ValueError(
            f"probe variable {var!r}: values of shape {values.shape} need 1 + {len(dims)} axes "
            f"(member axis + dims {dims})"
        )
    if len(set(dims)) != len(dims):
        raise ValueError(f"probe variable {var!r}: repeated dim names {dims}")
    coords: dict[str, list[Any]] = {}
    for dim, labels in (m.coords or {}).items():
        if dim not in dims:
            raise ValueError(f"probe variable {var!r}: coordinate {dim!r} is not one of {dims}")
        labels = _coord_list(labels)
        size = values.shape[1 + dims.index(dim)]
        if len(labels) != size:
            raise ValueError(
                f"probe variable {var!r}: {len(labels)} labels for dim {dim!r} of size {size}"
            )
        coords[dim] = labels
    spec = {"dims": list(dims), "coords": coords, "shape": list(values.shape[1:]),
            "members": int(values.shape[0]), "dtype": values.dtype.str}
    return spec, values


LAYOUT_KEYS = ("dims", "coords")


def _valid_spec(spec: Any) -> bool:
    return (isinstance(spec, dict) and isinstance(spec.get("dims"), list)
            and all(isinstance(d, str) for d in spec["dims"])
            and isinstance(spec.get("coords", {}), dict)
            and all(d in spec["dims"] and isinstance(v, list)
                    for d, v in spec.get("coords", {}).items()))


def read_dims(probe_dir: Path) -> dict[str, dict[str, Any]]:
    """``{var: {"dims", "coords"}}`` from dims.json; a damaged file or entry is left out
    with a warning ({} for the whole file), and rewritten by the next ``write_probe``."""
    path = probe_dir / DIMS_FILE
    try:
        specs = json.loads(path.read_bytes())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:
        _warn(f"ignoring unreadable {path} ({type(e).__name__}: {e})")
        return {}
    if not isinstance(specs, dict):
        _warn(f"ignoring {path}: not a table of variables")
        return {}
    bad = [var for var, spec in specs.items() if not _valid_spec(spec)]
    if bad:
        _warn(f"ignoring the damaged entries {bad} of {path}")
    return {var: spec for var, spec in specs.items() if var not in bad}


def sibling_dims(probe_dir: Path) -> dict[str, dict[str, Any]]:
    """dims.json specs of the same probe in the other runs of the sweep
    (``SWEEP/runs/param=*/width=*/probes/<probe>``), first valid one per variable."""
    run = probe_dir.parent.parent
    runs_root = run.parent.parent
    found: dict[str, dict[str, Any]] = {}
    for other in sorted(runs_root.glob(f"param=*/width=*/probes/{probe_dir.name}")):
        if other == probe_dir or not (other / DIMS_FILE).exists():
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for var, spec in read_dims(other).items():
                found.setdefault(var, spec)
    return found


def _warn(message: str) -> None:
    from widthscan.store.checkpoint import StoreWarning

    warnings.warn(message, StoreWarning, stacklevel=3)


def update_dims(probe_dir: Path, known: dict[str, dict[str, Any]], new: Mapping[str, Any]) -> bool:
    """Merge ``new`` specs into ``known`` (in place); raise if a variable's spec changed.

    Only dims and coords must agree; shape, members and dtype are those first recorded
    (keys missing from an older dims.json are added). Returns True when ``known`` grew
    and must be written.
    """
    changed = False
    for var, spec in new.items():
        old = known.get(var)
        if old is None:
            known[var] = spec
            changed = True
            continue
        if any(old.get(k) != spec.get(k) for k in LAYOUT_KEYS):
            raise ValueError(
                f"probe variable {var!r} in {probe_dir} changed dims/coords from {old} to {spec}"
            )
        if any(k not in old for k in spec):
            known[var] = {**spec, **old}
            changed = True
    return changed


def write_shard(probe_dir: Path, step: int, arrays: Mapping[str, np.ndarray]) -> Path:
    """Atomically write ``arrays`` as ``<step:09d>.npz`` (an uncompressed .npz, no pickles)."""
    path = shard_path(probe_dir, step)
    with atomic_open(path, "wb") as f, zipfile.ZipFile(f, "w", zipfile.ZIP_STORED) as zf:
        for name, arr in arrays.items():
            with zf.open(f"{name}.npy", "w", force_zip64=True) as out:
                np.lib.format.write_array(out, np.ascontiguousarray(arr), allow_pickle=False)
    return path


def write_dims(probe_dir: Path, specs: Mapping[str, Any]) -> None:
    atomic_write_json(probe_dir / DIMS_FILE, dict(specs))


def load_shard(path: Path) -> dict[str, np.ndarray] | None:
    """All arrays in a shard, or None (logged) if it cannot be read."""
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except Exception as e:
        log.warning("ignoring unreadable probe shard %s: %s", path, e)
        return None


def _fits(spec: dict[str, Any], shape: tuple[int, ...]) -> bool:
    """Whether a dims spec matches values of ``shape`` (member axis first)."""
    dims = spec["dims"]
    return len(dims) == len(shape) - 1 and all(
        len(labels) == shape[1 + dims.index(d)] for d, labels in spec.get("coords", {}).items())


def _nan_filled(dtype: np.dtype) -> np.dtype:
    return np.result_type(dtype, np.float32)


def read_probe_dir(probe_dir: Path) -> dict[str, ProbeSeries]:
    """Every variable of one probe stacked over steps (see ProbeSeries)."""
    loaded: list[tuple[int, dict[str, np.ndarray]]] = []
    for step, path in shard_steps(probe_dir):
        arrays = load_shard(path)
        if arrays is not None:
            loaded.append((step, arrays))
    if not loaded:
        return {}
    specs = read_dims(probe_dir)
    steps = np.array([s for s, _ in loaded], dtype=np.int64)
    if any(var not in specs for _, arrays in loaded for var in arrays):
        specs = {**sibling_dims(probe_dir), **specs}
    names: dict[str, None] = {}
    for _, arrays in loaded:
        names.update(dict.fromkeys(arrays))
    out: dict[str, ProbeSeries] = {}
    for var in names:
        present = [(i, a[var]) for i, (_, a) in enumerate(loaded) if var in a]
        shape = present[0][1].shape
        for i, arr in present:
            if arr.shape != shape:
                raise ValueError(
                    f"probe variable {var!r} in {probe_dir} has shape {arr.shape} at step "
                    f"{steps[i]} but {shape} at step {steps[present[0][0]]}"
                )
        if len(present) == len(loaded):
            values = np.stack([arr for _, arr in present])
        else:
            values = np.full((len(loaded), *shape), np.nan, _nan_filled(present[0][1].dtype))
            for i, arr in present:
                values[i] = arr
        spec = specs.get(var)
        if spec is not None and _fits(spec, shape):
            dims = tuple(spec["dims"])
            coords = {d: np.asarray(v) for d, v in spec.get("coords", {}).items()}
        else:
            dims = tuple(f"{var}_dim_{j}" for j in range(len(shape) - 1))
            coords = {}
        out[var] = ProbeSeries(dims, coords, steps, values)
    return out


def read_var(path: Path, var: str) -> np.ndarray | None:
    """One variable (K, *sizes) of one shard, reading only that array; None (logged) if the
    shard cannot be read or lacks ``var``."""
    try:
        with np.load(path, allow_pickle=False) as z:
            if var not in z.files:
                return None
            return z[var]
    except Exception as e:
        log.warning("ignoring unreadable probe shard %s: %s", path, e)
        return None


def peek_var(path: Path, var: str) -> tuple[tuple[int, ...], np.dtype] | None:
    """``(shape, dtype)`` of ``var`` in a shard from its .npy header (no data read)."""
    try:
        with zipfile.ZipFile(path) as zf, zf.open(f"{var}.npy") as f:
            version = np.lib.format.read_magic(f)
            reader = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                      else np.lib.format.read_array_header_2_0)
            shape, _, dtype = reader(f)
            return tuple(shape), np.dtype(dtype)
    except Exception as e:
        log.warning("ignoring unreadable probe shard %s: %s", path, e)
        return None

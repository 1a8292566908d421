"""Read a sweep directory into one xarray.Dataset (layout in docs/data-model.md).

Scalars are read at once (they are small). Probe variables are dask arrays: one chunk
per (param, width, probe step) holding every seed, read from its shard only when a
computation asks for it (``.values``, ``.load()``, ``.compute()``), so memory is
bounded by what is asked for. Nothing but ``dims.json`` files and directory listings
is read to lay them out. Without dask (the ``dask`` extra) they are read at once.
"""

from __future__ import annotations

import itertools
import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from widthscan.store import probes as _probes
from widthscan.store.run import FINISHED_STATES, PROBES_DIR
from widthscan.store.tables import (
    LoadWarning,
    RunData,
    damage_notes,
    metric_columns,
    read_config_text,
    read_runs,
)

if TYPE_CHECKING:
    import xarray as xr

CORE_DIMS = ("param", "width", "seed")
PER_VARIABLE_DIMS = ("example", "example2", "position", "position2", "layer")
"""Dims whose coordinate belongs to one probe variable (which probe inputs, token
positions or layers it was measured on): loaded as ``<variable>_<dim>``."""
SAMPLES = {"position": "token", "example": "example"}


class IncompleteSweepWarning(UserWarning):
    """Some runs of the loaded sweep are not finished (pending, running or failed)."""


def dataset_dim(var: str, dim: str) -> str:
    """The loaded name of dim ``dim`` of probe variable ``var`` (docs/data-model.md)."""
    return f"{var}_{dim}" if dim in PER_VARIABLE_DIMS else dim


@dataclass
class _Source:
    """One probe variable of one run: where its shards are and how it is laid out."""

    run: RunData
    steps: list[tuple[int, Path]]
    dims: tuple[str, ...]
    coords: dict[str, list[Any]]
    shape: tuple[int, ...]
    members: int
    dtype: np.dtype


@dataclass
class _DimSpec:
    labels: list[Any] | None = None
    size: int = 0

    @property
    def length(self) -> int:
        return len(self.labels) if self.labels is not None else self.size


@dataclass
class _VarPlan:
    name: str
    probe: str
    var: str
    sources: list[_Source]
    disk_dims: tuple[str, ...]
    dims: list[str] = field(default_factory=list)
    specs: list[_DimSpec] = field(default_factory=list)


def _union(lists: list[list[Any]]) -> list[Any]:
    seen: dict[Any, None] = {}
    for lst in lists:
        seen.update(dict.fromkeys(lst))
    return list(seen)


def _layout(var: str, spec: dict[str, Any] | None, first: Path) -> tuple | None:
    """``(dims, coords, shape, members, dtype)`` of ``var`` from its dims.json entry, peeking
    at one shard's header for what an older dims.json lacks (None if unreadable)."""
    spec = spec or {}
    if all(k in spec for k in ("shape", "members", "dtype")):
        shape, members, dtype = tuple(spec["shape"]), int(spec["members"]), np.dtype(spec["dtype"])
    else:
        peeked = _probes.peek_var(first, var)
        if peeked is None:
            return None
        full, dtype = peeked
        shape, members = full[1:], full[0]
    if "dims" in spec and len(spec["dims"]) == len(shape):
        dims = tuple(spec["dims"])
        coords = {d: list(v) for d, v in spec.get("coords", {}).items()}
    else:
        dims, coords = tuple(f"{var}_dim_{j}" for j in range(len(shape))), {}
    return dims, coords, shape, members, dtype


def _entries(path: Path) -> int:
    """How many variables dims.json lists, valid or not (-1 if it does not parse)."""
    try:
        data = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return -1
    return len(data) if isinstance(data, dict) else -1


def _probe_specs(probe_dir: Path, first: Path) -> tuple[list[str], dict[str, Any]]:
    """Variables of a probe and their dims.json specs. A missing or damaged dims.json (the
    only case where a shard is opened here) lists the variables of the first shard and
    takes the damaged specs' dims and coords from a sibling run (``sibling_dims``); sizes
    are then read from the shard's headers."""
    import zipfile

    specs = _probes.read_dims(probe_dir)
    if specs and _entries(probe_dir / _probes.DIMS_FILE) == len(specs):
        return list(specs), specs
    try:
        with zipfile.ZipFile(first) as zf:
            names = [n[:-4] for n in zf.namelist() if n.endswith(".npy")]
    except Exception:
        names = list(specs)
    if any(v not in specs for v in names):
        siblings = _probes.sibling_dims(probe_dir)
        specs = {**{v: {k: spec[k] for k in ("dims", "coords") if k in spec}
                    for v, spec in siblings.items()}, **specs}
    return names, specs


def _index_run(run: RunData) -> dict[str, dict[str, _Source]]:
    """``{probe: {var: _Source}}`` of one run, from dims.json and directory listings."""
    root = run.store.path / PROBES_DIR
    if not root.is_dir():
        return {}
    out: dict[str, dict[str, _Source]] = {}
    for probe_dir in sorted(root.iterdir()):
        if not probe_dir.is_dir() or probe_dir.name.startswith("."):
            continue
        steps = _probes.shard_steps(probe_dir)
        if not steps:
            continue
        names, specs = _probe_specs(probe_dir, steps[0][1])
        for var in names:
            layout = _layout(var, specs.get(var), steps[0][1])
            if layout is None:
                continue
            dims, coords, shape, members, dtype = layout
            out.setdefault(probe_dir.name, {})[var] = _Source(
                run, steps, dims, coords, shape, members, dtype)
    return out


def _same_dims(probe: str, var: str, sources: list[_Source]) -> list[_Source]:
    """The sources whose dims agree with most runs'; the others (e.g. a run whose dims.json
    was damaged) are left out with a LoadWarning."""
    counts: dict[tuple[str, ...], int] = {}
    for s in sources:
        counts[s.dims] = counts.get(s.dims, 0) + 1
    dims = max(counts, key=lambda d: (counts[d], not any("_dim_" in x for x in d)))
    for s in sources:
        if s.dims != dims:
            warnings.warn(
                f"{s.run.label}: {probe}/{var} has dims {s.dims} but other runs have {dims}; "
                "left out",
                LoadWarning,
                stacklevel=5,
            )
    return [s for s in sources if s.dims == dims]


def _plan_var(plan: _VarPlan) -> None:
    plan.sources = _same_dims(plan.probe, plan.var, plan.sources)
    dims = plan.sources[0].dims
    plan.disk_dims = dims
    for j, d in enumerate(dims):
        labelled = [s.coords[d] for s in plan.sources if d in s.coords]
        if labelled:
            plan.specs.append(_DimSpec(labels=_union(labelled)))
        else:
            plan.specs.append(_DimSpec(size=max(s.shape[j] for s in plan.sources)))
        plan.dims.append(dataset_dim(plan.name, d))


def _reconcile_dims(plans: list[_VarPlan], taken: set[str]) -> dict[str, _DimSpec]:
    """Share each shared dim name (``output``, ``head``, ``bin``, ...) across variables;
    a clash (different sizes, labelled vs not, or a core dim name) renames the later
    variable's dim to ``<variable>_<dim>`` with a LoadWarning.
    """
    registry: dict[str, _DimSpec] = {}
    for plan in plans:
        for j, (d, spec) in enumerate(zip(plan.dims, plan.specs)):
            name = d
            known = registry.get(name)
            clash = name in taken or (
                known is not None
                and (
                    (known.labels is None) != (spec.labels is None)
                    or (spec.labels is None and known.size != spec.size)
                )
            )
            if clash:
                name = f"{plan.name}_{d}"
                warnings.warn(
                    f"dim {d!r} of {plan.probe}/{plan.var} clashes with another variable's; "
                    f"loaded as {name!r}",
                    LoadWarning,
                    stacklevel=4,
                )
                known = registry.get(name)
            if known is None:
                registry[name] = _DimSpec(spec.labels, spec.size)
            elif spec.labels is not None:
                known.labels = _union([known.labels or [], spec.labels])
            else:
                known.size = max(known.size, spec.size)
            plan.dims[j] = name
    return registry


def _nan_block(shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    return np.full(shape, np.nan, dtype)


def _read_block(path: Path, var: str, shape: tuple[int, ...], dtype: np.dtype,
                member_pos: list[int], index: list[np.ndarray], masked: list[int]
                ) -> np.ndarray:
    """One chunk (1, 1, n_seeds, 1, *sizes): the run's members placed at their seeds and
    labels, NaN elsewhere and for members diverged by this step."""
    out = np.full(shape, np.nan, dtype)
    arr = _probes.read_var(path, var)
    if arr is None:
        return out
    want = (len(member_pos), *(len(i) for i in index))
    if arr.shape != want:
        warnings.warn(f"{path}: {var} has shape {arr.shape}, expected {want}; left out",
                      LoadWarning, stacklevel=2)
        return out
    target = out[0, 0, :, 0]
    target[np.ix_(member_pos, *index)] = arr
    if masked:
        target[masked] = np.nan
    return out


def _dask_var(plan: _VarPlan, registry: dict[str, _DimSpec], coords: dict[str, Any],
              steps: np.ndarray, seed_index: dict[int, int], mask_diverged: bool) -> Any:
    """The variable as a dask array (one task per chunk), or, without dask installed, the
    same chunks read at once into a numpy array."""
    try:
        import dask.array as dsa
        from dask.base import tokenize
    except ImportError:
        dsa = None

    sizes = [registry[d].length for d in plan.dims]
    n_param, n_width, n_seed = (len(coords[d]) for d in CORE_DIMS)
    dtype = np.result_type(*(s.dtype for s in plan.sources), np.float32)
    block = (1, 1, n_seed, 1, *sizes)
    name = f"widthscan-load-{plan.name}-" + (tokenize(
        plan.name, [(str(s.run.store.path), s.steps) for s in plan.sources], mask_diverged)
        if dsa is not None else "")
    zeros = (0,) * len(sizes)
    graph: dict[tuple, tuple] = {}
    by_run = {(s.run.param, s.run.width): s for s in plan.sources}
    params, widths = list(coords["param"]), list(coords["width"])
    for (ip, param), (iw, width) in itertools.product(enumerate(params), enumerate(widths)):
        src = by_run.get((param, int(width)))
        paths = dict(src.steps) if src is not None else {}
        layout = _placement(plan, src, registry, seed_index) if src is not None else None
        for it, step in enumerate(steps):
            key = (name, ip, iw, 0, it, *zeros)
            path = paths.get(int(step))
            if path is None or layout is None:
                graph[key] = (_nan_block, block, dtype)
                continue
            member_pos, index = layout
            masked = [seed_index[seed] for seed, at in src.run.diverged.items()
                      if mask_diverged and seed in seed_index and step >= at]
            graph[key] = (_read_block, path, plan.var, block, dtype, member_pos, index, masked)
    chunks = ((1,) * n_param, (1,) * n_width, (n_seed,), (1,) * len(steps),
              *((s,) for s in sizes))
    if dsa is None:
        out = np.empty((n_param, n_width, n_seed, len(steps), *sizes), dtype)
        for (_, ip, iw, _, it, *_), (fn, *args) in graph.items():
            out[ip, iw, :, it] = fn(*args)[0, 0, :, 0]
        return out
    return dsa.Array(graph, name, chunks, dtype=dtype)


def _placement(plan: _VarPlan, src: _Source, registry: dict[str, _DimSpec],
               seed_index: dict[int, int]) -> tuple[list[int], list[np.ndarray]] | None:
    """Where one run's values go: seed positions of its members and, per dim, the
    positions of its labels (or 0..n-1 for an unlabelled dim)."""
    if len(src.run.seeds) != src.members:
        warnings.warn(
            f"{src.run.label}: {plan.probe}/{plan.var} has {src.members} members but the run "
            f"lists {len(src.run.seeds)} seeds; left out",
            LoadWarning,
            stacklevel=5,
        )
        return None
    index = []
    for j, (orig, final) in enumerate(zip(plan.disk_dims, plan.dims)):
        labels = registry[final].labels
        if labels is not None and orig in src.coords:
            where = {lab: i for i, lab in enumerate(labels)}
            index.append(np.array([where[x] for x in src.coords[orig]], dtype=np.int64))
        else:
            index.append(np.arange(src.shape[j]))
    return [seed_index[s] for s in src.run.seeds], index


def _mask(arr: np.ndarray, run: RunData, pos: tuple[int, int], seed_index: dict[int, int],
          steps: np.ndarray) -> None:
    for seed, step in run.diverged.items():
        if seed in seed_index:
            arr[pos[0], pos[1], seed_index[seed], steps >= step] = np.nan


def _var_attrs(plan: _VarPlan, sequences: bool) -> dict[str, Any]:
    """``per``: what one entry of the variable's sample dim is: "token" (a predicted token
    position), "sequence" (a probe example of a model that predicts tokens), "example",
    or "member" (no sample dim: one value per network)."""
    sample = next((SAMPLES[d] for d in plan.disk_dims if d in SAMPLES), "member")
    if sample == "example" and sequences:
        sample = "sequence"
    return {"probe": plan.probe, "dims_on_disk": list(plan.disk_dims), "per": sample}


def load(sweep_dir: str | os.PathLike[str], *, mask_diverged: bool = True) -> xr.Dataset:
    """The sweep as an xarray.Dataset (layout in docs/data-model.md).

    Coordinates param (str), width (int, numeric order), seed (int), step (int) and one
    ``<probe>_step`` per probe. Scalars are (param, width, seed, step) numpy arrays; probe
    variables (param, width, seed, <probe>_step, *their dims) dask arrays read on demand.
    Each probe variable keeps its own examples, token positions and layers (dims
    ``<variable>_example``, ``<variable>_position``, ``<variable>_layer``; ``attrs["per"]``
    says "token", "sequence", "example" or "member"). Missing values are NaN; diverged members are
    NaN from their diverged step on. Warns (IncompleteSweepWarning) and lists the runs in
    ``attrs["incomplete"]`` when some runs are not finished; what was repaired or dropped
    while reading (damaged status.json, scalar lines lost or failing their checksum) is
    listed in ``attrs["damaged"]``.
    """
    import xarray as xr

    from widthscan._version import __version__

    root = Path(sweep_dir)
    runs = read_runs(root)
    params = sorted({r.param for r in runs})
    widths = sorted({r.width for r in runs})
    seeds = sorted(
        {s for r in runs for s in r.seeds} | {int(s) for r in runs for s in r.scalars["seed"]}
    )
    seed_index = {s: i for i, s in enumerate(seeds)}
    pw = {(r.param, r.width): (params.index(r.param), widths.index(r.width)) for r in runs}
    shape = (len(params), len(widths), len(seeds))
    coords: dict[str, Any] = {
        "param": np.array(params, dtype=str),
        "width": np.array(widths, dtype=np.int64),
        "seed": np.array(seeds, dtype=np.int64),
    }
    data_vars: dict[str, Any] = {}

    metrics = metric_columns([r.scalars for r in runs])
    if metrics:
        steps = np.unique(np.concatenate([r.scalars["step"].to_numpy(np.int64) for r in runs]))
        coords["step"] = steps
        for m in metrics:
            arr = np.full((*shape, len(steps)), np.nan)
            for r in runs:
                if m in r.scalars:
                    df = r.scalars
                    si = np.array([seed_index[int(x)] for x in df["seed"]], dtype=np.int64)
                    ti = np.searchsorted(steps, df["step"].to_numpy(np.int64))
                    p, w = pw[(r.param, r.width)]
                    arr[p, w, si, ti] = df[m].to_numpy(np.float64)
                if mask_diverged:
                    _mask(arr, r, pw[(r.param, r.width)], seed_index, steps)
            data_vars[m] = ((*CORE_DIMS, "step"), arr)

    index = {r.label: _index_run(r) for r in runs}
    probe_names = sorted({p for found in index.values() for p in found})
    plans: list[_VarPlan] = []
    probe_steps: dict[str, np.ndarray] = {}
    for probe in probe_names:
        sources = {var: [found[probe][var] for found in index.values() if var in
                         found.get(probe, {})] for var in _union(
            [list(found.get(probe, {})) for found in index.values()])}
        probe_steps[probe] = np.unique(np.array(
            [step for srcs in sources.values() for s in srcs for step, _ in s.steps],
            dtype=np.int64))
        coords[f"{probe}_step"] = probe_steps[probe]
        for var, srcs in sources.items():
            plan = _VarPlan(var, probe, var, srcs, ())
            if plan.name in data_vars or any(p.name == plan.name for p in plans):
                plan.name = f"{probe}_{var}"
                warnings.warn(
                    f"variable {var!r} of probe {probe!r} loaded as {plan.name!r} (the name is "
                    "taken)",
                    LoadWarning,
                    stacklevel=2,
                )
            _plan_var(plan)
            plans.append(plan)
    registry = _reconcile_dims(plans, taken=set(coords))
    for d, spec in registry.items():
        if spec.labels is not None:
            coords[d] = np.asarray(spec.labels)
    sequences = any("position" in plan.disk_dims for plan in plans)
    for plan in plans:
        arr = _dask_var(plan, registry, coords, probe_steps[plan.probe], seed_index,
                        mask_diverged)
        data_vars[plan.name] = xr.Variable(
            (*CORE_DIMS, f"{plan.probe}_step", *plan.dims), arr, attrs=_var_attrs(plan, sequences))

    incomplete = [r.label for r in runs if r.state not in FINISHED_STATES]
    if incomplete:
        warnings.warn(
            f"sweep {root} is incomplete: {len(incomplete)} of {len(runs)} runs are not "
            f"finished ({', '.join(incomplete)}); their missing steps are NaN",
            IncompleteSweepWarning,
            stacklevel=2,
        )
    attrs = {
        "incomplete": incomplete,
        "diverged": [
            f"{r.label},seed={seed},step={step}"
            for r in runs
            for seed, step in sorted(r.diverged.items())
        ],
        "config": read_config_text(root),
        "damaged": [f"{r.label}: {note}" for r in runs
                    for note in damage_notes(r.status, r.scalars)],
        "widthscan_version": __version__,
    }
    return xr.Dataset(data_vars=data_vars, coords=coords, attrs=attrs)

"""Read a sweep directory into one xarray.Dataset (layout in docs/data-model.md)."""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from widthscan.store.probes import ProbeSeries
from widthscan.store.run import FINISHED_STATES
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


class IncompleteSweepWarning(UserWarning):
    """Some runs of the loaded sweep are not finished (pending, running or failed)."""


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
    dims: list[str]
    entries: list[tuple[RunData, ProbeSeries]]
    specs: list[_DimSpec]


def _union(lists: list[list[Any]]) -> list[Any]:
    seen: dict[Any, None] = {}
    for lst in lists:
        seen.update(dict.fromkeys(lst))
    return list(seen)


def _plan_var(probe: str, var: str, entries: list[tuple[RunData, ProbeSeries]]) -> _VarPlan:
    entries = _same_dims(probe, var, entries)
    dims = entries[0][1].dims
    specs = []
    for j, d in enumerate(dims):
        labelled = [s.coords[d].tolist() for _, s in entries if d in s.coords]
        if labelled:
            specs.append(_DimSpec(labels=_union(labelled)))
        else:
            specs.append(_DimSpec(size=max(s.values.shape[2 + j] for _, s in entries)))
    return _VarPlan(var, probe, var, list(dims), entries, specs)


def _same_dims(
    probe: str, var: str, entries: list[tuple[RunData, ProbeSeries]]
) -> list[tuple[RunData, ProbeSeries]]:
    """The entries whose dims agree with most runs'; the others (e.g. a run whose dims.json
    was damaged) are left out with a LoadWarning."""
    counts: dict[tuple[str, ...], int] = {}
    for _, s in entries:
        counts[s.dims] = counts.get(s.dims, 0) + 1
    dims = max(counts, key=lambda d: (counts[d], not any("_dim_" in x for x in d)))
    for r, s in entries:
        if s.dims != dims:
            warnings.warn(
                f"{r.label}: {probe}/{var} has dims {s.dims} but other runs have {dims}; "
                "left out",
                LoadWarning,
                stacklevel=5,
            )
    return [(r, s) for r, s in entries if s.dims == dims]


def _reconcile_dims(plans: list[_VarPlan], taken: set[str]) -> dict[str, _DimSpec]:
    """Share each dim name across variables; a clash (different sizes, labelled vs not,
    or a core dim name) renames the later variable's dim to ``<probe>_<dim>``.
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
                name = f"{plan.probe}_{d}"
                warnings.warn(
                    f"dim {d!r} of {plan.probe}/{plan.var} clashes with another variable's; "
                    f"renamed to {name!r}",
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


def _place(
    arr: np.ndarray,
    plan: _VarPlan,
    run: RunData,
    s: ProbeSeries,
    pos: tuple[int, int],
    seed_index: dict[int, int],
    steps: np.ndarray,
    registry: dict[str, _DimSpec],
) -> None:
    k = s.values.shape[1]
    if len(run.seeds) != k:
        warnings.warn(
            f"{run.label}: {plan.probe}/{plan.var} has {k} members but the run lists "
            f"{len(run.seeds)} seeds; left out",
            LoadWarning,
            stacklevel=4,
        )
        return
    index: list[Any] = [[seed_index[x] for x in run.seeds], np.searchsorted(steps, s.steps)]
    for j, (orig, final) in enumerate(zip(s.dims, plan.dims)):
        n = s.values.shape[2 + j]
        labels = registry[final].labels
        if labels is not None and orig in s.coords:
            where = {lab: i for i, lab in enumerate(labels)}
            index.append([where[x] for x in s.coords[orig].tolist()])
        else:
            index.append(np.arange(n))
    arr[pos][np.ix_(*index)] = np.swapaxes(s.values, 0, 1)


def _mask(
    arr: np.ndarray,
    run: RunData,
    pos: tuple[int, int],
    seed_index: dict[int, int],
    steps: np.ndarray,
) -> None:
    for seed, step in run.diverged.items():
        if seed in seed_index:
            arr[pos[0], pos[1], seed_index[seed], steps >= step] = np.nan


def load(sweep_dir: str | os.PathLike[str], *, mask_diverged: bool = True) -> xr.Dataset:
    """The sweep as an xarray.Dataset (layout in docs/data-model.md).

    Coordinates param (str), width (int, numeric order), seed (int), step (int) and one
    ``<probe>_step`` per probe. Scalars are (param, width, seed, step); probe variables
    (param, width, seed, <probe>_step, *their dims). Missing values are NaN; diverged
    members are NaN from their diverged step on. Warns (IncompleteSweepWarning) and lists
    the runs in ``attrs["incomplete"]`` when some runs are not finished; what was repaired
    or dropped while reading (damaged status.json, scalar lines lost or failing their
    checksum) is listed in ``attrs["damaged"]``.
    """
    import xarray as xr

    from widthscan._version import __version__

    root = Path(sweep_dir)
    runs = read_runs(root, with_probes=True)
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

    probe_names = sorted({p for r in runs for p in r.probes})
    plans: list[_VarPlan] = []
    probe_steps: dict[str, np.ndarray] = {}
    for probe in probe_names:
        series = [(r, s) for r in runs for s in r.probes.get(probe, {}).values()]
        probe_steps[probe] = np.unique(np.concatenate([s.steps for _, s in series]))
        coords[f"{probe}_step"] = probe_steps[probe]
        var_names = _union([list(r.probes.get(probe, {})) for r in runs])
        for var in var_names:
            entries = [(r, r.probes[probe][var]) for r in runs if var in r.probes.get(probe, {})]
            plan = _plan_var(probe, var, entries)
            if plan.name in data_vars or any(p.name == plan.name for p in plans):
                plan.name = f"{probe}_{var}"
                warnings.warn(
                    f"variable {var!r} of probe {probe!r} renamed to {plan.name!r}",
                    LoadWarning,
                    stacklevel=2,
                )
            plans.append(plan)
    registry = _reconcile_dims(plans, taken=set(coords))
    for d, spec in registry.items():
        if spec.labels is not None:
            coords[d] = np.asarray(spec.labels)
    for plan in plans:
        steps = probe_steps[plan.probe]
        dtype = np.result_type(*(s.values.dtype for _, s in plan.entries), np.float32)
        sizes = [registry[d].length for d in plan.dims]
        arr = np.full((*shape, len(steps), *sizes), np.nan, dtype=dtype)
        for r, s in plan.entries:
            _place(arr, plan, r, s, pw[(r.param, r.width)], seed_index, steps, registry)
        if mask_diverged:
            for r in runs:
                _mask(arr, r, pw[(r.param, r.width)], seed_index, steps)
        data_vars[plan.name] = ((*CORE_DIMS, f"{plan.probe}_step", *plan.dims), arr)

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

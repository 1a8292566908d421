"""What every section builder sees: the Dataset, its config, cached analysis results,
where figures go, and the caveats the analysis raised.

Analysis functions warn (``UserWarning``) about poorly determined fits; the report
turns those into notes shown in the section that uses the result, so a reader
sees them. Any other warning (a RuntimeWarning from numpy, say) is re-emitted
unchanged: the report must not hide it.
"""

from __future__ import annotations

import contextlib
import io
import re
import sys
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr
from matplotlib.figure import Figure

from widthscan.analysis import step_dim
from widthscan.analysis.bias_variance import stored_targets
from widthscan.analysis.dims import layer_dim
from widthscan.report import style
from widthscan.report.html import FigureOut

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

LOSS_UNITS = {"mse": "MSE", "ce": "cross-entropy, nats"}
_DIVERGED = re.compile(r"param=(?P<param>[^,]+),width=(?P<width>\d+),seed=(?P<seed>-?\d+),"
                       r"step=(?P<step>-?\d+)")


class Skip(Exception):
    """Raised by a section builder: the section is left out, with this reason."""


@contextlib.contextmanager
def capture_notes(notes: list[str]) -> Iterator[None]:
    """Collect UserWarnings raised inside into ``notes``; re-emit every other warning."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    for w in caught:
        if issubclass(w.category, UserWarning) and not issubclass(w.category, DeprecationWarning):
            msg = str(w.message)
            if msg not in notes:
                notes.append(msg)
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)


def parse_config(text: str) -> dict[str, Any]:
    """The sweep config (TOML text in ``ds.attrs["config"]``) as a dict; {} if unreadable."""
    try:
        return tomllib.loads(text) if text else {}
    except (tomllib.TOMLDecodeError, TypeError):
        return {}


def _as_list(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value] if value else []
    return [str(v) for v in np.asarray(value).ravel().tolist()]


@dataclass
class Context:
    ds: xr.Dataset
    fig_dir: Path
    config: dict[str, Any] = field(default_factory=dict)
    figures_written: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    _cache: dict[str, tuple[Any, list[str]]] = field(default_factory=dict)

    # ------------------------------------------------------------ data facts

    def has(self, *names: str) -> bool:
        return all(n in self.ds.data_vars for n in names)

    @property
    def params(self) -> list[str]:
        return sorted((str(p) for p in self.ds["param"].values), key=style.param_sort_key)

    @property
    def widths(self) -> list[int]:
        return sorted(int(w) for w in self.ds["width"].values)

    @property
    def n_seeds(self) -> int:
        return int(self.ds.sizes.get("seed", 1))

    def section(self, key: str) -> dict[str, Any]:
        value = self.config.get(key, {})
        return value if isinstance(value, dict) else {}

    @property
    def loss_kind(self) -> str | None:
        """"mse" or "ce" when known (attrs, then the config's train.loss), else None."""
        kind = self.ds.attrs.get("loss") or self.section("train").get("loss")
        return kind if kind in LOSS_UNITS else None

    def loss_label(self, what: str = "loss") -> str:
        kind = self.loss_kind
        return f"{what} ({LOSS_UNITS[kind]})" if kind else f"{what} (the task's loss)"

    @property
    def fit_var(self) -> str | None:
        """The loss the power law is fitted on: probe_loss (held out, no batch noise) when
        measured, else the training loss."""
        for name in ("probe_loss", "loss"):
            if self.has(name):
                return name
        return None

    def last_step(self, var: str) -> int:
        da = self.ds[var]
        return int(da[step_dim(da)].values[-1])

    def last_dims(self, var: str, n: int = 2) -> tuple[str, ...]:
        """The last ``n`` dims of ``var`` (e.g. example/example2 of a kernel, whatever the
        store named them)."""
        return tuple(str(d) for d in self.ds[var].dims[-n:])

    def layer(self, var: str) -> str | None:
        """The layer shown for ``var``: the last one it lists (closest to the output)."""
        da = self.ds[var]
        dim = layer_dim(da)
        if dim is None or dim not in da.coords:
            return None
        return str(da[dim].values[-1])

    def sel_layer(self, da: xr.DataArray, var: str) -> xr.DataArray:
        """``da`` (``var`` or a result computed from it) at the layer shown for ``var``."""
        dim = layer_dim(da)
        if dim is None:
            return da
        layer = self.layer(var)
        return da.sel({dim: layer}) if layer is not None else da.isel({dim: -1})

    def diverged(self) -> dict[tuple[str, int], list[tuple[int, int]]]:
        """(param, width) -> [(seed, step)] from ``ds.attrs["diverged"]``."""
        out: dict[tuple[str, int], list[tuple[int, int]]] = {}
        for entry in _as_list(self.ds.attrs.get("diverged")):
            m = _DIVERGED.search(entry)
            if m:
                key = (m["param"], int(m["width"]))
                out.setdefault(key, []).append((int(m["seed"]), int(m["step"])))
        return out

    def incomplete(self) -> list[str]:
        return _as_list(self.ds.attrs.get("incomplete"))

    def lr(self) -> float | None:
        value = self.section("optimizer").get("lr")
        return float(value) if isinstance(value, int | float) else None

    def targets(self) -> xr.DataArray | None:
        """``ds["targets"]`` reduced to (example[, output]) (the same for every member;
        ``example`` is a token position for language models). Targets with one value per
        example are class labels (regression targets carry an output dim), returned as
        int64 (the loader stores every variable as float)."""
        if not self.has("targets"):
            return None
        return stored_targets(self.ds["targets"])

    # ------------------------------------------------------------ analysis results

    def get(self, key: str, fn: Callable[[], Any], show_notes: bool = True) -> Any:
        """``fn()`` computed once per report; its analysis caveats join the notes of
        the section that asks for them (``show_notes``)."""
        if key not in self._cache:
            notes: list[str] = []
            with capture_notes(notes):
                result = fn()
            self._cache[key] = (result, notes)
        result, notes = self._cache[key]
        if show_notes:
            self.notes.extend(n for n in notes if n not in self.notes)
        return result

    # ------------------------------------------------------------ figures

    def figure(self, name: str, fig: Figure, caption: str) -> FigureOut:
        """Write ``fig`` to figures/<name>.png and .pdf; return it for embedding."""
        self.fig_dir.mkdir(parents=True, exist_ok=True)
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=style.DPI, metadata={"Software": None})
        png = buf.getvalue()
        (self.fig_dir / f"{name}.png").write_bytes(png)
        # The PNG draw has placed everything; keep that layout for the PDF (a second
        # constrained-layout pass costs as much as the drawing itself).
        fig.set_layout_engine("none")
        fig.savefig(self.fig_dir / f"{name}.pdf", format="pdf",
                    metadata={"CreationDate": None, "Creator": None, "Producer": None})
        w, h = (round(float(v) * style.DPI) for v in fig.get_size_inches())
        fig.clear()
        self.figures_written.append(name)
        return FigureOut(name=name, caption=caption, png=png, width_px=w, height_px=h)

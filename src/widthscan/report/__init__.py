"""widthscan.report: one self-contained HTML page (plus PNG/PDF figures) for a sweep.

    import widthscan as ws
    ws.report(ws.load("runs/demo"), "runs/demo/report.html")
    ws.report("runs/demo")                  # the same; writes runs/demo/report.html

Every number and curve comes from ``widthscan.analysis``; this package only lays
them out. Sections appear only for what the sweep measured (see ``build.SECTIONS``).
"""

from __future__ import annotations

import os
import sys
import types
from pathlib import Path

import matplotlib

# Figures are drawn on matplotlib.figure.Figure objects, never through pyplot, so any
# backend works; Agg keeps headless runs (CLI, clusters) off the display. An interactive
# session that already chose its backend (pyplot or IPython loaded) keeps it.
if "matplotlib.pyplot" not in sys.modules and "IPython" not in sys.modules:
    matplotlib.use("Agg")

import xarray as xr

from widthscan.report.build import SECTIONS, build_report

__all__ = ["SECTIONS", "report"]


def report(data: xr.Dataset | str | os.PathLike[str],
           path: str | os.PathLike[str] | None = None, progress: bool = True) -> Path:
    """Write the report of a sweep and return the path of its HTML file.

    ``data``: a Dataset as returned by ``widthscan.load`` or a sweep directory (loaded
    with ``widthscan.store.load``). ``path``: the HTML file to write; defaults to
    ``<sweep dir>/report.html`` when ``data`` is a directory. Figures are written as
    PNG and PDF to ``<dir of path>/figures/``; the HTML embeds the PNGs, so it can be
    moved and opened alone (no JavaScript, no network). ``progress``: one line per
    section on stderr as it is built.
    """
    if isinstance(data, xr.Dataset):
        ds = data
        if path is None:
            raise ValueError("report(ds, path): give the HTML path when passing a Dataset")
    elif isinstance(data, str | os.PathLike):
        from widthscan.store import load

        ds = load(data)
        if path is None:
            path = Path(data) / "report.html"
    else:
        raise TypeError(f"report() takes an xarray.Dataset or a sweep directory, "
                        f"not {type(data).__name__}")
    return build_report(ds, Path(path), _stderr_line if progress else None)


def _stderr_line(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


class _CallableModule(types.ModuleType):
    """``widthscan.report`` is both this package and the function: importing the package
    sets the attribute ``widthscan.report`` to the module (shadowing the lazy attribute of
    ``widthscan/__init__``), so the module itself forwards calls to :func:`report`."""

    def __call__(self, *args, **kwargs) -> Path:
        return report(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule

"""``CheckResult``: everything a check measured, its verdict and the terminal tables."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import pandas as pd

from widthscan.check.coords import CoordRow
from widthscan.check.dynamics import Dynamics
from widthscan.check.roles import Finding, RoleRow
from widthscan.check.verdict import LayerVerdict, Slope, first_cause


@dataclass
class CheckResult:
    """A width-consistency check of one model under one parameterization and optimizer.

    ``ok`` holds when no structural finding was made, every layer is width-independent and
    (if run) no member of the dynamics run diverged; the dynamics' distance trend is reported.
    """

    model: str
    param: str
    optimizer: str
    lr: float
    widths: list[int]
    base_width: int
    seeds: list[int]
    steps: int
    data: str
    tol: float
    roles: dict[str, RoleRow]
    findings: list[Finding]
    layers: list[LayerVerdict]
    coords: list[CoordRow] = field(repr=False)
    dynamics: Dynamics | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return (not self.findings and all(v.ok for v in self.layers)
                and (self.dynamics is None or self.dynamics.ok))

    def flagged(self) -> list[str]:
        """Names of the layers flagged by a finding or a verdict (forward order first)."""
        names = [v.layer for v in self.layers if not v.ok]
        names += [layer for f in self.findings for layer in f.layers]
        return list(dict.fromkeys(names))

    def frame(self) -> pd.DataFrame:
        """The per-layer table: slopes, intervals, predictions, verdict and hint."""
        rows = []
        for v in self.layers:
            row = {"layer": v.layer, "readout": v.readout,
                   "features": "/".join(str(f) for f in v.features)}
            for m, s in (("init", v.init), ("change", v.change)):
                row |= {f"{m}_slope": s.value, f"{m}_low": s.low, f"{m}_high": s.high,
                        f"{m}_expected": s.expected}
            row |= {"verdict": v.verdict, "measure": v.measure, "hint": v.hint}
            rows.append(row)
        return pd.DataFrame(rows)

    def cause(self) -> str:
        """One line naming the likely source of inconsistency ("" when consistent)."""
        if self.findings:
            return self.findings[0].message
        first = first_cause(self.layers)
        if first is not None:
            return f"{first.layer}: {first.hint}"
        if self.dynamics is not None and not self.dynamics.ok:
            return self.dynamics.summary()
        return ""

    def roles_text(self) -> str:
        rows = [[r.name, "x".join(map(str, r.shape)) or "scalar", r.role,
                 "keep" if r.init_std is None else f"{r.init_std:.3g}", f"{r.multiplier:.3g}",
                 f"{r.lr_scale:.3g}", r.note] for r in self.roles.values()]
        return _grid(["parameter", "shape", "role", "init std", "multiplier", "lr scale",
                      "note"], rows)

    def layers_text(self) -> str:
        rows = [[v.layer + (" (readout)" if v.readout else ""),
                 "/".join(str(f) for f in v.features), _slope(v.init), _slope(v.change),
                 v.verdict, v.hint] for v in self.layers]
        return _grid(["layer", "features", "init slope", "change slope", "verdict", "hint"],
                     rows)

    def text(self) -> str:
        """The whole terminal report."""
        head = (f"widthscan check {self.model}: param={self.param} optimizer={self.optimizer} "
                f"lr={self.lr:g}; widths {self.widths} (base {self.base_width}); data "
                f"{self.data}; seeds {self.seeds}; {self.steps} steps")
        parts = [head, "", f"roles at width {self.widths[-1]}:", self.roles_text(), "",
                 "coordinate check: log-log slope of RMS activation vs width, 95% interval, "
                 f"(predicted); tolerance {self.tol:g}:", self.layers_text()]
        if self.findings:
            parts += ["", "structure:", *(f"  - {f.message}" for f in self.findings)]
        if self.dynamics is not None:
            parts += ["", f"dynamics: {self.dynamics.summary()}"]
        verdict = "width-consistent" if self.ok else "NOT width-consistent"
        parts += ["", f"verdict: {verdict}" + ("" if self.ok else f"; likely cause: "
                                                f"{self.cause()}")]
        if self.seconds:
            parts.append(f"({self.seconds:.1f} s)")
        return "\n".join(parts)

    __str__ = text


def _slope(s: Slope) -> str:
    if s.value != s.value:
        return "nan"
    if s.value == float("inf"):
        return "zero"
    return f"{s.value:+.2f} [{s.low:+.2f},{s.high:+.2f}] ({s.expected:+.1f})"


def _grid(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows)]
    lines = ["  ".join(str(x).ljust(w) for x, w in zip(headers, widths)).rstrip()]
    lines += ["  ".join(str(x).ljust(w) for x, w in zip(row, widths)).rstrip() for row in rows]
    return "\n".join("  " + line for line in lines)

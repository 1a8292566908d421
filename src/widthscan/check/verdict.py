"""Slopes, verdicts and hints of a coordinate check.

For each layer and each measure (``init``: RMS at init; ``change``: RMS of the change after a
few steps) the log-log slope against width is fitted by least squares over every (width, seed)
point; its interval is slope +- t(0.975, n - 2) * standard error, so the spread across seeds
widens it. The slope is compared with what the parameterization predicts (``expected``): 0,
except under muP / mean-field, where the readout and attention logits start at O(N^-1/2)
(random readout with a 1/N multiplier; q.k / d_head with random q and k).

A measure is off when ``slope - expected`` exceeds ``tol`` (default ``TOL`` = 0.35) in size
and its interval excludes ``expected``: "grows" or "shrinks". muP's exponents come in steps of
1/2, so a broken layer is off by >= 0.5, while finite-width transients of correct models
(an O(N^-1/2) readout feeding extra gradient at narrow widths, attention that flattens as its
logits shrink) measured <= 0.3 at widths >= 32 in the package's tests.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np
from scipy import stats

from widthscan.check.coords import LOGITS, CoordRow
from widthscan.check.roles import Finding, RoleRow, module_of

TOL = 0.35
MEASURES = ("init", "change")
FEATURE_LEARNING = ("mup", "mf")


@dataclass(frozen=True)
class Slope:
    """Log-log slope of a measure against width, its 95% interval and the prediction."""

    value: float
    low: float
    high: float
    expected: float

    @property
    def deviation(self) -> float:
        return self.value - self.expected

    def verdict(self, tol: float, one_sided: bool = False) -> str:
        """One of: "grows" / "shrinks" (off by more than ``tol``, interval excluding the
        prediction), "diverged" (non-finite values), "zero" (all values 0) or
        "width-independent"; ``one_sided``: never "shrinks"."""
        if not math.isfinite(self.value):
            return "diverged" if self.value != self.value else "zero"
        d = self.deviation
        if d > tol and self.low > self.expected:
            return "grows"
        if d < -tol and self.high < self.expected and not one_sided:
            return "shrinks"
        return "width-independent"


@dataclass(frozen=True)
class LayerVerdict:
    """One layer: its slopes, verdict ("width-independent" | "grows" | "shrinks" |
    "diverged"), the measure that decided it and a hint naming the likely cause."""

    layer: str
    order: int
    readout: bool
    features: tuple[int, ...]
    init: Slope
    change: Slope
    verdict: str
    measure: str
    hint: str

    @property
    def ok(self) -> bool:
        return self.verdict == "width-independent"


def fit_slope(widths: Sequence[float], values: Sequence[float], expected: float) -> Slope:
    """Slope of log(values) on log(widths), over all points; NaN slope if any value is not
    finite (diverged), +inf marker ("zero") if every value is 0."""
    v = np.asarray(values, np.float64)
    if not np.isfinite(v).all():
        return Slope(float("nan"), float("nan"), float("nan"), expected)
    if (v <= 0).all():
        return Slope(float("inf"), float("inf"), float("inf"), expected)
    keep = v > 0
    x, y = np.log(np.asarray(widths, np.float64)[keep]), np.log(v[keep])
    if len(np.unique(x)) < 2:
        return Slope(0.0, -math.inf, math.inf, expected)
    fit = stats.linregress(x, y)
    n = len(x)
    half = stats.t.ppf(0.975, n - 2) * fit.stderr if n > 2 else math.inf
    return Slope(float(fit.slope), float(fit.slope - half), float(fit.slope + half), expected)


def expected_slopes(layer: str, readout: bool, param: str) -> dict[str, float]:
    """The parameterization's predicted slopes of ``init`` and ``change``."""
    if param not in FEATURE_LEARNING:
        return {"init": 0.0, "change": 0.0}
    logits = LOGITS in layer
    return {"init": -0.5 if readout or logits else 0.0, "change": -0.5 if logits else 0.0}


def _params_of(layer: str, table: Mapping[str, RoleRow]) -> list[RoleRow]:
    module = layer.split(LOGITS)[0].split("#")[0]
    return [r for r in table.values() if module_of(r.name) == module]


def hint(layer: str, readout: bool, slope: Slope, measure: str, verdict: str,
         table: Mapping[str, RoleRow], param: str) -> str:
    """A one-line guess at the cause of an off measure."""
    power = f"N^{slope.deviation:+.2f}"
    what = "at init" if measure == "init" else "after the first steps"
    rows = [r for r in _params_of(layer, table) if len(r.shape) >= 2]
    if verdict == "diverged":
        return "non-finite values: training diverged at some width (lower lr, or fix the " \
               "first layer that grows)"
    if LOGITS in layer and verdict == "grows" and param in FEATURE_LEARNING:
        return (f"attention logits grow as {power} relative to muP {what}: set qk_scale "
                "1/d_head (not 1/sqrt(d_head)), or give the attention module head_dim and "
                "qk_scale attributes so parametrize sets it")
    if readout and verdict == "grows":
        roles = ", ".join(f"{r.name} has role '{r.role}'" for r in rows if r.role != "output")
        return (f"readout grows as {power} {what}: is its output multiplier 1/N?"
                + (f" ({roles}, expected 'output')" if roles else ""))
    if verdict == "shrinks" and any(r.role == "output" for r in rows) and not readout:
        return (f"shrinks as {power} {what}: this layer has role 'output' but is not the "
                "readout; does it ignore the width?")
    names = ", ".join(f"{r.name} ({r.role})" for r in rows) or "its parameters"
    return f"{verdict} as {power} {what}: check init, multiplier and lr of {names}"


def layer_verdicts(rows: Sequence[CoordRow], table: Mapping[str, RoleRow], param: str,
                   tol: float = TOL) -> list[LayerVerdict]:
    """One LayerVerdict per layer, in forward order."""
    by: dict[str, list[CoordRow]] = {}
    for r in rows:
        by.setdefault(r.layer, []).append(r)
    out = []
    for layer, rs in by.items():
        rs = sorted(rs, key=lambda r: (r.width, r.seed))
        readout = any(r.readout for r in rs)
        exp = expected_slopes(layer, readout, param)
        widths = [r.width for r in rs]
        slopes = {m: fit_slope(widths, [getattr(r, m) for r in rs], exp[m]) for m in MEASURES}
        verdict, measure, text = "width-independent", "", ""
        for m in MEASURES:
            v = slopes[m].verdict(tol, one_sided=readout and m == "change")
            if v in ("grows", "shrinks", "diverged"):
                verdict, measure = v, m
                text = hint(layer, readout, slopes[m], m, v, table, param)
                break
        feats = tuple(dict.fromkeys((r.width, r.features) for r in rs))
        out.append(LayerVerdict(layer, min(r.order for r in rs), readout,
                                tuple(f for _, f in feats), slopes["init"], slopes["change"],
                                verdict, measure, text))
    return sorted(out, key=lambda v: v.order)


def ignores_width(verdicts: Sequence[LayerVerdict]) -> list[Finding]:
    """Layers (not the readout, not logits) whose feature count is the same at every width."""
    out = []
    for v in verdicts:
        if v.readout or LOGITS in v.layer or v.layer == "(model)" or len(v.features) < 2:
            continue
        if len(set(v.features)) == 1:
            out.append(Finding("ignores-width", (v.layer,),
                               f"this layer ignores the width: {v.layer} has {v.features[0]} "
                               "output features at every width (a hidden layer built with a "
                               "fixed width?)"))
    return out


def readout_roles(verdicts: Sequence[LayerVerdict], table: Mapping[str, RoleRow],
                  param: str, tied_layers: set[str]) -> list[Finding]:
    """The readout's matrix parameters should have role 'output' (not for SP, where roles
    do not matter)."""
    if param == "sp":
        return []
    out = []
    for v in verdicts:
        if not v.readout or v.layer in tied_layers:
            continue
        for r in _params_of(v.layer, table):
            if len(r.shape) >= 2 and r.role != "output":
                out.append(Finding(
                    "readout-role", (v.layer,),
                    f"readout {v.layer}: {r.name} {r.shape} got role '{r.role}', not "
                    f"'output', so no 1/N multiplier; store it as [out, in] or pass "
                    f"roles={{'{r.name}': 'output'}}"))
    return out


def explain(verdicts: Sequence[LayerVerdict], findings: Sequence[Finding]
            ) -> list[LayerVerdict]:
    """Hints that name the cause: a layer with a structural finding gets its message; later
    off layers say which earlier layer they may follow from."""
    message = {}
    for f in findings:
        for layer in f.layers:
            message.setdefault(layer, f.message)
    first = first_cause(verdicts)
    out = []
    for v in verdicts:
        if v.layer in message:
            v = replace(v, hint=message[v.layer])
        elif not v.ok and first is not None and v.layer != first.layer:
            v = replace(v, hint=f"{v.hint} (may follow from {first.layer})")
        out.append(v)
    return out


def first_cause(verdicts: Sequence[LayerVerdict]) -> LayerVerdict | None:
    """The likely source: the first layer off at init, else the first off after steps."""
    for measure in MEASURES:
        for v in verdicts:
            if not v.ok and v.measure == measure:
                return v
    return next((v for v in verdicts if not v.ok), None)

"""Claims of the paper judged on a loaded sweep: statistic, threshold, verdict.

A *claim* is one sentence of the paper turned into a statistic of the loaded sweep, a
comparison with a threshold, and a verdict: PASS when the whole confidence interval of the
statistic (percentile bootstrap over seeds) is on the paper's side of the threshold, FAIL
when it is entirely on the other side, INCONCLUSIVE when it straddles the threshold or the
data cannot decide (too few widths, diverged or missing runs).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal

import numpy as np
import xarray as xr

PASS, FAIL, INCONCLUSIVE = "PASS", "FAIL", "INCONCLUSIVE"
VERDICTS = (PASS, FAIL, INCONCLUSIVE)
CI = 0.9
NAME_PREFIX = "paper:"


class Undecidable(Exception):
    """The data cannot decide a statistic; the message says why (INCONCLUSIVE)."""


@dataclass(frozen=True)
class Estimate:
    """A statistic's value, its bootstrap draws (None without several seeds) and, when
    non-empty, why the data cannot decide it."""

    value: float
    samples: np.ndarray | None = None
    reason: str = ""
    note: str = ""
    bounds: tuple[float, float] | None = None

    def interval(self, ci: float = CI) -> tuple[float, float]:
        """Percentile interval of level ``ci`` of the draws (``bounds`` when the
        statistic comes with its own interval; the value itself without either)."""
        if self.bounds is not None:
            return self.bounds
        if self.samples is None or not len(self.samples):
            return self.value, self.value
        s = np.asarray(self.samples, np.float64)
        s = s[~np.isnan(s)]
        if not len(s):
            return np.nan, np.nan
        q = np.quantile(s, [(1 - ci) / 2, (1 + ci) / 2], method="nearest")
        return float(q[0]), float(q[1])


@dataclass(frozen=True)
class Claim:
    """One claim of the paper: ``statistic`` (computed by ``measure`` on the part's
    Dataset) compared with ``threshold`` by ``op``."""

    id: str
    text: str
    figures: str
    part: str
    statistic: str
    op: Literal["<", ">"]
    threshold: float
    measure: Callable[[xr.Dataset], Estimate]
    why: str = ""

    @property
    def rule(self) -> str:
        return f"{self.statistic} {self.op} {self.threshold:g}"


@dataclass(frozen=True)
class ClaimResult:
    claim: Claim
    estimate: Estimate
    verdict: str
    detail: str

    def row(self) -> dict[str, str]:
        """The table row: claim, figure, statistic with threshold, measured, verdict."""
        e = self.estimate
        lo, hi = e.interval()
        measured = "—" if not np.isfinite(e.value) and not np.isinf(e.value) else _fmt(e.value)
        has_ci = e.samples is not None or e.bounds is not None
        if has_ci and np.isfinite(lo) and np.isfinite(hi) and not e.reason:
            measured += f" [{_fmt(lo)}, {_fmt(hi)}]"
        return {"claim": self.claim.text, "figures": self.claim.figures, "part": self.claim.part,
                "rule": self.claim.rule, "measured": measured, "verdict": self.verdict,
                "detail": self.detail}


def _fmt(x: float) -> str:
    if np.isinf(x):
        return "inf" if x > 0 else "-inf"
    return f"{x:.3g}"


def decide(claim: Claim, estimate: Estimate, ci: float = CI) -> ClaimResult:
    """The verdict of ``claim`` on ``estimate`` (see the module docstring)."""
    if estimate.reason:
        return ClaimResult(claim, estimate, INCONCLUSIVE, estimate.reason)
    if np.isnan(estimate.value):
        return ClaimResult(claim, estimate, INCONCLUSIVE, "the statistic is NaN")
    lo, hi = estimate.interval(ci)
    if np.isnan(lo) or np.isnan(hi):
        return ClaimResult(claim, estimate, INCONCLUSIVE, "no finite bootstrap draw")

    def holds(x: float) -> bool:
        return x < claim.threshold if claim.op == "<" else x > claim.threshold

    where = (f"{int(ci * 100)}% interval [{_fmt(lo)}, {_fmt(hi)}]"
             if estimate.samples is not None or estimate.bounds is not None
             else f"value {_fmt(estimate.value)} (no interval)")
    note = f"; {estimate.note}" if estimate.note else ""
    if holds(lo) and holds(hi):
        return ClaimResult(claim, estimate, PASS, f"{where} {claim.op} {claim.threshold:g}{note}")
    if not holds(lo) and not holds(hi):
        return ClaimResult(claim, estimate, FAIL,
                           f"{where} not {claim.op} {claim.threshold:g}{note}")
    return ClaimResult(claim, estimate, INCONCLUSIVE,
                       f"{where} straddles {claim.threshold:g}{note}")


def evaluate_claim(claim: Claim, ds: xr.Dataset) -> ClaimResult:
    """``decide(claim, claim.measure(ds))``; an Undecidable measure is INCONCLUSIVE."""
    try:
        estimate = claim.measure(ds)
    except Undecidable as why:
        estimate = Estimate(np.nan, None, str(why))
    except (KeyError, ValueError, IndexError) as err:  # data the statistic cannot read
        estimate = Estimate(np.nan, None, f"could not compute: {type(err).__name__}: {err}")
    return decide(claim, estimate)


@dataclass(frozen=True)
class ClaimSet:
    """The claims of one experiment of the paper, each about one *part* (one sweep)."""

    name: str
    title: str
    figures: str
    summary: str
    claims: tuple[Claim, ...]

    def claims_of(self, part: str) -> list[Claim]:
        return [c for c in self.claims if c.part == part]

    def evaluate(self, datasets: Mapping[str, xr.Dataset]) -> list[ClaimResult]:
        """Every claim on the Dataset of its part (a missing part is INCONCLUSIVE)."""
        results = []
        for claim in self.claims:
            ds = datasets.get(claim.part)
            if ds is None:
                results.append(ClaimResult(claim, Estimate(np.nan), INCONCLUSIVE,
                                           f"part {claim.part!r} was not run"))
            else:
                results.append(evaluate_claim(claim, ds))
        return results


def sweep_name(experiment: str, part: str, scale: str) -> str:
    """The config ``name`` of a reproduce sweep: ``paper:<experiment>:<part>:<scale>``."""
    return f"{NAME_PREFIX}{experiment}:{part}:{scale}"


def parse_sweep_name(name: str) -> tuple[str, str, str] | None:
    """(experiment, part, scale) of a reproduce sweep's config name, else None."""
    if not isinstance(name, str) or not name.startswith(NAME_PREFIX):
        return None
    bits = name[len(NAME_PREFIX):].split(":")
    return (bits[0], bits[1], bits[2]) if len(bits) == 3 else None

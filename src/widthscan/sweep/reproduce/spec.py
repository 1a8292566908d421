"""What an experiment of the paper is for ``widthscan reproduce``: its claims (from
``widthscan.analysis.claims``) and its sweeps per scale."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import xarray as xr

from widthscan.analysis.claims.verdicts import Claim, ClaimResult, ClaimSet, sweep_name

SCALES = ("smoke", "cpu", "gpu", "paper")


@dataclass(frozen=True)
class Experiment:
    """One experiment of the paper: its claims and its sweeps (parts) per scale.

    ``sweeps(scale)`` returns part name -> sweep config dict (valid ``SweepConfig``
    input; ``configs`` names it ``paper:<experiment>:<part>:<scale>``). ``notes`` say
    how the sweeps were designed (shown on the experiment page).
    """

    claimset: ClaimSet
    sweeps: Callable[[str], Mapping[str, dict[str, Any]]]
    notes: str = ""

    @property
    def name(self) -> str:
        return self.claimset.name

    @property
    def title(self) -> str:
        return self.claimset.title

    @property
    def figures(self) -> str:
        return self.claimset.figures

    @property
    def summary(self) -> str:
        return self.claimset.summary

    @property
    def claims(self) -> tuple[Claim, ...]:
        return self.claimset.claims

    def claims_of(self, part: str) -> list[Claim]:
        return self.claimset.claims_of(part)

    def evaluate(self, datasets: Mapping[str, xr.Dataset]) -> list[ClaimResult]:
        return self.claimset.evaluate(datasets)

    def configs(self, scale: str) -> dict[str, dict[str, Any]]:
        if scale not in SCALES:
            raise ValueError(f"scale={scale!r}; allowed: {SCALES}")
        out = {}
        for part, cfg in self.sweeps(scale).items():
            cfg = {**cfg, "name": sweep_name(self.name, part, scale)}
            if scale in ("gpu", "paper"):
                cfg["train"] = {**cfg["train"], "device": "auto"}
            out[part] = cfg
        return out

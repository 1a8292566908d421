"""The paper's claims as statistics of a loaded sweep, with thresholds and verdicts.

    from widthscan.analysis import claims
    cs = claims.CLAIM_SETS["logits"]                     # the claims of one experiment
    results = cs.evaluate({"resnet": ds_resnet, "transformer": ds_text})
    [r.verdict for r in results]                         # PASS / FAIL / INCONCLUSIVE

``verdicts`` holds the verdict logic (``decide``: the whole interval against the
threshold), ``stats`` the statistics (pure functions of the Dataset, with bootstrap or
jackknife intervals over seeds), ``paper`` the claims of the paper's ten experiments. The
sweeps that produce the Datasets are ``widthscan.sweep.reproduce`` (``widthscan
reproduce``).
"""

from widthscan.analysis.claims import stats
from widthscan.analysis.claims.paper import CLAIM_SETS
from widthscan.analysis.claims.verdicts import (
    CI,
    FAIL,
    INCONCLUSIVE,
    NAME_PREFIX,
    PASS,
    VERDICTS,
    Claim,
    ClaimResult,
    ClaimSet,
    Estimate,
    Undecidable,
    decide,
    evaluate_claim,
    parse_sweep_name,
    sweep_name,
)

__all__ = [
    "CI",
    "CLAIM_SETS",
    "FAIL",
    "INCONCLUSIVE",
    "NAME_PREFIX",
    "PASS",
    "VERDICTS",
    "Claim",
    "ClaimResult",
    "ClaimSet",
    "Estimate",
    "Undecidable",
    "decide",
    "evaluate_claim",
    "parse_sweep_name",
    "stats",
    "sweep_name",
]

"""The paper's experiments as sweeps with verdicts (``widthscan reproduce``).

    from widthscan.sweep import reproduce
    reproduce.EXPERIMENTS["logits"].configs("cpu")      # part -> sweep config dict
    run = reproduce.run_experiment("logits", "cpu", "runs/logits")
    print(reproduce.verdict_table(run.results))

Each experiment maps to figures of the paper; each claim is a statistic with a threshold
and a verdict PASS / FAIL / INCONCLUSIVE; the claims, their statistics and the verdict
logic are ``widthscan.analysis.claims``. docs/reproduce.md has the map.
"""

from widthscan.sweep.reproduce.experiments import EXPERIMENTS
from widthscan.sweep.reproduce.runner import (
    ExperimentRun,
    check_scale,
    get,
    list_table,
    run_all,
    run_experiment,
    verdict_table,
    write_configs,
)
from widthscan.sweep.reproduce.spec import SCALES, Experiment

__all__ = [
    "EXPERIMENTS",
    "SCALES",
    "Experiment",
    "ExperimentRun",
    "check_scale",
    "get",
    "list_table",
    "run_all",
    "run_experiment",
    "verdict_table",
    "write_configs",
]

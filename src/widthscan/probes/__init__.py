"""Measurements on a model state: outputs, representations, sharpness and the eNTK.

Every probe is a pure function of (model, data) returning ``dict[str, Measurement]``
(see ``docs/data-model.md`` for variable names and dims). Pass a ``ws.Ensemble`` to
get values with a leading member axis K, or a ``ws.Parametrized`` to get the same
values without it (``dims`` always name the axes after the member axis, so for a
Parametrized ``values.shape`` matches ``dims``). ``ProbeSuite.measure`` always keeps
the member axis (K = 1 for a Parametrized). Probes never write files, never touch the
global RNG and never change parameters or their ``.grad``.

    import widthscan as ws
    ws.probes.logits(ens, x)["logits"].values          # (K, P, C)
    ws.probes.sharpness(ens, xb, yb, k=2)["sharpness"]  # (K, 2), Lanczos on HVPs
    ws.probes.entk(ens, x)["entk"]                      # (K, P, P)
    suite = ws.probes.ProbeSuite({"loss": {}, "sharpness": {"k": 1}}, total_steps=1000)
    suite.measure(suite.due(step), ens, step, xp, yp, xb, yb)  # probe -> var -> Measurement

Kernels, preactivations, attention, sharpness and the eNTK take ``memory_budget`` (GiB of
working memory; default ``budget.default_budget``) and run in chunks that fit it, or raise
``MemoryBudgetError`` naming the sizes (see ``budget``).

Variables beyond the data model's list: ``target_logit`` (sequence models: the correct
token's logit at each predicted position) and ``sharpness_residual`` (relative Ritz
residuals, an accuracy bound for ``sharpness``).
"""

from widthscan.probes.budget import MemoryBudgetError, default_budget
from widthscan.probes.features import attention, kernels, preactivations
from widthscan.probes.hessian import Eigenpairs, eigenpairs, lanczos, sharpness
from widthscan.probes.members import Members, members
from widthscan.probes.ntk import entk
from widthscan.probes.outputs import logits, loss
from widthscan.probes.schedule import schedule_steps
from widthscan.probes.suite import DEFAULT_PROBES, DEFAULTS, ProbeSuite, names

__all__ = [
    "DEFAULTS",
    "DEFAULT_PROBES",
    "Eigenpairs",
    "Members",
    "MemoryBudgetError",
    "ProbeSuite",
    "attention",
    "default_budget",
    "eigenpairs",
    "entk",
    "kernels",
    "lanczos",
    "logits",
    "loss",
    "members",
    "names",
    "preactivations",
    "schedule_steps",
    "sharpness",
]

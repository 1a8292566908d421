"""``check``: roles, coordinate check and dynamics of one model factory, with a verdict."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence

from torch import nn

from widthscan.check.coords import coord_check
from widthscan.check.data import UsageError, match
from widthscan.check.dynamics import run_dynamics
from widthscan.check.result import CheckResult
from widthscan.check.roles import annotate, roles_table, stray_outputs, structure
from widthscan.check.verdict import (
    TOL,
    explain,
    ignores_width,
    layer_verdicts,
    readout_roles,
)
from widthscan.parametrization import OPTIMIZERS, PARAMS

WIDTHS = (64, 128, 256, 512, 1024)
LR = {"sgd": 0.1, "adam": 1e-3, "adamw": 1e-3}


def _validate(widths: Sequence[int], base_width: int, param: str, optimizer: str,
              seeds: Sequence[int], steps: int, dynamics_steps: int, tol: float) -> list[int]:
    if param not in PARAMS:
        raise UsageError(f"param={param!r}; allowed: {', '.join(PARAMS)}")
    if optimizer not in OPTIMIZERS:
        raise UsageError(f"optimizer={optimizer!r}; allowed: {', '.join(OPTIMIZERS)}")
    ws = sorted({int(w) for w in widths})
    if len(ws) < 3 or ws[0] <= 0:
        raise UsageError(f"widths={list(widths)}: give at least 3 distinct positive widths")
    if base_width <= 0:
        raise UsageError(f"base_width={base_width}: must be a positive width")
    if len(list(seeds)) < 1:
        raise UsageError("seeds: give at least one seed")
    if steps < 1:
        raise UsageError(f"steps={steps}: must be >= 1")
    if dynamics_steps < 0:
        raise UsageError(f"dynamics_steps={dynamics_steps}: must be >= 0 (0 skips dynamics)")
    if not tol > 0:
        raise UsageError(f"tol={tol}: must be > 0")
    return ws


def check(
    factory: Callable[[int], nn.Module],
    base_width: int,
    widths: Sequence[int] = WIDTHS,
    param: str = "mup",
    optimizer: str = "sgd",
    lr: float | None = None,
    seeds: Sequence[int] = (0, 1, 2),
    steps: int = 3,
    dynamics_steps: int = 10,
    task: str | None = None,
    input_shape: Sequence[int] | None = None,
    roles: Mapping[str, str] | None = None,
    tol: float = TOL,
    name: str | None = None,
) -> CheckResult:
    """Check that ``factory`` (width -> nn.Module) is width-consistent under ``param``.

    Roles and rule table at the widest width; a coordinate check (``steps`` updates of
    ``optimizer`` at learning rate ``lr``, default 0.1 for SGD and 1e-3 for Adam, at every
    width and seed); a ``dynamics_steps`` run of two seeds per width (0 skips it). Data: the
    task named ``task``, Gaussian inputs of ``input_shape``, or a built-in task matched to the
    model. Raises ``UsageError`` on bad arguments.
    """
    start = time.perf_counter()
    ws = _validate(widths, base_width, param, optimizer, seeds, steps, dynamics_steps, tol)
    lr = LR[optimizer] if lr is None else float(lr)
    if not lr > 0:
        raise UsageError(f"lr={lr}: must be > 0")
    seeds = [int(s) for s in seeds]
    table = roles_table(factory, ws[-1], base_width, param, optimizer, roles)
    data = match(factory, base_width, task, input_shape)
    try:
        rows = coord_check(factory, ws, base_width, seeds, data, param, optimizer, lr, steps,
                           roles)
    except RuntimeError as err:
        raise UsageError(f"the model does not run on the {data.name} data: "
                         f"{str(err).splitlines()[0][:200]} (pass task or input_shape)") from err
    verdicts = layer_verdicts(rows, table, param, tol)
    readout = [v.layer for v in verdicts if v.readout]
    findings = structure(factory, base_width, table, readout)
    tied_layers = {layer for f in findings if f.kind == "tied" for layer in f.layers}
    findings += readout_roles(verdicts, table, param, tied_layers)
    findings += ignores_width(verdicts)
    if param != "sp":
        seen = {layer for f in findings for layer in f.layers}
        findings += stray_outputs(factory, base_width, table, readout, seen)
    findings = list({f.message: f for f in findings}.values())
    table = annotate(table, findings)
    verdicts = explain(verdicts, findings)
    dyn = None
    if dynamics_steps:
        dyn = run_dynamics(factory, ws, base_width, seeds[:2], data, param, optimizer, lr,
                           dynamics_steps, roles)
    return CheckResult(name or getattr(factory, "__name__", type(factory).__name__), param,
                       optimizer, lr, ws, base_width, seeds, steps, data.name, tol, table,
                       findings, verdicts, rows, dyn, time.perf_counter() - start)

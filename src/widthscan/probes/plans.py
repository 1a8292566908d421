"""A sweep's probes checked against their memory budgets before anything trains.

Every budgeted probe plans its chunks from a meta-device copy of the network (nothing
allocated, see ``footprint``) exactly as it will at run time; a probe whose smallest
chunk does not fit its ``memory_budget`` is a problem to report at preflight.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from widthscan.probes.budget import MemoryBudgetError, resolve_budget
from widthscan.probes.features import (
    attention_layers,
    capture_chunks,
    flat,
    kernel_layers,
    pooled,
    preact_layers,
    whole,
)
from widthscan.probes.footprint import footprint
from widthscan.probes.hessian import sharpness_plan
from widthscan.probes.ntk import n_outputs, plan_entk
from widthscan.probes.suite import BUDGETED, DEFAULTS
from widthscan.stack import backends
from widthscan.stack.losses import LOSSES


def _examples(x1: torch.Tensor, n: int) -> torch.Tensor:
    return x1[:1].expand(n, *x1.shape[1:])


def plan_probe(name: str, options: Mapping[str, Any], net: nn.Module, x1: torch.Tensor,
               k: int, dtype: torch.dtype, loss: str, device: torch.device | str,
               probe_examples: int, batch_size: int, bfloat16: bool = False) -> None:
    """Plan probe ``name`` with ``options`` (its defaults filled in) for K = ``k`` members of
    ``net`` on inputs shaped like ``x1`` (1, ...); raises ``MemoryBudgetError`` when its
    smallest chunk does not fit the budget."""
    o = {**DEFAULTS[name], **options}
    budget = resolve_budget(o["memory_budget"], device)
    p = min(o.get("n_examples") or probe_examples, probe_examples)
    if name == "kernels":
        capture_chunks(net, dtype, k, _examples(x1, p), kernel_layers(net, o["layers"]),
                       pooled(o["pool"]), budget)
    elif name == "preactivations":
        capture_chunks(net, dtype, k, _examples(x1, p), preact_layers(net, o["layers"]), flat,
                       budget)
    elif name == "attention":
        capture_chunks(net, dtype, k, x1[:1], attention_layers(net), whole, budget)
    elif name == "sharpness":
        found = backends.find(net, dict(net.named_buffers()))
        closed = (o["hvp"] in ("auto", "closed") and found is not None
                  and "hvp" in found[0].provides(found[1], net)
                  and dtype in (torch.float32, torch.float64) and not bfloat16
                  and loss in LOSSES)
        if not closed:
            fp = footprint(net, x1, dtype, loss)
            sharpness_plan(fp, k, min(o["batch_size"] or batch_size, batch_size),
                           o["max_iter"], o["k"], budget)
    elif name == "entk":
        fp = footprint(net, x1, dtype)
        plan_entk(fp, k, p, n_outputs(fp.output_shape, o["position"]), o["trace"],
                  o["method"] != "jacobian", budget, o["chunk"])


def entk_passes(options: Mapping[str, Any], net: nn.Module, x1: torch.Tensor,
                dtype: torch.dtype, probe_examples: int) -> tuple[int, int]:
    """(examples P, output units C) of an eNTK measurement with ``options``: about P * C
    backward passes per member (one per example and output unit)."""
    o = {**DEFAULTS["entk"], **options}
    p = min(o.get("n_examples") or probe_examples, probe_examples)
    return p, n_outputs(footprint(net, x1, dtype).output_shape, o["position"])


def budget_problems(probes: Mapping[str, Mapping[str, Any]], net: nn.Module,
                    x1: torch.Tensor, k: int, dtype: torch.dtype, loss: str,
                    device: torch.device | str, probe_examples: int, batch_size: int,
                    bfloat16: bool = False) -> list[str]:
    """One line per probe in ``probes`` (name -> options) whose smallest chunk does not fit
    its memory budget, naming the option and the sizes."""
    problems = []
    for name, options in probes.items():
        if name not in BUDGETED:
            continue
        try:
            plan_probe(name, options, net, x1, k, dtype, loss, device, probe_examples,
                       batch_size, bfloat16)
        except MemoryBudgetError as err:
            problems.append(f"probes.{name}.options.memory_budget: {err}")
        except (ValueError, TypeError, KeyError, RuntimeError, NotImplementedError):
            continue  # not plannable on the meta device: the probe checks itself at run time
    return problems

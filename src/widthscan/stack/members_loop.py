"""The "loop" strategy: K members stepped one after another as ordinary modules.

Each member is a real copy of the network whose parameters alias its slice of the stacked
leaves (or of a per-step buffer of effective ``multiplier * raw`` values, for the few
parameters whose multiplier is not 1), and whose ``.grad`` tensors alias slices of the
stacked gradient buffers: autograd accumulates each member's gradient straight into the
stacked buffers, and one optimizer step over the stacked leaves follows, exactly as for
the other strategies. Per member this is the work of a plain per-seed training loop, with
no functional-call or vmap overhead; it is what wins when batching the members does not
(large widths of a generic module on the CPU).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping

import torch
from torch import nn

from widthscan.stack.losses import member_losses


def _set(module: nn.Module, name: str, value: nn.Parameter | torch.Tensor, buffer: bool) -> None:
    path, _, leaf = name.rpartition(".")
    owner = module.get_submodule(path) if path else module
    if buffer:
        owner._buffers[leaf] = value
    else:
        owner._parameters[leaf] = value


class MemberLoop:
    """Real per-member modules over stacked ``params`` (name -> (K, ...)) and ``grads``."""

    def __init__(self, net: nn.Module, params: Mapping[str, torch.Tensor],
                 buffers: Mapping[str, torch.Tensor], multipliers: Mapping[str, float],
                 grads: Mapping[str, torch.Tensor]):
        self.params, self.grads = params, grads
        self.scaled = {n: m for n, m in multipliers.items() if m != 1.0}
        self.eff = {n: torch.empty_like(params[n]) for n in self.scaled}
        self.eff_grads = {n: torch.zeros_like(params[n]) for n in self.scaled}
        k = next(iter(params.values())).shape[0]
        self.modules: list[nn.Module] = []
        self.leaves: list[list[nn.Parameter]] = []
        for i in range(k):
            module = copy.deepcopy(net)
            leaves = []
            for name, p in params.items():
                source = self.eff[name] if name in self.scaled else p.detach()
                grad = self.eff_grads[name] if name in self.scaled else grads[name]
                leaf = nn.Parameter(source[i], requires_grad=True)
                leaf.grad = grad[i]
                _set(module, name, leaf, buffer=False)
                leaves.append(leaf)
            for name, b in buffers.items():
                _set(module, name, b, buffer=True)
            self.modules.append(module)
            self.leaves.append(leaves)

    @torch.no_grad()
    def _refresh(self) -> None:
        for name, m in self.scaled.items():
            torch.mul(self.params[name], m, out=self.eff[name])
        torch._foreach_zero_(list(self.grads.values()) + list(self.eff_grads.values()))

    def losses_and_grads(self, x: torch.Tensor, y: torch.Tensor, loss: str,
                         skip: Callable[[int], bool], autocast: Callable) -> torch.Tensor:
        """Per-member losses (K,) on (x, y); their gradients land in ``grads``. Members with
        ``skip(k)`` (diverged) are not run: loss NaN, gradient zero. A member whose loss is
        not finite contributes a zero-loss backward."""
        self._refresh()
        losses = []
        for k, module in enumerate(self.modules):
            if skip(k):
                losses.append(torch.full((), float("nan"), device=x.device))
                continue
            with autocast():
                value = member_losses(module(x).unsqueeze(0), y, loss)[0]
            torch.where(torch.isfinite(value), value, 0.0).backward()
            losses.append(value.detach())
        with torch.no_grad():
            for name, m in self.scaled.items():
                torch.mul(self.eff_grads[name], m, out=self.grads[name])
        return torch.stack(losses)

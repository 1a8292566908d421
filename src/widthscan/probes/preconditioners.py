"""The matrices an optimizer's edge of stability acts on: D^1/2 H D^1/2 for a diagonal D.

A step theta -= eta * D * m, with m the gradient (SGD, heavy-ball momentum beta) or its
exponential average (Adam, beta_1), is stable on a quadratic with Hessian H while
eta * lambda_max(D^1/2 H D^1/2) stays below

    SGD:  2 (1 + beta)                    D = diag(lr_scale)
    Adam: (2 + 2 beta_1) / (1 - beta_1)   D = diag(lr_scale / ((1 - beta_1^(t+1)) (v_hat + eps)))

with v_hat = sqrt(v_t / (1 - beta_2^t)) (38 for Adam's default beta_1 = 0.9; Cohen et al.
2022, "Adaptive gradient methods at the edge of stability"). lr_scale is the
parameterization's per-layer learning-rate scale, so under muP / mf away from the base
width D != I even for SGD. Adam's D is the one its next
update applies, with the current second moments v_t after t updates; it changes as
training goes and is undefined before the first update.

The sharpness probe stores which matrix it measured as ``sharpness_preconditioned``:
``CODES`` = 0 the raw Hessian, 1 SGD's, 2 Adam's.
"""

from __future__ import annotations

import math

import torch

from widthscan.probes.members import Members

CODES = {"none": 0.0, "sgd": 1.0, "adam": 2.0}
ADAM = ("adam", "adamw")


def kind(m: Members) -> str:
    """"sgd" or "adam": which preconditioner ``m``'s optimizer has."""
    return "adam" if m.optimizer in ADAM else "sgd"


def threshold(optimizer: str, momentum: float = 0.0, beta1: float = 0.9) -> float:
    """eta * lambda_max(D^1/2 H D^1/2) at the edge of stability (see the module docstring)."""
    if optimizer in ADAM:
        return (2.0 + 2.0 * beta1) / (1.0 - beta1)
    return 2.0 * (1.0 + momentum)


def precondition_problem(m: Members) -> str | None:
    """Why :func:`preconditioner_root` cannot be formed for ``m``, or None when it can."""
    if m.lr_scales is None:
        return ("preconditioned=True needs the parameterization's learning-rate scales: "
                "pass a ws.parametrize(...) result or a ws.Ensemble")
    if m.optimizer in (None, "sgd"):
        return None
    if m.optimizer not in ADAM:
        return (f"preconditioned=True knows the stability matrices of 'sgd', 'adam' and "
                f"'adamw'; this model's optimizer is {m.optimizer!r}: use preconditioned=False")
    opt = m.torch_optimizer
    if opt is None:
        return ("preconditioned=True under Adam needs its second moments: pass the ws.Ensemble "
                "that trains the model, or preconditioned=False")
    for group in opt.param_groups:
        if group.get("amsgrad"):
            return "preconditioned=True does not model amsgrad: use preconditioned=False"
        if m.optimizer == "adamw" and group.get("weight_decay", 0.0):
            return ("preconditioned=True does not model AdamW's decoupled weight decay "
                    f"(weight_decay={group['weight_decay']}): use preconditioned=False")
    if awaiting_first_step(m):
        return "Adam's preconditioner is undefined before its first update (no second moments yet)"
    return None


def awaiting_first_step(m: Members) -> bool:
    """True for Adam members whose optimizer has not made its first update yet."""
    opt = m.torch_optimizer
    return (m.optimizer in ADAM and opt is not None
            and any(not opt.state.get(p) for g in opt.param_groups for p in g["params"]))


def lr_preconditioner(m: Members) -> torch.Tensor:
    """sqrt(lr_scale) of every raw parameter, flat (n,) in ``Flat`` order: SGD's D^1/2."""
    parts = [torch.full((p[0].numel(),), math.sqrt(m.lr_scales[n]), dtype=m.dtype,
                        device=m.device) for n, p in m.params.items()]
    return torch.cat(parts)


def adam_preconditioner(m: Members) -> torch.Tensor:
    """Adam's D^1/2 (K, n) in ``Flat`` order, from the optimizer's state and groups."""
    opt = m.torch_optimizer
    roots: dict[str, torch.Tensor] = {}
    for group in opt.param_groups:
        beta1, beta2 = group["betas"]
        for name, p in zip(group["names"], group["params"]):
            state = opt.state[p]
            t = int(state["step"])
            v = state["exp_avg_sq"].detach().to(torch.float64)
            denom = (v / (1.0 - beta2**t)).sqrt_().add_(group["eps"])
            d = m.lr_scales[name] / ((1.0 - beta1 ** (t + 1)) * denom)
            roots[name] = d.sqrt_().reshape(m.k, -1)
    return torch.cat([roots[n] for n in m.params], 1).to(dtype=m.dtype, device=m.device)


def preconditioner_root(m: Members) -> torch.Tensor:
    """D^1/2 of ``m``'s optimizer: (n,) for SGD, (K, n) for Adam (per-member moments)."""
    problem = precondition_problem(m)
    if problem is not None:
        raise ValueError(problem)
    return adam_preconditioner(m) if kind(m) == "adam" else lr_preconditioner(m)

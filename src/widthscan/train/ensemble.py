"""K seeds of one width trained as one model with stacked parameters.

SGD (momentum, nesterov, weight decay) and Adam(W) act elementwise, so one
optimizer over parameters stacked on a leading K axis is exactly K independent
runs. The loss is the sum over members of each member's mean loss, so every
member gets the gradient of its own loss. The members themselves (stacked parameters,
multipliers, precision, strategies, backends) are a ``widthscan.stack.Stack``; an
``Ensemble`` adds the optimizer, the schedule, divergence and the resumable state.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence

import torch
from torch import nn

from widthscan.parametrization import param_groups, parametrize
from widthscan.stack.core import _CHOSEN, MEASURED, PRECISIONS, STACKING, Stack
from widthscan.train.schedules import make_schedule

__all__ = ["MEASURED", "PRECISIONS", "STACKING", "_CHOSEN", "Ensemble"]


def _fused(groups: list[dict]) -> dict:
    """``fused=True`` where torch has a fused kernel for every leaf (CPU and CUDA, float
    dtypes): one pass over each stacked leaf instead of one per elementwise op."""
    params = [p for g in groups for p in g["params"]]
    ok = all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in params)
    return {"fused": True} if params and ok else {}


def _optimizer(name: str, groups: list[dict], lr: float, momentum: float, nesterov: bool,
               betas: tuple[float, float], eps: float) -> torch.optim.Optimizer:
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=nesterov,
                               **_fused(groups))
    cls = torch.optim.Adam if name == "adam" else torch.optim.AdamW
    return cls(groups, lr=lr, betas=betas, eps=eps, **_fused(groups))


class Ensemble:
    """K members of ``factory(width)`` under one parameterization, trained together.

    ``forward(x)`` returns (K, batch, ...); ``step(x, y)`` takes one optimizer
    step on the shared batch and returns per-member losses (K,) measured before
    the update. A member whose loss turns NaN/inf is marked diverged at that
    step and frozen; the others go on unchanged.

    ``stacking`` says how the members run; every strategy equals K separate runs up to
    rounding: "batched" (the network's own batched forward over members: a linear chain,
    i.e. widthscan's MLP or an nn.Sequential of Linear layers and one activation, with a
    hand-written backward; widthscan's Transformer with batched matmuls and
    scaled_dot_product_attention), "vmap" (torch.func.vmap of a functional call), "loop"
    (the members as ordinary modules one after another, gradients written into the
    stacked buffers). "auto": "batched" for a linear chain, else the fastest of the
    others measured on the first batch (cached per network, shapes and device in this
    process; ``timings`` holds the measurement). The strategy in use is saved in
    ``state_dict`` and kept by ``load_state_dict``, so a resumed run stays bit-identical.

    The members (parameters, buffers, multipliers, backend, strategy, ``apply``) are
    ``self.stack``, a ``widthscan.stack.Stack``: the object every probe takes.
    """

    def __init__(
        self,
        factory: Callable[[int], nn.Module],
        width: int,
        base_width: int,
        param: str = "mup",
        optimizer: str = "sgd",
        seeds: Sequence[int] | int = (0,),
        lr: float = 0.1,
        *,
        momentum: float = 0.0,
        nesterov: bool = False,
        weight_decay: float = 0.0,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        loss: str = "mse",
        schedule: Callable[[int], float] | None = None,
        device: str | torch.device = "cpu",
        precision: str = "float32",
        init_gain: float = 1.0,
        zero_init: Iterable[str] = (),
        roles: Mapping[str, str] | None = None,
        stacking: str = "auto",
    ):
        Stack.check(precision, stacking)
        seeds = list(range(seeds)) if isinstance(seeds, int) else [int(s) for s in seeds]
        if not seeds:
            raise ValueError("seeds must name at least one init seed")
        self.seeds = seeds
        self.width, self.base_width = width, base_width
        self.param, self.optimizer_name = param, optimizer
        self.device = torch.device(device)
        dtype = self.dtype = PRECISIONS[precision]
        members = [
            parametrize(factory, width, base_width, param, optimizer, seed=s, init_gain=init_gain,
                        zero_init=zero_init, roles=roles, device=self.device, dtype=dtype)
            for s in seeds
        ]
        self.shapes, self.table = members[0].shapes, members[0].table
        self.stack = Stack.of(members, loss=loss, precision=precision, stacking=stacking)
        self.lr = lr
        groups = param_groups(self.table, self.params, lr, weight_decay,
                              None if optimizer == "sgd" else eps)
        for g in groups:
            g["base_lr"] = g["lr"]
        self.optimizer = _optimizer(optimizer, groups, lr, momentum, nesterov, betas, eps)
        self.stack.torch_optimizer = self.optimizer
        self.schedule = schedule or make_schedule("constant")
        self.step_count = 0
        self.diverged_at: list[int | None] = [None] * len(seeds)
        self._frozen: dict[int, dict[str, torch.Tensor]] = {}

    @property
    def k(self) -> int:
        return len(self.seeds)

    @property
    def loss(self) -> str:
        return self.stack.loss

    @property
    def precision(self) -> str:
        return self.stack.precision

    @property
    def params(self) -> dict[str, torch.Tensor]:
        """Raw stacked parameters, name -> leaf (K, ...) (the optimizer's)."""
        return self.stack.params

    @property
    def buffers(self) -> dict[str, torch.Tensor]:
        return self.stack.buffers

    @property
    def net(self) -> nn.Module:
        """The network (meta device; called only through ``apply``)."""
        return self.stack.net

    @property
    def multipliers(self) -> dict[str, float]:
        return self.stack.multipliers

    @property
    def lr_scale(self) -> dict[str, float]:
        return self.stack.lr_scales

    @property
    def backend(self):
        """The batched backend found for the network (``widthscan.stack.backends``), or None."""
        return self.stack.backend

    @property
    def _plan(self):
        """The backend's plan for the network (``stack.plan``)."""
        return self.stack.plan

    @property
    def stacking(self) -> str:
        """How the members run: "batched", "vmap", "loop" or "auto" (not chosen yet)."""
        return self.stack.stacking

    @property
    def timings(self) -> dict[str, float]:
        """Seconds per gradient of each strategy measured by "auto" (empty until then)."""
        return self.stack.timings

    def apply(self, params: Mapping[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        """Outputs (K, batch, ...) of raw stacked ``params`` (name -> (K, ...)) on a shared x;
        differentiable to any order (probes take Hessian-vector products through it)."""
        return self.stack.apply(params, x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Outputs of every member, (K, batch, ...)."""
        return self.stack.forward(x)

    __call__ = forward

    def losses(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per-member mean loss (K,) on (x, y), with gradients enabled if the caller wants them."""
        return self.stack.losses(x, y)

    def _skip(self, k: int) -> bool:
        return self.diverged_at[k] is not None

    def _dead(self, losses: torch.Tensor) -> torch.Tensor | None:
        """Marks members whose loss is non-finite as diverged (at this step); returns the
        mask (K,) of all diverged members, or None while every member is alive. One host
        sync per step: the sum is finite when every member's loss is, so the per-member
        scan runs only after a non-finite sum (or an overflowing one)."""
        if not self._frozen and math.isfinite(losses.detach().sum().item()):
            return None
        finite = torch.isfinite(losses.detach()).tolist()
        newly = [k for k in range(self.k) if self.diverged_at[k] is None and not finite[k]]
        if newly:
            self._freeze(newly)
        return self.diverged if self._frozen else None

    @property
    def diverged(self) -> torch.Tensor:
        """Boolean mask (K,) of diverged members."""
        return torch.tensor([d is not None for d in self.diverged_at], device=self.device)

    def _freeze(self, members: Iterable[int]) -> None:
        for k in members:
            self.diverged_at[k] = self.step_count
            self._frozen[k] = {n: p.detach()[k].clone() for n, p in self.params.items()}

    @torch.no_grad()
    def _restore_frozen(self) -> None:
        for k, saved in self._frozen.items():
            for n, p in self.params.items():
                p[k] = saved[n]

    def step(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """One optimizer step on the shared batch; returns per-member losses (K,) before it.

        Diverged members report NaN.
        """
        factor = self.schedule(self.step_count)
        for g in self.optimizer.param_groups:
            g["lr"] = g["base_lr"] * factor
        if self.stack.stacking == "auto":
            self.stack.choose(x, y, self._dead, self._skip)
        losses = self.stack.gradients(x, y, self._dead, self._skip)
        self.optimizer.step()
        if self._frozen:
            self._restore_frozen()
        self.step_count += 1
        out = losses.detach().float() if self.precision == "bfloat16" else losses.detach()
        return out.masked_fill(self.diverged, float("nan")) if self._frozen else out

    @torch.no_grad()
    def check_parameters(self) -> list[int]:
        """Mark members whose parameters are non-finite as diverged now; returns them."""
        bad = torch.zeros(self.k, dtype=torch.bool, device=self.device)
        for p in self.params.values():
            bad |= ~torch.isfinite(p.flatten(1)).all(1)
        newly = [k for k in range(self.k) if bad[k] and self.diverged_at[k] is None]
        self._freeze(newly)
        return newly

    def member_params(self, k: int) -> dict[str, torch.Tensor]:
        """Raw parameters of member k (views into the stacked leaves)."""
        return {n: p[k] for n, p in self.params.items()}

    def state_dict(self) -> dict:
        """{"tensors": flat name -> tensor, "meta": JSON-able dict}; enough to resume exactly."""
        tensors = {f"params.{n}": p.detach() for n, p in self.params.items()}
        index = self._param_index()
        for i, state in self.optimizer.state_dict()["state"].items():
            for key, value in state.items():
                if torch.is_tensor(value):
                    tensors[f"optim.{index[i]}.{key}"] = value
        meta = {
            "step": self.step_count,
            "seeds": self.seeds,
            "diverged_at": self.diverged_at,
            "width": self.width,
            "base_width": self.base_width,
            "param": self.param,
            "optimizer": self.optimizer_name,
            "stacking": self.stacking,
        }
        return {"tensors": tensors, "meta": meta}

    def _param_index(self) -> dict[int, str]:
        names = [n for g in self.optimizer.param_groups for n in g["names"]]
        return dict(enumerate(names))

    @torch.no_grad()
    def load_state_dict(self, state: Mapping) -> None:
        """Restore a state from ``state_dict()``; the ensemble must be built with the same
        factory, width, parameterization, optimizer and seeds."""
        tensors, meta = state["tensors"], state["meta"]
        if list(meta["seeds"]) != self.seeds:
            raise ValueError(f"checkpoint seeds {meta['seeds']} != ensemble seeds {self.seeds}")
        for n, p in self.params.items():
            p.copy_(tensors[f"params.{n}"])
        opt_state: dict[int, dict] = {}
        for i, name in self._param_index().items():
            prefix = f"optim.{name}."
            entry = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
            if entry:
                opt_state[i] = entry
        groups = self.optimizer.state_dict()["param_groups"]
        self.optimizer.load_state_dict({"state": opt_state, "param_groups": groups})
        self.step_count = int(meta["step"])
        if self.stack.requested == "auto" and meta.get("stacking", "auto") != "auto":
            self.stack.stacking = meta["stacking"]
        self.diverged_at = [None if d is None else int(d) for d in meta["diverged_at"]]
        self._frozen = {
            k: {n: p[k].clone() for n, p in self.params.items()}
            for k, d in enumerate(self.diverged_at) if d is not None
        }

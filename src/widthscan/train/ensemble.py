"""K seeds of one width trained as one model with stacked parameters.

SGD (momentum, nesterov, weight decay) and Adam(W) act elementwise, so one
optimizer over parameters stacked on a leading K axis is exactly K independent
runs. The loss is the sum over members of each member's mean loss, so every
member gets the gradient of its own loss.
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence

import torch
from torch import nn
from torch.func import functional_call, vmap

from widthscan.parametrization import Parametrized, param_groups, parametrize, scale_params
from widthscan.stack import backends, mlp_backprop
from widthscan.stack.losses import member_losses
from widthscan.train.members_loop import MemberLoop
from widthscan.train.schedules import make_schedule

PRECISIONS = {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.float32}
STACKING = ("auto", "vmap", "batched", "loop")
MEASURED = ("vmap", "loop")
_CHOSEN: dict[tuple, dict[str, float]] = {}
"""Seconds per gradient of each strategy, per (network, shapes, device, precision, K, batch),
measured in this process."""


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
        if precision not in PRECISIONS:
            raise ValueError(f"precision={precision!r}; allowed: {sorted(PRECISIONS)}")
        if stacking not in STACKING:
            raise ValueError(f"stacking={stacking!r}; allowed: {STACKING}")
        seeds = list(range(seeds)) if isinstance(seeds, int) else [int(s) for s in seeds]
        if not seeds:
            raise ValueError("seeds must name at least one init seed")
        self.seeds = seeds
        self.width, self.base_width = width, base_width
        self.param, self.optimizer_name, self.loss = param, optimizer, loss
        self.device = torch.device(device)
        self.precision = precision
        dtype = self.dtype = PRECISIONS[precision]
        members = [
            parametrize(factory, width, base_width, param, optimizer, seed=s, init_gain=init_gain,
                        zero_init=zero_init, roles=roles, device=self.device, dtype=dtype)
            for s in seeds
        ]
        first: Parametrized = members[0]
        self.shapes, self.table = first.shapes, first.table
        self.multipliers = first.multipliers
        self.lr_scale = first.lr_scale
        names = [n for n, _ in first.net.named_parameters()]
        self.params: dict[str, torch.Tensor] = {
            n: torch.stack([dict(m.net.named_parameters())[n].detach() for m in members])
            .requires_grad_(True)
            for n in names
        }
        self.buffers = {n: b.detach() for n, b in first.net.named_buffers()}
        self.net = copy.deepcopy(first.net).to("meta")
        self.backend, self._plan = backends.find(self.net, self.buffers) or (None, None)
        self._features = (frozenset() if self.backend is None
                          else self.backend.provides(self._plan, self.net))
        if stacking == "batched" and self.backend is None:
            raise ValueError("stacking='batched' needs a batched backend (widthscan.stack: "
                             "widthscan's Transformer, or a linear chain: widthscan's MLP or an "
                             "nn.Sequential of Linear layers and one activation, no buffers); "
                             f"allowed for {type(first.net).__name__}: 'auto', 'vmap', 'loop'")
        self.stacking = stacking
        if stacking == "auto" and self._provides("backward"):
            self.stacking = "batched"
        self._loop: MemberLoop | None = None
        self._requested = stacking
        self.timings: dict[str, float] = {}
        self.lr = lr
        groups = param_groups(self.table, self.params, lr, weight_decay,
                              None if optimizer == "sgd" else eps)
        for g in groups:
            g["base_lr"] = g["lr"]
        self.optimizer = _optimizer(optimizer, groups, lr, momentum, nesterov, betas, eps)
        self.schedule = schedule or make_schedule("constant")
        self.step_count = 0
        self.diverged_at: list[int | None] = [None] * len(seeds)
        self._frozen: dict[int, dict[str, torch.Tensor]] = {}
        self._grads: dict[str, torch.Tensor] = {}

    @property
    def k(self) -> int:
        return len(self.seeds)

    def _autocast(self):
        if self.precision != "bfloat16":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16)

    def apply(self, params: Mapping[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        """Outputs (K, batch, ...) of raw stacked ``params`` (name -> (K, ...)) on a shared x;
        differentiable to any order (probes take Hessian-vector products through it)."""
        return self._apply(params, x, fused=False)

    def _apply(self, params: Mapping[str, torch.Tensor], x: torch.Tensor, fused: bool
               ) -> torch.Tensor:
        """``apply``; ``fused`` allows kernels differentiable once (training)."""
        if x.is_floating_point() and x.dtype != self.dtype:
            x = x.to(self.dtype)
        if self.stacking == "batched" and self.backend.accepts(self._plan, x):
            return self.backend.forward(self._plan, self.net, params, self.buffers,
                                        self.multipliers, x, fused)
        eff = scale_params(params, self.multipliers)

        def one(p: dict[str, torch.Tensor], inp: torch.Tensor) -> torch.Tensor:
            return functional_call(self.net, {**self.buffers, **p}, (inp,))

        if self.stacking == "loop":
            return torch.stack([one({n: p[k] for n, p in eff.items()}, x)
                                for k in range(self.k)])
        return vmap(one, in_dims=(0, None))(eff, x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Outputs of every member, (K, batch, ...)."""
        with self._autocast():
            return self.apply(self.params, x)

    __call__ = forward

    def losses(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per-member mean loss (K,) on (x, y), with gradients enabled if the caller wants them."""
        with self._autocast():
            return member_losses(self._apply(self.params, x, fused=True), y, self.loss)

    def _provides(self, feature: str) -> bool:
        return feature in self._features

    def _manual_backprop(self, x: torch.Tensor) -> bool:
        """Whether ``step`` uses the hand-written backward of a linear chain (``mlp_backprop``)."""
        return (self.stacking == "batched" and self.precision != "bfloat16"
                and self._provides("backward") and self.backend.accepts(self._plan, x))

    def _gradients(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Losses (K,) before the update; leaves the gradient of their sum in ``.grad``
        (zero for diverged members), by the current strategy."""
        if self._manual_backprop(x):
            return self._manual_step(x, y)
        if self.stacking == "loop":
            if self._loop is None:
                self._loop = MemberLoop(self.net, self.params, self.buffers, self.multipliers,
                                        self._grad_buffers())
            self._grad_buffers()
            losses = self._loop.losses_and_grads(
                x, y, self.loss, lambda k: self.diverged_at[k] is not None, self._autocast)
            self._dead(losses)
            return losses
        for p in self.params.values():  # zero_grad(set_to_none=True), without its overhead
            p.grad = None
        losses = self.losses(x, y)
        dead = self._dead(losses)
        if dead is not None:
            losses = losses.masked_fill(dead, 0.0)
        losses.sum().backward()
        return losses

    def _choose(self, x: torch.Tensor, y: torch.Tensor) -> str:
        """The fastest of ``MEASURED`` (and "batched" where the network has a batched
        forward) for this network and batch: gradients only (no update), one warm-up and the
        minimum of three timed calls each; cached per process."""
        key = (type(self.net).__qualname__,
               tuple((n, tuple(p.shape)) for n, p in self.params.items()),
               tuple(self.buffers), str(self.device), self.precision, tuple(x.shape),
               x.dtype, self.loss)
        if key not in _CHOSEN:
            times = {}
            for strategy in (("batched",) if self.backend is not None else ()) + MEASURED:
                self.stacking = strategy
                runs = []
                for _ in range(4):
                    self._sync()
                    t0 = time.perf_counter()
                    self._gradients(x, y)
                    self._sync()
                    runs.append(time.perf_counter() - t0)
                times[strategy] = min(runs[1:])
            _CHOSEN[key] = times
        self.timings = dict(_CHOSEN[key])
        return min(self.timings, key=self.timings.get)

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def _grad_buffers(self) -> dict[str, torch.Tensor]:
        """Persistent ``.grad`` tensors, one per stacked leaf, made on first use and reused
        every step."""
        if not self._grads:
            self._grads = {n: torch.zeros_like(p, memory_format=torch.contiguous_format)
                           for n, p in self.params.items()}
        for n, p in self.params.items():
            p.grad = self._grads[n]
        return self._grads

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

    @torch.no_grad()
    def _manual_step(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Gradients of ``step`` by ``mlp_backprop``; returns the losses (K,)."""
        if x.is_floating_point() and x.dtype != self.dtype:
            x = x.to(self.dtype)
        out, saved = mlp_backprop.forward(self._plan, self.params, self.multipliers, x)
        losses, g_out = mlp_backprop.loss_and_grad(out, y, self.loss)
        dead = self._dead(losses)
        if dead is not None:
            g_out = torch.where(dead.view(-1, 1, 1), 0.0, g_out)
        mlp_backprop.backward(self._plan, self.params, self.multipliers, saved, g_out,
                              self._grad_buffers())
        return losses

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
        if self.stacking == "auto":
            self.stacking = self._choose(x, y)
        losses = self._gradients(x, y)
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
        if self._requested == "auto" and meta.get("stacking", "auto") != "auto":
            self.stacking = meta["stacking"]
        self.diverged_at = [None if d is None else int(d) for d in meta["diverged_at"]]
        self._frozen = {
            k: {n: p[k].clone() for n, p in self.params.items()}
            for k, d in enumerate(self.diverged_at) if d is not None
        }

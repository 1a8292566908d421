"""``Stack``: K members of one network under one rule table, the object that training and
every probe stand on.

Raw parameters are stacked on a leading member axis (K, ...); buffers are shared; the
forward multipliers, learning-rate scales and precision come from the parameterization.
``apply(params, x)`` runs all members on a shared input by one of three strategies, each
equal to K separate forward passes up to rounding:

* "batched": the network's batched backend (``widthscan.stack.backends``: weights
  (K, out, in), one batched matmul per layer; grouped convolutions for the ResNet), found
  in the registry;
* "vmap": ``torch.func.vmap`` of a functional call over members;
* "loop": the members one after another.

A backend may provide more than a forward: "backward" (the hand-written backward of a
linear chain, ``mlp_backprop``) and "hvp" (its closed-form Hessian-vector products,
``mlp_hvp``). Callers ask ``provides(feature)`` instead of checking the network's type.
"""

from __future__ import annotations

import contextlib
import copy
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, vmap

from widthscan.measurement import Measurement
from widthscan.parametrization import Parametrized, scale_params
from widthscan.stack import backends, mlp_backprop, mlp_hvp
from widthscan.stack.losses import member_losses
from widthscan.stack.members_loop import MemberLoop

PRECISIONS = {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.float32}
"""Training precision -> dtype of the raw parameters (bfloat16 runs float32 under autocast)."""
STACKING = ("auto", "vmap", "batched", "loop")
MEASURED = ("vmap", "loop")
_CHOSEN: dict[tuple, dict[str, float]] = {}
"""Seconds per gradient of each strategy, per (network, shapes, device, precision, K, batch),
measured in this process."""

Tensors = Mapping[str, torch.Tensor]


def _never(_: int) -> bool:
    return False


def _alive(_: torch.Tensor) -> None:
    return None


class Stack:
    """K members of one network: raw parameters ``params`` (name -> (K, ...)).

    net: the module (called only functionally; may live on the meta device).
    buffers: name -> tensor shared by all members. multipliers: name -> forward multiplier.
    lr_scales: name -> the parameterization's learning-rate scale (optimizer's lr = lr *
    scale) for the optimizer named ``optimizer`` ("sgd", "adam", "adamw"), None if unknown.
    loss: "mse" | "ce" | None. precision: "float32" | "float64" | "bfloat16" (autocast).
    stacked: False for a single model seen as K = 1 (its probe results drop the K axis).
    torch_optimizer: the torch optimizer training ``params`` (set by ``Ensemble``), else None.
    stacking: "batched" | "vmap" | "loop", or "auto" ("batched" where the backend provides
    a backward, else chosen by ``choose`` on the first training batch).
    """

    def __init__(self, net: nn.Module, params: dict[str, torch.Tensor],
                 buffers: Mapping[str, torch.Tensor], multipliers: Mapping[str, float], *,
                 loss: str | None = None, precision: str = "float32", stacking: str = "auto",
                 stacked: bool = True, lr_scales: Mapping[str, float] | None = None,
                 optimizer: str | None = None,
                 torch_optimizer: torch.optim.Optimizer | None = None):
        self.check(precision, stacking)
        self.net, self.params = net, params
        self.buffers = dict(buffers)
        self.multipliers = dict(multipliers)
        self.loss, self.precision, self.stacked = loss, precision, stacked
        self.lr_scales = None if lr_scales is None else dict(lr_scales)
        self.optimizer, self.torch_optimizer = optimizer, torch_optimizer
        self.backend, self.plan = backends.find(net, self.buffers) or (None, None)
        self.features: frozenset[str] = (frozenset() if self.backend is None
                                         else self.backend.provides(self.plan, net))
        if stacking == "batched" and self.backend is None:
            raise ValueError("stacking='batched' needs a batched backend (widthscan.stack: "
                             "widthscan's Transformer or ResNet18, or a linear chain: "
                             "widthscan's MLP or an "
                             "nn.Sequential of Linear layers and one activation, no buffers); "
                             f"allowed for {type(net).__name__}: 'auto', 'vmap', 'loop'")
        self.requested = stacking
        self.stacking = "batched" if stacking == "auto" and self.provides("backward") else stacking
        self.timings: dict[str, float] = {}
        self._loop: MemberLoop | None = None
        self._grads: dict[str, torch.Tensor] = {}

    @staticmethod
    def check(precision: str, stacking: str) -> None:
        """A one-line error naming the field and the allowed values for a bad option."""
        if precision not in PRECISIONS:
            raise ValueError(f"precision={precision!r}; allowed: {sorted(PRECISIONS)}")
        if stacking not in STACKING:
            raise ValueError(f"stacking={stacking!r}; allowed: {STACKING}")

    @classmethod
    def of(cls, models: Sequence[Parametrized], **options: Any) -> Stack:
        """The stacked copy of ``models`` (one network at one width, K seeds), with leaves
        (K, ...) that require grad; the network itself moves to the meta device."""
        if not models:
            raise ValueError("models must hold at least one Parametrized member")
        first = models[0]
        names = [n for n, _ in first.net.named_parameters()]
        own = [dict(m.net.named_parameters()) for m in models]
        params = {n: torch.stack([p[n].detach() for p in own]).requires_grad_(True)
                  for n in names}
        buffers = {n: b.detach() for n, b in first.net.named_buffers()}
        return cls(copy.deepcopy(first.net).to("meta"), params, buffers, first.multipliers,
                   lr_scales=first.lr_scale, optimizer=first.optimizer, **options)

    @classmethod
    def view(cls, model: Parametrized) -> Stack:
        """A single ``Parametrized`` as K = 1 (params are views of its own tensors)."""
        net = model.net
        return cls(net, {n: p.detach().unsqueeze(0) for n, p in net.named_parameters()},
                   {n: b.detach() for n, b in net.named_buffers()}, model.multipliers,
                   stacked=False, lr_scales=model.lr_scale, optimizer=model.optimizer)

    def select(self, lo: int, hi: int) -> Stack:
        """Members ``lo .. hi - 1`` as a stack of their own, params detached views (K' =
        hi - lo); for probes that work on a few members at a time (no optimizer)."""
        if not 0 <= lo < hi <= self.k:
            raise ValueError(f"members {lo}..{hi - 1} of a stack of {self.k}")
        return Stack(self.net, {n: p[lo:hi].detach() for n, p in self.params.items()},
                     self.buffers, self.multipliers, loss=self.loss, precision=self.precision,
                     stacking=self.stacking, stacked=self.stacked, lr_scales=self.lr_scales,
                     optimizer=self.optimizer)

    @property
    def k(self) -> int:
        return next(iter(self.params.values())).shape[0]

    @property
    def dtype(self) -> torch.dtype:
        return next(iter(self.params.values())).dtype

    @property
    def device(self) -> torch.device:
        return next(iter(self.params.values())).device

    def provides(self, feature: str) -> bool:
        """Whether the backend provides ``feature`` ("backward", "hvp") for this network."""
        return feature in self.features

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` on the members' device; floating inputs in their dtype."""
        x = torch.as_tensor(x)
        if x.is_floating_point() and x.dtype != self.dtype:
            x = x.to(self.dtype)
        return x.to(self.device)

    def autocast(self) -> contextlib.AbstractContextManager:
        """The autocast context the members train under (bfloat16 precision) or a no-op."""
        if self.precision != "bfloat16":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16)

    def effective(self, params: Tensors | None = None) -> dict[str, torch.Tensor]:
        """Effective parameters ``multiplier * raw`` (K, ...)."""
        return scale_params(self.params if params is None else params, self.multipliers)

    def call(self, eff: Tensors, x: torch.Tensor) -> Any:
        """One member's forward with effective parameters ``eff`` (no member axis)."""
        return functional_call(self.net, {**self.buffers, **eff}, (x,))

    def map(self, fn: Callable[..., Any], eff: Tensors, *args: Any) -> Any:
        """``fn(member_eff, *args)`` for every member, outputs stacked on a leading K axis.

        Uses ``vmap`` over members (``args`` are shared); a single member is called
        directly. ``fn`` must return tensors (or pytrees of them), never stash them.
        """
        if self.k == 1:
            return _unsqueeze(fn({n: p[0] for n, p in eff.items()}, *args))
        return vmap(fn, in_dims=(0, *([None] * len(args))), randomness="error")(dict(eff), *args)

    def apply(self, params: Tensors, x: torch.Tensor, *, fused: bool = False) -> torch.Tensor:
        """Outputs (K, batch, ...) of raw stacked ``params`` (name -> (K, ...)) on a shared x,
        by the current strategy; differentiable to any order unless ``fused`` (kernels
        differentiable once, for training)."""
        if x.is_floating_point() and x.dtype != self.dtype:
            x = x.to(self.dtype)
        if self.stacking == "batched" and self.backend.accepts(self.plan, x):
            return self.backend.forward(self.plan, self.net, params, self.buffers,
                                        self.multipliers, x, fused)
        eff = self.effective(params)
        if self.stacking == "loop":
            return torch.stack([self.call({n: p[k] for n, p in eff.items()}, x)
                                for k in range(self.k)])
        return self.map(self.call, eff, x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Outputs of every member, (K, batch, ...), under the training precision."""
        with self.autocast():
            return self.apply(self.params, x)

    __call__ = forward

    def losses(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per-member mean loss (K,) on (x, y), with gradients enabled if the caller wants them."""
        with self.autocast():
            return member_losses(self.apply(self.params, x, fused=True), y, self.loss)

    def flat_size(self) -> int:
        """Number of parameters of one member."""
        return sum(p[0].numel() for p in self.params.values())

    def measurement(self, dims: tuple[str, ...], values: torch.Tensor | np.ndarray,
                    coords: Mapping[str, Any] | None = None) -> Measurement:
        """A Measurement of ``values`` (K, ...) as numpy, member axis kept."""
        if torch.is_tensor(values):
            values = values.detach()
            if values.dtype == torch.bfloat16:
                values = values.float()
            values = values.cpu().numpy()
        clean = {d: np.asarray(c) for d, c in (coords or {}).items()}
        return Measurement(tuple(dims), np.asarray(values), clean or None)

    def hvp(self, x: torch.Tensor, y: torch.Tensor, loss: str
            ) -> Callable[[torch.Tensor], torch.Tensor]:
        """The backend's closed-form Hessian-vector product (needs ``provides("hvp")``): a map
        (K, n) -> (K, n) of stacked directions to each member's loss Hessian on (x, y) times
        them (``mlp_hvp``)."""
        if not self.provides("hvp"):
            raise ValueError(f"no closed-form HVP for {type(self.net).__name__}")
        return mlp_hvp.mlp_hvp(self.plan, self.params, self.multipliers, x, y, loss)

    def manual_backprop(self, x: torch.Tensor) -> bool:
        """Whether ``gradients`` uses the backend's hand-written backward on this input."""
        return (self.stacking == "batched" and self.precision != "bfloat16"
                and self.provides("backward") and self.backend.accepts(self.plan, x))

    def grad_buffers(self) -> dict[str, torch.Tensor]:
        """Persistent ``.grad`` tensors, one per stacked leaf, made on first use and reused
        every step."""
        if not self._grads:
            self._grads = {n: torch.zeros_like(p, memory_format=torch.contiguous_format)
                           for n, p in self.params.items()}
        for n, p in self.params.items():
            p.grad = self._grads[n]
        return self._grads

    def gradients(self, x: torch.Tensor, y: torch.Tensor,
                  dead: Callable[[torch.Tensor], torch.Tensor | None] = _alive,
                  skip: Callable[[int], bool] = _never) -> torch.Tensor:
        """Losses (K,) on (x, y); leaves the gradient of their sum in the leaves' ``.grad``
        by the current strategy. ``dead(losses)`` returns a mask (K,) of members whose
        gradient is zeroed (or None); ``skip(k)``: member k need not run (loop strategy)."""
        if self.manual_backprop(x):
            return self._manual_gradients(x, y, dead)
        if self.stacking == "loop":
            if self._loop is None:
                self._loop = MemberLoop(self.net, self.params, self.buffers, self.multipliers,
                                        self.grad_buffers())
            self.grad_buffers()
            losses = self._loop.losses_and_grads(x, y, self.loss, skip, self.autocast)
            dead(losses)
            return losses
        for p in self.params.values():  # zero_grad(set_to_none=True), without its overhead
            p.grad = None
        losses = self.losses(x, y)
        mask = dead(losses)
        if mask is not None:
            losses = losses.masked_fill(mask, 0.0)
        losses.sum().backward()
        return losses

    @torch.no_grad()
    def _manual_gradients(self, x: torch.Tensor, y: torch.Tensor,
                          dead: Callable[[torch.Tensor], torch.Tensor | None]) -> torch.Tensor:
        if x.is_floating_point() and x.dtype != self.dtype:
            x = x.to(self.dtype)
        out, saved = mlp_backprop.forward(self.plan, self.params, self.multipliers, x)
        losses, g_out = mlp_backprop.loss_and_grad(out, y, self.loss)
        mask = dead(losses)
        if mask is not None:
            g_out = torch.where(mask.view(-1, 1, 1), 0.0, g_out)
        mlp_backprop.backward(self.plan, self.params, self.multipliers, saved, g_out,
                              self.grad_buffers())
        return losses

    def choose(self, x: torch.Tensor, y: torch.Tensor,
               dead: Callable[[torch.Tensor], torch.Tensor | None] = _alive,
               skip: Callable[[int], bool] = _never) -> str:
        """Set ``stacking`` to the fastest of ``MEASURED`` (and "batched" where a backend
        exists) for this network and batch, and return it: gradients only (no update), one
        warm-up and the minimum of three timed calls each; cached per process in
        ``timings``."""
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
                    self.gradients(x, y, dead, skip)
                    self._sync()
                    runs.append(time.perf_counter() - t0)
                times[strategy] = min(runs[1:])
            _CHOSEN[key] = times
        self.timings = dict(_CHOSEN[key])
        self.stacking = min(self.timings, key=self.timings.get)
        return self.stacking

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


def _unsqueeze(tree: Any) -> Any:
    """Add a leading axis of size 1 to every tensor in nested tuples, lists and dicts."""
    if torch.is_tensor(tree):
        return tree.unsqueeze(0)
    if isinstance(tree, dict):
        return {k: _unsqueeze(v) for k, v in tree.items()}
    if isinstance(tree, (tuple, list)):
        return type(tree)(_unsqueeze(v) for v in tree)
    return tree

"""`Task`: a data stream addressed by (data seed, step), and `TaskSpec`, what a model needs to know.

A task is either a *stream* (fresh examples are drawn for every step: `_draw`) or a *finite
data set* (`_train_size`, `_train_examples`). Either way `batch(step, batch_size)` is a pure
function of (seed, step, batch_size):

- online, stream: examples drawn from the generator of ("train", step);
- online, finite: position p = step * batch_size + j of one seeded permutation of the pool;
  asking past the end of the pool is an error (each example is seen once), unless
  `allow_repeat=True` with augmentation, which continues with freshly permuted epochs;
- offline: a fixed training set of `n_train` examples (a seeded subset of a finite pool, or
  `n_train` draws of a stream); position p belongs to epoch p // n_train and picks
  `perm_epoch[p % n_train]` from a permutation reshuffled per epoch by the seed.

Label noise flips a fixed (per example, by seed) fraction of training labels to a different
random class. Probe sets come from held-out data (the test split, held-out documents or a
separate random stream) and are never augmented or noised.

A custom task subclasses `Task`, implements `_draw` (stream) or `_train_size` +
`_train_examples` + `_probe_examples` (finite), and `_render`, and ends its `__init__` with
`self._finish(...)`.
"""

from __future__ import annotations

import abc
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch

from .errors import (
    PoolExhaustedError,
    TaskConfigError,
    check_bool,
    check_choice,
    check_float,
    check_int,
)
from .seeding import MAX_SEED, generator
from .transfer import to_device

Latent = Any
"""What a task stores per example before rendering it: a tensor or a tuple of tensors whose
first axis is the example axis (e.g. uint8 images, float64 inputs, token windows)."""


@dataclass(frozen=True)
class TaskSpec:
    """Shapes and loss of a task, for building models and losses.

    name: the registered task name. mode: "online" or "offline".
    input_shape: shape of one input, e.g. (10,), (1, 28, 28), (784,) or (seq_len,) for tokens.
    output_dim: number of model outputs (classes, 1 for scalar regression, 256 bytes for LM).
    loss: "ce" (targets are int64 class ids) or "mse" (targets are floats, shape (batch, 1)).
    pool_size: distinct training examples (n_train offline, the data set size online for a
        finite data set); None for an unbounded stream.
    probe_pool_size: most examples `probe_set` can return; None when unbounded.
    n_classes: number of classes for classification; 0 for regression and language modelling.
    input_dtype: "float" (x is float, dtype chosen per call) or "int64" (x holds token ids).
    vocab_size: LM only: number of input token ids. 256 bytes in causal mode; 257 in masked
        mode, where id 256 is the mask token. Targets are always bytes 0..255.
    seq_len: LM only: tokens per sequence; x and y have shape (batch, seq_len).
    ignore_index: target value to ignore in the loss (-100 at unmasked positions, masked LM).
    mask_token: masked LM only: the id (256) that replaces masked input positions.
    label_noise: fraction of training labels flipped to a different class.
    source: where the data came from (a path, "synthetic", "sklearn digits", ...).
    """

    input_shape: tuple[int, ...]
    output_dim: int
    loss: Literal["ce", "mse"]
    pool_size: int | None
    name: str = "task"
    mode: Literal["online", "offline"] = "online"
    probe_pool_size: int | None = None
    n_classes: int = 0
    input_dtype: Literal["float", "int64"] = "float"
    vocab_size: int | None = None
    seq_len: int | None = None
    ignore_index: int | None = None
    mask_token: int | None = None
    label_noise: float = 0.0
    source: str = "synthetic"


def index_latent(latent: Latent, idx: torch.Tensor) -> Latent:
    """Select examples `idx` (int64, CPU) along the first axis of a latent."""
    if isinstance(latent, tuple):
        return tuple(part.index_select(0, idx) for part in latent)
    return latent.index_select(0, idx)


class Task(abc.ABC):
    """A data stream addressed by (data seed, step). See the module docstring for the modes.

    Common options (keyword-only, accepted by every task):
        mode: "online" (default) or "offline".
        n_train: offline only: number of distinct training examples.
        epochs: offline only: optional cap; asking for examples past `epochs * n_train` raises.
        label_noise: fraction in [0, 1] of training labels flipped (classification only).
        allow_repeat: online finite data sets with augmentation only: continue past the end of
            the pool with freshly permuted, freshly augmented epochs.
    """

    name: ClassVar[str] = "task"
    _ORDER_CACHE = 4

    def __init__(
        self,
        seed: int = 0,
        *,
        mode: str = "online",
        n_train: int | None = None,
        epochs: int | None = None,
        label_noise: float = 0.0,
        allow_repeat: bool = False,
    ) -> None:
        self.seed = check_int("seed", seed, 0, MAX_SEED)
        self.mode = check_choice("mode", mode, ("online", "offline"))
        if self.mode == "offline":
            if n_train is None:
                raise TaskConfigError("n_train is required with mode='offline' (an integer >= 1)")
            self.n_train: int | None = check_int("n_train", n_train, 1)
            self.epochs = None if epochs is None else check_int("epochs", epochs, 1)
        else:
            for field, value in (("n_train", n_train), ("epochs", epochs)):
                if value is not None:
                    raise TaskConfigError(
                        f"{field} is only used with mode='offline', got {value!r}"
                    )
            self.n_train = None
            self.epochs = None
        self.label_noise = check_float("label_noise", label_noise, 0.0, 1.0)
        self.allow_repeat = check_bool("allow_repeat", allow_repeat)
        self.augments = False
        self.info: dict[str, Any] = {}
        self._orders: OrderedDict[int, torch.Tensor] = OrderedDict()
        self._pool: tuple[Latent, torch.Tensor] | None = None
        self._subset: torch.Tensor | None = None
        self._noisy: torch.Tensor | None = None

    # ---- hooks for subclasses -------------------------------------------------------------

    def _draw(self, gen: torch.Generator, n: int) -> tuple[Latent, torch.Tensor]:
        """Stream tasks: `n` fresh examples from `gen`: (latent, clean targets), on the CPU."""
        raise NotImplementedError

    def _train_size(self) -> int | None:
        """Finite data sets: number of training examples; None for a stream."""
        return None

    def _train_examples(self, idx: torch.Tensor) -> tuple[Latent, torch.Tensor]:
        """Finite data sets: (latent, clean labels) of training examples `idx` (int64, CPU)."""
        raise NotImplementedError

    def _train_labels(self) -> torch.Tensor:
        """Finite classification data sets: every clean training label, int64 (N,)."""
        raise NotImplementedError

    def _probe_examples(self, n: int) -> tuple[Latent, torch.Tensor]:
        """`n` held-out examples fixed by the seed. Streams draw from the "probe" stream."""
        return self._draw(generator(self.seed, "probe"), n)

    @abc.abstractmethod
    def _render(
        self,
        latent: Latent,
        device: torch.device,
        dtype: torch.dtype,
        augment: torch.Generator | None,
    ) -> torch.Tensor:
        """Inputs x on `device` from a latent; `augment` draws augmentation, None for none."""

    def _finish(
        self,
        *,
        input_shape: tuple[int, ...],
        n_classes: int,
        output_dim: int | None = None,
        loss: Literal["ce", "mse"] | None = None,
        probe_pool_size: int | None = None,
        source: str = "synthetic",
        **lm: Any,
    ) -> None:
        """Validate the options that depend on the task and build `self.spec`."""
        loss = loss or ("ce" if n_classes > 0 else "mse")
        if self.label_noise > 0 and n_classes == 0:
            raise TaskConfigError(
                f"label_noise must be 0 for task {self.name!r}: only classification tasks support"
                f" label noise (this task's loss is {loss!r}); got {self.label_noise}"
            )
        finite = self._train_size()
        if self.allow_repeat and (finite is None or self.mode != "online" or not self.augments):
            raise TaskConfigError(
                "allow_repeat=True is only allowed for an online finite data set with augment=True"
                f" (task {self.name!r}, mode {self.mode!r}, augment={self.augments})"
            )
        if self.mode == "offline" and finite is not None and self.n_train > finite:
            raise TaskConfigError(
                f"n_train must be an integer in [1, {finite}] for task {self.name!r} (its"
                f" training set holds {finite} examples), got {self.n_train}"
            )
        self.n_classes = n_classes
        self.spec = TaskSpec(
            name=self.name,
            input_shape=tuple(input_shape),
            output_dim=output_dim if output_dim is not None else max(n_classes, 1),
            loss=loss,
            pool_size=self.n_train if self.mode == "offline" else finite,
            mode=self.mode,
            probe_pool_size=probe_pool_size,
            n_classes=n_classes,
            label_noise=self.label_noise,
            source=source,
            **lm,
        )
        self.info.setdefault("source", source)

    # ---- public API ---------------------------------------------------------------------

    def batch(
        self,
        step: int,
        batch_size: int,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The training batch of `step`: (x, y) on `device`, a pure function of (seed, step).

        x: (batch_size, *spec.input_shape), float `dtype` (default float32) or int64 tokens.
        y: int64 (batch_size,) class ids; float `dtype` (batch_size, output_dim) for "mse";
           int64 (batch_size, seq_len) for language modelling.
        """
        step = check_int("step", step, 0, MAX_SEED)
        batch_size = check_int("batch_size", batch_size, 1)
        if self._train_size() is None and self.mode == "online":
            latent, y = self._draw(generator(self.seed, "train", step), batch_size)
            if self.label_noise > 0:
                y = self._flip(y, generator(self.seed, "noise", step))
        else:
            latent, y = self._take(self._positions(step, batch_size))
        augment = generator(self.seed, "augment", step) if self.augments else None
        return self._emit(latent, y, device, dtype, augment)

    def probe_set(
        self,
        n: int,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """`n` held-out examples (x, y), fixed by the data seed, disjoint from training data.

        Shapes as in `batch`; labels are clean and inputs are not augmented.
        """
        high = self.spec.probe_pool_size
        n = check_int("n (probe set size)", n, 1, high)
        latent, y = self._probe_examples(n)
        return self._emit(latent, y, device, dtype, None)

    def steps_per_epoch(self, batch_size: int) -> int | None:
        """Whole steps in one pass over the training pool; None for an unbounded stream."""
        batch_size = check_int("batch_size", batch_size, 1)
        return None if self.spec.pool_size is None else self.spec.pool_size // batch_size

    def __repr__(self) -> str:
        extra = f", n_train={self.n_train}" if self.mode == "offline" else ""
        if self.label_noise:
            extra += f", label_noise={self.label_noise}"
        return f"<{type(self).__name__} {self.name!r} seed={self.seed} mode={self.mode!r}{extra}>"

    # ---- internals ----------------------------------------------------------------------

    def _emit(
        self,
        latent: Latent,
        y: torch.Tensor,
        device: torch.device | str | None,
        dtype: torch.dtype | None,
        augment: torch.Generator | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        device = torch.device("cpu") if device is None else torch.device(device)
        dtype = torch.float32 if dtype is None else dtype
        if not dtype.is_floating_point:
            raise TaskConfigError(f"dtype must be a floating-point torch dtype, got {dtype}")
        x = self._render(latent, device, dtype, augment)
        y = to_device(y, device, dtype if self.spec.loss == "mse" else torch.int64)
        return x, y

    def _positions(self, step: int, batch_size: int) -> torch.Tensor:
        """Indices into the training pool (0..pool_size-1) for the examples of `step`."""
        n = self.spec.pool_size
        start, stop = step * batch_size, (step + 1) * batch_size
        if self.mode == "online" and stop > n and not self.allow_repeat:
            raise PoolExhaustedError(
                f"step {step} with batch_size {batch_size} needs training examples up to #{stop},"
                f" but the online {self.name!r} pool holds {n} examples (each is seen once:"
                f" steps 0..{n // batch_size - 1} at this batch size). Use mode='offline' with"
                " n_train, or augment=True with allow_repeat=True."
            )
        if self.epochs is not None and stop > self.epochs * n:
            raise PoolExhaustedError(
                f"step {step} with batch_size {batch_size} reaches example #{stop}, past"
                f" epochs={self.epochs} of n_train={n} (at most {self.epochs * n} examples)"
            )
        first, last = start // n, (stop - 1) // n
        if first == last:
            return self._order(first)[start - first * n:stop - first * n]
        pos = torch.arange(start, stop, dtype=torch.int64)
        out = torch.empty(batch_size, dtype=torch.int64)
        epoch = torch.div(pos, n, rounding_mode="floor")
        for e in range(first, last + 1):
            here = epoch == e
            out[here] = self._order(e)[pos[here] - e * n]
        return out

    def _order(self, epoch: int) -> torch.Tensor:
        """The seeded permutation of the training pool for `epoch`."""
        order = self._orders.get(epoch)
        if order is None:
            gen = generator(self.seed, "order", epoch)
            order = torch.randperm(self.spec.pool_size, generator=gen)
            self._orders[epoch] = order
            while len(self._orders) > self._ORDER_CACHE:
                self._orders.popitem(last=False)
        return order

    def _take(self, idx: torch.Tensor) -> tuple[Latent, torch.Tensor]:
        """(latent, labels) of training-pool examples `idx`, label noise applied."""
        finite = self._train_size()
        if finite is None:
            if self._pool is None:
                latent, y = self._draw(generator(self.seed, "pool"), self.n_train)
                if self.label_noise > 0:
                    y = self._flip(y, generator(self.seed, "noise"))
                self._pool = (latent, y)
            latent, y = self._pool
            return index_latent(latent, idx), y.index_select(0, idx)
        if self.mode == "offline":
            if self._subset is None:
                perm = torch.randperm(finite, generator=generator(self.seed, "subset"))
                self._subset = perm[: self.n_train]
            data_idx = self._subset[idx]
        else:
            data_idx = idx
        latent, y = self._train_examples(data_idx)
        if self.label_noise > 0:
            if self._noisy is None:
                self._noisy = self._flip(self._train_labels(), generator(self.seed, "noise"))
            y = self._noisy[data_idx]
        return latent, y

    def _flip(self, y: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """Labels with a `label_noise` fraction replaced by a different uniformly random class."""
        n = y.shape[0]
        flip = torch.rand(n, generator=gen) < self.label_noise
        shift = torch.randint(1, self.n_classes, (n,), generator=gen) if self.n_classes > 1 else 0
        return torch.where(flip, (y + shift) % self.n_classes, y)

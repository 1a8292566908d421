"""Data for a check: a built-in task that matches the model's input, or Gaussian inputs.

Every width and seed sees the same batches (a function of the step) and the same probe
inputs, so activations and outputs can be compared across widths point by point.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from widthscan import tasks
from widthscan.parametrization.roles import build_meta

BATCH = 32
PROBE = 64
TEXT_BATCH = 4
TEXT_PROBE = 4
TEXT_SEQ = 16


class UsageError(ValueError):
    """Bad arguments to a check (the CLI exits with code 2)."""


@dataclass
class Data:
    """Batches ``batch(step) -> (x, y)`` and fixed probe inputs ``probe()``; ``loss`` is
    "mse" or "ce"; ``name`` says where the data comes from."""

    name: str
    loss: str
    draw: Callable[[int], tuple[torch.Tensor, torch.Tensor]]
    draw_probe: Callable[[], tuple[torch.Tensor, torch.Tensor]]
    _probe: tuple[torch.Tensor, torch.Tensor] | None = field(default=None, repr=False)

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.draw(step)

    def probe_xy(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._probe is None:
            self._probe = self.draw_probe()
        return self._probe

    def probe(self) -> torch.Tensor:
        return self.probe_xy()[0]


def from_task(task: tasks.Task, batch: int = BATCH, probe: int = PROBE) -> Data:
    """Batches of ``batch`` and ``probe`` held-out examples of a built-in task (float32)."""
    if task.spec.input_dtype == "int64":
        batch, probe = min(batch, TEXT_BATCH), min(probe, TEXT_PROBE)
    return Data(task.name, task.spec.loss,
                lambda step: task.batch(step, batch, dtype=torch.float32),
                lambda: task.probe_set(probe, dtype=torch.float32))


def gaussian(input_shape: Sequence[int], n_out: int, batch: int = BATCH,
             probe: int = PROBE) -> Data:
    """x ~ N(0, 1) of ``input_shape``; targets from a fixed random linear teacher:
    regression (mse) when ``n_out == 1``, else argmax over ``n_out`` classes (ce)."""
    shape = tuple(int(s) for s in input_shape)
    dim = 1
    for s in shape:
        dim *= s
    teacher = torch.randn(dim, max(n_out, 1), generator=torch.Generator().manual_seed(0))
    teacher /= dim**0.5

    def draw(seed: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.randn(n, *shape, generator=torch.Generator().manual_seed(seed))
        z = x.flatten(1) @ teacher
        return x, (z if n_out == 1 else z.argmax(1))

    return Data(f"gaussian{list(shape)}", "mse" if n_out == 1 else "ce",
                lambda step: draw(1 + step, batch), lambda: draw(1 << 30, probe))


def _first_layer(net: nn.Module) -> nn.Module | None:
    kinds = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Embedding)
    return next((m for m in net.modules() if isinstance(m, kinds)), None)


def _dummy(first: nn.Module | None) -> torch.Tensor | None:
    if isinstance(first, nn.Embedding):
        return torch.zeros(2, TEXT_SEQ, dtype=torch.long)
    if isinstance(first, nn.Conv2d):
        return torch.zeros(2, first.in_channels, 8, 8)
    if isinstance(first, nn.Linear):
        return torch.zeros(2, first.in_features)
    return None


def _n_out(factory: Callable[[int], nn.Module], base_width: int, x: torch.Tensor | None
           ) -> int | None:
    """The model's output size (last dim) on a dummy input, or None if it does not run."""
    if x is None:
        return None
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        try:
            out = factory(base_width)(x)
        except Exception:
            return None
    return int(out.shape[-1]) if torch.is_tensor(out) and out.ndim >= 2 else None


def match(factory: Callable[[int], nn.Module], base_width: int, task: str | None = None,
          input_shape: Sequence[int] | None = None) -> Data:
    """The data for ``factory``: ``task`` by name, Gaussian inputs of ``input_shape``, or a
    built-in task matched to the first and last layers (Embedding: ``text``; Conv with one
    input channel: ``synthetic_vision``; Linear(d_in) with one output: ``gegenbauer``, with
    several: ``teacher``)."""
    if task is not None and input_shape is not None:
        raise UsageError("pass either task or input_shape, not both")
    first = _first_layer(build_meta(factory, base_width))
    if task is not None:
        opts = {"seq_len": TEXT_SEQ} if task == "text" else {}
        try:
            return from_task(tasks.make(task, seed=0, **opts))
        except tasks.TaskConfigError as err:
            raise UsageError(f"task={task!r}: {err}") from err
    if input_shape is not None:
        if not input_shape or any(int(s) <= 0 for s in input_shape):
            raise UsageError(f"input_shape={list(input_shape)}: give positive sizes")
        n_out = _n_out(factory, base_width, torch.zeros(2, *[int(s) for s in input_shape]))
        if n_out is None:
            raise UsageError(f"the model does not run on inputs of shape {list(input_shape)}")
        return gaussian(input_shape, n_out)
    n_out = _n_out(factory, base_width, _dummy(first))
    if isinstance(first, nn.Embedding):
        if first.num_embeddings < 256 or (n_out is not None and n_out < 256):
            raise UsageError("the model embeds tokens but has fewer than 256 token ids or "
                             "outputs (the built-in 'text' task uses bytes): pass task or "
                             "input_shape")
        return from_task(tasks.make("text", seed=0, seq_len=TEXT_SEQ))
    if isinstance(first, nn.Conv2d) and first.in_channels == 1 and n_out == 10:
        return from_task(tasks.make("synthetic_vision", seed=0, source="digits"))
    if isinstance(first, nn.Conv2d):
        return gaussian((first.in_channels, 8, 8), n_out or 1)
    if isinstance(first, nn.Linear) and n_out is not None:
        d_in = first.in_features
        if n_out == 1 and d_in >= 3:
            return from_task(tasks.make("gegenbauer", seed=0, dim=d_in))
        if n_out > 1:
            return from_task(tasks.make("teacher", seed=0, dim=d_in, n_classes=n_out))
    raise UsageError("no built-in task matches this model's input: pass task (one of "
                     f"{', '.join(tasks.names())}) or input_shape")

"""The registry, custom tasks, and configuration errors that name the field and the range."""

from __future__ import annotations

from typing import Any

import pytest
import torch

import widthscan.tasks as ws_tasks
from widthscan.tasks import Task, TaskConfigError

BUILTIN = {"gegenbauer", "polynomial", "teacher", "fashion_mnist", "cifar10",
           "synthetic_vision", "text"}


def test_names_and_exports() -> None:
    assert BUILTIN <= set(ws_tasks.names())
    assert ws_tasks.names() == sorted(ws_tasks.names())
    assert issubclass(TaskConfigError, ValueError)
    allowed = set(ws_tasks.options("gegenbauer"))
    assert {"dim", "degree", "mode", "n_train", "label_noise"} <= allowed
    image_options = set(ws_tasks.options("fashion_mnist"))
    assert {"root", "augment", "flatten", "mode"} <= image_options
    assert not {"data", "source", "seed"} & image_options


def test_unknown_name_lists_known_names() -> None:
    with pytest.raises(TaskConfigError) as err:
        ws_tasks.make("cifar100")
    for name in BUILTIN:
        assert name in str(err.value)


def test_unknown_option_lists_allowed() -> None:
    with pytest.raises(TaskConfigError, match=r"unknown option\(s\) dimension.*allowed.*dim"):
        ws_tasks.make("gegenbauer", dimension=3)


class _Ramp(Task):
    """A toy classification stream: x ~ N(0, 1), y = (x > 0)."""

    name = "ramp"

    def __init__(self, seed: int = 0, *, width: int = 3, **common: Any) -> None:
        super().__init__(seed, **common)
        self.width = width
        self._finish(input_shape=(width,), n_classes=2)

    def _draw(self, gen: torch.Generator, n: int):
        x = torch.randn(n, self.width, generator=gen)
        return x, (x[:, 0] > 0).long()

    def _render(self, latent, device, dtype, augment):
        return latent.to(device=device, dtype=dtype)


def test_register_custom_task() -> None:
    ws_tasks.register(_Ramp, name="test_ramp")
    try:
        assert "test_ramp" in ws_tasks.names()
        task = ws_tasks.make("test_ramp", seed=1, width=4, mode="offline", n_train=8,
                             label_noise=0.25)
        x, y = task.batch(3, 5)
        assert x.shape == (5, 4) and y.shape == (5,)
        assert task.spec.loss == "ce" and task.spec.output_dim == 2
        with pytest.raises(TaskConfigError, match="already registered"):
            ws_tasks.register(Task.__class__("Other", (_Ramp,), {}), name="test_ramp")
    finally:
        ws_tasks.unregister("test_ramp")
    assert "test_ramp" not in ws_tasks.names()


@pytest.mark.parametrize(
    ("name", "options", "pattern"),
    [
        ("gegenbauer", {"label_noise": 1.5}, r"label_noise must be a number in \[0.0, 1.0\]"),
        ("teacher", {"label_noise": -0.1}, r"label_noise must be a number in \[0.0, 1.0\]"),
        ("teacher", {"label_noise": float("nan")}, r"label_noise .*\[0.0, 1.0\]"),
        ("gegenbauer", {"dim": 2}, r"dim must be an integer in \[3, "),
        ("gegenbauer", {"degree": 0}, r"degree must be an integer in \[1, "),
        ("gegenbauer", {"mode": "batch"}, r"mode must be one of 'online', 'offline'"),
        ("gegenbauer", {"mode": "offline"}, r"n_train is required"),
        ("gegenbauer", {"mode": "offline", "n_train": 0}, r"n_train must be an integer >= 1"),
        ("gegenbauer", {"n_train": 10}, r"n_train is only used with mode='offline'"),
        ("teacher", {"n_classes": 1}, r"n_classes must be 0 .* or an integer >= 2"),
        ("text", {"corpus": "pydoc-topics", "seq_len": 0}, r"seq_len must be an integer in \[1"),
        ("text", {"corpus": "pydoc-topics", "objective": "bert"}, r"objective must be one of"),
        ("text", {"corpus": "wikipedia"}, r"corpus must be one of 'auto'"),
        ("synthetic_vision", {"source": "imagenet"}, r"source must be one of"),
        ("cifar10", {}, r"root is required"),
        ("gegenbauer", {"seed": -1}, r"seed must be an integer in \[0, "),
    ],
)
def test_bad_config_names_field_and_range(name: str, options: dict, pattern: str) -> None:
    with pytest.raises(TaskConfigError, match=pattern):
        ws_tasks.make(name, **options)


@pytest.mark.parametrize("batch_size", [0, -3, 2.5, True])
def test_bad_batch_size(batch_size: Any) -> None:
    with pytest.raises(TaskConfigError, match=r"batch_size must be an integer >= 1"):
        ws_tasks.make("gegenbauer").batch(0, batch_size)


def test_bad_step_and_probe_size(idx_dir) -> None:
    with pytest.raises(TaskConfigError, match=r"step must be an integer in \[0, "):
        ws_tasks.make("gegenbauer").batch(-1, 4)
    task = ws_tasks.make("fashion_mnist", root=idx_dir[0])
    with pytest.raises(TaskConfigError, match=r"probe set size\) must be an integer in \[1, 40\]"):
        task.probe_set(41)
    with pytest.raises(TaskConfigError, match=r"n_train must be an integer in \[1, 200\]"):
        ws_tasks.make("fashion_mnist", root=idx_dir[0], mode="offline", n_train=201)
    with pytest.raises(TaskConfigError, match="dtype must be a floating-point"):
        task.batch(0, 2, dtype=torch.int32)

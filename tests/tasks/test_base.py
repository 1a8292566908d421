"""Online / offline schedules, label noise and epochs, on finite and stream tasks."""

from __future__ import annotations

import math
from collections import Counter

import pytest
import torch

import widthscan.tasks as ws_tasks
from widthscan.tasks import PoolExhaustedError, TaskConfigError

from .helpers import row_hashes


def _seen(task: ws_tasks.Task, steps: int, batch_size: int) -> list[str]:
    return [h for s in range(steps) for h in row_hashes(task.batch(s, batch_size)[0])]


@pytest.mark.parametrize("name", ["fashion_mnist", "gegenbauer"])
def test_offline_repeats_exactly_n_train_examples(name: str, idx_dir) -> None:
    opts = {"root": idx_dir[0]} if name == "fashion_mnist" else {}
    task = ws_tasks.make(name, seed=2, mode="offline", n_train=50, epochs=4, **opts)
    assert task.spec.pool_size == 50
    seen = _seen(task, steps=20, batch_size=10)
    counts = Counter(seen)
    first_epoch = set(seen[:50])
    assert len(first_epoch) == 50
    assert set(counts) == first_epoch
    assert set(counts.values()) == {4}
    assert seen[:50] != seen[50:100], "epochs must be reshuffled"
    with pytest.raises(PoolExhaustedError, match="epochs=4"):
        task.batch(20, 10)
    # batch(step) picks from the permutation of epoch step * bs // n_train, also across epochs
    straddling = row_hashes(task.batch(2, 30)[0])
    assert straddling == seen[60:90]


def test_offline_subset_is_from_the_training_pool(idx_dir) -> None:
    root, _ = idx_dir
    full = ws_tasks.make("fashion_mnist", seed=0, root=root)
    pool = set(row_hashes(full.batch(0, 200)[0]))
    sub = ws_tasks.make("fashion_mnist", seed=0, root=root, mode="offline", n_train=30)
    assert set(row_hashes(sub.batch(0, 30)[0])) <= pool
    other = ws_tasks.make("fashion_mnist", seed=1, root=root, mode="offline", n_train=30)
    assert set(row_hashes(other.batch(0, 30)[0])) != set(row_hashes(sub.batch(0, 30)[0]))


def test_online_finite_pool_sees_each_example_once_then_errors(idx_dir) -> None:
    root, _ = idx_dir
    task = ws_tasks.make("fashion_mnist", seed=0, root=root)
    seen = _seen(task, steps=4, batch_size=50)
    assert len(set(seen)) == 200
    with pytest.raises(PoolExhaustedError, match=r"step 4 with batch_size 50.*250.*holds 200"):
        task.batch(4, 50)
    with pytest.raises(TaskConfigError, match="allow_repeat"):
        ws_tasks.make("fashion_mnist", root=root, allow_repeat=True)
    rep = ws_tasks.make("fashion_mnist", seed=0, root=root, augment=True, allow_repeat=True)
    assert rep.batch(10, 50)[0].shape == (50, 1, 28, 28)


def _binomial_ok(flips: int, n: int, p: float) -> bool:
    return abs(flips - n * p) < 4.5 * math.sqrt(n * p * (1 - p))


@pytest.mark.parametrize("mode", ["online", "offline"])
def test_label_noise_flips_a_fixed_fraction(mode: str) -> None:
    opts = {"mode": mode, "n_train": 4000} if mode == "offline" else {}
    clean = ws_tasks.make("teacher", seed=4, n_classes=10, **opts)
    noisy = ws_tasks.make("teacher", seed=4, n_classes=10, label_noise=0.5, **opts)
    xc, yc = clean.batch(0, 4000)
    xn, yn = noisy.batch(0, 4000)
    assert torch.equal(xc, xn)
    flipped = yc != yn
    assert _binomial_ok(int(flipped.sum()), 4000, 0.5)
    shift = (yn - yc) % 10
    assert set(shift[flipped].tolist()) == set(range(1, 10))
    again = ws_tasks.make("teacher", seed=4, n_classes=10, label_noise=0.5, **opts)
    assert torch.equal(again.batch(0, 4000)[1], yn)


def test_label_noise_is_fixed_per_example_across_epochs(idx_dir) -> None:
    root = idx_dir[0]
    task = ws_tasks.make("fashion_mnist", seed=1, root=root, mode="offline", n_train=200,
                         label_noise=0.5)
    x_clean, y_clean = ws_tasks.make("fashion_mnist", root=root).batch(0, 200)
    clean_of = dict(zip(row_hashes(x_clean), y_clean.tolist()))
    label_of: dict[str, int] = {}
    for step in range(6):
        x, y = task.batch(step, 100)
        for h, label in zip(row_hashes(x), y.tolist()):
            assert label_of.setdefault(h, label) == label
    flips = sum(label_of[h] != clean_of[h] for h in label_of)
    assert len(label_of) == 200 and _binomial_ok(flips, 200, 0.5)


def test_label_noise_needs_classification() -> None:
    with pytest.raises(TaskConfigError, match=r"label_noise.*classification"):
        ws_tasks.make("gegenbauer", label_noise=0.1)
    with pytest.raises(TaskConfigError, match=r"label_noise.*classification"):
        ws_tasks.make("text", corpus="pydoc-topics", label_noise=0.1)


def test_probe_set_is_disjoint_from_offline_stream_pool() -> None:
    task = ws_tasks.make("gegenbauer", seed=0, mode="offline", n_train=100)
    pool = set(row_hashes(task.batch(0, 100)[0]))
    probe = row_hashes(task.probe_set(500)[0])
    assert len(set(probe)) == 500 and not pool & set(probe)


def test_steps_per_epoch(idx_dir) -> None:
    assert ws_tasks.make("fashion_mnist", root=idx_dir[0]).steps_per_epoch(64) == 3
    assert ws_tasks.make("gegenbauer").steps_per_epoch(64) is None

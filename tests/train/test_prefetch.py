"""Batches made ahead in a background thread are exactly the batches made in the loop."""

from __future__ import annotations

import threading

import pytest
import torch

import widthscan as ws
import widthscan.tasks as ws_tasks
from widthscan.train.loop import train_loop
from widthscan.train.prefetch import Prefetcher


@pytest.fixture
def two_threads(monkeypatch, tmp_path):
    monkeypatch.setenv("WIDTHSCAN_CACHE", str(tmp_path))
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("name, opts", [("synthetic_vision", {"source": "digits"}),
                                        ("teacher", {"label_noise": 0.3})])
def test_prefetched_stream_equals_direct_stream_bit_for_bit(two_threads, name, opts) -> None:
    task = ws_tasks.make(name, seed=4, **opts)
    direct = [task.batch(t, 48) for t in range(3, 9)]
    fresh = ws_tasks.make(name, seed=4, **opts)
    with Prefetcher(lambda t: fresh.batch(t, 48), 3, 9, depth=2) as ahead:
        made = [ahead(t) for t in range(3, 9)]
    for (x, y), (px, py) in zip(direct, made):
        assert torch.equal(x, px) and torch.equal(y, py)
    assert torch.get_num_threads() == 2


def test_an_error_is_raised_at_the_step_that_made_it() -> None:
    def batch(t: int):
        if t == 2:
            raise RuntimeError("no batch 2")
        return torch.full((1,), float(t)), torch.zeros(1)

    with Prefetcher(batch, 0, 5, depth=3) as ahead:
        assert ahead(0)[0].item() == 0.0 and ahead(1)[0].item() == 1.0
        with pytest.raises(RuntimeError, match="no batch 2"):
            ahead(2)


def test_steps_must_come_in_order_and_depth_is_checked() -> None:
    with Prefetcher(lambda t: t, 0, 3) as ahead, pytest.raises(ValueError, match="expected step 0"):
        ahead(1)
    with pytest.raises(ValueError, match="depth"):
        Prefetcher(lambda t: t, 0, 3, depth=0)


def _mlp(width):
    return ws.models.mlp(width, depth=3, d_in=64, d_out=10)


@pytest.mark.parametrize("prefetch", [0, 2])
def test_training_with_prefetch_is_bit_identical_and_stops_its_worker(two_threads, prefetch):
    task = ws_tasks.make("synthetic_vision", seed=1, source="digits", flatten=True)
    runs = []
    for depth in (0, prefetch):
        ens = ws.Ensemble(_mlp, 32, 16, "mup", "sgd", [0, 1], 0.05, loss="ce")
        assert train_loop(ens, lambda t: task.batch(t, 32), 7, prefetch=depth) == "done"
        runs.append(ens.params)
    for name, p in runs[0].items():
        assert torch.equal(p, runs[1][name]), name
    assert not [t for t in threading.enumerate() if t.name == "widthscan-prefetch"]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name, opts", [("synthetic_vision", {"source": "digits"}),
                                        ("teacher", {"label_noise": 0.3})])
def test_prefetched_cuda_batches_equal_direct_ones(two_threads, name, opts) -> None:
    """Pinned, non-blocking copies made in the worker thread give the same device batches."""
    task = ws_tasks.make(name, seed=4, **opts)
    direct = [task.batch(t, 48, device="cuda") for t in range(6)]
    with Prefetcher(lambda t: task.batch(t, 48, device="cuda"), 0, 6, depth=3) as ahead:
        made = [ahead(t) for t in range(6)]
    torch.cuda.synchronize()
    for (x, y), (px, py) in zip(direct, made):
        assert px.is_cuda and torch.equal(x, px) and torch.equal(y, py)

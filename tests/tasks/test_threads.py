"""single_threaded: work on one intra-op thread while the caller keeps its thread count."""

from __future__ import annotations

import threading

import pytest
import torch

from widthscan.tasks.threads import per_thread_counts, single_threaded


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


@pytest.mark.skipif(not per_thread_counts(), reason="thread counts are process-wide here")
def test_work_runs_on_one_thread_while_other_threads_keep_their_count(two_threads) -> None:
    asked, answered, seen = threading.Event(), threading.Event(), []

    def other() -> None:
        torch.get_num_threads()
        asked.wait()
        seen.append(torch.get_num_threads())
        answered.set()

    def pinned_work() -> int:
        asked.set()
        answered.wait()
        return torch.get_num_threads()

    thread = threading.Thread(target=other)
    thread.start()
    assert single_threaded(pinned_work) == 1
    thread.join()
    assert seen == [2]
    assert torch.get_num_threads() == 2
    later = []
    thread = threading.Thread(target=lambda: later.append(torch.get_num_threads()))
    thread.start()
    thread.join()
    assert later == [2]


def test_product_equals_one_made_on_a_one_thread_process_setting(two_threads) -> None:
    g = torch.Generator().manual_seed(0)
    a, b, c = (torch.randn(s, generator=g) for s in ((300,), (300, 64), (64, 300)))
    here = single_threaded(torch.addmm, a, b, c)
    torch.set_num_threads(1)
    reference = torch.addmm(a, b, c)
    assert torch.equal(here, reference)


def test_exceptions_reach_the_caller(two_threads) -> None:
    with pytest.raises(ValueError, match="boom"):
        single_threaded(lambda: (_ for _ in ()).throw(ValueError("boom")))

"""text: byte-level causal and masked language modelling over files and built-in corpora."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import widthscan.tasks as ws_tasks
from widthscan.tasks import DatasetNotFoundError

LETTERS = "abcdefghijklmnopqrstuvwxyz ,."


@pytest.fixture
def corpus_dir(tmp_path: Path) -> Path:
    """Twelve documents of random letters (no window can occur in two documents)."""
    gen = torch.Generator().manual_seed(0)
    root = tmp_path / "docs"
    (root / "sub").mkdir(parents=True)
    for i in range(12):
        idx = torch.randint(0, len(LETTERS), (3000 + 100 * i,), generator=gen).tolist()
        text = "".join(LETTERS[j] for j in idx)
        suffix = (".txt", ".md", ".rst")[i % 3]
        (root / ("sub" if i % 2 else "") / f"doc{i:02d}{suffix}").write_text(text)
    (root / "ignored.bin").write_bytes(b"\x00" * 1000)
    return root


def _doc_bytes(root: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in root.rglob("*") if p.suffix in (".txt", ".md", ".rst")}


def test_default_corpus_works_offline() -> None:
    task = ws_tasks.make("text", seed=0)
    assert task.info["source"] in ("shakespeare", "python-docs", "pydoc-topics")
    x, y = task.batch(0, 8)
    assert x.shape == y.shape == (8, 128) and x.dtype == y.dtype == torch.int64
    assert task.spec.vocab_size == 256 and task.spec.output_dim == 256
    topics = ws_tasks.make("text", corpus="pydoc-topics", seq_len=64)
    assert topics.info["n_documents"] > 10 and topics.probe_set(4)[0].shape == (4, 64)


def test_causal_targets_are_next_bytes(corpus_dir: Path) -> None:
    task = ws_tasks.make("text", seed=1, paths=corpus_dir, seq_len=32)
    assert task.info["n_documents"] == 12
    x, y = task.batch(5, 64)
    assert torch.equal(x[:, 1:], y[:, :-1])
    train = bytes(task.train_bytes.tolist())
    for row in torch.cat([x[:, :1], y], dim=1):
        assert bytes(row.tolist()) in train


def test_probe_documents_are_held_out(corpus_dir: Path) -> None:
    task = ws_tasks.make("text", seed=3, paths=corpus_dir, seq_len=32)
    docs = _doc_bytes(corpus_dir)
    probe_names = set(task.info["probe_documents"])
    assert probe_names and probe_names < set(docs)
    probe_text = [docs[n] for n in probe_names]
    train_text = [d for n, d in docs.items() if n not in probe_names]
    xp, yp = task.probe_set(50)
    for row in torch.cat([xp[:, :1], yp], dim=1):
        window = bytes(row.tolist())
        assert any(window in d for d in probe_text)
        assert not any(window in d for d in train_text)
    for step in range(3):
        x, y = task.batch(step, 64)
        for row in torch.cat([x[:, :1], y], dim=1):
            assert not any(bytes(row.tolist()) in d for d in probe_text)
    other = ws_tasks.make("text", seed=4, paths=corpus_dir, seq_len=32)
    assert set(other.info["probe_documents"]) != probe_names or not torch.equal(
        other.probe_set(5)[0], task.probe_set(5)[0]
    )


def test_masked_mode(corpus_dir: Path) -> None:
    task = ws_tasks.make("text", seed=0, paths=corpus_dir, objective="masked", seq_len=100)
    spec = task.spec
    assert spec.vocab_size == 257 and spec.mask_token == 256 and spec.ignore_index == -100
    x, y = task.batch(2, 64)
    masked = y != -100
    assert torch.equal(masked, x == 256)
    assert (masked.sum(1) == 15).all()
    assert (y[masked] >= 0).all() and (y[masked] < 256).all()
    train = bytes(task.train_bytes.tolist())
    for row_x, row_y in zip(x, y):
        original = torch.where(row_y == -100, row_x, row_y)
        assert bytes(original.tolist()) in train
    positions = masked.nonzero()[:, 1]
    assert positions.unique().numel() > 60, "masked positions vary across sequences"


def test_masked_loss_only_at_masked_positions(corpus_dir: Path) -> None:
    task = ws_tasks.make("text", seed=0, paths=corpus_dir, objective="masked", seq_len=64)
    _, y = task.batch(0, 16)
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(16, 64, 256, generator=gen)

    def loss(lg: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(lg.reshape(-1, 256), y.reshape(-1), ignore_index=-100)

    base = loss(logits)
    unmasked = (y == -100).unsqueeze(-1)
    noisy = logits + 100 * torch.randn(logits.shape, generator=gen) * unmasked
    assert torch.equal(loss(noisy), base)
    one_masked = (y != -100).nonzero()[0]
    bumped = logits.clone()
    bumped[one_masked[0], one_masked[1]] += 10 * torch.randn(256, generator=gen)
    assert not torch.equal(loss(bumped), base)


def test_masked_probe_positions_are_fixed(corpus_dir: Path) -> None:
    a = ws_tasks.make("text", seed=0, paths=corpus_dir, objective="masked", seq_len=40)
    b = ws_tasks.make("text", seed=0, paths=corpus_dir, objective="masked", seq_len=40)
    assert all(torch.equal(u, v) for u, v in zip(a.probe_set(20), b.probe_set(20)))


def test_paths_list_parquet_and_errors(tmp_path: Path, corpus_dir: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    fox = "the quick brown fox jumps over the lazy dog "
    rows = [f"row {i}: " + fox * (5 + i) for i in range(10)]
    pq.write_table(pa.table({"text": rows, "id": list(range(10))}), tmp_path / "train.parquet")
    task = ws_tasks.make("text", paths=[tmp_path / "train.parquet"], seq_len=16)
    assert task.info["n_documents"] == 10
    both = ws_tasks.make("text", paths=[tmp_path / "train.parquet", corpus_dir / "doc00.txt"])
    assert both.info["n_documents"] == 11
    with pytest.raises(DatasetNotFoundError, match="nothing-here"):
        ws_tasks.make("text", paths=tmp_path / "nothing-here")
    with pytest.raises(ws_tasks.TaskConfigError, match="seq_len must be at most"):
        ws_tasks.make("text", paths=corpus_dir / "doc00.txt", seq_len=5000)
    with pytest.raises(ws_tasks.TaskConfigError, match="seq_len must be at most"):
        ws_tasks.make("text", paths=corpus_dir, seq_len=50_000)


def test_offline_text_repeats_windows(corpus_dir: Path) -> None:
    task = ws_tasks.make("text", seed=0, paths=corpus_dir, seq_len=16, mode="offline", n_train=10)
    seen = [bytes(r.tolist()) for s in range(4) for r in task.batch(s, 5)[0]]
    assert len(set(seen)) == 10 and len(seen) == 20

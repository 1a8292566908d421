"""`text`: byte-level language modelling (vocabulary = 256 bytes, no tokenizer).

Documents are split by the data seed into training documents and held-out probe documents
(about `probe_fraction` of the bytes; a single document is split at a byte position instead).
Each split is concatenated (documents joined by b"\\n") into one uint8 tensor. A batch is a
set of random windows of the training bytes, drawn from the step's counter-based generator.

objective="causal": x = bytes[t : t + seq_len], y = bytes[t + 1 : t + seq_len + 1].
objective="masked": x = the window with round(mask_prob * seq_len) positions (at least one,
chosen uniformly per sequence) replaced by the mask id 256; y = the original byte there and
-100 (ignored by F.cross_entropy) elsewhere.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from .base import Latent, Task
from .corpus import Document, default_corpus, read_paths
from .errors import TaskConfigError, check_choice, check_float, check_int
from .registry import register
from .seeding import generator
from .transfer import to_device

MASK_TOKEN = 256
IGNORE_INDEX = -100


def _concat(docs: Sequence[Document]) -> torch.Tensor:
    joined = b"\n".join(d[1] for d in docs)
    return torch.from_numpy(np.frombuffer(joined, dtype=np.uint8).copy())


@register
class Text(Task):
    """Byte-level LM over `paths` (files, directories, .parquet with a `text` column) or a
    built-in offline `corpus` ("auto", "shakespeare", "python-docs", "pydoc-topics").

    Options: objective ("causal" | "masked"), seq_len (128), mask_prob (0.15), probe_fraction
    (0.1). x: int64 (batch, seq_len) token ids; y: int64 (batch, seq_len) targets in 0..255
    (-100 at unmasked positions in masked mode). Offline mode fixes n_train windows (and, for
    masked LM, their masks).
    """

    name = "text"

    def __init__(
        self,
        seed: int = 0,
        *,
        paths: str | os.PathLike | Sequence[str | os.PathLike] | None = None,
        corpus: str = "auto",
        objective: str = "causal",
        seq_len: int = 128,
        mask_prob: float = 0.15,
        probe_fraction: float = 0.1,
        **common: Any,
    ) -> None:
        super().__init__(seed, **common)
        self.objective = check_choice("objective", objective, ("causal", "masked"))
        self.seq_len = check_int("seq_len", seq_len, 1, 1 << 20)
        self.mask_prob = check_float("mask_prob", mask_prob, 0.0, 1.0)
        probe_fraction = check_float("probe_fraction", probe_fraction, 0.0, 0.9)
        if paths is not None:
            if corpus != "auto":
                raise TaskConfigError(f"give either paths or corpus, not both (corpus={corpus!r})")
            listed = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
            source, docs = ", ".join(map(str, listed)), read_paths(listed)
        else:
            source, docs = default_corpus(corpus)
        self.window = self.seq_len + (1 if self.objective == "causal" else 0)
        train, probe = self._split(docs, probe_fraction)
        self.train_bytes, self.probe_bytes = _concat(train), _concat(probe)
        for label, data in (("training", self.train_bytes), ("probe", self.probe_bytes)):
            if len(data) < self.window:
                raise TaskConfigError(
                    f"seq_len must be at most {len(data) - self.window + self.seq_len} here: the"
                    f" {label} text holds {len(data)} bytes, fewer than one window of {self.window}"
                )
        self._offsets = torch.arange(self.window)
        digest = hashlib.sha256()
        for _, d in docs:
            digest.update(d)
        self.info.update(
            source=source, n_documents=len(docs), probe_documents=[n for n, _ in probe],
            train_bytes=len(self.train_bytes), probe_bytes=len(self.probe_bytes),
            corpus_sha256=digest.hexdigest(),
        )
        masked = self.objective == "masked"
        self._finish(
            input_shape=(self.seq_len,),
            n_classes=0,
            output_dim=256,
            loss="ce",
            probe_pool_size=len(self.probe_bytes) - self.window + 1,
            source=source,
            input_dtype="int64",
            vocab_size=257 if masked else 256,
            seq_len=self.seq_len,
            ignore_index=IGNORE_INDEX if masked else None,
            mask_token=MASK_TOKEN if masked else None,
        )

    def _split(
        self, docs: list[Document], fraction: float
    ) -> tuple[list[Document], list[Document]]:
        """(training, probe) documents: probe documents are taken in a seeded random order while
        they fit in `fraction` of the bytes (at least one). One document is split by position."""
        if len(docs) == 1:
            name, data = docs[0]
            cut = len(data) - max(int(len(data) * fraction), self.window)
            if cut < self.window:
                longest = len(data) // 2 - (self.window - self.seq_len)
                raise TaskConfigError(
                    f"seq_len must be at most {longest} for {name}: a single document of"
                    f" {len(data)} bytes is split into a training and a probe part of at least"
                    " one window each"
                )
            return [(name, data[:cut])], [(f"{name}[{cut}:]", data[cut:])]
        total = sum(len(d) for _, d in docs)
        order = torch.randperm(len(docs), generator=generator(self.seed, "split")).tolist()
        probe: set[int] = set()
        held = 0
        for i in order:
            if held + len(docs[i][1]) <= fraction * total:
                probe.add(i)
                held += len(docs[i][1])
        if not probe:
            probe.add(min(order, key=lambda i: len(docs[i][1])))
        train = [d for i, d in enumerate(docs) if i not in probe]
        return train, [d for i, d in enumerate(docs) if i in probe]

    def _windows(
        self, data: torch.Tensor, starts: torch.Tensor, gen: torch.Generator
    ) -> tuple[Latent, torch.Tensor]:
        """(x, y) int16 (n, seq_len) for windows of `data` starting at `starts` (n,)."""
        w = data.take(starts[:, None] + self._offsets).to(torch.int16)
        if self.objective == "causal":
            return w[:, :-1], w[:, 1:]
        n = len(w)
        k = max(1, round(self.mask_prob * self.seq_len))
        picked = torch.rand(n, self.seq_len, generator=gen).topk(k, dim=1).indices
        mask = torch.zeros(n, self.seq_len, dtype=torch.bool).scatter_(1, picked, True)
        x = w.masked_fill(mask, MASK_TOKEN)
        y = w.masked_fill(~mask, IGNORE_INDEX)
        return x, y

    def _draw(self, gen: torch.Generator, n: int) -> tuple[Latent, torch.Tensor]:
        high = len(self.train_bytes) - self.window + 1
        starts = torch.randint(0, high, (n,), generator=gen)
        return self._windows(self.train_bytes, starts, gen)

    def _probe_examples(self, n: int) -> tuple[Latent, torch.Tensor]:
        gen = generator(self.seed, "probe")
        starts = torch.randperm(self.spec.probe_pool_size, generator=gen)[:n]
        return self._windows(self.probe_bytes, starts, gen)

    def _render(
        self, latent: Latent, device: torch.device, dtype: torch.dtype, augment: Any
    ) -> torch.Tensor:
        return to_device(latent, device).to(torch.int64)

"""Counter-based random streams: one CPU `torch.Generator` per (data seed, stream name, counters).

Every random draw a task makes comes from `generator(data_seed, stream, *counters)`, a fresh
generator seeded by a hash of its arguments. Nothing depends on global RNG state or on what
was drawn before, so the draw for step t can be regenerated alone, in any process, and it is
the same on every device (draws are made on the CPU; only the deterministic transforms that
follow run on the requested device).
"""

from __future__ import annotations

import functools
import hashlib
import struct
from typing import Any

import torch

MAX_SEED = 2**63 - 1


@functools.lru_cache(maxsize=256)
def _prefix(data_seed: int, stream: str, n_counters: int) -> Any:
    """The hash state after (data_seed, stream, number of counters): reused for every step."""
    name = stream.encode()
    return hashlib.blake2b(
        struct.pack(f"<qI{len(name)}sI", data_seed, len(name), name, n_counters),
        digest_size=8, person=b"widthscan-tasks",
    )


def derive_seed(data_seed: int, stream: str, *counters: int) -> int:
    """A 63-bit seed that is a fixed hash of (data_seed, stream, counters)."""
    h = _prefix(data_seed, stream, len(counters)).copy()
    h.update(struct.pack(f"<{len(counters)}q", *counters))
    return int.from_bytes(h.digest(), "little") >> 1


def generator(data_seed: int, stream: str, *counters: int) -> torch.Generator:
    """A fresh CPU generator for the stream `stream` at `counters` (e.g. the step)."""
    gen = torch.Generator()
    gen.manual_seed(derive_seed(data_seed, stream, *counters))
    return gen

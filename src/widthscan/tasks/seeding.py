"""Counter-based random streams: one CPU `torch.Generator` per (data seed, stream name, counters).

Every random draw a task makes comes from `generator(data_seed, stream, *counters)`, a fresh
generator seeded by a hash of its arguments. Nothing depends on global RNG state or on what
was drawn before, so the draw for step t can be regenerated alone, in any process, and it is
the same on every device (draws are made on the CPU; only the deterministic transforms that
follow run on the requested device).
"""

from __future__ import annotations

import hashlib
import struct

import torch

MAX_SEED = 2**63 - 1


def derive_seed(data_seed: int, stream: str, *counters: int) -> int:
    """A 63-bit seed that is a fixed hash of (data_seed, stream, counters)."""
    name = stream.encode()
    payload = struct.pack(f"<qI{len(name)}sI", data_seed, len(name), name, len(counters))
    payload += struct.pack(f"<{len(counters)}q", *counters)
    digest = hashlib.blake2b(payload, digest_size=8, person=b"widthscan-tasks").digest()
    return int.from_bytes(digest, "little") >> 1


def generator(data_seed: int, stream: str, *counters: int) -> torch.Generator:
    """A fresh CPU generator for the stream `stream` at `counters` (e.g. the step)."""
    gen = torch.Generator()
    gen.manual_seed(derive_seed(data_seed, stream, *counters))
    return gen

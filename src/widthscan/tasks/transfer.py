"""Host-to-device copies of batches that do not block the host."""

from __future__ import annotations

import torch


def to_device(t: torch.Tensor, device: torch.device, dtype: torch.dtype | None = None
              ) -> torch.Tensor:
    """``t.to(device, dtype)``; a CPU tensor bound for CUDA is cast on the CPU, pinned and
    copied with ``non_blocking=True`` (ordered on the current stream before any later use,
    so the values are exactly those of a blocking copy)."""
    if dtype is not None and t.dtype != dtype and (t.device == device or t.device.type == "cpu"):
        t = t.to(dtype)
    if device.type == "cuda" and t.device.type == "cpu":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device=device, dtype=dtype)

"""Batched image augmentation: RandomCrop(size, padding) followed by RandomHorizontalFlip,
as torchvision applies them (zero padding of the raw image, then crop, then flip)."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F


class CropFlip(NamedTuple):
    """Per-example augmentation draws (all int64/bool, shape (batch,), on the CPU).

    top, left: crop offsets into the padded image, in 0..2*padding.
    flip: whether the crop is mirrored left-right.
    """

    top: torch.Tensor
    left: torch.Tensor
    flip: torch.Tensor


def draw_crop_flip(gen: torch.Generator, n: int, padding: int) -> CropFlip:
    """Draw crop offsets and flips for `n` examples from `gen`: one uniform integer per
    example over all (top, left, flip) combinations, so the three are independent and
    uniform."""
    side = 2 * padding + 1
    code = torch.randint(0, 2 * side * side, (n,), generator=gen).numpy()
    q, r = np.divmod(code, side)
    return CropFlip(torch.from_numpy(r), torch.from_numpy(q % side), torch.from_numpy(q >= side))


def pad(x: torch.Tensor, padding: int) -> torch.Tensor:
    """x (N, C, H, W) with `padding` zeros on each side of H and W (on the CPU, contiguous)."""
    return F.pad(x.cpu(), (padding, padding, padding, padding)).contiguous()


def crop_flip_padded(
    padded: torch.Tensor, idx: torch.Tensor, draws: CropFlip, padding: int
) -> torch.Tensor:
    """Crops of the already padded images `padded[idx]` (padded: (N, C, H + 2p, W + 2p),
    contiguous, on the CPU), each (H, W) at its (top, left) and mirrored where `flip`:
    (len(idx), C, H, W), same dtype, on the CPU.

    One fancy-indexing copy takes every example's window straight from a zero-copy strided
    view of the pool that has an (H, W) window at every (image, top, left); the mirrored
    crops are then reversed in place.
    """
    n, c, hp, wp = padded.shape
    h, w = hp - 2 * padding, wp - 2 * padding
    windows = padded.as_strided((n, hp - h + 1, wp - w + 1, c, h, w),
                                (c * hp * wp, wp, 1, hp * wp, wp, 1)).numpy()
    out = windows[idx.numpy(), draws.top.numpy(), draws.left.numpy()]
    flip = draws.flip.numpy()
    out[flip] = out[flip, ..., ::-1]
    return torch.from_numpy(out)


def crop_flip(x: torch.Tensor, draws: CropFlip, padding: int) -> torch.Tensor:
    """Pad x (B, C, H, W) by `padding` zeros, crop (H, W) at (top, left), mirror where `flip`;
    the result is on x's device."""
    idx = torch.arange(len(x))
    return crop_flip_padded(pad(x, padding), idx, draws, padding).to(x.device)

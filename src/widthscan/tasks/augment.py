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
    """Draw crop offsets and flips for `n` examples from `gen`."""
    top = torch.randint(0, 2 * padding + 1, (n,), generator=gen)
    left = torch.randint(0, 2 * padding + 1, (n,), generator=gen)
    flip = torch.rand(n, generator=gen) < 0.5
    return CropFlip(top, left, flip)


def pad(x: torch.Tensor, padding: int) -> torch.Tensor:
    """x (N, C, H, W) with `padding` zeros on each side of H and W (on the CPU, contiguous)."""
    return F.pad(x.cpu(), (padding, padding, padding, padding)).contiguous()


def crop_flip_padded(
    padded: torch.Tensor, idx: torch.Tensor, draws: CropFlip, padding: int
) -> torch.Tensor:
    """Crops of the already padded images `padded[idx]` (padded: (N, C, H + 2p, W + 2p) on
    the CPU), each (H, W) at its (top, left) and mirrored where `flip`: (len(idx), C, H, W),
    same dtype, on the CPU.

    The selected images and their mirror images are copied whole (contiguous blocks), then
    one fancy-indexing copy takes every example's window from a zero-copy strided view that
    has an (H, W) window at every (image, top, left). A mirrored crop at `left` is the crop
    of the mirrored padded image at 2 * padding - left.
    """
    b = len(idx)
    _, c, hp, wp = padded.shape
    h, w = hp - 2 * padding, wp - 2 * padding
    chosen = padded.index_select(0, idx)
    both = torch.cat([chosen, chosen.flip(-1)])
    windows = both.as_strided((2 * b, hp - h + 1, wp - w + 1, c, h, w),
                              (c * hp * wp, wp, 1, hp * wp, wp, 1)).numpy()
    flip = draws.flip.numpy()
    image = np.arange(b) + b * flip
    left = np.where(flip, 2 * padding - draws.left.numpy(), draws.left.numpy())
    return torch.from_numpy(windows[image, draws.top.numpy(), left])


def crop_flip(x: torch.Tensor, draws: CropFlip, padding: int) -> torch.Tensor:
    """Pad x (B, C, H, W) by `padding` zeros, crop (H, W) at (top, left), mirror where `flip`;
    the result is on x's device."""
    idx = torch.arange(len(x))
    return crop_flip_padded(pad(x, padding), idx, draws, padding).to(x.device)

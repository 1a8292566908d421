"""Batched image augmentation: RandomCrop(size, padding) followed by RandomHorizontalFlip,
as torchvision applies them (zero padding of the raw image, then crop, then flip)."""

from __future__ import annotations

from typing import NamedTuple

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


def crop_flip(x: torch.Tensor, draws: CropFlip, padding: int) -> torch.Tensor:
    """Pad x (B, C, H, W) by `padding` zeros, crop (H, W) at (top, left), mirror where `flip`.

    The padded batch and its mirror image are laid out in one flat buffer; an overlapping
    strided view has an (H, W) window starting at every element, and one `index_select` copies
    the chosen window of every (example, channel). A mirrored crop at `left` is the crop of the
    mirrored padded image at 2 * padding - left.
    """
    b, c, h, w = x.shape
    dev = x.device
    hp, wp = h + 2 * padding, w + 2 * padding
    padded = F.pad(x, (padding, padding, padding, padding))
    both = torch.cat([padded, padded.flip(-1)]).reshape(-1)
    view = both.as_strided((both.numel() - (h - 1) * wp - (w - 1), h, w), (1, wp, 1))
    flip = draws.flip.to(dev)
    left = torch.where(flip, 2 * padding - draws.left.to(dev), draws.left.to(dev))
    image = flip.long() * b + torch.arange(b, device=dev)
    start = image * (c * hp * wp) + draws.top.to(dev) * wp + left
    start = (start[:, None] + torch.arange(c, device=dev) * (hp * wp)).reshape(-1)
    return view.index_select(0, start).reshape(b, c, h, w)

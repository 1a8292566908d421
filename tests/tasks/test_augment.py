"""Batched crop + flip against a naive per-example reference."""

from __future__ import annotations

import numpy as np
import torch

from widthscan.tasks.augment import CropFlip, crop_flip, draw_crop_flip
from widthscan.tasks.seeding import generator


def naive_crop_flip(img: np.ndarray, top: int, left: int, flip: bool, padding: int) -> np.ndarray:
    """torchvision order for one (C, H, W) image: zero-pad, crop at (top, left), then mirror."""
    c, h, w = img.shape
    padded = np.zeros((c, h + 2 * padding, w + 2 * padding), img.dtype)
    padded[:, padding:padding + h, padding:padding + w] = img
    out = padded[:, top:top + h, left:left + w]
    return out[:, :, ::-1] if flip else out


def test_crop_flip_matches_naive_reference() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(40, 3, 9, 7, generator=gen)
    draws = draw_crop_flip(generator(0, "test"), 40, padding=3)
    assert set(draws.top.tolist()) == set(range(7)) and draws.flip.any() and (~draws.flip).any()
    out = crop_flip(x, draws, padding=3)
    for i in range(40):
        ref = naive_crop_flip(x[i].numpy(), int(draws.top[i]), int(draws.left[i]),
                              bool(draws.flip[i]), 3)
        np.testing.assert_array_equal(out[i].numpy(), ref)


def test_crop_flip_identity_and_pure_shift() -> None:
    x = torch.arange(2 * 1 * 4 * 4, dtype=torch.float32).reshape(2, 1, 4, 4)
    center = CropFlip(torch.tensor([2, 2]), torch.tensor([2, 2]), torch.tensor([False, False]))
    assert torch.equal(crop_flip(x, center, 2), x)
    mirror = CropFlip(torch.tensor([2, 2]), torch.tensor([2, 2]), torch.tensor([True, False]))
    assert torch.equal(crop_flip(x, mirror, 2)[0], x[0].flip(-1))
    corner = CropFlip(torch.tensor([0, 4]), torch.tensor([0, 4]), torch.tensor([False, False]))
    shifted = crop_flip(x, corner, 2)
    assert torch.equal(shifted[0, 0, 2:, 2:], x[0, 0, :2, :2])
    assert shifted[0, 0, :2].abs().sum() == 0
    assert torch.equal(shifted[1, 0, :2, :2], x[1, 0, 2:, 2:])

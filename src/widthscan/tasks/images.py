"""Finite image classification data sets: Fashion-MNIST (idx files) and CIFAR-10 (python pickle).

The training pool is the train split; probe sets come from the test split (images that also
occur byte-for-byte in the train split are excluded). Inputs are scaled to [0, 1], optionally
augmented (crop with zero padding + horizontal flip), then normalized per channel with the
mean/std of the train split.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from .augment import CropFlip, crop_flip_padded, draw_crop_flip, pad
from .base import Latent, Task
from .errors import TaskConfigError, check_bool, check_int
from .readers import ImageData, load_cifar5m, load_cifar10, load_idx_dataset
from .registry import register
from .seeding import generator
from .transfer import to_device

FASHION_MNIST_ROOT = "/usr/share/datasets/fashion-mnist"


class TrainRows(NamedTuple):
    """Latent of augmented training examples: their rows (int64, CPU) in the train split.
    Rendering crops them straight from the padded train split."""

    rows: torch.Tensor


class ImageTask(Task):
    """A finite labelled image set. x: (batch, C, H, W) or (batch, C*H*W) with flatten=True;
    y: int64 (batch,). Options: augment (False), padding (4), flip (True), flatten (False)."""

    def __init__(
        self,
        seed: int,
        data: ImageData,
        source: str,
        *,
        augment: bool = False,
        padding: int = 4,
        flip: bool = True,
        flatten: bool = False,
        **common: Any,
    ) -> None:
        super().__init__(seed, **common)
        self.augments = check_bool("augment", augment)
        self.padding = check_int("padding", padding, 0, 64)
        self.flip = check_bool("flip", flip)
        self.flatten = check_bool("flatten", flatten)
        self._train_x = torch.from_numpy(data.train_x)
        self._train_y = torch.from_numpy(data.train_y)
        self._test_x = torch.from_numpy(data.test_x)
        self._test_y = torch.from_numpy(data.test_y)
        self._held_out = torch.from_numpy(data.held_out)
        self.channel_mean = torch.from_numpy(data.channel_mean)
        self.channel_std = torch.from_numpy(data.channel_std).clamp_min(1e-12)
        self._stats: dict[tuple[torch.device, torch.dtype], tuple[torch.Tensor, torch.Tensor]] = {}
        self._padded: torch.Tensor | None = None
        shape = tuple(data.train_x.shape[1:])
        self.info.update(files=[str(p) for p in data.files], n_train_pool=len(self._train_x),
                         n_test=len(self._test_x), n_held_out=len(self._held_out))
        self._finish(
            input_shape=(int(np.prod(shape)),) if self.flatten else shape,
            n_classes=10,
            probe_pool_size=len(self._held_out),
            source=source,
        )

    def _train_size(self) -> int:
        return len(self._train_x)

    def _train_examples(self, idx: torch.Tensor) -> tuple[Latent, torch.Tensor]:
        y = self._train_y.index_select(0, idx)
        if self.augments:
            return TrainRows(idx), y
        return self._train_x.index_select(0, idx), y

    def _padded_train(self) -> torch.Tensor:
        """The train split zero-padded by `padding` (uint8, CPU), made on first use: with
        augmentation it costs (H + 2p)(W + 2p) / (H W) times the split's memory."""
        if self._padded is None:
            self._padded = pad(self._train_x, self.padding)
        return self._padded

    def _train_labels(self) -> torch.Tensor:
        return self._train_y

    def _probe_examples(self, n: int) -> tuple[Latent, torch.Tensor]:
        order = torch.randperm(len(self._held_out), generator=generator(self.seed, "probe"))
        idx = self._held_out[order[:n]]
        return self._test_x[idx], self._test_y[idx]

    def augmentation(self, step: int, batch_size: int) -> CropFlip | None:
        """The crop/flip draws `batch(step, batch_size)` uses, or None without augmentation."""
        if not self.augments:
            return None
        return self._draws(generator(self.seed, "augment", step), batch_size)

    def _draws(self, gen: torch.Generator, n: int) -> CropFlip:
        draws = draw_crop_flip(gen, n, self.padding)
        return draws if self.flip else draws._replace(flip=torch.zeros_like(draws.flip))

    def _render(
        self,
        latent: Latent,
        device: torch.device,
        dtype: torch.dtype,
        augment: torch.Generator | None,
    ) -> torch.Tensor:
        if isinstance(latent, TrainRows):
            draws = self._draws(augment, len(latent.rows))
            latent = crop_flip_padded(self._padded_train(), latent.rows, draws, self.padding)
        x = to_device(latent, device)
        scale, shift = self._affine(device, dtype)
        x = x.to(dtype).mul_(scale).add_(shift)
        return x.reshape(len(x), -1) if self.flatten else x

    def _affine(self, device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
        """Per-channel (scale, shift) with x = pixel * scale + shift = (pixel/255 - mean) / std."""
        key = (device, dtype)
        if key not in self._stats:
            shape = (1, -1, 1, 1)
            scale = 1.0 / (255.0 * self.channel_std)
            shift = -self.channel_mean / self.channel_std
            self._stats[key] = (
                scale.to(device=device, dtype=dtype).reshape(shape),
                shift.to(device=device, dtype=dtype).reshape(shape),
            )
        return self._stats[key]


@register
class FashionMNIST(ImageTask):
    """Fashion-MNIST from idx files (60000 train, 10000 test; 1x28x28; 10 classes).

    root: a directory holding train-images-idx3-ubyte, train-labels-idx1-ubyte,
    t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte (each optionally .gz); default
    $WIDTHSCAN_FASHION_MNIST or /usr/share/datasets/fashion-mnist (Debian dataset-fashion-mnist).
    """

    name = "fashion_mnist"

    def __init__(
        self, seed: int = 0, *, root: str | os.PathLike | None = None, **opts: Any
    ) -> None:
        root = Path(root or os.environ.get("WIDTHSCAN_FASHION_MNIST", FASHION_MNIST_ROOT))
        super().__init__(seed, load_idx_dataset(root), str(root), **opts)


@register
class CIFAR10(ImageTask):
    """CIFAR-10 from the python-pickle folder (50000 train, 10000 test; 3x32x32; 10 classes).

    root (required, or $WIDTHSCAN_CIFAR10): `cifar-10-batches-py/` or its parent, holding
    data_batch_1..5 and test_batch. Nothing is downloaded. App. A.2.1 augmentation is
    augment=True (RandomCrop(32, padding=4) + horizontal flip).
    """

    name = "cifar10"

    def __init__(
        self, seed: int = 0, *, root: str | os.PathLike | None = None, **opts: Any
    ) -> None:
        root = root or os.environ.get("WIDTHSCAN_CIFAR10")
        if root is None:
            raise TaskConfigError(
                "root is required for cifar10: the folder cifar-10-batches-py/ (or its parent)"
                " holding data_batch_1..5 and test_batch; nothing is downloaded"
            )
        super().__init__(seed, load_cifar10(root), str(Path(root)), **opts)


@register
class CIFAR5M(ImageTask):
    """CIFAR-5M (Nakkiran et al. 2021) from its part files: 6 x ~1M images 3x32x32, 10 classes.

    root (or $WIDTHSCAN_CIFAR5M): a folder of cifar5m_part0.npz ... (arrays 'X' uint8
    (n, 32, 32, 3), 'Y' labels). parts: train part numbers (default all but the test part);
    test_part: the part probe sets come from (default the last). Each part holds ~3 GB of
    images in memory. The paper's runs (App. A.2.1) are online with augment=True; pass
    allow_repeat=True to continue past one pass.
    """

    name = "cifar5m"

    def __init__(
        self,
        seed: int = 0,
        *,
        root: str | os.PathLike | None = None,
        parts: list[int] | None = None,
        test_part: int | None = None,
        **opts: Any,
    ) -> None:
        root = root or os.environ.get("WIDTHSCAN_CIFAR5M")
        if root is None:
            raise TaskConfigError(
                "root is required for cifar5m: the folder holding cifar5m_part0.npz ..."
                " (or set $WIDTHSCAN_CIFAR5M); nothing is downloaded"
            )
        train = None if parts is None else tuple(check_int("parts", p, 0) for p in parts)
        test = None if test_part is None else check_int("test_part", test_part, 0)
        super().__init__(seed, load_cifar5m(root, train, test), str(Path(root)), **opts)

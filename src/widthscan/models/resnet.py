"""ResNet-18 with LayerNorm (GroupNorm with one group) in place of BatchNorm, CIFAR stem."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(1, channels)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual connection (1x1 projection when shapes change)."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.norm1 = _norm(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.norm2 = _norm(c_out)
        self.shortcut = nn.Sequential()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False),
                                          _norm(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.norm1(self.conv1(x)))
        h = self.norm2(self.conv2(h))
        return F.relu(h + self.shortcut(x))


class ResNet18(nn.Module):
    """Channels ``width * (1, 2, 4, 8)``; 3x3 stride-1 stem without max-pool (App. A.2.1).

    Input (batch, in_channels, H, W); output (batch, n_classes).
    """

    def __init__(self, width: int, n_classes: int = 10, in_channels: int = 3,
                 blocks: tuple[int, ...] = (2, 2, 2, 2)):
        super().__init__()
        self.stem = nn.Conv2d(in_channels, width, 3, 1, 1, bias=False)
        self.stem_norm = _norm(width)
        stages = []
        c_in = width
        for i, n in enumerate(blocks):
            c_out = width * 2**i
            stride = 1 if i == 0 else 2
            stage = [BasicBlock(c_in, c_out, stride)]
            stage += [BasicBlock(c_out, c_out, 1) for _ in range(n - 1)]
            stages.append(nn.Sequential(*stage))
            c_in = c_out
        self.stages = nn.Sequential(*stages)
        self.readout = nn.Linear(c_in, n_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate representation, (batch, 8 * width)."""
        h = F.relu(self.stem_norm(self.stem(x)))
        h = self.stages(h)
        return h.mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.readout(self.features(x))


def resnet18(width: int, n_classes: int = 10, in_channels: int = 3,
             blocks: tuple[int, ...] = (2, 2, 2, 2)) -> ResNet18:
    return ResNet18(width, n_classes, in_channels, tuple(blocks))

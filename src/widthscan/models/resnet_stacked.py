"""K members of widthscan's ``ResNet18`` at once: the members are the groups of grouped
convolutions over a channel-stacked activation (batch, K * channels, H, W).

The stem is one convolution with K * width output channels on the shared input; every
later convolution is grouped (``groups=K``) with weights (K, out, in, kh, kw) flattened to
(K * out, in, kh, kw); each member's ``GroupNorm(g, C)`` is ``GroupNorm(K * g, K * C)`` of
the stacked activation (the statistics of a group never mix members); pooling and the
readout (one batched matmul, weights (K, n_classes, C)) end it. ``channels_last`` runs the
convolutions on NHWC memory (same values, another kernel choice).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from widthscan.models.resnet import BasicBlock, ResNet18


def _plain_conv(conv: nn.Module) -> bool:
    return (type(conv) is nn.Conv2d and conv.groups == 1 and conv.padding_mode == "zeros"
            and not isinstance(conv.padding, str))


def _plain_norm(norm: nn.Module) -> bool:
    return type(norm) is nn.GroupNorm


def _block_ok(block: nn.Module) -> bool:
    if type(block) is not BasicBlock or type(block.shortcut) is not nn.Sequential:
        return False
    short = list(block.shortcut)
    shortcut_ok = not short or (len(short) == 2 and _plain_conv(short[0])
                                and _plain_norm(short[1]))
    return (shortcut_ok and _plain_conv(block.conv1) and _plain_conv(block.conv2)
            and _plain_norm(block.norm1) and _plain_norm(block.norm2))


def supports(net: nn.Module) -> bool:
    """True for a ``ResNet18`` whose modules keep widthscan's own forwards: plain
    ``Conv2d`` (one group, zero padding), ``GroupNorm``, ``BasicBlock`` and ``Linear``."""
    if type(net) is not ResNet18 or type(net.stages) is not nn.Sequential:
        return False
    stages_ok = all(type(stage) is nn.Sequential and all(_block_ok(b) for b in stage)
                    for stage in net.stages)
    return (stages_ok and _plain_conv(net.stem) and _plain_norm(net.stem_norm)
            and type(net.readout) is nn.Linear)


def _conv(h: torch.Tensor, eff: Mapping[str, torch.Tensor], name: str, conv: nn.Conv2d,
          groups: int) -> torch.Tensor:
    """(B, groups * in, H, W) -> (B, K * out, H', W') with weight (K, out, in, kh, kw);
    ``groups`` is K, or 1 for the shared input of the stem."""
    w = eff[f"{name}.weight"]
    b = eff.get(f"{name}.bias")
    return F.conv2d(h, w.flatten(0, 1), None if b is None else b.flatten(),
                    conv.stride, conv.padding, conv.dilation, groups)


def _norm(h: torch.Tensor, eff: Mapping[str, torch.Tensor], name: str, norm: nn.GroupNorm,
          k: int) -> torch.Tensor:
    w, b = eff.get(f"{name}.weight"), eff.get(f"{name}.bias")
    return F.group_norm(h, k * norm.num_groups, None if w is None else w.flatten(),
                        None if b is None else b.flatten(), norm.eps)


def _block(h: torch.Tensor, eff: Mapping[str, torch.Tensor], name: str, block: BasicBlock,
           k: int) -> torch.Tensor:
    out = F.relu(_norm(_conv(h, eff, f"{name}.conv1", block.conv1, k), eff, f"{name}.norm1",
                       block.norm1, k))
    out = _norm(_conv(out, eff, f"{name}.conv2", block.conv2, k), eff, f"{name}.norm2",
                block.norm2, k)
    if len(block.shortcut):
        conv, norm = block.shortcut
        h = _norm(_conv(h, eff, f"{name}.shortcut.0", conv, k), eff, f"{name}.shortcut.1",
                  norm, k)
    return F.relu(out + h)


def features_stacked(net: ResNet18, eff: Mapping[str, torch.Tensor], x: torch.Tensor,
                     channels_last: bool = False) -> torch.Tensor:
    """Penultimate representations (K, batch, 8 * width) of K members with effective
    parameters ``eff`` (name -> (K, ...)) on a shared image batch (batch, C, H, W)."""
    k = eff["stem.weight"].shape[0]
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    h = F.relu(_norm(_conv(x, eff, "stem", net.stem, 1), eff, "stem_norm", net.stem_norm, k))
    for i, stage in enumerate(net.stages):
        for j, block in enumerate(stage):
            h = _block(h, eff, f"stages.{i}.{j}", block, k)
    pooled = h.mean(dim=(2, 3))
    return pooled.view(x.shape[0], k, -1).transpose(0, 1)


def forward_stacked(net: ResNet18, eff: Mapping[str, torch.Tensor], x: torch.Tensor,
                    channels_last: bool = False) -> torch.Tensor:
    """Logits (K, batch, n_classes) of K members on a shared image batch (batch, C, H, W)."""
    h = features_stacked(net, eff, x, channels_last)
    w = eff["readout.weight"].transpose(1, 2)
    b = eff.get("readout.bias")
    return torch.bmm(h, w) if b is None else torch.baddbmm(b.unsqueeze(1), h, w)


def accepts(net: ResNet18, x: torch.Tensor) -> bool:
    """Floating images (batch, in_channels, H, W)."""
    return x.is_floating_point() and x.dim() == 4 and x.shape[1] == net.stem.in_channels

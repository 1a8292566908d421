"""User-written width factories for the check tests: correct ones and planted mistakes.

Each planted mistake is what a user of ``ws.parametrize`` could write by accident; the
docstring says which layer is wrong and why the rule table cannot fix it.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

D_IN = 10
N_CLASSES = 10


def sequential_mlp(width: int) -> nn.Module:
    """Correct: a plain nn.Sequential MLP with a scalar output."""
    return nn.Sequential(nn.Linear(D_IN, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(),
                         nn.Linear(width, 1))


class ConvNet(nn.Module):
    """Correct: two 3x3 convolutions, global average pooling, a linear readout."""

    def __init__(self, width: int, in_channels: int = 1, n_classes: int = N_CLASSES):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1)
        self.readout = nn.Linear(width, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.conv2(F.relu(self.conv1(x))))
        return self.readout(h.mean((2, 3)))


def conv_net(width: int) -> nn.Module:
    return ConvNet(width)


class TransposedReadout(nn.Module):
    """A readout stored as [in, out] and applied as ``h @ weight`` (a JAX habit): the rule table
    reads dim 0 as fan-out and calls it role 'input', so it gets an O(1) init and no 1/N
    multiplier instead of muP's 1/N readout."""

    def __init__(self, width: int, n_out: int):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(width, n_out) / math.sqrt(width))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h @ self.weight


def mlp_readout_transposed(width: int) -> nn.Module:
    """Mistake: readout 'head' without muP's 1/N (see TransposedReadout)."""
    return nn.Sequential(nn.Linear(D_IN, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(),
                         TransposedReadout(width, 1))


class Attention(nn.Module):
    """Self-attention with a hard-coded 1/sqrt(d_head) on the logits (no ``qk_scale``
    attribute, so ``ws.parametrize`` cannot set muP's 1/d_head)."""

    def __init__(self, width: int, n_heads: int = 4, sqrt_scale: bool = True,
                 sdpa: bool = False):
        super().__init__()
        self.n_heads, self.d_head = n_heads, width // n_heads
        self.sqrt_scale, self.sdpa = sqrt_scale, sdpa
        self.qkv = nn.Linear(width, 3 * width)
        self.out = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, s, w = x.shape
        q, k, v = self.qkv(x).view(b, s, 3, self.n_heads, self.d_head).permute(2, 0, 3, 1, 4)
        scale = 1 / math.sqrt(self.d_head) if self.sqrt_scale else 8 / self.d_head
        if self.sdpa:
            h = F.scaled_dot_product_attention(q, k, v, scale=None if self.sqrt_scale else scale)
        else:
            h = torch.softmax(q @ k.transpose(-1, -2) * scale, -1) @ v
        return self.out(h.transpose(1, 2).reshape(b, s, w))


class TinyLM(nn.Module):
    """A one-block pre-LN language model on bytes; ``sqrt_scale`` plants the 1/sqrt(d_head)
    mistake (False: logits scaled by 8/d_head, muP's 1/d_head, equal to 1/sqrt(d) at d = 64);
    ``tied`` ties the readout to the embedding; ``norm_as_matrix`` stores the final norm's
    gain and bias as (1, width) matrices; ``sdpa`` uses F.scaled_dot_product_attention."""

    def __init__(self, width: int, sqrt_scale: bool = False, tied: bool = False,
                 norm_as_matrix: bool = False, vocab: int = 256, seq_len: int = 32,
                 sdpa: bool = False):
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        self.pos = nn.Embedding(seq_len, width)
        self.norm1 = nn.LayerNorm(width)
        self.attn = Attention(width, sqrt_scale=sqrt_scale, sdpa=sdpa)
        self.norm2 = nn.LayerNorm(width)
        self.ffn_in = nn.Linear(width, 2 * width)
        self.ffn_out = nn.Linear(2 * width, width)
        self.norm = MatrixNorm(width) if norm_as_matrix else nn.LayerNorm(width)
        self.readout = nn.Linear(width, vocab, bias=False)
        if tied:
            self.readout.weight = self.embed.weight

    def positions(self, s: int) -> torch.Tensor:
        return self.pos.weight[:s]

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        h = self.embed(tokens) + self.positions(tokens.shape[1])
        h = h + self.attn(self.norm1(h))
        h = h + self.ffn_out(F.gelu(self.ffn_in(self.norm2(h))))
        return self.readout(self.norm(h))


class MatrixNorm(nn.Module):
    """LayerNorm whose gain and bias are (1, width) matrices: the rule table sees a 2-d
    parameter whose fan-in grows, calls it role 'output' and draws it at random with a 1/N
    multiplier."""

    def __init__(self, width: int):
        super().__init__()
        self.gain = nn.Parameter(torch.ones(1, width))
        self.bias = nn.Parameter(torch.zeros(1, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, x.shape[-1:]) * self.gain + self.bias


def tiny_lm(width: int) -> nn.Module:
    """Correct: muP's 1/d_head logits, untied, 1-d norms."""
    return TinyLM(width)


def lm_sqrt_attention(width: int) -> nn.Module:
    """Mistake: attention logits scaled by 1/sqrt(d_head) under muP."""
    return TinyLM(width, sqrt_scale=True)


def lm_sdpa_default_scale(width: int) -> nn.Module:
    """Mistake: F.scaled_dot_product_attention with its default 1/sqrt(d_head) scale."""
    return TinyLM(width, sqrt_scale=True, sdpa=True)


def lm_sdpa_mup_scale(width: int) -> nn.Module:
    """Correct: F.scaled_dot_product_attention with scale=8/d_head (muP's 1/d_head)."""
    return TinyLM(width, sdpa=True)


def lm_tied(width: int) -> nn.Module:
    """Mistake: readout weight tied to the embedding."""
    return TinyLM(width, tied=True)


def lm_norm_as_matrix(width: int) -> nn.Module:
    """Mistake: the final LayerNorm's gain and bias stored as (1, width) matrices."""
    return TinyLM(width, norm_as_matrix=True)


class BarePositions(TinyLM):
    """A (seq_len, width) position table as a bare nn.Parameter: the table reads its width dim
    as fan-in and gives it the readout's role and 1/N multiplier."""

    def __init__(self, width: int, seq_len: int = 32):
        super().__init__(width, seq_len=seq_len)
        self.pos = nn.Parameter(torch.randn(seq_len, width))

    def positions(self, s: int) -> torch.Tensor:
        return self.pos[:s]


def lm_bare_positions(width: int) -> nn.Module:
    """Mistake: position table as a bare (seq_len, width) parameter."""
    return BarePositions(width)


def mlp_fixed_hidden(width: int) -> nn.Module:
    """Mistake: the middle hidden layer is built with a fixed width of 64."""
    return nn.Sequential(nn.Linear(D_IN, width), nn.ReLU(), nn.Linear(width, 64), nn.ReLU(),
                         nn.Linear(64, width), nn.ReLU(), nn.Linear(width, 1))

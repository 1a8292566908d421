"""Pre-LayerNorm Transformer language model with d_model = width and a fixed number of heads."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class SelfAttention(nn.Module):
    """Multi-head self-attention with explicit probabilities.

    Logits are ``qk_scale * q.k``; ``qk_scale`` is set by ``ws.parametrize``
    (1/d_head under muP, 1/sqrt(d_head) under SP/NTP). The probabilities pass
    through ``self.probs`` (an identity) so a forward hook can read them,
    shape (batch, heads, query, key). The key projection has no bias: softmax
    is invariant to it, so its gradient is pure rounding noise that Adam would
    amplify into steps of size lr.
    """

    def __init__(self, width: int, n_heads: int, causal: bool):
        super().__init__()
        if width % n_heads:
            raise ValueError(f"width={width} must be divisible by n_heads={n_heads}")
        self.n_heads = n_heads
        self.head_dim = width // n_heads
        self.qk_scale = 1.0 / math.sqrt(self.head_dim)
        self.causal = causal
        self.query = nn.Linear(width, width)
        self.key = nn.Linear(width, width, bias=False)
        self.value = nn.Linear(width, width)
        self.out = nn.Linear(width, width)
        self.probs = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, s, w = x.shape

        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.view(b, s, self.n_heads, self.head_dim).transpose(1, 2)

        q, k, v = heads(self.query(x)), heads(self.key(x)), heads(self.value(x))
        logits = torch.matmul(q, k.transpose(-1, -2)) * self.qk_scale
        if self.causal:
            mask = torch.ones(s, s, dtype=torch.bool, device=x.device).triu(1)
            logits = logits.masked_fill(mask, float("-inf"))
        probs = self.probs(torch.softmax(logits, dim=-1))
        h = torch.matmul(probs, v).transpose(1, 2).reshape(b, s, w)
        return self.out(h)


class Block(nn.Module):
    def __init__(self, width: int, n_heads: int, causal: bool, ffn_mult: int = 4):
        super().__init__()
        self.norm1 = nn.LayerNorm(width)
        self.attn = SelfAttention(width, n_heads, causal)
        self.norm2 = nn.LayerNorm(width)
        self.ffn_in = nn.Linear(width, ffn_mult * width)
        self.ffn_out = nn.Linear(ffn_mult * width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.ffn_out(F.gelu(self.ffn_in(self.norm2(x))))


def sinusoidal_positions(seq_len: int, width: int) -> torch.Tensor:
    """(seq_len, width) fixed sinusoidal position codes."""
    pos = torch.arange(seq_len, dtype=torch.float32).unsqueeze(1)
    freq = torch.exp(torch.arange(0, width, 2, dtype=torch.float32) * (-math.log(1e4) / width))
    table = torch.zeros(seq_len, width)
    table[:, 0::2] = torch.sin(pos * freq)
    table[:, 1::2] = torch.cos(pos * freq[: width // 2])
    return table


class Transformer(nn.Module):
    """Token ids (batch, seq) -> logits (batch, seq, n_out).

    ``causal=True`` is a decoder (causal LM), ``False`` an encoder (masked LM).
    d_model = width, d_head = width / n_heads, d_ffn = 4 * width.
    """

    def __init__(self, width: int, vocab_size: int = 256, n_out: int | None = None,
                 seq_len: int = 128, n_layers: int = 2, n_heads: int = 4, causal: bool = True,
                 positions: str = "learned"):
        super().__init__()
        if positions not in ("learned", "sinusoidal"):
            raise ValueError(f"positions={positions!r}; allowed: 'learned', 'sinusoidal'")
        self.embed = nn.Embedding(vocab_size, width)
        self.positions = positions
        if positions == "learned":
            self.pos_embed = nn.Embedding(seq_len, width)
        else:
            self.register_buffer("pos_table", sinusoidal_positions(seq_len, width),
                                 persistent=False)
        self.blocks = nn.ModuleList(Block(width, n_heads, causal) for _ in range(n_layers))
        self.norm = nn.LayerNorm(width)
        self.readout = nn.Linear(width, n_out or vocab_size)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        s = tokens.shape[1]
        h = self.embed(tokens)
        if self.positions == "learned":
            h = h + self.pos_embed.weight[:s]
        else:
            h = h + self.pos_table[:s]
        for block in self.blocks:
            h = block(h)
        return self.readout(self.norm(h))


def transformer(width: int, vocab_size: int = 256, n_out: int | None = None, seq_len: int = 128,
                n_layers: int = 2, n_heads: int = 4, causal: bool = True,
                positions: str = "learned") -> Transformer:
    return Transformer(width, vocab_size, n_out, seq_len, n_layers, n_heads, causal, positions)

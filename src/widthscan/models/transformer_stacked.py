"""K members of widthscan's ``Transformer`` at once: every linear layer one batched matmul
over members (weights (K, out, in)), attention one ``scaled_dot_product_attention`` over
K * batch sequences, layer norms and embeddings indexed per member."""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from widthscan.models.transformer import Block, SelfAttention, Transformer


def supports(net: nn.Module) -> bool:
    """True for a ``Transformer`` whose modules keep widthscan's own forwards."""
    if type(net) is not Transformer:
        return False
    return all(type(b) is Block and type(b.attn) is SelfAttention
               and type(b.norm1) is nn.LayerNorm and type(b.norm2) is nn.LayerNorm
               for b in net.blocks) and type(net.norm) is nn.LayerNorm


def _linear(h: torch.Tensor, p: Mapping[str, torch.Tensor], name: str) -> torch.Tensor:
    """(K, N, in) -> (K, N, out) with weight (K, out, in) and optional bias (K, out)."""
    w = p[f"{name}.weight"].transpose(1, 2)
    b = p.get(f"{name}.bias")
    return torch.bmm(h, w) if b is None else torch.baddbmm(b.unsqueeze(1), h, w)


def _norm(h: torch.Tensor, p: Mapping[str, torch.Tensor], name: str, module: nn.LayerNorm
          ) -> torch.Tensor:
    out = F.layer_norm(h, module.normalized_shape, eps=module.eps)
    if f"{name}.weight" in p:
        out = out * p[f"{name}.weight"].unsqueeze(1)
    if f"{name}.bias" in p:
        out = out + p[f"{name}.bias"].unsqueeze(1)
    return out


def _attention(h: torch.Tensor, p: Mapping[str, torch.Tensor], name: str, attn: SelfAttention,
               batch: int, fused: bool) -> torch.Tensor:
    k, n, width = h.shape
    seq, heads = n // batch, attn.n_heads

    def split(t: torch.Tensor) -> torch.Tensor:
        return t.view(k * batch, seq, heads, attn.head_dim).transpose(1, 2)

    q = split(_linear(h, p, f"{name}.query"))
    key = split(_linear(h, p, f"{name}.key"))
    v = split(_linear(h, p, f"{name}.value"))
    if fused:
        out = F.scaled_dot_product_attention(q, key, v, is_causal=attn.causal,
                                             scale=attn.qk_scale)
    else:
        logits = torch.matmul(q, key.transpose(-1, -2)) * attn.qk_scale
        if attn.causal:
            mask = torch.ones(seq, seq, dtype=torch.bool, device=q.device).triu(1)
            logits = logits.masked_fill(mask, float("-inf"))
        out = torch.matmul(torch.softmax(logits, dim=-1), v)
    return _linear(out.transpose(1, 2).reshape(k, n, width), p, f"{name}.out")


def forward_stacked(net: Transformer, eff: Mapping[str, torch.Tensor],
                    buffers: Mapping[str, torch.Tensor], tokens: torch.Tensor,
                    fused: bool = True) -> torch.Tensor:
    """Logits (K, batch, seq, n_out) of K members with effective parameters ``eff``
    (name -> (K, ...)) on shared token ids (batch, seq). ``fused``: attention by
    ``scaled_dot_product_attention`` (fast, differentiable once: CPU and flash kernels
    have no double backward); else written out, as ``SelfAttention`` does (any order of
    derivatives, for Hessian-vector products)."""
    batch, seq = tokens.shape
    embed = eff["embed.weight"]
    k, width = embed.shape[0], embed.shape[2]
    h = embed.index_select(1, tokens.reshape(-1)).view(k, batch, seq, width)
    if net.positions == "learned":
        h = h + eff["pos_embed.weight"][:, None, :seq]
    else:
        h = h + buffers["pos_table"][:seq]
    h = h.reshape(k, batch * seq, width)
    for i, block in enumerate(net.blocks):
        name = f"blocks.{i}"
        h = h + _attention(_norm(h, eff, f"{name}.norm1", block.norm1), eff, f"{name}.attn",
                           block.attn, batch, fused)
        inner = F.gelu(_linear(_norm(h, eff, f"{name}.norm2", block.norm2), eff,
                               f"{name}.ffn_in"))
        h = h + _linear(inner, eff, f"{name}.ffn_out")
    out = _linear(_norm(h, eff, "norm", net.norm), eff, "readout")
    return out.view(k, batch, seq, -1)

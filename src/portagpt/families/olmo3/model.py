"""Olmo 3: post-norm blocks with sliding-window and full attention.

Notable against Llama, all as transformers computes them:

* post-norm: each block normalises the attention and MLP *outputs* before the
  residual add (no norm on the block input);
* QK-norm is an RMSNorm over the whole q and k projections (all heads at
  once), applied before splitting into heads; norms multiply the weight in
  fp32 and cast after;
* three sliding layers then one full layer; YaRN on the full layers only;
  cos/sin stay fp32 and q/k are rotated in fp32.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ...core import decoder
from ...core.cache import AttentionContext
from ...core.layers import RMSNorm


def make_norm(cfg: Any, dim: int) -> nn.Module:
    return RMSNorm(dim, cfg.rms_norm_eps, cast_before_scale=False)


class Attention(decoder.Attention):
    """q/k/v/o projections, GQA, RoPE, and one RMSNorm over all q (and all k) heads."""

    def __init__(self, cfg: Any, layer_idx: int) -> None:
        super().__init__(cfg, layer_idx)
        self.q_norm = make_norm(cfg, self.n_heads * self.head_dim)
        self.k_norm = make_norm(cfg, self.n_kv * self.head_dim)

    def qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        q = self.heads(self.q_norm(self.q_proj(x)), self.n_heads)  # (B, H, T, hd)
        k = self.heads(self.k_norm(self.k_proj(x)), self.n_kv)  # (B, Hkv, T, hd)
        return q, k, self.heads(self.v_proj(x), self.n_kv)


class DecoderLayer(decoder.DecoderLayer):
    """Post-norm: ``x + norm(attn(x))``, then ``x + norm(mlp(x))``."""

    attention = Attention
    modules = ("self_attn", "post_attention_layernorm", "mlp", "post_feedforward_layernorm")
    make_norm = staticmethod(make_norm)

    def forward(
        self, x: torch.Tensor, ctx: AttentionContext, idx: int, rope: decoder.Rope
    ) -> torch.Tensor:
        x = x + self.post_attention_layernorm(self.self_attn(x, ctx, idx, rope))
        return x + self.post_feedforward_layernorm(self.mlp(x))


class Olmo3ForCausalLM(decoder.CausalLM):
    layer = DecoderLayer
    rope_dtype = torch.float32

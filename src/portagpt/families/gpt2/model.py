"""GPT-2 in the chapter-5 layout, on the shared decoder's forward, init and tying.

Module names follow the chapter-5 ``GPTModel`` (``tok_emb``, ``pos_emb``,
``trf_blocks.{i}.att.W_query``, ``ff.layers.0``, ``norm1.scale``, ``out_head``),
so a chapter-5 ``model.pth`` is a native checkpoint; ``weights.py`` maps
Hugging Face's fused, Conv1D-transposed layout onto it. Notable: learned
absolute positions (no RoPE), pre-LayerNorm with bias, GELU-tanh MLP,
dropout while training, residual projections initialised at
``0.02 / sqrt(2 * n_layers)``, optional tied head.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ...core import decoder
from ...core.attention import attend
from ...core.cache import AttentionContext
from ...core.layers import Activation, residual_std
from ...core.linear import Linear


class LayerNorm(nn.Module):
    """Chapter-5 LayerNorm (``scale``/``shift``), computed in fp32."""

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.scale = nn.Parameter(torch.empty(dim))
        self.shift = nn.Parameter(torch.empty(dim))

    def reset_parameters(self) -> None:
        nn.init.ones_(self.scale)
        nn.init.zeros_(self.shift)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.layer_norm(x.float(), x.shape[-1:], self.scale.float(), self.shift.float(), self.eps)
        return y.to(x.dtype)


class MultiHeadAttention(nn.Module):
    def __init__(self, cfg: Any) -> None:
        super().__init__()
        d = cfg.emb_dim
        self.n_heads, self.head_dim = cfg.n_heads, cfg.head_dim
        self.W_query = Linear(d, d, bias=cfg.qkv_bias)
        self.W_key = Linear(d, d, bias=cfg.qkv_bias)
        self.W_value = Linear(d, d, bias=cfg.qkv_bias)
        self.out_proj = Linear(d, d)
        self.dropout = nn.Dropout(cfg.drop_rate)

    def forward(self, x: torch.Tensor, ctx: AttentionContext, idx: int) -> torch.Tensor:
        B, T, _ = x.shape
        shape = (B, T, self.n_heads, self.head_dim)
        q = self.W_query(x).view(shape).transpose(1, 2)  # (B, H, T, hd)
        k = self.W_key(x).view(shape).transpose(1, 2)
        v = self.W_value(x).view(shape).transpose(1, 2)
        k, v, mask, causal = ctx.attend_kv(idx, k, v)
        out = self.out_proj(attend(q, k, v, mask, causal))
        return self.dropout(out) if self.training else out  # eval dropout is the identity


class FeedForward(nn.Module):
    def __init__(self, cfg: Any) -> None:
        super().__init__()
        d, hidden = cfg.emb_dim, cfg.mlp_dim
        act = Activation(cfg.activation)
        self.layers = nn.Sequential(Linear(d, hidden), act, Linear(hidden, d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class TransformerBlock(nn.Module):
    def __init__(self, cfg: Any) -> None:
        super().__init__()
        self.norm1 = LayerNorm(cfg.emb_dim, cfg.layer_norm_eps)
        self.att = MultiHeadAttention(cfg)
        self.norm2 = LayerNorm(cfg.emb_dim, cfg.layer_norm_eps)
        self.ff = FeedForward(cfg)
        self.drop_shortcut = nn.Dropout(cfg.drop_rate)

    def forward(
        self, x: torch.Tensor, ctx: AttentionContext, idx: int, rope: decoder.Rope = None
    ) -> torch.Tensor:
        if not self.training:  # eval dropout is the identity: skip the calls (decode speed)
            x = x + self.att(self.norm1(x), ctx, idx)
            return x + self.ff(self.norm2(x))
        x = x + self.drop_shortcut(self.att(self.norm1(x), ctx, idx))
        return x + self.drop_shortcut(self.ff(self.norm2(x)))


class GPT2Model(decoder.CausalLM):
    embed_name, head_name = "tok_emb", "out_head"

    def build(self, cfg: Any) -> None:
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.emb_dim)
        self.pos_emb = nn.Embedding(cfg.context_length, cfg.emb_dim)
        self.drop_emb = nn.Dropout(cfg.drop_rate)
        self.trf_blocks = nn.ModuleList(TransformerBlock(cfg) for _ in range(cfg.n_layers))
        self.final_norm = LayerNorm(cfg.emb_dim, cfg.layer_norm_eps)
        self.out_head = Linear(cfg.emb_dim, cfg.vocab_size, bias=False)

    def scaled_init(self) -> dict[str, float]:
        std = residual_std(self.config.n_layers, self.config.initializer_range)
        return {"out_proj": std, "ff.layers.2": std}

    def embed(self, input_ids: torch.Tensor, ctx: AttentionContext) -> torch.Tensor:
        x = self.tok_emb(input_ids) + self.pos_emb(ctx.positions)  # (B, T, d)
        return self.drop_emb(x) if self.training else x

    def blocks(self) -> nn.ModuleList:
        return self.trf_blocks

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return self.final_norm(x)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.out_head(x)  # (B, T, vocab)

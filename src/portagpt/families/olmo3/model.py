"""Olmo 3: post-norm blocks with sliding-window and full attention.

Module names follow the Hugging Face checkpoint (``model.embed_tokens``,
``model.layers.{i}.self_attn.q_proj``, ``lm_head``), so ``weights.py`` is a
list of identity renames. Notable, all as transformers computes them:

* post-norm: each block normalises the attention and MLP *outputs* before the
  residual add (no norm on the block input);
* QK-norm is an RMSNorm over the whole q and k projections (all heads at once),
  applied before splitting into heads;
* three ``sliding_attention`` layers then one ``full_attention`` layer (from
  ``layer_types``); YaRN scaling on the full layers only, default RoPE on the
  sliding ones; cos/sin stay fp32 and q/k are rotated in fp32;
* SwiGLU MLP, untied head, GQA in the 32B.
"""

from __future__ import annotations

import torch
from torch import nn

from ...core.attention import attend
from ...core.cache import AttentionContext, KVCache, LayerSpec, attention_context
from ...core.layers import GatedMLP, RMSNorm, init_normal_
from ...core.linear import Linear
from ...core.rope import RotaryEmbedding, apply_rope
from .config import SLIDING, Olmo3Config


def cache_specs(cfg: Olmo3Config) -> list[LayerSpec]:
    return [
        LayerSpec(
            cfg.num_key_value_heads, cfg.head_size, cfg.sliding_window if kind == SLIDING else None
        )
        for kind in cfg.attention_types
    ]


def _norm(cfg: Olmo3Config, dim: int) -> RMSNorm:
    # Olmo multiplies the weight in fp32 and casts after (Olmo3RMSNorm).
    return RMSNorm(dim, cfg.rms_norm_eps, cast_before_scale=False)


class Attention(nn.Module):
    def __init__(self, cfg: Olmo3Config) -> None:
        super().__init__()
        self.n_heads, self.n_kv = cfg.num_attention_heads, cfg.num_key_value_heads
        self.head_dim = cfg.head_size
        d, bias = cfg.hidden_size, cfg.attention_bias
        self.q_proj = Linear(d, self.n_heads * self.head_dim, bias=bias)
        self.k_proj = Linear(d, self.n_kv * self.head_dim, bias=bias)
        self.v_proj = Linear(d, self.n_kv * self.head_dim, bias=bias)
        self.o_proj = Linear(self.n_heads * self.head_dim, d, bias=bias)
        self.q_norm = _norm(cfg, self.n_heads * self.head_dim)
        self.k_norm = _norm(cfg, self.n_kv * self.head_dim)

    def forward(
        self, x: torch.Tensor, ctx: AttentionContext, idx: int, cos: torch.Tensor, sin: torch.Tensor
    ) -> torch.Tensor:
        B, T, _ = x.shape
        q = self.q_norm(self.q_proj(x))  # (B, T, H * hd): one norm over all heads
        k = self.k_norm(self.k_proj(x))  # (B, T, Hkv * hd)
        q = q.view(B, T, self.n_heads, self.head_dim).transpose(1, 2)  # (B, H, T, hd)
        k = k.view(B, T, self.n_kv, self.head_dim).transpose(1, 2)  # (B, Hkv, T, hd)
        v = self.v_proj(x).view(B, T, self.n_kv, self.head_dim).transpose(1, 2)
        qr, kr = apply_rope(q, k, cos, sin)  # fp32 cos/sin: rotated in fp32, then cast back
        q, k = qr.to(q.dtype), kr.to(k.dtype)
        k, v, mask, causal = ctx.attend_kv(idx, k, v)
        return self.o_proj(attend(q, k, v, mask, causal))  # (B, T, d)


class DecoderLayer(nn.Module):
    def __init__(self, cfg: Olmo3Config) -> None:
        super().__init__()
        self.self_attn = Attention(cfg)
        self.post_attention_layernorm = _norm(cfg, cfg.hidden_size)
        self.mlp = GatedMLP(cfg.hidden_size, cfg.intermediate_size, act=cfg.hidden_act)
        self.post_feedforward_layernorm = _norm(cfg, cfg.hidden_size)

    def forward(
        self, x: torch.Tensor, ctx: AttentionContext, idx: int, cos: torch.Tensor, sin: torch.Tensor
    ) -> torch.Tensor:
        x = x + self.post_attention_layernorm(self.self_attn(x, ctx, idx, cos, sin))
        return x + self.post_feedforward_layernorm(self.mlp(x))


class Olmo3TextModel(nn.Module):
    """The decoder stack (``model.*`` in checkpoints): embeddings, layers, final norm, RoPE tables."""

    def __init__(self, cfg: Olmo3Config) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(cfg) for _ in range(cfg.num_hidden_layers))
        self.norm = _norm(cfg, cfg.hidden_size)
        self.rotary_sliding = RotaryEmbedding(cfg.rope_sliding, cfg.head_size)
        self.rotary_full = RotaryEmbedding(cfg.rope_full, cfg.head_size)


class Olmo3Model(nn.Module):
    def __init__(self, cfg: Olmo3Config) -> None:
        super().__init__()
        self.config = cfg
        self.layer_specs = cache_specs(cfg)
        self.model = Olmo3TextModel(cfg)
        self.lm_head = Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        self.tie_weights()

    def tie_weights(self) -> None:
        if self.config.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight

    def init_weights(self) -> None:
        """N(0, 0.02) projections and embeddings, unit norms, fresh RoPE tables."""
        init_normal_(self, 0.02)
        self.tie_weights()

    def forward(
        self,
        input_ids: torch.Tensor,
        *,
        cache: KVCache | None = None,
        attention_mask: torch.Tensor | None = None,
        logits_to_keep: int = 0,
    ) -> torch.Tensor:
        ctx = attention_context(self.layer_specs, input_ids, cache, attention_mask)
        m = self.model
        x = m.embed_tokens(input_ids)  # (B, T, d)
        sliding = m.rotary_sliding(ctx.positions, torch.float32)  # (cos, sin), each (B, T, hd)
        full = m.rotary_full(ctx.positions, torch.float32)
        for i, layer in enumerate(m.layers):
            x = layer(x, ctx, i, *(full if self.layer_specs[i].window is None else sliding))
        ctx.finish()
        if logits_to_keep:
            x = x[:, -logits_to_keep:]
        return self.lm_head(m.norm(x))  # (B, T, vocab)

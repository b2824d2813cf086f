"""Gemma 3 (text): interleaved sliding-window and global attention.

Module names follow the Hugging Face checkpoint (``model.embed_tokens``,
``model.layers.{i}.self_attn.q_proj``, ``lm_head``), so ``weights.py`` is a
list of identity renames. Notable, all as transformers computes them:

* layers are ``sliding_attention`` (a window of ``sliding_window`` keys, its own
  RoPE base, ``rope_local_base_freq``) or ``full_attention`` (the global base, and
  the only layers that get RoPE scaling such as ``linear``);
* RMSNorm scales by ``(1 + weight)`` in fp32, four norms per block (before and
  after attention and MLP), plus per-head RMSNorm of q and k;
* embeddings are multiplied by ``sqrt(hidden_size)`` rounded to the weight dtype;
* attention scale is ``query_pre_attn_scalar ** -0.5``; GQA/MQA;
* gated GELU-tanh MLP; optional final-logit soft-capping (attention-logit
  soft-capping is not applied: transformers' Gemma3 ignores it, see config.py).
"""

from __future__ import annotations

import torch
from torch import nn

from ...core.attention import attend
from ...core.cache import AttentionContext, KVCache, LayerSpec, attention_context
from ...core.layers import GatedMLP, RMSNorm, init_normal_
from ...core.linear import Linear
from ...core.rope import RotaryEmbedding, apply_rope
from .config import SLIDING, Gemma3Config


def cache_specs(cfg: Gemma3Config) -> list[LayerSpec]:
    return [
        LayerSpec(
            cfg.num_key_value_heads, cfg.head_dim, cfg.sliding_window if kind == SLIDING else None
        )
        for kind in cfg.attention_types
    ]


def _norm(cfg: Gemma3Config, dim: int) -> RMSNorm:
    return RMSNorm(dim, cfg.rms_norm_eps, unit_offset=True)


class Attention(nn.Module):
    def __init__(self, cfg: Gemma3Config) -> None:
        super().__init__()
        self.n_heads, self.n_kv = cfg.num_attention_heads, cfg.num_key_value_heads
        self.head_dim = cfg.head_dim
        self.scale = cfg.query_pre_attn_scalar**-0.5
        d, bias = cfg.hidden_size, cfg.attention_bias
        self.q_proj = Linear(d, self.n_heads * self.head_dim, bias=bias)
        self.k_proj = Linear(d, self.n_kv * self.head_dim, bias=bias)
        self.v_proj = Linear(d, self.n_kv * self.head_dim, bias=bias)
        self.o_proj = Linear(self.n_heads * self.head_dim, d, bias=bias)
        self.q_norm = _norm(cfg, self.head_dim)
        self.k_norm = _norm(cfg, self.head_dim)

    def forward(
        self, x: torch.Tensor, ctx: AttentionContext, idx: int, cos: torch.Tensor, sin: torch.Tensor
    ) -> torch.Tensor:
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.n_heads, self.head_dim).transpose(1, 2)  # (B, H, T, hd)
        k = self.k_proj(x).view(B, T, self.n_kv, self.head_dim).transpose(1, 2)  # (B, Hkv, T, hd)
        v = self.v_proj(x).view(B, T, self.n_kv, self.head_dim).transpose(1, 2)
        q, k = apply_rope(self.q_norm(q), self.k_norm(k), cos, sin)
        k, v, mask, causal = ctx.attend_kv(idx, k, v)
        return self.o_proj(attend(q, k, v, mask, causal, scale=self.scale))  # (B, T, d)


class DecoderLayer(nn.Module):
    def __init__(self, cfg: Gemma3Config) -> None:
        super().__init__()
        d = cfg.hidden_size
        self.input_layernorm = _norm(cfg, d)
        self.self_attn = Attention(cfg)
        self.post_attention_layernorm = _norm(cfg, d)
        self.pre_feedforward_layernorm = _norm(cfg, d)
        self.mlp = GatedMLP(d, cfg.intermediate_size, act=cfg.hidden_activation)
        self.post_feedforward_layernorm = _norm(cfg, d)

    def forward(
        self, x: torch.Tensor, ctx: AttentionContext, idx: int, cos: torch.Tensor, sin: torch.Tensor
    ) -> torch.Tensor:
        x = x + self.post_attention_layernorm(
            self.self_attn(self.input_layernorm(x), ctx, idx, cos, sin)
        )
        return x + self.post_feedforward_layernorm(self.mlp(self.pre_feedforward_layernorm(x)))


class Gemma3TextModel(nn.Module):
    """The decoder stack (``model.*`` in checkpoints): embeddings, layers, final norm, RoPE tables."""

    def __init__(self, cfg: Gemma3Config) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(cfg) for _ in range(cfg.num_hidden_layers))
        self.norm = _norm(cfg, cfg.hidden_size)
        self.rotary_local = RotaryEmbedding(cfg.rope_local, cfg.head_dim)
        self.rotary_global = RotaryEmbedding(cfg.rope_global, cfg.head_dim)


class Gemma3Model(nn.Module):
    def __init__(self, cfg: Gemma3Config) -> None:
        super().__init__()
        self.config = cfg
        self.layer_specs = cache_specs(cfg)
        self.model = Gemma3TextModel(cfg)
        self.lm_head = Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        self.embed_scale = cfg.hidden_size**0.5
        self.tie_weights()

    def tie_weights(self) -> None:
        if self.config.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight

    def init_weights(self) -> None:
        """N(0, 0.02) projections and embeddings, zero (1 + w) norms, fresh RoPE tables."""
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
        # transformers multiplies by sqrt(d) cast to the weight dtype (55.4256 -> 55.5 in bf16)
        x = x * torch.tensor(self.embed_scale, device=x.device).to(x.dtype)  # fp32, then x's dtype
        local = m.rotary_local(ctx.positions, x.dtype)  # (cos, sin), each (B, T, hd)
        glob = m.rotary_global(ctx.positions, x.dtype)
        for i, layer in enumerate(m.layers):
            x = layer(x, ctx, i, *(glob if self.layer_specs[i].window is None else local))
        ctx.finish()
        if logits_to_keep:
            x = x[:, -logits_to_keep:]
        logits = self.lm_head(m.norm(x))  # (B, T, vocab)
        cap = self.config.final_logit_softcapping
        if cap is not None:
            logits = torch.tanh(logits / cap) * cap
        return logits

"""Llama 2 / 3 / 3.1 / 3.2 decoder, with checkpoint-shaped module names.

Module names follow the Hugging Face checkpoint (``model.embed_tokens``,
``model.layers.{i}.self_attn.q_proj``, ``input_layernorm``, ``lm_head``), so
``weights.py`` is a list of identity renames. Notable: pre-RMSNorm blocks,
grouped-query attention, SwiGLU MLP, RoPE (plain for Llama 2, the ``llama3``
frequency recipe for 3.1/3.2), optional q/k/v/o and MLP biases, a head_dim
that may differ from hidden_size / heads, and a head tied to the embeddings
in Llama 3.2.
"""

from __future__ import annotations

import torch
from torch import nn

from ...core.attention import attend
from ...core.cache import AttentionContext, KVCache, LayerSpec, attention_context
from ...core.layers import GatedMLP, RMSNorm, init_normal_
from ...core.linear import Linear
from ...core.rope import RotaryEmbedding, apply_rope
from .config import LlamaConfig


def cache_specs(cfg: LlamaConfig) -> list[LayerSpec]:
    return [LayerSpec(cfg.num_key_value_heads, cfg.head_dim) for _ in range(cfg.num_hidden_layers)]


class LlamaAttention(nn.Module):
    def __init__(self, cfg: LlamaConfig) -> None:
        super().__init__()
        d, hd = cfg.hidden_size, cfg.head_dim
        self.n_heads, self.n_kv, self.head_dim = (
            cfg.num_attention_heads,
            cfg.num_key_value_heads,
            hd,
        )
        self.q_proj = Linear(d, self.n_heads * hd, bias=cfg.attention_bias)
        self.k_proj = Linear(d, self.n_kv * hd, bias=cfg.attention_bias)
        self.v_proj = Linear(d, self.n_kv * hd, bias=cfg.attention_bias)
        self.o_proj = Linear(self.n_heads * hd, d, bias=cfg.attention_bias)

    def forward(
        self,
        x: torch.Tensor,
        ctx: AttentionContext,
        idx: int,
        rope: tuple[torch.Tensor, torch.Tensor],
    ) -> torch.Tensor:
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.n_heads, self.head_dim).transpose(1, 2)  # (B, H, T, hd)
        k = self.k_proj(x).view(B, T, self.n_kv, self.head_dim).transpose(1, 2)  # (B, Hkv, T, hd)
        v = self.v_proj(x).view(B, T, self.n_kv, self.head_dim).transpose(1, 2)
        q, k = apply_rope(q, k, *rope)
        k, v, mask, causal = ctx.attend_kv(idx, k, v)
        return self.o_proj(attend(q, k, v, mask, causal))  # (B, T, d)


class LlamaDecoderLayer(nn.Module):
    def __init__(self, cfg: LlamaConfig) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.self_attn = LlamaAttention(cfg)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.mlp = GatedMLP(
            cfg.hidden_size, cfg.intermediate_size, cfg.hidden_act, bias=cfg.mlp_bias
        )

    def forward(
        self,
        x: torch.Tensor,
        ctx: AttentionContext,
        idx: int,
        rope: tuple[torch.Tensor, torch.Tensor],
    ) -> torch.Tensor:
        x = x + self.self_attn(self.input_layernorm(x), ctx, idx, rope)
        return x + self.mlp(self.post_attention_layernorm(x))


class LlamaModel(nn.Module):
    """The decoder stack without the head (HF's ``model.`` prefix)."""

    def __init__(self, cfg: LlamaConfig) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(LlamaDecoderLayer(cfg) for _ in range(cfg.num_hidden_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.rotary_emb = RotaryEmbedding(cfg.rope, cfg.head_dim)

    def forward(self, input_ids: torch.Tensor, ctx: AttentionContext) -> torch.Tensor:
        x = self.embed_tokens(input_ids)  # (B, T, d)
        rope = self.rotary_emb(ctx.positions, x.dtype)  # cos, sin: (B, T, hd)
        for i, layer in enumerate(self.layers):
            x = layer(x, ctx, i, rope)
        return self.norm(x)


class LlamaForCausalLM(nn.Module):
    def __init__(self, cfg: LlamaConfig) -> None:
        super().__init__()
        self.config = cfg
        self.layer_specs = cache_specs(cfg)
        self.model = LlamaModel(cfg)
        self.lm_head = Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        self.tie_weights()

    def tie_weights(self) -> None:
        if self.config.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight

    def init_weights(self) -> None:
        """N(0, initializer_range) for every projection and the embedding, as transformers does."""
        init_normal_(self, self.config.initializer_range)
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
        x = self.model(input_ids, ctx)  # (B, T, d)
        ctx.finish()
        if logits_to_keep:
            x = x[:, -logits_to_keep:]
        return self.lm_head(x)  # (B, T, vocab)

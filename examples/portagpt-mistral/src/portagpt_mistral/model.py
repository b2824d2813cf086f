"""Mistral decoder: Llama-shaped blocks with grouped-query attention over a sliding window.

Module names follow the Hugging Face checkpoint (``model.layers.{i}.self_attn.q_proj``,
``input_layernorm``, ``model.norm``, ``lm_head``), so ``weights.py`` is a list of
renames. Notable: pre-RMSNorm blocks, GQA, SwiGLU MLP, RoPE, no biases, an
explicit ``head_dim``, and ``sliding_window`` on every layer -- declared once in
:func:`cache_specs`; portagpt's attention context builds the window masks and
the ring-buffer KV cache from it, so the model never does.
"""

from __future__ import annotations

import torch
from torch import nn

from portagpt.core.attention import attend
from portagpt.core.cache import AttentionContext, KVCache, LayerSpec, attention_context
from portagpt.core.layers import GatedMLP, RMSNorm, init_normal_
from portagpt.core.linear import Linear
from portagpt.core.rope import RotaryEmbedding, apply_rope

from .config import MistralConfig


def cache_specs(cfg: MistralConfig) -> list[LayerSpec]:
    """Every layer: the KV heads, head size, and the model-wide sliding window (None: full)."""
    return [
        LayerSpec(cfg.num_key_value_heads, cfg.head_dim, cfg.sliding_window)
        for _ in range(cfg.num_hidden_layers)
    ]


class MistralAttention(nn.Module):
    def __init__(self, cfg: MistralConfig) -> None:
        super().__init__()
        d, hd = cfg.hidden_size, cfg.head_dim
        self.n_heads, self.n_kv, self.head_dim = cfg.num_attention_heads, cfg.num_key_value_heads, hd
        self.q_proj = Linear(d, self.n_heads * hd, bias=False)
        self.k_proj = Linear(d, self.n_kv * hd, bias=False)
        self.v_proj = Linear(d, self.n_kv * hd, bias=False)
        self.o_proj = Linear(self.n_heads * hd, d, bias=False)

    def forward(
        self, x: torch.Tensor, ctx: AttentionContext, idx: int, rope: tuple[torch.Tensor, torch.Tensor]
    ) -> torch.Tensor:
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.n_heads, self.head_dim).transpose(1, 2)  # (B, H, T, hd)
        k = self.k_proj(x).view(B, T, self.n_kv, self.head_dim).transpose(1, 2)  # (B, Hkv, T, hd)
        v = self.v_proj(x).view(B, T, self.n_kv, self.head_dim).transpose(1, 2)
        q, k = apply_rope(q, k, *rope)
        k, v, mask, causal = ctx.attend_kv(idx, k, v)  # window mask and ring cache come from ctx
        return self.o_proj(attend(q, k, v, mask, causal))  # (B, T, d)


class MistralDecoderLayer(nn.Module):
    def __init__(self, cfg: MistralConfig) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.self_attn = MistralAttention(cfg)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.mlp = GatedMLP(cfg.hidden_size, cfg.intermediate_size, cfg.hidden_act)

    def forward(
        self, x: torch.Tensor, ctx: AttentionContext, idx: int, rope: tuple[torch.Tensor, torch.Tensor]
    ) -> torch.Tensor:
        x = x + self.self_attn(self.input_layernorm(x), ctx, idx, rope)
        return x + self.mlp(self.post_attention_layernorm(x))


class MistralModel(nn.Module):
    """The decoder stack without the head (the checkpoint's ``model.`` prefix)."""

    def __init__(self, cfg: MistralConfig) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(MistralDecoderLayer(cfg) for _ in range(cfg.num_hidden_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.rotary_emb = RotaryEmbedding(cfg.rope, cfg.head_dim)

    def forward(self, input_ids: torch.Tensor, ctx: AttentionContext) -> torch.Tensor:
        x = self.embed_tokens(input_ids)  # (B, T, d)
        rope = self.rotary_emb(ctx.positions, x.dtype)  # cos, sin: (B, T, hd)
        for i, layer in enumerate(self.layers):
            x = layer(x, ctx, i, rope)
        return self.norm(x)


class MistralForCausalLM(nn.Module):
    def __init__(self, cfg: MistralConfig) -> None:
        super().__init__()
        self.config = cfg
        self.layer_specs = cache_specs(cfg)
        self.model = MistralModel(cfg)
        self.lm_head = Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        self.tie_weights()

    def tie_weights(self) -> None:
        if self.config.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight

    def init_weights(self) -> None:
        """N(0, initializer_range) projections and embedding, unit norms, fresh RoPE tables."""
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

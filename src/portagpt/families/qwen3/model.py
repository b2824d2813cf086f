"""Qwen3 decoder, dense and mixture-of-experts, with checkpoint-shaped module names.

Module names follow the Hugging Face checkpoint (``model.embed_tokens``,
``model.layers.{i}.self_attn.q_proj``, ``self_attn.q_norm``, ``mlp.gate``,
``mlp.experts.{e}.gate_proj``, ``lm_head``). Notable against Llama: an
RMSNorm over each query and key head (``q_norm``/``k_norm``) before RoPE, a
head_dim independent of hidden_size / heads, optional sliding-window layers,
and in ``qwen3_moe`` a token-choice MoE (softmax, top-k, optional
renormalisation) in every ``decoder_sparse_step``-th layer not listed in
``mlp_only_layers``; the remaining layers keep a dense SwiGLU MLP.
"""

from __future__ import annotations

import torch
from torch import nn

from ...core.attention import attend
from ...core.cache import AttentionContext, KVCache, LayerSpec, attention_context
from ...core.layers import GatedMLP, MoE, RMSNorm, init_normal_
from ...core.linear import Linear
from ...core.rope import RotaryEmbedding, apply_rope
from .config import Qwen3Config


def cache_specs(cfg: Qwen3Config) -> list[LayerSpec]:
    return [
        LayerSpec(cfg.num_key_value_heads, cfg.head_dim, cfg.window(i))
        for i in range(cfg.num_hidden_layers)
    ]


class Qwen3Attention(nn.Module):
    def __init__(self, cfg: Qwen3Config) -> None:
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
        self.q_norm = RMSNorm(hd, cfg.rms_norm_eps)  # over each head's channels
        self.k_norm = RMSNorm(hd, cfg.rms_norm_eps)

    def forward(
        self,
        x: torch.Tensor,
        ctx: AttentionContext,
        idx: int,
        rope: tuple[torch.Tensor, torch.Tensor],
    ) -> torch.Tensor:
        B, T, _ = x.shape
        q = self.q_norm(self.q_proj(x).view(B, T, self.n_heads, self.head_dim)).transpose(
            1, 2
        )  # (B, H, T, hd)
        k = self.k_norm(self.k_proj(x).view(B, T, self.n_kv, self.head_dim)).transpose(
            1, 2
        )  # (B, Hkv, T, hd)
        v = self.v_proj(x).view(B, T, self.n_kv, self.head_dim).transpose(1, 2)
        q, k = apply_rope(q, k, *rope)
        k, v, mask, causal = ctx.attend_kv(idx, k, v)
        return self.o_proj(attend(q, k, v, mask, causal))  # (B, T, d)


class Qwen3DecoderLayer(nn.Module):
    def __init__(self, cfg: Qwen3Config, idx: int) -> None:
        super().__init__()
        d = cfg.hidden_size
        self.input_layernorm = RMSNorm(d, cfg.rms_norm_eps)
        self.self_attn = Qwen3Attention(cfg)
        self.post_attention_layernorm = RMSNorm(d, cfg.rms_norm_eps)
        self.mlp: nn.Module
        if cfg.is_sparse_layer(idx):
            self.mlp = MoE(
                d,
                cfg.moe_intermediate_size,
                cfg.num_experts,
                cfg.num_experts_per_tok,
                cfg.norm_topk_prob,
                cfg.hidden_act,
            )
        else:
            self.mlp = GatedMLP(d, cfg.intermediate_size, cfg.hidden_act)

    def forward(
        self,
        x: torch.Tensor,
        ctx: AttentionContext,
        idx: int,
        rope: tuple[torch.Tensor, torch.Tensor],
    ) -> torch.Tensor:
        x = x + self.self_attn(self.input_layernorm(x), ctx, idx, rope)
        return x + self.mlp(self.post_attention_layernorm(x))


class Qwen3Model(nn.Module):
    """The decoder stack without the head (HF's ``model.`` prefix)."""

    def __init__(self, cfg: Qwen3Config) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(Qwen3DecoderLayer(cfg, i) for i in range(cfg.num_hidden_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.rotary_emb = RotaryEmbedding(cfg.rope, cfg.head_dim)

    def forward(self, input_ids: torch.Tensor, ctx: AttentionContext) -> torch.Tensor:
        x = self.embed_tokens(input_ids)  # (B, T, d)
        rope = self.rotary_emb(ctx.positions, x.dtype)  # cos, sin: (B, T, hd)
        for i, layer in enumerate(self.layers):
            x = layer(x, ctx, i, rope)
        return self.norm(x)


class Qwen3ForCausalLM(nn.Module):
    def __init__(self, cfg: Qwen3Config) -> None:
        super().__init__()
        self.config = cfg
        self.layer_specs = cache_specs(cfg)
        self.model = Qwen3Model(cfg)
        self.lm_head = Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        self.tie_weights()

    def tie_weights(self) -> None:
        if self.config.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight

    def init_weights(self) -> None:
        """N(0, initializer_range) for every projection, router, expert and the embedding."""
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

"""Olmo 3: Hugging Face names <-> native names (the same names: identity renames only).

``Olmo3ForCausalLM`` checkpoints keep the decoder under ``model.`` and the
untied head as ``lm_head.weight``; RoPE tables are never stored.
"""

from __future__ import annotations

from ...adapters.weights import Rule, WeightMap, rename
from .config import Olmo3Config


def weight_map(cfg: Olmo3Config) -> WeightMap:
    n = "model.layers.{}."
    rules: list[Rule] = [
        rename("model.embed_tokens.weight", "model.embed_tokens.weight"),
        rename(n + "self_attn.q_proj.weight", n + "self_attn.q_proj.weight"),
        rename(n + "self_attn.k_proj.weight", n + "self_attn.k_proj.weight"),
        rename(n + "self_attn.v_proj.weight", n + "self_attn.v_proj.weight"),
        rename(n + "self_attn.o_proj.weight", n + "self_attn.o_proj.weight"),
        rename(n + "self_attn.q_norm.weight", n + "self_attn.q_norm.weight"),
        rename(n + "self_attn.k_norm.weight", n + "self_attn.k_norm.weight"),
        rename(n + "post_attention_layernorm.weight", n + "post_attention_layernorm.weight"),
        rename(n + "mlp.gate_proj.weight", n + "mlp.gate_proj.weight"),
        rename(n + "mlp.up_proj.weight", n + "mlp.up_proj.weight"),
        rename(n + "mlp.down_proj.weight", n + "mlp.down_proj.weight"),
        rename(n + "post_feedforward_layernorm.weight", n + "post_feedforward_layernorm.weight"),
        rename("model.norm.weight", "model.norm.weight"),
        rename("lm_head.weight", "lm_head.weight", optional=cfg.tie_word_embeddings),
    ]
    if cfg.attention_bias:
        rules += [
            rename(n + "self_attn.q_proj.bias", n + "self_attn.q_proj.bias"),
            rename(n + "self_attn.k_proj.bias", n + "self_attn.k_proj.bias"),
            rename(n + "self_attn.v_proj.bias", n + "self_attn.v_proj.bias"),
            rename(n + "self_attn.o_proj.bias", n + "self_attn.o_proj.bias"),
        ]
    return WeightMap(rules)


def tied_weights(cfg: Olmo3Config) -> tuple[tuple[str, str], ...]:
    return (("lm_head.weight", "model.embed_tokens.weight"),) if cfg.tie_word_embeddings else ()

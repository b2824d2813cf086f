"""Llama: Hugging Face names <-> native names (identical by construction).

The native modules carry the checkpoint's own names, so every rule is an
identity rename; they are still listed one by one so a tensor no rule claims
is reported by name. Biases are only mapped when the config has them. Old
conversions saved RoPE's ``inv_freq`` buffers; they are dropped (portagpt
recomputes them from the config).
"""

from __future__ import annotations

from ...adapters.weights import Rule, WeightMap, drop, rename
from .config import LlamaConfig


def _same(name: str, optional: bool = False) -> Rule:
    return rename(name, name, optional=optional)


def weight_map(cfg: LlamaConfig) -> WeightMap:
    layer = "model.layers.{}."
    rules: list[Rule] = [_same("model.embed_tokens.weight")]
    for proj in ("q_proj", "k_proj", "v_proj", "o_proj"):
        rules.append(_same(layer + f"self_attn.{proj}.weight"))
        if cfg.attention_bias:
            rules.append(_same(layer + f"self_attn.{proj}.bias"))
    for proj in ("gate_proj", "up_proj", "down_proj"):
        rules.append(_same(layer + f"mlp.{proj}.weight"))
        if cfg.mlp_bias:
            rules.append(_same(layer + f"mlp.{proj}.bias"))
    rules += [
        _same(layer + "input_layernorm.weight"),
        _same(layer + "post_attention_layernorm.weight"),
        _same("model.norm.weight"),
        # A tied head may still be written out (transformers 4 sometimes did): it is the embedding.
        _same("lm_head.weight", optional=cfg.tie_word_embeddings),
        drop(layer + "self_attn.rotary_emb.inv_freq"),
        drop("model.rotary_emb.inv_freq"),
    ]
    return WeightMap(rules)


def tied_weights(cfg: LlamaConfig) -> tuple[tuple[str, str], ...]:
    return (("lm_head.weight", "model.embed_tokens.weight"),) if cfg.tie_word_embeddings else ()

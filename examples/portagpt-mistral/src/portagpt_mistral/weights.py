"""Mistral: Hugging Face names <-> native names.

The model's modules are named like the checkpoint, so every rule is a rename
to the same name; the map still matters: it is what the loader checks a
checkpoint against, what export writes, and it drops the RoPE ``inv_freq``
buffers some older conversions saved. ``lm_head.weight`` is optional when the
head is tied to the embedding.
"""

from __future__ import annotations

from portagpt.adapters import Rule, WeightMap, drop, rename

from .config import MistralConfig

_LAYER = (
    "self_attn.q_proj.weight",
    "self_attn.k_proj.weight",
    "self_attn.v_proj.weight",
    "self_attn.o_proj.weight",
    "mlp.gate_proj.weight",
    "mlp.up_proj.weight",
    "mlp.down_proj.weight",
    "input_layernorm.weight",
    "post_attention_layernorm.weight",
)


def weight_map(cfg: MistralConfig) -> WeightMap:
    rules: list[Rule] = [rename("model.embed_tokens.weight", "model.embed_tokens.weight")]
    rules += [rename(f"model.layers.{{}}.{n}", f"model.layers.{{}}.{n}") for n in _LAYER]
    rules += [
        rename("model.norm.weight", "model.norm.weight"),
        rename("lm_head.weight", "lm_head.weight", optional=cfg.tie_word_embeddings),
        drop("model.layers.{}.self_attn.rotary_emb.inv_freq"),
        drop("model.rotary_emb.inv_freq"),
    ]
    return WeightMap(rules)


def tied_weights(cfg: MistralConfig) -> tuple[tuple[str, str], ...]:
    """(destination, source) pairs re-tied after loading."""
    return (("lm_head.weight", "model.embed_tokens.weight"),) if cfg.tie_word_embeddings else ()

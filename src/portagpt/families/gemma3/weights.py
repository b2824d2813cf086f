"""Gemma 3: checkpoint names <-> native names (the same names, so mostly identity renames).

Three layouts of the language model map onto one native model:

* ``Gemma3ForCausalLM`` (text-only checkpoints, e.g. gemma-3-270m, gemma-3-1b):
  ``model.layers.{i}...`` -- exactly the native names;
* multimodal checkpoints as written on disk (``Gemma3ForConditionalGeneration``,
  e.g. gemma-3-4b): ``language_model.model.layers.{i}...``;
* the same model's in-memory names in transformers 5.x:
  ``model.language_model.layers.{i}...``.

The vision tower and the multimodal projector are dropped. The head is tied
to the embeddings in every released Gemma 3, so ``lm_head.weight`` is usually
absent. The first layout comes first, so exports are text-only checkpoints.
"""

from __future__ import annotations

from ...adapters.weights import Rule, WeightMap, drop, rename
from .config import Gemma3Config

# (decoder prefix, head name) of each layout, text-only first.
LAYOUTS = (
    ("model.", "lm_head.weight"),
    ("language_model.model.", "language_model.lm_head.weight"),
    ("model.language_model.", "lm_head.weight"),
)

# SigLIP vision tower and projector tensors of multimodal checkpoints (dropped).
VISION_PREFIXES = ("vision_tower.vision_model.", "vision_tower.", "model.vision_tower.")
VISION_TENSORS = (
    "embeddings.patch_embedding.weight",
    "embeddings.patch_embedding.bias",
    "embeddings.position_embedding.weight",
    "encoder.layers.{}.layer_norm1.weight",
    "encoder.layers.{}.layer_norm1.bias",
    "encoder.layers.{}.layer_norm2.weight",
    "encoder.layers.{}.layer_norm2.bias",
    "encoder.layers.{}.self_attn.q_proj.weight",
    "encoder.layers.{}.self_attn.q_proj.bias",
    "encoder.layers.{}.self_attn.k_proj.weight",
    "encoder.layers.{}.self_attn.k_proj.bias",
    "encoder.layers.{}.self_attn.v_proj.weight",
    "encoder.layers.{}.self_attn.v_proj.bias",
    "encoder.layers.{}.self_attn.out_proj.weight",
    "encoder.layers.{}.self_attn.out_proj.bias",
    "encoder.layers.{}.mlp.fc1.weight",
    "encoder.layers.{}.mlp.fc1.bias",
    "encoder.layers.{}.mlp.fc2.weight",
    "encoder.layers.{}.mlp.fc2.bias",
    "post_layernorm.weight",
    "post_layernorm.bias",
    "head.probe",
    "head.attention.in_proj_weight",
    "head.attention.in_proj_bias",
    "head.attention.out_proj.weight",
    "head.attention.out_proj.bias",
    "head.layernorm.weight",
    "head.layernorm.bias",
    "head.mlp.fc1.weight",
    "head.mlp.fc1.bias",
    "head.mlp.fc2.weight",
    "head.mlp.fc2.bias",
)
PROJECTOR_PREFIXES = ("multi_modal_projector.", "model.multi_modal_projector.")
PROJECTOR_TENSORS = ("mm_input_projection_weight", "mm_soft_emb_norm.weight")


def _language_model(src: str, head: str, cfg: Gemma3Config) -> list[Rule]:
    """Renames of one layout whose decoder lives under ``src``."""
    h, n = src + "layers.{}.", "model.layers.{}."
    rules = [
        rename(src + "embed_tokens.weight", "model.embed_tokens.weight"),
        rename(h + "input_layernorm.weight", n + "input_layernorm.weight"),
        rename(h + "self_attn.q_proj.weight", n + "self_attn.q_proj.weight"),
        rename(h + "self_attn.k_proj.weight", n + "self_attn.k_proj.weight"),
        rename(h + "self_attn.v_proj.weight", n + "self_attn.v_proj.weight"),
        rename(h + "self_attn.o_proj.weight", n + "self_attn.o_proj.weight"),
        rename(h + "self_attn.q_norm.weight", n + "self_attn.q_norm.weight"),
        rename(h + "self_attn.k_norm.weight", n + "self_attn.k_norm.weight"),
        rename(h + "post_attention_layernorm.weight", n + "post_attention_layernorm.weight"),
        rename(h + "pre_feedforward_layernorm.weight", n + "pre_feedforward_layernorm.weight"),
        rename(h + "mlp.gate_proj.weight", n + "mlp.gate_proj.weight"),
        rename(h + "mlp.up_proj.weight", n + "mlp.up_proj.weight"),
        rename(h + "mlp.down_proj.weight", n + "mlp.down_proj.weight"),
        rename(h + "post_feedforward_layernorm.weight", n + "post_feedforward_layernorm.weight"),
        rename(src + "norm.weight", "model.norm.weight"),
        rename(head, "lm_head.weight", optional=cfg.tie_word_embeddings),
    ]
    if cfg.attention_bias:
        rules += [
            rename(h + "self_attn.q_proj.bias", n + "self_attn.q_proj.bias"),
            rename(h + "self_attn.k_proj.bias", n + "self_attn.k_proj.bias"),
            rename(h + "self_attn.v_proj.bias", n + "self_attn.v_proj.bias"),
            rename(h + "self_attn.o_proj.bias", n + "self_attn.o_proj.bias"),
        ]
    return rules


def weight_map(cfg: Gemma3Config) -> WeightMap:
    rules: list[Rule] = []
    for src, head in LAYOUTS:
        rules += _language_model(src, head, cfg)
    rules += [drop(p + t) for p in VISION_PREFIXES for t in VISION_TENSORS]
    rules += [drop(p + t) for p in PROJECTOR_PREFIXES for t in PROJECTOR_TENSORS]
    return WeightMap(rules)


def tied_weights(cfg: Gemma3Config) -> tuple[tuple[str, str], ...]:
    return (("lm_head.weight", "model.embed_tokens.weight"),) if cfg.tie_word_embeddings else ()

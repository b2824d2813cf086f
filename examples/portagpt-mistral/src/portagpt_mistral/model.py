"""Mistral: Llama-shaped blocks, grouped-query attention over a sliding window.

Module names follow the Hugging Face checkpoint (``model.layers.{i}.self_attn.q_proj``,
``input_layernorm``, ``model.norm``, ``lm_head``), so the inherited weight map
is identity renames. Everything is portagpt's shared decoder: the window is a
config field, and the attention context builds its masks and the ring-buffer
KV cache from the layer specs, so the model never does.
"""

from __future__ import annotations

from portagpt.core import decoder


class Attention(decoder.Attention):
    """q/k/v/o projections without biases, GQA, RoPE, explicit head_dim."""


class DecoderLayer(decoder.DecoderLayer):
    attention = Attention


class MistralForCausalLM(decoder.CausalLM):
    layer = DecoderLayer

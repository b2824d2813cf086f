"""Llama 2 / 3 / 3.1 / 3.2: the plain decoder, with checkpoint-shaped module names.

Pre-RMSNorm blocks, grouped-query attention with optional q/k/v/o biases, a
SwiGLU MLP with optional biases (``mlp_bias``), RoPE (plain, or ``llama3``),
a head_dim that may differ from hidden_size / heads, and a head tied to the
embeddings in Llama 3.2. Every part is the shared decoder's
(:mod:`portagpt.core.decoder`); the classes below only name them.
"""

from __future__ import annotations

from ...core import decoder


class Attention(decoder.Attention):
    """q/k/v/o projections (biases when ``attention_bias``), GQA, RoPE."""


class DecoderLayer(decoder.DecoderLayer):
    attention = Attention


class LlamaForCausalLM(decoder.CausalLM):
    layer = DecoderLayer

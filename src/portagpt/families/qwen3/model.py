"""Qwen3, dense and mixture-of-experts: Llama's decoder plus a per-head QK-norm.

Notable against Llama: an RMSNorm over each query and key head (``q_norm`` /
``k_norm``) before RoPE, a head_dim independent of hidden_size / heads,
optional sliding-window layers, and in ``qwen3_moe`` a token-choice MoE
(softmax, top-k, optional renormalisation) in the sparse layers
(:meth:`Qwen3Config.is_sparse_layer`); the others keep a dense SwiGLU MLP.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ...adapters import WeightMap
from ...core import decoder
from ...core.layers import MoE, RMSNorm
from .weights import fused_expert_rules


class Attention(decoder.Attention):
    """q/k/v/o projections, GQA, RoPE, and an RMSNorm over each q and k head."""

    def __init__(self, cfg: Any, layer_idx: int) -> None:
        super().__init__(cfg, layer_idx)
        self.q_norm = RMSNorm(self.head_dim, cfg.rms_norm_eps)
        self.k_norm = RMSNorm(self.head_dim, cfg.rms_norm_eps)

    def qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        q, k, v = super().qkv(x)  # (B, H, T, hd), (B, Hkv, T, hd) x 2
        return self.q_norm(q), self.k_norm(k), v


class DecoderLayer(decoder.DecoderLayer):
    attention = Attention

    def make_mlp(self, cfg: Any, layer_idx: int) -> nn.Module:
        if not cfg.is_sparse_layer(layer_idx):
            return super().make_mlp(cfg, layer_idx)
        return MoE(
            cfg.hidden_size,
            cfg.moe_intermediate_size,
            cfg.num_experts,
            cfg.num_experts_per_tok,
            cfg.norm_topk_prob,
            cfg.hidden_act,
        )


class Qwen3ForCausalLM(decoder.CausalLM):
    layer = DecoderLayer

    @classmethod
    def weight_map(cls, cfg: Any) -> WeightMap:
        """Identity renames; MoE checkpoints may also store experts fused (see weights.py)."""
        rules = super().weight_map(cfg).rules
        return WeightMap(rules + fused_expert_rules(cfg.num_experts) if cfg.is_moe else rules)

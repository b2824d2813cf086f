"""Gemma 3 (text): sandwich-norm blocks, interleaved sliding-window and global attention.

Notable against Llama, all as transformers computes them:

* RMSNorm scales by ``(1 + weight)`` in fp32; four norms per block (before and
  after attention and MLP), plus an RMSNorm over each q and k head;
* sliding layers have their own RoPE base; only global layers are scaled;
* embeddings are multiplied by ``sqrt(hidden_size)`` rounded to their dtype;
* attention scale ``query_pre_attn_scalar ** -0.5``; GQA/MQA; gated GELU-tanh
  MLP; optional final-logit soft-capping;
* multimodal checkpoints keep the language model under other prefixes (two
  layouts, renamed onto the text-only names) next to a vision tower (dropped).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ...adapters import Rule, WeightMap, drop
from ...core import decoder
from ...core.cache import AttentionContext
from ...core.layers import RMSNorm

# (decoder prefix, head name) of the multimodal layouts: on disk, and transformers 5 in memory.
LAYOUTS = (
    ("language_model.model.", "language_model.lm_head.weight"),
    ("model.language_model.", "lm_head.weight"),
)
VISION = ("vision_tower.*", "multi_modal_projector.*")  # each also under "model."


def make_norm(cfg: Any, dim: int) -> nn.Module:
    return RMSNorm(dim, cfg.rms_norm_eps, unit_offset=True)


class Attention(decoder.Attention):
    """q/k/v/o projections, GQA, RoPE, an RMSNorm over each q and k head, Gemma's scale."""

    def __init__(self, cfg: Any, layer_idx: int) -> None:
        super().__init__(cfg, layer_idx)
        self.scale = cfg.query_pre_attn_scalar**-0.5
        self.q_norm = make_norm(cfg, self.head_dim)
        self.k_norm = make_norm(cfg, self.head_dim)

    def qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        q, k, v = super().qkv(x)  # (B, H, T, hd), (B, Hkv, T, hd) x 2
        return self.q_norm(q), self.k_norm(k), v


class DecoderLayer(decoder.DecoderLayer):
    """Sandwich norms: ``x + norm(attn(norm(x)))``, then ``x + norm(mlp(norm(x)))``."""

    attention = Attention
    modules = (
        "input_layernorm",
        "self_attn",
        "post_attention_layernorm",
        "pre_feedforward_layernorm",
        "mlp",
        "post_feedforward_layernorm",
    )
    make_norm = staticmethod(make_norm)

    def forward(
        self, x: torch.Tensor, ctx: AttentionContext, idx: int, rope: decoder.Rope
    ) -> torch.Tensor:
        h = self.self_attn(self.input_layernorm(x), ctx, idx, rope)
        x = x + self.post_attention_layernorm(h)
        return x + self.post_feedforward_layernorm(self.mlp(self.pre_feedforward_layernorm(x)))


class Gemma3ForCausalLM(decoder.CausalLM):
    layer = DecoderLayer

    def embed(self, input_ids: torch.Tensor, ctx: AttentionContext) -> torch.Tensor:
        x = self.model.embed_tokens(input_ids)  # (B, T, d)
        # sqrt(d) cast to the weight dtype first, as transformers does (55.4256 -> 55.5 in bf16)
        return x * torch.tensor(self.config.hidden_size**0.5, device=x.device).to(x.dtype)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        logits, cap = self.lm_head(x), self.config.final_logit_softcapping
        return logits if cap is None else torch.tanh(logits / cap) * cap

    @classmethod
    def weight_map(cls, cfg: Any) -> WeightMap:
        """Identity renames (text-only checkpoints, and exports), then the multimodal layouts."""
        own = super().weight_map(cfg).rules
        rules = list(own)
        for src, head in LAYOUTS:
            def moved(n: str, src: str = src, head: str = head) -> str:
                return head if n == "lm_head.weight" else src + n.removeprefix("model.")

            rules += [
                Rule(tuple(map(moved, r.hf)), r.native, r.transform, r.optional)
                for r in own
                if r.native
            ]
        return WeightMap(rules + [drop(pre + p) for p in VISION for pre in ("", "model.")])

"""Qwen3 / Qwen3-MoE: Hugging Face names <-> native names.

The native modules carry the checkpoint's own names, so most rules are
identity renames, listed one by one so that a tensor no rule claims is
reported by name. MoE experts come in two layouts, both accepted:

* per expert, ``mlp.experts.{e}.{gate,up,down}_proj.weight`` -- the hub
  checkpoints, and what transformers 5 ``save_pretrained`` writes;
* fused 3-D, ``mlp.experts.gate_up_proj`` (E, 2 * I, d) and
  ``mlp.experts.down_proj`` (E, d, I) -- the in-memory layout of
  transformers 5 (``model.state_dict()``), split here into per-expert tensors.

Export always writes the per-expert layout (the per-expert rules come first).
RoPE ``inv_freq`` buffers of old conversions are dropped.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ...adapters.weights import Rule, Transform, WeightMap, drop, rename
from .config import Qwen3Config

EXPERT = "model.layers.{}.mlp.experts."


def _same(name: str, optional: bool = False) -> Rule:
    return rename(name, name, optional=optional)


def fused_gate_up(n_experts: int) -> Transform:
    """(E, 2 * I, d) <-> E gate (I, d) then E up (I, d) tensors (gate is the first half)."""

    def fwd(ts: Sequence[torch.Tensor]) -> Sequence[torch.Tensor]:
        gate, up = torch.chunk(ts[0], 2, dim=1)
        return [*gate.unbind(0), *up.unbind(0)]

    def inv(ts: Sequence[torch.Tensor]) -> Sequence[torch.Tensor]:
        gate, up = torch.stack(list(ts[:n_experts])), torch.stack(list(ts[n_experts:]))
        return [torch.cat([gate, up], dim=1)]

    return Transform("fused_gate_up", fwd, inv)


def fused_experts() -> Transform:
    """(E, ...) <-> E tensors: one per expert."""
    return Transform(
        "fused_experts", lambda ts: list(ts[0].unbind(0)), lambda ts: [torch.stack(list(ts))]
    )


def _fused_rules(n_experts: int) -> list[Rule]:
    def per_expert(proj: str) -> tuple[str, ...]:
        # "{}" is the layer; the expert index is spelled out, one name per expert.
        return tuple(f"{EXPERT}{e}.{proj}.weight" for e in range(n_experts))

    return [
        Rule(
            (EXPERT + "gate_up_proj",),
            per_expert("gate_proj") + per_expert("up_proj"),
            fused_gate_up(n_experts),
        ),
        Rule((EXPERT + "down_proj",), per_expert("down_proj"), fused_experts()),
    ]


def weight_map(cfg: Qwen3Config) -> WeightMap:
    layer = "model.layers.{}."
    rules: list[Rule] = [_same("model.embed_tokens.weight")]
    for proj in ("q_proj", "k_proj", "v_proj", "o_proj"):
        rules.append(_same(layer + f"self_attn.{proj}.weight"))
        if cfg.attention_bias:
            rules.append(_same(layer + f"self_attn.{proj}.bias"))
    rules += [
        _same(layer + "self_attn.q_norm.weight"),
        _same(layer + "self_attn.k_norm.weight"),
        _same(layer + "input_layernorm.weight"),
        _same(layer + "post_attention_layernorm.weight"),
    ]
    # Dense MLP (every layer of qwen3; mlp_only_layers / off-step layers of qwen3_moe).
    rules += [_same(layer + f"mlp.{proj}.weight") for proj in ("gate_proj", "up_proj", "down_proj")]
    if cfg.is_moe:
        rules.append(_same(layer + "mlp.gate.weight"))  # the router
        rules += [
            _same(EXPERT + "{}." + f"{proj}.weight")
            for proj in ("gate_proj", "up_proj", "down_proj")
        ]
    rules += [
        _same("model.norm.weight"),
        _same("lm_head.weight", optional=cfg.tie_word_embeddings),
        drop(layer + "self_attn.rotary_emb.inv_freq"),
        drop("model.rotary_emb.inv_freq"),
    ]
    if cfg.is_moe:
        rules += _fused_rules(cfg.num_experts)  # last: export never reaches them
    return WeightMap(rules)


def tied_weights(cfg: Qwen3Config) -> tuple[tuple[str, str], ...]:
    return (("lm_head.weight", "model.embed_tokens.weight"),) if cfg.tie_word_embeddings else ()

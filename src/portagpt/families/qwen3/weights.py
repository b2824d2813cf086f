"""Qwen3-MoE's second expert layout: fused 3-D expert tensors <-> per-expert ones.

Per-expert ``mlp.experts.{e}.{gate,up,down}_proj.weight`` is what the hub
checkpoints and transformers 5's ``save_pretrained`` hold (the native names,
so plain identity rules). transformers 5's in-memory layout fuses them:
``mlp.experts.gate_up_proj`` (E, 2 * I, d) and ``mlp.experts.down_proj``
(E, d, I); these rules split them. They come last, so export writes the
per-expert layout.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ...adapters import Rule, Transform

EXPERT = "model.layers.{}.mlp.experts."


def fused_gate_up(n: int) -> Transform:
    """(E, 2 * I, d) <-> E gate (I, d) then E up (I, d) tensors (gate is the first half)."""

    def fwd(ts: Sequence[torch.Tensor]) -> Sequence[torch.Tensor]:
        gate, up = torch.chunk(ts[0], 2, dim=1)
        return [*gate.unbind(0), *up.unbind(0)]

    def inv(ts: Sequence[torch.Tensor]) -> Sequence[torch.Tensor]:
        return [torch.cat([torch.stack(list(ts[:n])), torch.stack(list(ts[n:]))], dim=1)]

    return Transform("fused_gate_up", fwd, inv)


UNBIND = Transform("unbind", lambda ts: list(ts[0].unbind(0)), lambda ts: [torch.stack(list(ts))])


def fused_expert_rules(n: int) -> list[Rule]:
    def per_expert(proj: str) -> tuple[str, ...]:  # "{}" is the layer; experts spelled out
        return tuple(f"{EXPERT}{e}.{proj}.weight" for e in range(n))

    return [
        Rule(
            (EXPERT + "gate_up_proj",),
            per_expert("gate_proj") + per_expert("up_proj"),
            fused_gate_up(n),
        ),
        Rule((EXPERT + "down_proj",), per_expert("down_proj"), UNBIND),
    ]

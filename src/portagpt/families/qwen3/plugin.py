"""Registers the Qwen3 family, dense and MoE (exactly as a third-party plugin would)."""

from __future__ import annotations

from ...adapters import Family
from ...hookspecs import hookimpl
from .config import PRESETS, SMOKE_CONFIG
from .model import Qwen3ForCausalLM

# The dense reference class; MoE configs name Qwen3MoeForCausalLM in "architectures".
FAMILY = Family(
    name="qwen3", build_model=Qwen3ForCausalLM, presets=PRESETS, smoke_config=SMOKE_CONFIG,
    hf_model_types=("qwen3", "qwen3_moe"),
    default_repo_id="Qwen/Qwen3-0.6B",
    stop_token_ids=(151645, 151643),  # <|im_end|> (chat turns) and <|endoftext|>
    description="Qwen3 dense and MoE: QK-norm, GQA, SwiGLU or top-k experts, RoPE",
)


@hookimpl
def portagpt_register_families(register):
    register(FAMILY)

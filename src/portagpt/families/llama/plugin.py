"""Registers the Llama family (exactly as a third-party plugin would)."""

from __future__ import annotations

from ...adapters import Family
from ...hookspecs import hookimpl
from .config import PRESETS, SMOKE_CONFIG
from .model import LlamaForCausalLM

FAMILY = Family(
    name="llama", build_model=LlamaForCausalLM, presets=PRESETS, smoke_config=SMOKE_CONFIG,
    default_repo_id="meta-llama/Llama-3.2-1B",
    stop_token_ids=(128001, 128008, 128009),  # Llama 3's end_of_text, eom_id, eot_id
    description="Llama 2/3/3.1/3.2: RMSNorm, GQA, SwiGLU, RoPE (llama3 scaling), tied head in 3.2",
)


@hookimpl
def portagpt_register_families(register):
    register(FAMILY)

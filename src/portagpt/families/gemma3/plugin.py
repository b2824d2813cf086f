"""Registers the Gemma 3 (text) family (exactly as a third-party plugin would)."""

from __future__ import annotations

from ...adapters import Family
from ...hookspecs import hookimpl
from .config import PRESETS, SMOKE_CONFIG
from .model import Gemma3ForCausalLM

FAMILY = Family(
    name="gemma3", build_model=Gemma3ForCausalLM, presets=PRESETS, smoke_config=SMOKE_CONFIG,
    hf_model_types=("gemma3_text", "gemma3"),
    default_repo_id="google/gemma-3-270m",
    stop_token_ids=(1, 106),  # <eos>, <end_of_turn>
    description="Gemma 3 (text): 5:1 sliding/global, (1+w) RMSNorm, QK-norm, GeGLU, tied head",
)


@hookimpl
def portagpt_register_families(register):
    register(FAMILY)

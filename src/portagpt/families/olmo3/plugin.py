"""Registers the Olmo 3 family (exactly as a third-party plugin would)."""

from __future__ import annotations

from ...adapters import Family
from ...hookspecs import hookimpl
from .config import PRESETS, SMOKE_CONFIG
from .model import Olmo3ForCausalLM

FAMILY = Family(
    name="olmo3", build_model=Olmo3ForCausalLM, presets=PRESETS, smoke_config=SMOKE_CONFIG,
    default_repo_id="allenai/Olmo-3-1025-7B",
    stop_token_ids=(100_257,),  # <|endoftext|>
    description="Olmo 3: post-norm, QK-norm over all heads, 3:1 sliding/full attention, YaRN",
)


@hookimpl
def portagpt_register_families(register):
    register(FAMILY)

"""Registers the Gemma 3 (text) family (exactly as a third-party plugin would)."""

from __future__ import annotations

from ...adapters.family import Family
from ...hookspecs import hookimpl
from .config import PRESETS, SMOKE_CONFIG, config_from_hf, config_to_hf
from .model import Gemma3Model, cache_specs
from .tokenizer import load_tokenizer
from .weights import tied_weights, weight_map

FAMILY = Family(
    name="gemma3",
    hf_model_types=("gemma3_text", "gemma3"),
    config_from_hf=config_from_hf,
    config_to_hf=config_to_hf,
    build_model=Gemma3Model,
    weight_map=weight_map,
    cache_specs=cache_specs,
    load_tokenizer=load_tokenizer,
    presets=PRESETS,
    smoke_config=SMOKE_CONFIG,
    default_repo_id="google/gemma-3-270m",
    transformers_class="Gemma3ForCausalLM",
    tied_weights=tied_weights,
    stop_token_ids=(1, 106),  # <eos>, <end_of_turn>
    description="Gemma 3 (text): 5:1 sliding/global attention, (1+w) RMSNorm, QK-norm, GeGLU, tied head",
)


@hookimpl
def portagpt_register_families(register):
    register(FAMILY)

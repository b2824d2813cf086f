"""Registers the Olmo 3 family (exactly as a third-party plugin would)."""

from __future__ import annotations

from ...adapters.family import Family
from ...hookspecs import hookimpl
from .config import PRESETS, SMOKE_CONFIG, config_from_hf, config_to_hf
from .model import Olmo3Model, cache_specs
from .tokenizer import load_tokenizer
from .weights import tied_weights, weight_map

FAMILY = Family(
    name="olmo3",
    hf_model_types=("olmo3",),
    config_from_hf=config_from_hf,
    config_to_hf=config_to_hf,
    build_model=Olmo3Model,
    weight_map=weight_map,
    cache_specs=cache_specs,
    load_tokenizer=load_tokenizer,
    presets=PRESETS,
    smoke_config=SMOKE_CONFIG,
    default_repo_id="allenai/Olmo-3-1025-7B",
    transformers_class="Olmo3ForCausalLM",
    tied_weights=tied_weights,
    stop_token_ids=(100_257,),  # <|endoftext|>
    description="Olmo 3: post-norm blocks, whole-projection QK-norm, 3:1 sliding/full, YaRN on full layers",
)


@hookimpl
def portagpt_register_families(register):
    register(FAMILY)

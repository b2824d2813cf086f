"""Registers the GPT-2 family (exactly as a third-party plugin would)."""

from __future__ import annotations

from ...adapters.family import Family
from ...hookspecs import hookimpl
from .config import PRESETS, SMOKE_CONFIG, config_from_hf, config_to_hf
from .model import GPT2Model, cache_specs
from .tokenizer import EOT, load_tokenizer
from .weights import tied_weights, weight_map

FAMILY = Family(
    name="gpt2",
    hf_model_types=("gpt2",),
    config_from_hf=config_from_hf,
    config_to_hf=config_to_hf,
    build_model=GPT2Model,
    weight_map=weight_map,
    cache_specs=cache_specs,
    load_tokenizer=load_tokenizer,
    presets=PRESETS,
    smoke_config=SMOKE_CONFIG,
    default_repo_id="openai-community/gpt2",
    transformers_class="GPT2LMHeadModel",
    tied_weights=tied_weights,
    stop_token_ids=(EOT,),
    description="GPT-2: learned positions, LayerNorm, GELU MLP, tied head",
)


@hookimpl
def portagpt_register_families(register):
    register(FAMILY)

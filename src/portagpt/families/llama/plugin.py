"""Registers the Llama family (exactly as a third-party plugin would)."""

from __future__ import annotations

from ...adapters.family import Family
from ...hookspecs import hookimpl
from .config import PRESETS, SMOKE_CONFIG, config_from_hf, config_to_hf
from .model import LlamaForCausalLM, cache_specs
from .tokenizer import load_tokenizer
from .weights import tied_weights, weight_map

FAMILY = Family(
    name="llama",
    hf_model_types=("llama",),
    config_from_hf=config_from_hf,
    config_to_hf=config_to_hf,
    build_model=LlamaForCausalLM,
    weight_map=weight_map,
    cache_specs=cache_specs,
    load_tokenizer=load_tokenizer,
    presets=PRESETS,
    smoke_config=SMOKE_CONFIG,
    default_repo_id="meta-llama/Llama-3.2-1B",
    transformers_class="LlamaForCausalLM",
    tied_weights=tied_weights,
    # Llama 3's <|end_of_text|>, <|eom_id|>, <|eot_id|>; a checkpoint's own config adds its own.
    stop_token_ids=(128001, 128008, 128009),
    description="Llama 2/3/3.1/3.2: RMSNorm, GQA, SwiGLU, RoPE (llama3 scaling), tied head in 3.2",
)


@hookimpl
def portagpt_register_families(register):
    register(FAMILY)

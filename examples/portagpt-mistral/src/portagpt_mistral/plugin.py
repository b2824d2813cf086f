"""The plugin module named by this package's ``portagpt`` entry point: one hook, one family."""

from __future__ import annotations

from portagpt import hookimpl
from portagpt.adapters import Family

from .config import PRESETS, SMOKE_CONFIG, config_from_hf, config_to_hf
from .model import MistralForCausalLM, cache_specs
from .tokenizer import load_tokenizer
from .weights import tied_weights, weight_map

FAMILY = Family(
    name="mistral",
    hf_model_types=("mistral",),
    config_from_hf=config_from_hf,
    config_to_hf=config_to_hf,
    build_model=MistralForCausalLM,
    weight_map=weight_map,
    cache_specs=cache_specs,
    load_tokenizer=load_tokenizer,
    presets=PRESETS,
    smoke_config=SMOKE_CONFIG,
    default_repo_id="mistralai/Mistral-7B-v0.1",
    transformers_class="MistralForCausalLM",
    tied_weights=tied_weights,
    stop_token_ids=(2,),  # </s>; a checkpoint's config.json adds its own
    description="Mistral 7B / Nemo: RMSNorm, GQA, SwiGLU, RoPE, sliding-window attention",
)


@hookimpl
def portagpt_register_families(register):  # noqa: ANN001, ANN201 - pluggy hook
    register(FAMILY)

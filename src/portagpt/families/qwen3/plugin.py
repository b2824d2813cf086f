"""Registers the Qwen3 family, dense and MoE (exactly as a third-party plugin would)."""

from __future__ import annotations

from ...adapters.family import Family
from ...hookspecs import hookimpl
from .config import PRESETS, SMOKE_CONFIG, config_from_hf, config_to_hf
from .model import Qwen3ForCausalLM, cache_specs
from .tokenizer import load_tokenizer
from .weights import tied_weights, weight_map

FAMILY = Family(
    name="qwen3",
    hf_model_types=("qwen3", "qwen3_moe"),
    config_from_hf=config_from_hf,
    config_to_hf=config_to_hf,
    build_model=Qwen3ForCausalLM,
    weight_map=weight_map,
    cache_specs=cache_specs,
    load_tokenizer=load_tokenizer,
    presets=PRESETS,
    smoke_config=SMOKE_CONFIG,
    default_repo_id="Qwen/Qwen3-0.6B",
    # The dense reference; MoE configs (model_type qwen3_moe) use Qwen3MoeForCausalLM,
    # which config_to_hf names in "architectures".
    transformers_class="Qwen3ForCausalLM",
    tied_weights=tied_weights,
    # <|im_end|> (chat turns) and <|endoftext|>.
    stop_token_ids=(151645, 151643),
    description="Qwen3 dense and MoE: QK-norm, GQA, SwiGLU or top-k experts, RoPE",
)


@hookimpl
def portagpt_register_families(register):
    register(FAMILY)

"""Registers the GPT-2 family (exactly as a third-party plugin would)."""

from __future__ import annotations

from ...adapters import Family
from ...adapters.tokenizer import BPE_EOT, load_tokenizer_or_bundled
from ...hookspecs import hookimpl
from .config import PRESETS, SMOKE_CONFIG
from .model import GPT2Model
from .weights import weight_map

FAMILY = Family(
    name="gpt2", build_model=GPT2Model, presets=PRESETS, smoke_config=SMOKE_CONFIG,
    weight_map=weight_map,  # Conv1D transposes and the fused c_attn
    load_tokenizer=load_tokenizer_or_bundled,  # its own vocabulary is the bundled BPE
    default_repo_id="openai-community/gpt2",
    stop_token_ids=(BPE_EOT,),
    description="GPT-2: learned positions, LayerNorm, GELU MLP, tied head",
)


@hookimpl
def portagpt_register_families(register):
    register(FAMILY)

"""The plugin module named by this package's ``portagpt`` entry point: one hook, one family."""

from __future__ import annotations

from portagpt import hookimpl
from portagpt.adapters import Family

from .config import PRESETS, SMOKE_CONFIG
from .model import MistralForCausalLM

FAMILY = Family(
    name="mistral", build_model=MistralForCausalLM, presets=PRESETS, smoke_config=SMOKE_CONFIG,
    default_repo_id="mistralai/Mistral-7B-v0.1",
    stop_token_ids=(2,),  # </s>; a checkpoint's config.json adds its own
    description="Mistral 7B / Nemo: RMSNorm, GQA, SwiGLU, RoPE, sliding-window attention",
)


@hookimpl
def portagpt_register_families(register):  # noqa: ANN001, ANN201 - pluggy hook
    register(FAMILY)

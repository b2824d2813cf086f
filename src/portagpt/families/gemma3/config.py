"""Gemma 3 (text) config: the shared decoder fields plus Gemma's own.

Exceptions to the generic translation, all as transformers reads them:

* ``hidden_act`` is stored as config.json's ``hidden_activation``;
* without ``layer_types``, every ``sliding_window_pattern``-th layer (6th by
  default) is ``full_attention``, the others ``sliding_attention``;
* RoPE is per layer type: 5.x ``rope_parameters`` with one dict per type, or
  4.x ``rope_theta`` (global layers, with ``rope_scaling``) and
  ``rope_local_base_freq`` (sliding layers, never scaled);
* multimodal ``Gemma3ForConditionalGeneration`` configs (``model_type``
  "gemma3") keep the language model under ``text_config``;
* ``use_bidirectional_attention`` (embedding models) is refused.

``attn_logit_softcapping`` is kept for round trips only: transformers' Gemma3
never applies it (Gemma 3 replaced Gemma 2's soft-capping with QK-norm).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from ...adapters import FULL, SLIDING, DecoderConfig, Preset
from ...core.rope import rope_params_from_hf
from ...errors import ConfigError

LOCAL_THETA, GLOBAL_THETA = 10_000.0, 1_000_000.0  # transformers' Gemma3TextConfig defaults


def _pattern(n_layers: int, every: int = 6) -> tuple[str, ...]:
    return tuple(SLIDING if (i + 1) % every else FULL for i in range(n_layers))


@dataclass(frozen=True)
class Gemma3Config(DecoderConfig):
    model_type = "gemma3_text"
    architecture = "Gemma3ForCausalLM"
    hf_names = {"hidden_act": "hidden_activation"}
    default_theta = GLOBAL_THETA

    vocab_size: int = 262_208
    head_dim: int | None = 256
    max_position_embeddings: int = 131_072
    hidden_act: str = "gelu_pytorch_tanh"
    sliding_window: int | None = 4096
    tie_word_embeddings: bool = True
    bos_token_id: int | None = 2
    eos_token_id: int | tuple[int, ...] | None = 1
    pad_token_id: int | None = 0
    query_pre_attn_scalar: float = 256
    attn_logit_softcapping: float | None = None
    final_logit_softcapping: float | None = None

    def default_layer_types(self) -> tuple[str, ...]:
        return _pattern(self.num_hidden_layers)

    def normalized_rope(self) -> dict[str, Any]:
        if not self.rope_parameters:
            thetas = {FULL: GLOBAL_THETA, SLIDING: LOCAL_THETA}
            self._set("rope_parameters", {k: {"rope_theta": t} for k, t in thetas.items()})
        return super().normalized_rope()

    @classmethod
    def prepare(cls, d: dict[str, Any]) -> dict[str, Any]:
        if d.get("use_bidirectional_attention"):
            raise ConfigError(
                "This Gemma3 config.json sets use_bidirectional_attention (an embedding model "
                "such as EmbeddingGemma); portagpt's gemma3 family is a causal language model only."
            )
        thetas = {
            FULL: d.get("rope_theta", GLOBAL_THETA),
            SLIDING: d.get("rope_local_base_freq", LOCAL_THETA),
        }
        rp = d.get("rope_parameters")
        if not (isinstance(rp, Mapping) and FULL in rp):  # 4.x: rope_scaling is the global layers'
            rp = {FULL: rope_params_from_hf(d, None, GLOBAL_THETA).to_hf()}
        d["rope_parameters"] = {
            k: {"rope_theta": t, **(rp.get(k) or {})}
            for k, t in thetas.items()
        }
        if not d.get("layer_types") and "num_hidden_layers" in d:
            d["layer_types"] = _pattern(d["num_hidden_layers"], d.get("sliding_window_pattern", 6))
        return d


_SRC = "https://huggingface.co/google/{}/blob/main/config.json"
_270M = Gemma3Config(
    vocab_size=262_144, hidden_size=640, intermediate_size=2048, num_hidden_layers=18,
    num_attention_heads=4, num_key_value_heads=1, max_position_embeddings=32_768,
    sliding_window=512, eos_token_id=(1, 106),
)  # fmt: skip
_1B = replace(
    _270M, hidden_size=1152, intermediate_size=6912, num_hidden_layers=26, layer_types=None
)
_4B = replace(
    _1B, layer_types=None, vocab_size=262_208, hidden_size=2560, intermediate_size=10_240,
    num_hidden_layers=34, num_attention_heads=8, num_key_value_heads=4,
    max_position_embeddings=131_072, sliding_window=1024,
    rope_parameters={
        FULL: {"rope_type": "linear", "rope_theta": GLOBAL_THETA, "factor": 8.0},
        SLIDING: {"rope_theta": LOCAL_THETA},
    },
)  # fmt: skip
_GEMMA = dict(head_dim=32, query_pre_attn_scalar=32, bos_token_id=None, pad_token_id=None)

PRESETS: dict[str, Preset] = {
    "270M": Preset(_270M, _SRC.format("gemma-3-270m"), "Gemma 3 270M: 18 layers, 640 wide, MQA"),
    "1B": Preset(_1B, _SRC.format("gemma-3-1b-pt"), "Gemma 3 1B: 26 layers, 1152 wide, MQA"),
    "4B": Preset(_4B, _SRC.format("gemma-3-4b-pt"), "Gemma 3 4B (the multimodal's text_config)"),
    # portagpt's own CPU size: the bundled BPE's vocabulary, so it trains from scratch.
    "tiny": Preset(
        Gemma3Config.tiny(
            intermediate_size=512, num_hidden_layers=6, num_key_value_heads=1, sliding_window=64,
            **_GEMMA,
        ),
        "",
        "6 layers (5 sliding : 1 global), 128 wide, bundled BPE vocabulary: minutes on CPU",
    ),
}

SMOKE_CONFIG = Gemma3Config.smoke(
    num_hidden_layers=3, sliding_window=4, layer_types=(SLIDING, SLIDING, FULL),
    **dict(_GEMMA, head_dim=8, query_pre_attn_scalar=8), eos_token_id=None,
)  # fmt: skip

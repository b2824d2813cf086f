"""Olmo 3 config: the shared decoder fields, one RoPE recipe per layer type.

Exceptions to the generic translation:

* without ``layer_types``, three ``sliding_attention`` layers then one
  ``full_attention`` layer, repeated (transformers' default);
* the 4.x spelling (``rope_theta`` + ``rope_scaling``) scales only the full
  layers; the sliding ones keep plain RoPE at the same base;
* YaRN's ``truncate`` flag is dropped: transformers (5.x) reads it from the top
  of ``rope_parameters``, which for Olmo 3 is the per-layer-type dict, so it is
  never honoured there, and logits must match the reference.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from ...adapters import FULL, SLIDING, DecoderConfig, Preset
from ...core.rope import RopeConfig


@dataclass(frozen=True)
class Olmo3Config(DecoderConfig):
    model_type = "olmo3"
    architecture = "Olmo3ForCausalLM"
    default_theta = 500_000.0

    vocab_size: int = 100_278
    rms_norm_eps: float = 1e-5
    sliding_window: int | None = 4096
    eos_token_id: int | tuple[int, ...] | None = 100_257

    def default_layer_types(self) -> tuple[str, ...]:
        return tuple(SLIDING if (i + 1) % 4 else FULL for i in range(self.num_hidden_layers))

    @classmethod
    def prepare(cls, d: dict[str, Any]) -> dict[str, Any]:
        d = super().prepare(d)
        rp = d["rope_parameters"]
        if "rope_type" in rp:  # one recipe (4.x): it is the full layers'; sliding ones are plain
            d["rope_parameters"] = {FULL: rp, SLIDING: RopeConfig(rp["rope_theta"]).to_hf()}
        return d

    def normalized_rope(self) -> dict[str, Any]:
        rp = super().normalized_rope()
        per_type = rp if "rope_type" not in rp else {FULL: rp, SLIDING: rp}
        return {k: {p: v for p, v in e.items() if p != "truncate"} for k, e in per_type.items()}


_SRC = "https://huggingface.co/allenai/{}/blob/main/config.json"
# YaRN on the full-attention layers: 8k pretraining context extended 8x to 65k.
_YARN = {
    "rope_type": "yarn",
    "rope_theta": 500_000.0,
    "factor": 8.0,
    "original_max_position_embeddings": 8192,
    "attention_factor": 1.2079441541679836,
    "beta_fast": 32.0,
    "beta_slow": 1.0,
}
_7B = Olmo3Config(
    max_position_embeddings=65_536, rms_norm_eps=1e-6, pad_token_id=100_277,
    rope_parameters={FULL: _YARN, SLIDING: {"rope_theta": 500_000.0}},
)  # fmt: skip
_32B = replace(
    _7B, hidden_size=5120, intermediate_size=27_648, num_hidden_layers=64, num_attention_heads=40,
    num_key_value_heads=8, layer_types=None,
)  # fmt: skip

PRESETS: dict[str, Preset] = {
    "7B": Preset(_7B, _SRC.format("Olmo-3-1025-7B"), "Olmo 3 7B: 32 layers, 4096 wide, MHA, 3:1"),
    "32B": Preset(_32B, _SRC.format("Olmo-3-1125-32B"), "Olmo 3 32B: 64 layers, GQA (8 KV heads)"),
    # portagpt's own CPU size: the bundled BPE's vocabulary, so it trains from scratch.
    "tiny": Preset(
        Olmo3Config.tiny(
            intermediate_size=384, rms_norm_eps=1e-6, sliding_window=64, tie_word_embeddings=False
        ),
        "",
        "4 layers (3 sliding : 1 full), 128 wide, bundled BPE vocabulary: minutes on CPU",
    ),
}

SMOKE_CONFIG = Olmo3Config.smoke(num_hidden_layers=4, sliding_window=4)

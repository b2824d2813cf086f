"""Llama 2 / 3 / 3.1 / 3.2 config: the shared decoder fields plus ``mlp_bias``.

Every field is a config.json key (:class:`DecoderConfig` reads and writes
them in any transformers spelling). Llama 2 has plain RoPE; Llama 3.1/3.2 use
the ``llama3`` frequency recipe. The ``tiny`` preset has the bundled BPE's
50,257-entry vocabulary, so it trains from scratch offline.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from ...adapters import DecoderConfig, Preset


@dataclass(frozen=True)
class LlamaConfig(DecoderConfig):
    model_type = "llama"
    architecture = "LlamaForCausalLM"

    mlp_bias: bool = False


def _llama3(factor: float, theta: float = 500_000.0, original: int = 8192) -> dict[str, Any]:
    return {
        "rope_type": "llama3",
        "rope_theta": theta,
        "factor": factor,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": original,
    }


_SRC = "https://huggingface.co/meta-llama/{}/blob/main/config.json"
_1B = LlamaConfig(
    vocab_size=128_256, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
    num_key_value_heads=8, max_position_embeddings=131_072, rms_norm_eps=1e-5,
    rope_parameters=_llama3(32.0), tie_word_embeddings=True, bos_token_id=128_000,
    eos_token_id=128_001,
)  # fmt: skip
_3B = replace(_1B, hidden_size=3072, num_hidden_layers=28, num_attention_heads=24, head_dim=128)
_8B = replace(
    _3B, hidden_size=4096, intermediate_size=14_336, num_hidden_layers=32, num_attention_heads=32,
    tie_word_embeddings=False, rope_parameters=_llama3(8.0),
)  # fmt: skip
_2_7B = LlamaConfig(max_position_embeddings=4096, rms_norm_eps=1e-5, bos_token_id=1, eos_token_id=2)

PRESETS: dict[str, Preset] = {
    "3.2-1B": Preset(_1B, _SRC.format("Llama-3.2-1B"), "Llama 3.2 1B: 16 layers, 2048 wide, tied"),
    "3.2-3B": Preset(_3B, _SRC.format("Llama-3.2-3B"), "Llama 3.2 3B: 28 layers, 3072 wide, tied"),
    "3.1-8B": Preset(_8B, _SRC.format("Llama-3.1-8B"), "Llama 3.1 8B: 32 layers, 4096 wide"),
    "2-7B": Preset(_2_7B, _SRC.format("Llama-2-7b-hf"), "Llama 2 7B: 32 layers, MHA, plain RoPE"),
    "tiny": Preset(
        LlamaConfig.tiny(intermediate_size=352, num_key_value_heads=2),
        "",
        "4 layers, 128 wide, GQA 4/2, bundled BPE vocabulary (~7M params): trains on 2 CPU cores",
    ),
}

SMOKE_CONFIG = LlamaConfig.smoke(rope_parameters=_llama3(4.0, original=16))

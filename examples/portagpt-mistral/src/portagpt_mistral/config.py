"""Mistral's config: the shared decoder fields, with transformers' Mistral defaults.

Notable: ``head_dim`` may differ from ``hidden_size / num_attention_heads``
(Mistral-Nemo: 5120 wide, 32 heads, head_dim 128); ``sliding_window`` (an
int, or null) applies to *every* layer -- Mistral 7B v0.1 slides over 4096
positions, v0.3 and Nemo attend fully. Every key is read and written by
portagpt's generic translation; this family has no exceptions.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from portagpt.adapters import DecoderConfig, Preset


@dataclass(frozen=True)
class MistralConfig(DecoderConfig):
    model_type = "mistral"
    architecture = "MistralForCausalLM"

    intermediate_size: int = 14336
    max_position_embeddings: int = 131072
    sliding_window: int | None = 4096
    bos_token_id: int | None = 1
    eos_token_id: int | tuple[int, ...] | None = 2


_SRC = "https://huggingface.co/mistralai/{}/blob/main/config.json"
_V01 = MistralConfig(num_key_value_heads=8, max_position_embeddings=32768, rms_norm_eps=1e-5)
_V03 = replace(
    _V01, vocab_size=32768, sliding_window=None, rope_parameters={"rope_theta": 1e6}
)

PRESETS: dict[str, Preset] = {
    "7B-v0.1": Preset(_V01, _SRC.format("Mistral-7B-v0.1"), "Mistral 7B v0.1: sliding window 4096"),
    "7B-v0.3": Preset(_V03, _SRC.format("Mistral-7B-v0.3"), "Mistral 7B v0.3: full attention"),
    "Nemo-12B": Preset(
        replace(
            _V03, vocab_size=131072, hidden_size=5120, num_hidden_layers=40, head_dim=128,
            max_position_embeddings=1024000,
        ),
        _SRC.format("Mistral-Nemo-Base-2407"),
        "Mistral-Nemo 12B: head_dim 128 with a 5120-wide model",
    ),
    # The bundled BPE's vocabulary, so `portagpt train --family mistral` trains from scratch.
    "tiny": Preset(
        MistralConfig.tiny(
            intermediate_size=384, num_key_value_heads=2, head_dim=32, sliding_window=64
        ),
        "",
        "4 layers, 128 wide, window 64: a CPU-sized Mistral",
    ),
}

# Tiny, CPU, well under a second; the window (8) is shorter than the kit's test sequences,
# and head_dim 24 != 64 / 4, as in Mistral-Nemo.
SMOKE_CONFIG = MistralConfig.smoke(
    hidden_size=64, intermediate_size=128, head_dim=24, sliding_window=8
)

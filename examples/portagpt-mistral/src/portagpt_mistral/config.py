"""Mistral's config: config.json's own key names, plus the RoPE recipe and the sliding window.

Notable: ``head_dim`` may differ from ``hidden_size / num_attention_heads``
(Mistral-Nemo: 5120 / 32 heads but head_dim 128); ``sliding_window`` (an int,
or None) applies to *every* layer, as in transformers' ``MistralForCausalLM``
-- Mistral 7B v0.1 slides over 4096 positions, v0.3 and Nemo attend fully.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from portagpt.adapters import Preset, text_config
from portagpt.core.rope import RopeConfig, rope_params_from_hf
from portagpt.errors import ConfigError


@dataclass(frozen=True)
class MistralConfig:
    vocab_size: int = 32000
    hidden_size: int = 4096
    intermediate_size: int = 14336
    num_hidden_layers: int = 32
    num_attention_heads: int = 32
    num_key_value_heads: int = 8
    head_dim: int = 128
    max_position_embeddings: int = 32768
    rms_norm_eps: float = 1e-5
    rope: RopeConfig = field(default_factory=RopeConfig)
    sliding_window: int | None = 4096
    hidden_act: str = "silu"
    tie_word_embeddings: bool = False
    initializer_range: float = 0.02
    bos_token_id: int | None = 1
    eos_token_id: int | tuple[int, ...] | None = 2

    def __post_init__(self) -> None:
        if self.num_attention_heads % self.num_key_value_heads:
            raise ConfigError(
                f"Mistral num_attention_heads ({self.num_attention_heads}) must be a multiple of "
                f"num_key_value_heads ({self.num_key_value_heads}) for grouped-query attention."
            )
        if self.sliding_window is not None and self.sliding_window < 1:
            raise ConfigError(
                f"Mistral sliding_window must be a positive number of positions or null, got "
                f"{self.sliding_window!r}."
            )

    @property
    def context_length(self) -> int:
        return self.max_position_embeddings


def config_from_hf(hf: Mapping[str, Any]) -> MistralConfig:
    d = text_config(hf)
    try:
        heads = d["num_attention_heads"]
        eos = d.get("eos_token_id", 2)
        return MistralConfig(
            vocab_size=d["vocab_size"],
            hidden_size=d["hidden_size"],
            intermediate_size=d["intermediate_size"],
            num_hidden_layers=d["num_hidden_layers"],
            num_attention_heads=heads,
            num_key_value_heads=d.get("num_key_value_heads") or heads,
            head_dim=d.get("head_dim") or d["hidden_size"] // heads,
            max_position_embeddings=d.get("max_position_embeddings", 32768),
            rms_norm_eps=d.get("rms_norm_eps", 1e-6),
            rope=rope_params_from_hf(d),
            sliding_window=d.get("sliding_window"),
            hidden_act=d.get("hidden_act", "silu"),
            tie_word_embeddings=d.get("tie_word_embeddings", False),
            initializer_range=d.get("initializer_range", 0.02),
            bos_token_id=d.get("bos_token_id"),
            eos_token_id=tuple(eos) if isinstance(eos, list) else eos,
        )
    except KeyError as exc:
        raise ConfigError(f"Mistral config.json lacks the key {exc.args[0]!r}.") from None


def config_to_hf(cfg: MistralConfig) -> dict[str, Any]:
    """A transformers config.json dict (RoPE as 5.x ``rope_parameters`` and 4.x ``rope_theta``)."""
    out: dict[str, Any] = {
        "architectures": ["MistralForCausalLM"],
        "model_type": "mistral",
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.hidden_size,
        "intermediate_size": cfg.intermediate_size,
        "num_hidden_layers": cfg.num_hidden_layers,
        "num_attention_heads": cfg.num_attention_heads,
        "num_key_value_heads": cfg.num_key_value_heads,
        "head_dim": cfg.head_dim,
        "max_position_embeddings": cfg.max_position_embeddings,
        "rms_norm_eps": cfg.rms_norm_eps,
        "rope_parameters": cfg.rope.to_hf(),
        "rope_theta": cfg.rope.theta,
        "sliding_window": cfg.sliding_window,
        "hidden_act": cfg.hidden_act,
        "tie_word_embeddings": cfg.tie_word_embeddings,
        "initializer_range": cfg.initializer_range,
        "bos_token_id": cfg.bos_token_id,
        "eos_token_id": list(cfg.eos_token_id) if isinstance(cfg.eos_token_id, tuple) else cfg.eos_token_id,
        "attention_dropout": 0.0,
    }
    if cfg.rope.type != "default":
        out["rope_scaling"] = {"rope_type": cfg.rope.type, **dict(cfg.rope.params)}
    return out


_SRC = "https://huggingface.co/mistralai/{}/blob/main/config.json"
_V01 = MistralConfig()

PRESETS: dict[str, Preset] = {
    "7B-v0.1": Preset(_V01, _SRC.format("Mistral-7B-v0.1"), "Mistral 7B v0.1: sliding window 4096"),
    "7B-v0.3": Preset(
        replace(_V01, vocab_size=32768, rope=RopeConfig(theta=1e6), sliding_window=None),
        _SRC.format("Mistral-7B-v0.3"),
        "Mistral 7B v0.3: 32768-token vocabulary, full attention",
    ),
    "Nemo-12B": Preset(
        replace(
            _V01,
            vocab_size=131072,
            hidden_size=5120,
            num_hidden_layers=40,
            max_position_embeddings=1024000,
            rope=RopeConfig(theta=1e6),
            sliding_window=None,
        ),
        _SRC.format("Mistral-Nemo-Base-2407"),
        "Mistral-Nemo 12B: head_dim 128 with a 5120-wide model",
    ),
    "tiny": Preset(
        MistralConfig(
            vocab_size=32000,
            hidden_size=128,
            intermediate_size=384,
            num_hidden_layers=4,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=32,
            max_position_embeddings=256,
            sliding_window=64,
        ),
        "",
        "4 layers, 128 wide, window 64: a CPU-sized Mistral",
    ),
}

# Tiny, CPU, well under a second; the window (8) is shorter than the kit's test sequences.
SMOKE_CONFIG = MistralConfig(
    vocab_size=256,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=24,  # != 64 / 4, as in Mistral-Nemo
    max_position_embeddings=64,
    sliding_window=8,
)

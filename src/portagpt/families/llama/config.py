"""Llama config: config.json's own keys, read from any transformers spelling and written back.

Field names are config.json's keys (mlx-lm style). RoPE is kept in the 4.x
spelling -- ``rope_theta`` plus an optional ``rope_scaling`` dict carrying
``rope_type`` -- so ``dataclasses.asdict(cfg)`` is itself a readable config;
:func:`config_from_hf` accepts 4.x (``rope_scaling`` with ``type`` or
``rope_type``), 5.x (``rope_parameters``) and a nested ``text_config``.
Llama 2 has no scaling; Llama 3.1/3.2 use the ``llama3`` frequency recipe.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from ...adapters.family import Preset, text_config
from ...core.rope import RopeConfig, rope_params_from_hf
from ...errors import ConfigError

GPT2_VOCAB = 50257  # the tiny presets train with GPT-2's BPE (see tokenizer.py)
GPT2_EOT = 50256


@dataclass(frozen=True)
class LlamaConfig:
    vocab_size: int = 128256
    hidden_size: int = 2048
    intermediate_size: int = 8192
    num_hidden_layers: int = 16
    num_attention_heads: int = 32
    num_key_value_heads: int = 8
    head_dim: int | None = None  # None: hidden_size // num_attention_heads (filled in)
    max_position_embeddings: int = 131072
    rms_norm_eps: float = 1e-5
    rope_theta: float = 500000.0
    rope_scaling: Mapping[str, Any] | None = None  # {"rope_type": ..., params}; None = plain RoPE
    tie_word_embeddings: bool = True
    attention_bias: bool = False
    mlp_bias: bool = False
    hidden_act: str = "silu"
    bos_token_id: int | None = 128000
    eos_token_id: int | tuple[int, ...] | None = 128001
    initializer_range: float = 0.02

    def __post_init__(self) -> None:
        if self.head_dim is None:
            if self.hidden_size % self.num_attention_heads:
                raise ConfigError(
                    f"Llama hidden_size ({self.hidden_size}) is not divisible by "
                    f"num_attention_heads ({self.num_attention_heads}) and config.json gives no "
                    "head_dim; add head_dim."
                )
            object.__setattr__(self, "head_dim", self.hidden_size // self.num_attention_heads)
        if self.num_attention_heads % self.num_key_value_heads:
            raise ConfigError(
                f"Llama num_attention_heads ({self.num_attention_heads}) must be a multiple of "
                f"num_key_value_heads ({self.num_key_value_heads})."
            )
        if self.head_dim % 2:
            raise ConfigError(f"Llama head_dim must be even for RoPE, got {self.head_dim}.")

    @property
    def context_length(self) -> int:
        return self.max_position_embeddings

    @property
    def rope(self) -> RopeConfig:
        return rope_params_from_hf(
            {
                "rope_theta": self.rope_theta,
                "rope_scaling": dict(self.rope_scaling) if self.rope_scaling else None,
                "max_position_embeddings": self.max_position_embeddings,
            }
        )


def _ids(value: Any) -> int | tuple[int, ...] | None:
    return tuple(value) if isinstance(value, list) else value


def config_from_hf(hf: Mapping[str, Any]) -> LlamaConfig:
    d = text_config(hf)
    rope = rope_params_from_hf(d, default_theta=10000.0)
    try:
        return LlamaConfig(
            vocab_size=d["vocab_size"],
            hidden_size=d["hidden_size"],
            intermediate_size=d["intermediate_size"],
            num_hidden_layers=d["num_hidden_layers"],
            num_attention_heads=d["num_attention_heads"],
            num_key_value_heads=d.get("num_key_value_heads") or d["num_attention_heads"],
            head_dim=d.get("head_dim"),
            max_position_embeddings=d.get("max_position_embeddings", 2048),
            rms_norm_eps=d.get("rms_norm_eps", 1e-6),
            rope_theta=rope.theta,
            rope_scaling=None
            if rope.type == "default"
            else {"rope_type": rope.type, **rope.params},
            tie_word_embeddings=d.get("tie_word_embeddings", False),
            attention_bias=d.get("attention_bias", False),
            mlp_bias=d.get("mlp_bias", False),
            hidden_act=d.get("hidden_act", "silu"),
            bos_token_id=_ids(d.get("bos_token_id")),
            eos_token_id=_ids(d.get("eos_token_id")),
            initializer_range=d.get("initializer_range", 0.02),
        )
    except KeyError as exc:
        raise ConfigError(f"Llama config.json lacks the key {exc.args[0]!r}.") from None


def config_to_hf(cfg: LlamaConfig) -> dict[str, Any]:
    """A transformers config.json dict.

    RoPE is written as 5.x ``rope_parameters`` and also as 4.x ``rope_theta`` /
    ``rope_scaling``: transformers 5 reads either (``rope_scaling`` wins, and
    holds the same recipe), and transformers 4 only understands the latter.
    """
    rope = cfg.rope
    out: dict[str, Any] = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.hidden_size,
        "intermediate_size": cfg.intermediate_size,
        "num_hidden_layers": cfg.num_hidden_layers,
        "num_attention_heads": cfg.num_attention_heads,
        "num_key_value_heads": cfg.num_key_value_heads,
        "head_dim": cfg.head_dim,
        "max_position_embeddings": cfg.max_position_embeddings,
        "rms_norm_eps": cfg.rms_norm_eps,
        "rope_parameters": rope.to_hf(),
        "rope_theta": rope.theta,
        "tie_word_embeddings": cfg.tie_word_embeddings,
        "attention_bias": cfg.attention_bias,
        "mlp_bias": cfg.mlp_bias,
        "hidden_act": cfg.hidden_act,
        "bos_token_id": cfg.bos_token_id,
        "eos_token_id": list(cfg.eos_token_id)
        if isinstance(cfg.eos_token_id, tuple)
        else cfg.eos_token_id,
        "initializer_range": cfg.initializer_range,
        "attention_dropout": 0.0,
    }
    if rope.type != "default":
        out["rope_scaling"] = {"rope_type": rope.type, **dict(rope.params)}
    return out


_SRC = "https://huggingface.co/meta-llama/{}/blob/main/config.json"


def _llama3_rope(factor: float) -> dict[str, Any]:
    return {
        "rope_type": "llama3",
        "factor": factor,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192,
    }


_L32_1B = LlamaConfig(rope_scaling=_llama3_rope(32.0))

PRESETS: dict[str, Preset] = {
    "3.2-1B": Preset(
        _L32_1B, _SRC.format("Llama-3.2-1B"), "Llama 3.2 1B: 16 layers, 2048 wide, tied head"
    ),
    "3.2-3B": Preset(
        replace(
            _L32_1B, hidden_size=3072, num_hidden_layers=28, num_attention_heads=24, head_dim=128
        ),
        _SRC.format("Llama-3.2-3B"),
        "Llama 3.2 3B: 28 layers, 3072 wide, tied head",
    ),
    "3.1-8B": Preset(
        replace(
            _L32_1B,
            hidden_size=4096,
            intermediate_size=14336,
            num_hidden_layers=32,
            head_dim=128,
            tie_word_embeddings=False,
            rope_scaling=_llama3_rope(8.0),
        ),
        _SRC.format("Llama-3.1-8B"),
        "Llama 3.1 8B: 32 layers, 4096 wide, untied head",
    ),
    "2-7B": Preset(
        LlamaConfig(
            vocab_size=32000,
            hidden_size=4096,
            intermediate_size=11008,
            num_hidden_layers=32,
            num_attention_heads=32,
            num_key_value_heads=32,
            max_position_embeddings=4096,
            rms_norm_eps=1e-5,
            rope_theta=10000.0,
            tie_word_embeddings=False,
            bos_token_id=1,
            eos_token_id=2,
        ),
        _SRC.format("Llama-2-7b-hf"),
        "Llama 2 7B: 32 layers, 4096 wide, multi-head attention, plain RoPE",
    ),
    # portagpt's own CPU size: GPT-2's vocabulary, so it trains with the bundled BPE.
    "tiny": Preset(
        LlamaConfig(
            vocab_size=GPT2_VOCAB,
            hidden_size=128,
            intermediate_size=352,
            num_hidden_layers=4,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=256,
            rope_theta=10000.0,
            tie_word_embeddings=True,
            bos_token_id=GPT2_EOT,
            eos_token_id=GPT2_EOT,
        ),
        "",
        "4 layers, 128 wide, GQA 4/2, GPT-2 vocabulary (~7M params): trains on 2 CPU cores",
    ),
}

SMOKE_CONFIG = LlamaConfig(
    vocab_size=256,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=64,
    rope_scaling={**_llama3_rope(4.0), "original_max_position_embeddings": 16},
    tie_word_embeddings=False,
    bos_token_id=1,
    eos_token_id=2,
)

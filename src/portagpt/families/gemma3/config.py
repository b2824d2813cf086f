"""Gemma 3 (text) config: config.json's own keys, read from every spelling transformers writes.

Spellings handled by :func:`config_from_hf`:

* transformers 5.x: ``layer_types`` plus ``rope_parameters`` with one dict per
  layer type (``full_attention`` / ``sliding_attention``);
* transformers 4.x: ``rope_theta`` (global layers), ``rope_local_base_freq``
  (sliding layers), ``rope_scaling`` (global layers only) and
  ``sliding_window_pattern`` (every N-th layer is global);
* multimodal ``Gemma3ForConditionalGeneration`` configs (``model_type``
  "gemma3"), whose language model sits under ``text_config``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from ...adapters.family import Preset, text_config
from ...core.rope import RopeConfig, rope_params_from_hf
from ...errors import ConfigError

SLIDING, FULL = "sliding_attention", "full_attention"
LOCAL_THETA, GLOBAL_THETA = 10_000.0, 1_000_000.0  # transformers' Gemma3TextConfig defaults


@dataclass(frozen=True)
class Gemma3Config:
    vocab_size: int = 262_144
    hidden_size: int = 640
    intermediate_size: int = 2048
    num_hidden_layers: int = 18
    num_attention_heads: int = 4
    num_key_value_heads: int = 1
    head_dim: int = 256
    max_position_embeddings: int = 32_768
    rms_norm_eps: float = 1e-6
    hidden_activation: str = "gelu_pytorch_tanh"
    query_pre_attn_scalar: float = 256
    attention_bias: bool = False
    sliding_window: int = 512
    # One entry per layer, "sliding_attention" or "full_attention"; empty means
    # transformers' default pattern: every ``sliding_window_pattern``-th layer is global.
    layer_types: tuple[str, ...] = ()
    sliding_window_pattern: int = 6
    rope_local: RopeConfig = field(default_factory=lambda: RopeConfig(LOCAL_THETA))
    rope_global: RopeConfig = field(default_factory=lambda: RopeConfig(GLOBAL_THETA))
    # Kept for round trips only: transformers' Gemma3 (5.x) never applies it, and no
    # released Gemma 3 sets it (Gemma 3 replaced Gemma 2's soft-capping with QK-norm).
    attn_logit_softcapping: float | None = None
    final_logit_softcapping: float | None = None
    tie_word_embeddings: bool = True
    bos_token_id: int | None = 2
    eos_token_id: int | tuple[int, ...] | None = 1
    pad_token_id: int | None = 0

    def __post_init__(self) -> None:
        if self.layer_types and len(self.layer_types) != self.num_hidden_layers:
            raise ConfigError(
                f"Gemma3 layer_types has {len(self.layer_types)} entries but num_hidden_layers is "
                f"{self.num_hidden_layers}; give one entry per layer (or none, for the default pattern)."
            )
        bad = sorted(set(self.layer_types) - {SLIDING, FULL})
        if bad:
            raise ConfigError(
                f"Gemma3 layer_types has unknown entries {bad}; each must be {SLIDING!r} or {FULL!r}."
            )
        if self.num_attention_heads % self.num_key_value_heads:
            raise ConfigError(
                f"Gemma3 num_attention_heads ({self.num_attention_heads}) must be a multiple of "
                f"num_key_value_heads ({self.num_key_value_heads})."
            )

    @property
    def context_length(self) -> int:
        return self.max_position_embeddings

    @property
    def attention_types(self) -> tuple[str, ...]:
        """The kind of every layer (``layer_types``, or the default every-N-th-global pattern)."""
        if self.layer_types:
            return self.layer_types
        n = self.sliding_window_pattern
        return tuple(SLIDING if (i + 1) % n else FULL for i in range(self.num_hidden_layers))


def _rope(d: Mapping[str, Any], layer_type: str) -> RopeConfig:
    """The RoPE recipe of one layer type, from either spelling."""
    local = layer_type == SLIDING
    theta_key = "rope_local_base_freq" if local else "rope_theta"
    default = LOCAL_THETA if local else GLOBAL_THETA
    rp = d.get("rope_parameters")
    if isinstance(rp, Mapping) and layer_type in rp:  # 5.x: one dict per layer type
        if rp[layer_type] is None:
            return RopeConfig(float(d.get(theta_key, default)))
        return rope_params_from_hf(d, layer_type, default, theta_key=theta_key)
    if local:  # 4.x: rope_scaling only ever applies to the global layers
        d = {k: v for k, v in d.items() if k not in ("rope_scaling", "rope_parameters")}
    return rope_params_from_hf(d, None, default, theta_key=theta_key)


def _layer_types(d: Mapping[str, Any], n_layers: int) -> tuple[str, ...]:
    types = d.get("layer_types")
    if types:
        return tuple(types)
    pattern = d.get("sliding_window_pattern", d.get("_sliding_window_pattern", 6))
    return tuple(SLIDING if (i + 1) % pattern else FULL for i in range(n_layers))


def config_from_hf(hf: Mapping[str, Any]) -> Gemma3Config:
    d = text_config(hf)
    if d.get("use_bidirectional_attention"):
        raise ConfigError(
            "This Gemma3 config.json sets use_bidirectional_attention (an embedding model such as "
            "EmbeddingGemma); portagpt's gemma3 family is a causal language model only."
        )
    eos = d.get("eos_token_id", 1)
    try:
        n_layers = d["num_hidden_layers"]
        return Gemma3Config(
            vocab_size=d["vocab_size"],
            hidden_size=d["hidden_size"],
            intermediate_size=d["intermediate_size"],
            num_hidden_layers=n_layers,
            num_attention_heads=d["num_attention_heads"],
            num_key_value_heads=d.get("num_key_value_heads", d["num_attention_heads"]),
            head_dim=d.get("head_dim", 256),
            max_position_embeddings=d.get("max_position_embeddings", 131_072),
            rms_norm_eps=d.get("rms_norm_eps", 1e-6),
            hidden_activation=d.get("hidden_activation") or "gelu_pytorch_tanh",
            query_pre_attn_scalar=d.get("query_pre_attn_scalar", 256),
            attention_bias=bool(d.get("attention_bias", False)),
            sliding_window=d.get("sliding_window") or 4096,
            layer_types=_layer_types(d, n_layers),
            rope_local=_rope(d, SLIDING),
            rope_global=_rope(d, FULL),
            attn_logit_softcapping=d.get("attn_logit_softcapping"),
            final_logit_softcapping=d.get("final_logit_softcapping"),
            tie_word_embeddings=d.get("tie_word_embeddings", True),
            bos_token_id=d.get("bos_token_id", 2),
            eos_token_id=tuple(eos) if isinstance(eos, list) else eos,
            pad_token_id=d.get("pad_token_id", 0),
        )
    except KeyError as exc:
        raise ConfigError(f"Gemma3 config.json lacks the key {exc.args[0]!r}.") from None


def config_to_hf(cfg: Gemma3Config) -> dict[str, Any]:
    """A transformers 5.x ``Gemma3ForCausalLM`` config.json for ``cfg``."""
    eos = list(cfg.eos_token_id) if isinstance(cfg.eos_token_id, tuple) else cfg.eos_token_id
    return {
        "architectures": ["Gemma3ForCausalLM"],
        "model_type": "gemma3_text",
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.hidden_size,
        "intermediate_size": cfg.intermediate_size,
        "num_hidden_layers": cfg.num_hidden_layers,
        "num_attention_heads": cfg.num_attention_heads,
        "num_key_value_heads": cfg.num_key_value_heads,
        "head_dim": cfg.head_dim,
        "max_position_embeddings": cfg.max_position_embeddings,
        "rms_norm_eps": cfg.rms_norm_eps,
        "hidden_activation": cfg.hidden_activation,
        "query_pre_attn_scalar": cfg.query_pre_attn_scalar,
        "attention_bias": cfg.attention_bias,
        "sliding_window": cfg.sliding_window,
        "layer_types": list(cfg.attention_types),
        "rope_parameters": {FULL: cfg.rope_global.to_hf(), SLIDING: cfg.rope_local.to_hf()},
        "attn_logit_softcapping": cfg.attn_logit_softcapping,
        "final_logit_softcapping": cfg.final_logit_softcapping,
        "tie_word_embeddings": cfg.tie_word_embeddings,
        "bos_token_id": cfg.bos_token_id,
        "eos_token_id": eos,
        "pad_token_id": cfg.pad_token_id,
    }


_SRC = "https://huggingface.co/google/{}/blob/main/config.json"
_270M = Gemma3Config(eos_token_id=(1, 106))
_1B = replace(_270M, hidden_size=1152, intermediate_size=6912, num_hidden_layers=26)
_4B = replace(
    _270M,
    vocab_size=262_208,
    hidden_size=2560,
    intermediate_size=10_240,
    num_hidden_layers=34,
    num_attention_heads=8,
    num_key_value_heads=4,
    max_position_embeddings=131_072,
    sliding_window=1024,
    rope_global=RopeConfig(GLOBAL_THETA, "linear", {"factor": 8.0}),
)

PRESETS: dict[str, Preset] = {
    "270M": Preset(_270M, _SRC.format("gemma-3-270m"), "Gemma 3 270M: 18 layers, 640 wide, MQA"),
    "1B": Preset(_1B, _SRC.format("gemma-3-1b-pt"), "Gemma 3 1B: 26 layers, 1152 wide, MQA"),
    "4B": Preset(
        _4B,
        _SRC.format("gemma-3-4b-pt"),
        "Gemma 3 4B, language model only (text_config of the multimodal checkpoint)",
    ),
    # portagpt's own CPU size; the GPT-2 vocabulary so the packaged tokenizer covers it.
    "tiny": Preset(
        Gemma3Config(
            vocab_size=50_257,
            hidden_size=128,
            intermediate_size=512,
            num_hidden_layers=6,
            num_attention_heads=4,
            num_key_value_heads=1,
            head_dim=32,
            query_pre_attn_scalar=32,
            max_position_embeddings=256,
            sliding_window=64,
            bos_token_id=None,
            eos_token_id=50_256,
            pad_token_id=None,
        ),
        "",
        "6 layers (5 sliding : 1 global), 128 wide, GPT-2 vocabulary: trains on CPU in minutes",
    ),
}

SMOKE_CONFIG = Gemma3Config(
    vocab_size=256,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=3,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=8,
    query_pre_attn_scalar=8,
    max_position_embeddings=64,
    sliding_window=4,
    layer_types=(SLIDING, SLIDING, FULL),
    bos_token_id=None,
    eos_token_id=None,
    pad_token_id=None,
)

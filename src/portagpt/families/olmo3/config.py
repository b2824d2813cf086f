"""Olmo 3 config: config.json's own keys, read from both transformers spellings.

* transformers 5.x: ``layer_types`` plus ``rope_parameters`` with one dict per
  layer type (``full_attention`` / ``sliding_attention``);
* transformers 4.x: ``rope_theta`` for every layer and ``rope_scaling`` (YaRN in
  the released models) for the full-attention layers only; without
  ``layer_types``, every fourth layer is full attention.

One quirk is reproduced on purpose: transformers (5.x) reads YaRN's
``truncate`` flag from the top level of ``rope_parameters``, which for Olmo 3 is
always the per-layer-type dict, so a ``truncate`` inside the full-attention
entry is never honoured; the correction range is always truncated. We drop the
key so logits match the reference.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from ...adapters.family import Preset, text_config
from ...core.rope import RopeConfig, rope_params_from_hf
from ...errors import ConfigError

SLIDING, FULL = "sliding_attention", "full_attention"
THETA = 500_000.0  # transformers' Olmo3Config default


@dataclass(frozen=True)
class Olmo3Config:
    vocab_size: int = 100_278
    hidden_size: int = 4096
    intermediate_size: int = 11_008
    num_hidden_layers: int = 32
    num_attention_heads: int = 32
    num_key_value_heads: int = 32
    head_dim: int | None = None  # None: hidden_size // num_attention_heads
    max_position_embeddings: int = 65_536
    rms_norm_eps: float = 1e-6
    hidden_act: str = "silu"
    attention_bias: bool = False
    sliding_window: int = 4096
    # One entry per layer; empty means transformers' default (every 4th layer is full).
    layer_types: tuple[str, ...] = ()
    rope_sliding: RopeConfig = field(default_factory=lambda: RopeConfig(THETA))
    rope_full: RopeConfig = field(default_factory=lambda: RopeConfig(THETA))
    tie_word_embeddings: bool = False
    bos_token_id: int | None = None
    eos_token_id: int | tuple[int, ...] | None = 100_257
    pad_token_id: int | None = 100_277

    def __post_init__(self) -> None:
        if self.layer_types and len(self.layer_types) != self.num_hidden_layers:
            raise ConfigError(
                f"Olmo3 layer_types has {len(self.layer_types)} entries but num_hidden_layers is "
                f"{self.num_hidden_layers}; give one entry per layer (or none, for the default pattern)."
            )
        bad = sorted(set(self.layer_types) - {SLIDING, FULL})
        if bad:
            raise ConfigError(
                f"Olmo3 layer_types has unknown entries {bad}; each must be {SLIDING!r} or {FULL!r}."
            )
        if self.num_attention_heads % self.num_key_value_heads:
            raise ConfigError(
                f"Olmo3 num_attention_heads ({self.num_attention_heads}) must be a multiple of "
                f"num_key_value_heads ({self.num_key_value_heads})."
            )

    @property
    def context_length(self) -> int:
        return self.max_position_embeddings

    @property
    def head_size(self) -> int:
        return self.head_dim or self.hidden_size // self.num_attention_heads

    @property
    def attention_types(self) -> tuple[str, ...]:
        """The kind of every layer (``layer_types``, or three sliding then one full, repeated)."""
        if self.layer_types:
            return self.layer_types
        return tuple(SLIDING if (i + 1) % 4 else FULL for i in range(self.num_hidden_layers))


def _rope(d: Mapping[str, Any], layer_type: str) -> RopeConfig:
    """The RoPE recipe of one layer type, from either spelling."""
    rp = d.get("rope_parameters")
    if isinstance(rp, Mapping) and layer_type in rp:  # 5.x: one dict per layer type
        if rp[layer_type] is None:
            return RopeConfig(float(d.get("rope_theta", THETA)))
        rope = rope_params_from_hf(d, layer_type, THETA)
    else:
        if layer_type == SLIDING:  # 4.x: rope_scaling only applies to the full-attention layers
            d = {k: v for k, v in d.items() if k not in ("rope_scaling", "rope_parameters")}
        rope = rope_params_from_hf(d, None, THETA)
    params = {k: v for k, v in rope.params.items() if k != "truncate"}  # see the module docstring
    return replace(rope, params=params)


def config_from_hf(hf: Mapping[str, Any]) -> Olmo3Config:
    d = text_config(hf)
    eos = d.get("eos_token_id", 100_257)
    try:
        n_layers = d["num_hidden_layers"]
        types = d.get("layer_types") or [SLIDING if (i + 1) % 4 else FULL for i in range(n_layers)]
        return Olmo3Config(
            vocab_size=d["vocab_size"],
            hidden_size=d["hidden_size"],
            intermediate_size=d["intermediate_size"],
            num_hidden_layers=n_layers,
            num_attention_heads=d["num_attention_heads"],
            num_key_value_heads=d.get("num_key_value_heads") or d["num_attention_heads"],
            head_dim=d.get("head_dim"),
            max_position_embeddings=d.get("max_position_embeddings", 2048),
            rms_norm_eps=d.get("rms_norm_eps", 1e-5),
            hidden_act=d.get("hidden_act", "silu"),
            attention_bias=bool(d.get("attention_bias", False)),
            sliding_window=d.get("sliding_window") or 4096,
            layer_types=tuple(types),
            rope_sliding=_rope(d, SLIDING),
            rope_full=_rope(d, FULL),
            tie_word_embeddings=d.get("tie_word_embeddings", False),
            bos_token_id=d.get("bos_token_id"),
            eos_token_id=tuple(eos) if isinstance(eos, list) else eos,
            pad_token_id=d.get("pad_token_id"),
        )
    except KeyError as exc:
        raise ConfigError(f"Olmo3 config.json lacks the key {exc.args[0]!r}.") from None


def config_to_hf(cfg: Olmo3Config) -> dict[str, Any]:
    """A transformers 5.x ``Olmo3ForCausalLM`` config.json for ``cfg``."""
    eos = list(cfg.eos_token_id) if isinstance(cfg.eos_token_id, tuple) else cfg.eos_token_id
    out: dict[str, Any] = {
        "architectures": ["Olmo3ForCausalLM"],
        "model_type": "olmo3",
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.hidden_size,
        "intermediate_size": cfg.intermediate_size,
        "num_hidden_layers": cfg.num_hidden_layers,
        "num_attention_heads": cfg.num_attention_heads,
        "num_key_value_heads": cfg.num_key_value_heads,
        "max_position_embeddings": cfg.max_position_embeddings,
        "rms_norm_eps": cfg.rms_norm_eps,
        "hidden_act": cfg.hidden_act,
        "attention_bias": cfg.attention_bias,
        "sliding_window": cfg.sliding_window,
        "layer_types": list(cfg.attention_types),
        "rope_parameters": {FULL: cfg.rope_full.to_hf(), SLIDING: cfg.rope_sliding.to_hf()},
        "tie_word_embeddings": cfg.tie_word_embeddings,
        "bos_token_id": cfg.bos_token_id,
        "eos_token_id": eos,
        "pad_token_id": cfg.pad_token_id,
    }
    if cfg.head_dim is not None:
        out["head_dim"] = cfg.head_dim
    return out


_SRC = "https://huggingface.co/allenai/{}/blob/main/config.json"
# YaRN on the full-attention layers: 8k pretraining context extended 8x to 65k.
_YARN = RopeConfig(
    THETA,
    "yarn",
    {
        "factor": 8.0,
        "original_max_position_embeddings": 8192,
        "attention_factor": 1.2079441541679836,
        "beta_fast": 32.0,
        "beta_slow": 1.0,
    },
)
_7B = Olmo3Config(rope_full=_YARN)
_32B = replace(
    _7B,
    hidden_size=5120,
    intermediate_size=27_648,
    num_hidden_layers=64,
    num_attention_heads=40,
    num_key_value_heads=8,
)

PRESETS: dict[str, Preset] = {
    "7B": Preset(
        _7B, _SRC.format("Olmo-3-1025-7B"), "Olmo 3 7B: 32 layers, 4096 wide, MHA, 3:1 sliding/full"
    ),
    "32B": Preset(
        _32B, _SRC.format("Olmo-3-1125-32B"), "Olmo 3 32B: 64 layers, 5120 wide, GQA (8 KV heads)"
    ),
    # portagpt's own CPU size; the GPT-2 vocabulary so the packaged tokenizer covers it.
    "tiny": Preset(
        Olmo3Config(
            vocab_size=50_257,
            hidden_size=128,
            intermediate_size=384,
            num_hidden_layers=4,
            num_attention_heads=4,
            num_key_value_heads=4,
            max_position_embeddings=256,
            sliding_window=64,
            eos_token_id=50_256,
            pad_token_id=None,
        ),
        "",
        "4 layers (3 sliding : 1 full), 128 wide, GPT-2 vocabulary: trains on CPU in minutes",
    ),
}

SMOKE_CONFIG = Olmo3Config(
    vocab_size=256,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=4,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=64,
    sliding_window=4,
    layer_types=(SLIDING, SLIDING, SLIDING, FULL),
    eos_token_id=None,
    pad_token_id=None,
)

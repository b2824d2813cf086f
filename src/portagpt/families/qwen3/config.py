"""Qwen3 config (dense and MoE): config.json's own keys, read from any transformers spelling.

One config serves ``model_type`` ``qwen3`` and ``qwen3_moe``: ``num_experts``
is 0 for a dense model. In an MoE model, layer ``i`` is sparse unless it is in
``mlp_only_layers`` or ``(i + 1) % decoder_sparse_step != 0`` (transformers'
rule); the other layers use a dense MLP of ``intermediate_size``.

RoPE is kept in the 4.x spelling (``rope_theta`` + optional ``rope_scaling``
with ``rope_type``); :func:`config_from_hf` accepts 4.x, 5.x
(``rope_parameters``) and a nested ``text_config``. The expert count is read
from ``num_experts`` (the hub's spelling) or ``num_local_experts`` (what
transformers 5 writes). Sliding-window layers (``use_sliding_window``) are
kept as ``layer_types``; None means every layer attends fully.
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
FULL, SLIDING = "full_attention", "sliding_attention"


@dataclass(frozen=True)
class Qwen3Config:
    vocab_size: int = 151936
    hidden_size: int = 1024
    intermediate_size: int = 3072
    num_hidden_layers: int = 28
    num_attention_heads: int = 16
    num_key_value_heads: int = 8
    head_dim: int = 128  # independent of hidden_size / heads
    max_position_embeddings: int = 40960
    rms_norm_eps: float = 1e-6
    rope_theta: float = 1_000_000.0
    rope_scaling: Mapping[str, Any] | None = None  # {"rope_type": ..., params}; None = plain RoPE
    tie_word_embeddings: bool = True
    attention_bias: bool = False
    hidden_act: str = "silu"
    sliding_window: int | None = None  # window of the sliding layers (None when there are none)
    layer_types: tuple[str, ...] | None = None  # None: every layer is full attention
    # Mixture of experts (qwen3_moe); num_experts == 0 means a dense model.
    num_experts: int = 0
    num_experts_per_tok: int = 8
    moe_intermediate_size: int = 768
    norm_topk_prob: bool = True
    decoder_sparse_step: int = 1
    mlp_only_layers: tuple[int, ...] = ()
    bos_token_id: int | None = 151643
    eos_token_id: int | tuple[int, ...] | None = 151645
    initializer_range: float = 0.02

    def __post_init__(self) -> None:
        if self.num_attention_heads % self.num_key_value_heads:
            raise ConfigError(
                f"Qwen3 num_attention_heads ({self.num_attention_heads}) must be a multiple of "
                f"num_key_value_heads ({self.num_key_value_heads})."
            )
        if self.head_dim % 2:
            raise ConfigError(f"Qwen3 head_dim must be even for RoPE, got {self.head_dim}.")
        if self.layer_types is not None:
            if len(self.layer_types) != self.num_hidden_layers or set(self.layer_types) - {
                FULL,
                SLIDING,
            }:
                raise ConfigError(
                    f"Qwen3 layer_types must list {self.num_hidden_layers} entries of {FULL!r} or "
                    f"{SLIDING!r}; got {list(self.layer_types)!r}."
                )
            if SLIDING in self.layer_types and not self.sliding_window:
                raise ConfigError(
                    "Qwen3 layer_types has sliding layers but sliding_window is not set."
                )
        if self.num_experts and not 0 < self.num_experts_per_tok <= self.num_experts:
            raise ConfigError(
                f"Qwen3 MoE num_experts_per_tok ({self.num_experts_per_tok}) must be between 1 and "
                f"num_experts ({self.num_experts})."
            )

    @property
    def context_length(self) -> int:
        return self.max_position_embeddings

    @property
    def is_moe(self) -> bool:
        return self.num_experts > 0

    def is_sparse_layer(self, i: int) -> bool:
        """Whether layer ``i`` is a mixture of experts (transformers' Qwen3Moe rule)."""
        return (
            self.is_moe
            and i not in self.mlp_only_layers
            and (i + 1) % self.decoder_sparse_step == 0
        )

    def window(self, i: int) -> int | None:
        """The sliding window of layer ``i`` (None: full attention)."""
        if self.layer_types is not None and self.layer_types[i] == SLIDING:
            return self.sliding_window
        return None

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


def _layer_types(
    d: Mapping[str, Any], n_layers: int, moe: bool
) -> tuple[tuple[str, ...] | None, int | None]:
    """(layer_types, window) as transformers resolves them; (None, None) when no layer slides."""
    window = d.get("sliding_window") if d.get("use_sliding_window") else None
    if window is None:
        return None, None
    if moe:  # Qwen3Moe applies the window to every layer
        return (SLIDING,) * n_layers, window
    types = d.get("layer_types") or [
        SLIDING if i >= d.get("max_window_layers", 28) else FULL for i in range(n_layers)
    ]
    if SLIDING not in types:
        return None, None
    return tuple(types), window


def config_from_hf(hf: Mapping[str, Any]) -> Qwen3Config:
    d = text_config(hf)
    rope = rope_params_from_hf(d, default_theta=10000.0)
    moe = d.get("model_type") == "qwen3_moe" or "num_experts" in d or "num_local_experts" in d
    try:
        n_layers, n_heads = d["num_hidden_layers"], d["num_attention_heads"]
        layer_types, window = _layer_types(d, n_layers, moe)
        moe_fields: dict[str, Any] = {}
        if moe:
            moe_fields = dict(
                num_experts=d.get("num_experts", d.get("num_local_experts")),
                num_experts_per_tok=d["num_experts_per_tok"],
                moe_intermediate_size=d["moe_intermediate_size"],
                norm_topk_prob=d.get("norm_topk_prob", False),
                decoder_sparse_step=d.get("decoder_sparse_step", 1),
                mlp_only_layers=tuple(d.get("mlp_only_layers") or ()),
            )
        return Qwen3Config(
            vocab_size=d["vocab_size"],
            hidden_size=d["hidden_size"],
            intermediate_size=d["intermediate_size"],
            num_hidden_layers=n_layers,
            num_attention_heads=n_heads,
            num_key_value_heads=d.get("num_key_value_heads") or n_heads,
            head_dim=d.get("head_dim") or d["hidden_size"] // n_heads,
            max_position_embeddings=d.get("max_position_embeddings", 32768),
            rms_norm_eps=d.get("rms_norm_eps", 1e-6),
            rope_theta=rope.theta,
            rope_scaling=None
            if rope.type == "default"
            else {"rope_type": rope.type, **rope.params},
            tie_word_embeddings=d.get("tie_word_embeddings", False),
            attention_bias=d.get("attention_bias", False),
            hidden_act=d.get("hidden_act", "silu"),
            sliding_window=window,
            layer_types=layer_types,
            bos_token_id=_ids(d.get("bos_token_id")),
            eos_token_id=_ids(d.get("eos_token_id")),
            initializer_range=d.get("initializer_range", 0.02),
            **moe_fields,
        )
    except KeyError as exc:
        kind = "Qwen3-MoE" if moe else "Qwen3"
        raise ConfigError(f"{kind} config.json lacks the key {exc.args[0]!r}.") from None


def config_to_hf(cfg: Qwen3Config) -> dict[str, Any]:
    """A transformers config.json dict (``qwen3`` or ``qwen3_moe``).

    RoPE is written as 5.x ``rope_parameters`` and also as 4.x ``rope_theta`` /
    ``rope_scaling``: transformers 5 reads either (``rope_scaling`` wins, and
    holds the same recipe), and transformers 4 only understands the latter.
    """
    rope = cfg.rope
    types = list(cfg.layer_types or (FULL,) * cfg.num_hidden_layers)
    out: dict[str, Any] = {
        "architectures": ["Qwen3MoeForCausalLM" if cfg.is_moe else "Qwen3ForCausalLM"],
        "model_type": "qwen3_moe" if cfg.is_moe else "qwen3",
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
        "hidden_act": cfg.hidden_act,
        "use_sliding_window": SLIDING in types,
        "sliding_window": cfg.sliding_window,
        "bos_token_id": cfg.bos_token_id,
        "eos_token_id": list(cfg.eos_token_id)
        if isinstance(cfg.eos_token_id, tuple)
        else cfg.eos_token_id,
        "initializer_range": cfg.initializer_range,
        "attention_dropout": 0.0,
    }
    if rope.type != "default":
        out["rope_scaling"] = {"rope_type": rope.type, **dict(rope.params)}
    if cfg.is_moe:
        if SLIDING in types and FULL in types:
            raise ConfigError(
                "This Qwen3-MoE config mixes sliding and full attention layers, which "
                "transformers' Qwen3MoeConfig cannot express (its window applies to every "
                "layer); make layer_types all sliding or None to export it."
            )
        out.update(
            num_experts=cfg.num_experts,
            num_experts_per_tok=cfg.num_experts_per_tok,
            moe_intermediate_size=cfg.moe_intermediate_size,
            norm_topk_prob=cfg.norm_topk_prob,
            decoder_sparse_step=cfg.decoder_sparse_step,
            mlp_only_layers=list(cfg.mlp_only_layers),
        )
    else:
        out.update(layer_types=types, max_window_layers=cfg.num_hidden_layers)
    return out


_SRC = "https://huggingface.co/Qwen/{}/blob/main/config.json"
_Q06 = Qwen3Config()
_Q8 = replace(
    _Q06,
    hidden_size=4096,
    intermediate_size=12288,
    num_hidden_layers=36,
    num_attention_heads=32,
    tie_word_embeddings=False,
)
_TINY = Qwen3Config(
    vocab_size=GPT2_VOCAB,
    hidden_size=128,
    intermediate_size=352,
    num_hidden_layers=4,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=32,
    max_position_embeddings=256,
    rope_theta=10000.0,
    tie_word_embeddings=True,
    bos_token_id=GPT2_EOT,
    eos_token_id=GPT2_EOT,
)

PRESETS: dict[str, Preset] = {
    "0.6B": Preset(_Q06, _SRC.format("Qwen3-0.6B"), "Qwen3 0.6B: 28 layers, 1024 wide, tied head"),
    "1.7B": Preset(
        replace(_Q06, hidden_size=2048, intermediate_size=6144),
        _SRC.format("Qwen3-1.7B"),
        "Qwen3 1.7B: 28 layers, 2048 wide, tied head",
    ),
    "4B": Preset(
        replace(
            _Q06,
            hidden_size=2560,
            intermediate_size=9728,
            num_hidden_layers=36,
            num_attention_heads=32,
        ),
        _SRC.format("Qwen3-4B"),
        "Qwen3 4B: 36 layers, 2560 wide, tied head",
    ),
    "8B": Preset(_Q8, _SRC.format("Qwen3-8B"), "Qwen3 8B: 36 layers, 4096 wide"),
    "14B": Preset(
        replace(
            _Q8,
            hidden_size=5120,
            intermediate_size=17408,
            num_hidden_layers=40,
            num_attention_heads=40,
        ),
        _SRC.format("Qwen3-14B"),
        "Qwen3 14B: 40 layers, 5120 wide",
    ),
    "32B": Preset(
        replace(
            _Q8,
            hidden_size=5120,
            intermediate_size=25600,
            num_hidden_layers=64,
            num_attention_heads=64,
        ),
        _SRC.format("Qwen3-32B"),
        "Qwen3 32B: 64 layers, 5120 wide",
    ),
    "30B-A3B": Preset(
        replace(
            _Q8,
            hidden_size=2048,
            intermediate_size=6144,
            num_hidden_layers=48,
            num_attention_heads=32,
            num_key_value_heads=4,
            num_experts=128,
            num_experts_per_tok=8,
            moe_intermediate_size=768,
            norm_topk_prob=True,
        ),
        _SRC.format("Qwen3-30B-A3B"),
        "Qwen3 MoE 30B-A3B: 48 layers, 128 experts, 8 active per token",
    ),
    # portagpt's own CPU sizes: GPT-2's vocabulary, so they train with the bundled BPE.
    "tiny": Preset(
        _TINY,
        "",
        "4 layers, 128 wide, GQA 4/2, QK-norm, GPT-2 vocabulary (~7M params): minutes on CPU",
    ),
    "tiny-moe": Preset(
        replace(_TINY, num_experts=8, num_experts_per_tok=2, moe_intermediate_size=96),
        "",
        "tiny with 8 experts of width 96 per layer, 2 active per token",
    ),
}

SMOKE_CONFIG = Qwen3Config(
    vocab_size=256,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=16,
    max_position_embeddings=64,
    tie_word_embeddings=False,
    bos_token_id=1,
    eos_token_id=2,
)

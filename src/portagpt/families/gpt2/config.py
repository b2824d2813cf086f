"""GPT-2 config: the chapter-5 ``GPT_CONFIG`` keys, translated to and from config.json."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from ...adapters.family import Preset, text_config
from ...errors import ConfigError

GPT2_VOCAB = 50257


@dataclass(frozen=True)
class GPT2Config:
    vocab_size: int = GPT2_VOCAB
    context_length: int = 1024
    emb_dim: int = 768
    n_heads: int = 12
    n_layers: int = 12
    drop_rate: float = 0.0
    qkv_bias: bool = True
    tie_word_embeddings: bool = True
    layer_norm_eps: float = 1e-5
    activation: str = "gelu_new"
    hidden_dim: int | None = None  # MLP width; None = 4 * emb_dim

    def __post_init__(self) -> None:
        if self.emb_dim % self.n_heads:
            raise ConfigError(
                f"GPT-2 emb_dim ({self.emb_dim}) must be divisible by n_heads ({self.n_heads})."
            )

    @property
    def head_dim(self) -> int:
        return self.emb_dim // self.n_heads

    @property
    def mlp_dim(self) -> int:
        return self.hidden_dim or 4 * self.emb_dim


def config_from_hf(hf: Mapping[str, Any]) -> GPT2Config:
    d = text_config(hf)
    try:
        return GPT2Config(
            vocab_size=d["vocab_size"],
            context_length=d.get("n_positions", d.get("n_ctx", 1024)),
            emb_dim=d["n_embd"],
            n_heads=d["n_head"],
            n_layers=d["n_layer"],
            drop_rate=0.0,
            qkv_bias=bool(d.get("qkv_bias", True)),  # transformers' GPT2 always has them
            tie_word_embeddings=d.get("tie_word_embeddings", True),
            layer_norm_eps=d.get("layer_norm_epsilon", 1e-5),
            activation=d.get("activation_function", "gelu_new"),
            hidden_dim=d.get("n_inner"),
        )
    except KeyError as exc:
        raise ConfigError(f"GPT-2 config.json lacks the key {exc.args[0]!r}.") from None


def config_to_hf(cfg: GPT2Config) -> dict[str, Any]:
    if not cfg.qkv_bias:
        raise ConfigError(
            "This GPT-2 has no query/key/value biases (qkv_bias=False, the chapter-5 training "
            "default), but transformers' GPT2 always has them; it cannot be exported as a "
            "transformers checkpoint. Train with qkv_bias=True to export."
        )
    return {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "vocab_size": cfg.vocab_size,
        "n_positions": cfg.context_length,
        "n_ctx": cfg.context_length,
        "n_embd": cfg.emb_dim,
        "n_head": cfg.n_heads,
        "n_layer": cfg.n_layers,
        "n_inner": cfg.hidden_dim,
        "activation_function": cfg.activation,
        "layer_norm_epsilon": cfg.layer_norm_eps,
        "tie_word_embeddings": cfg.tie_word_embeddings,
        "resid_pdrop": cfg.drop_rate,
        "embd_pdrop": cfg.drop_rate,
        "attn_pdrop": cfg.drop_rate,
        "bos_token_id": 50256,
        "eos_token_id": 50256,
    }


_SRC = "https://huggingface.co/openai-community/{}/blob/main/config.json"
_BASE = GPT2Config()

PRESETS: dict[str, Preset] = {
    "124M": Preset(_BASE, _SRC.format("gpt2"), "GPT-2 small"),
    "355M": Preset(replace(_BASE, emb_dim=1024, n_layers=24, n_heads=16), _SRC.format("gpt2-medium"), "GPT-2 medium"),
    "774M": Preset(replace(_BASE, emb_dim=1280, n_layers=36, n_heads=20), _SRC.format("gpt2-large"), "GPT-2 large"),
    "1558M": Preset(replace(_BASE, emb_dim=1600, n_layers=48, n_heads=25), _SRC.format("gpt2-xl"), "GPT-2 XL"),
    # Small CPU presets (portagpt's own sizes), GPT-2 vocabulary.
    "tiny": Preset(
        replace(_BASE, context_length=256, emb_dim=128, n_heads=4, n_layers=4, tie_word_embeddings=True),
        "",
        "4 layers, 128 wide: trains on the bundled corpus in minutes on 2 CPU cores",
    ),
    "small": Preset(
        replace(_BASE, context_length=256, emb_dim=384, n_heads=6, n_layers=6),
        "",
        "6 layers, 384 wide",
    ),
}

SMOKE_CONFIG = GPT2Config(
    vocab_size=256, context_length=64, emb_dim=32, n_heads=4, n_layers=2, tie_word_embeddings=False
)

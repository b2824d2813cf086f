"""GPT-2 config: the chapter-5 ``GPT_CONFIG`` keys, stored under config.json's GPT-2 keys.

``hf_names`` is the whole translation (``emb_dim`` <-> ``n_embd``, ...).
Exceptions: ``drop_rate`` and ``qkv_bias`` are chapter-5 training choices that
config.json does not hold (transformers' GPT-2 always has q/k/v biases, so a
model without them cannot be exported); ``n_ctx``, the three dropout rates and
the ``<|endoftext|>`` ids are written for transformers.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from ...adapters import HFConfig, Preset
from ...adapters.tokenizer import BPE_EOT
from ...core.cache import LayerSpec
from ...errors import ConfigError


@dataclass(frozen=True)
class GPT2Config(HFConfig):
    model_type = "gpt2"
    architecture = "GPT2LMHeadModel"
    required = ("vocab_size", "n_embd", "n_head", "n_layer")
    hf_names = {
        "context_length": "n_positions", "emb_dim": "n_embd", "n_heads": "n_head",
        "n_layers": "n_layer", "layer_norm_eps": "layer_norm_epsilon",
        "activation": "activation_function", "hidden_dim": "n_inner",
    }  # fmt: skip

    vocab_size: int = 50257
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
    initializer_range: float = 0.02

    def __post_init__(self) -> None:
        super().__post_init__()
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

    def layer_specs(self) -> list[LayerSpec]:
        return [LayerSpec(self.n_heads, self.head_dim) for _ in range(self.n_layers)]

    @classmethod
    def prepare(cls, d: dict[str, Any]) -> dict[str, Any]:
        d.setdefault("n_positions", d.get("n_ctx"))
        return {k: v for k, v in d.items() if k != "drop_rate"}  # qkv_bias: True unless given

    def to_hf(self) -> dict[str, Any]:
        if not self.qkv_bias:
            raise ConfigError(
                "This GPT-2 has no query/key/value biases (qkv_bias=False, the chapter-5 training "
                "default), but transformers' GPT2 always has them; it cannot be exported as a "
                "transformers checkpoint. Train with qkv_bias=True to export."
            )
        out = {k: v for k, v in super().to_hf().items() if k not in ("drop_rate", "qkv_bias")}
        rates = dict.fromkeys(("resid_pdrop", "embd_pdrop", "attn_pdrop"), self.drop_rate)
        ids = dict(bos_token_id=BPE_EOT, eos_token_id=BPE_EOT)
        return dict(out, n_ctx=self.context_length, **ids, **rates)


_SRC = "https://huggingface.co/openai-community/{}/blob/main/config.json"
_BASE = GPT2Config()


def _size(emb_dim: int, n_layers: int, n_heads: int, **kw: Any) -> GPT2Config:
    return replace(_BASE, emb_dim=emb_dim, n_layers=n_layers, n_heads=n_heads, **kw)


PRESETS: dict[str, Preset] = {
    "124M": Preset(_BASE, _SRC.format("gpt2"), "GPT-2 small"),
    "355M": Preset(_size(1024, 24, 16), _SRC.format("gpt2-medium"), "GPT-2 medium"),
    "774M": Preset(_size(1280, 36, 20), _SRC.format("gpt2-large"), "GPT-2 large"),
    "1558M": Preset(_size(1600, 48, 25), _SRC.format("gpt2-xl"), "GPT-2 XL"),
    # Small CPU presets (portagpt's own sizes), GPT-2 vocabulary.
    "tiny": Preset(_size(128, 4, 4, context_length=256), "", "4 layers, 128 wide: minutes on CPU"),
    "small": Preset(_size(384, 6, 6, context_length=256), "", "6 layers, 384 wide"),
}

SMOKE_CONFIG = _size(32, 2, 4, vocab_size=256, context_length=64, tie_word_embeddings=False)

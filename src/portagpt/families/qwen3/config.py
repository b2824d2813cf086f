"""Qwen3 config, dense (``qwen3``) and mixture-of-experts (``qwen3_moe``).

The shared decoder fields plus the MoE ones; ``num_experts`` is 0 for a dense
model. In an MoE model layer ``i`` is sparse unless it is in
``mlp_only_layers`` or ``(i + 1) % decoder_sparse_step != 0`` (transformers'
rule). Exceptions to the generic translation: config.json's
``use_sliding_window`` / ``max_window_layers`` become ``layer_types`` (every
layer slides in ``qwen3_moe``), and ``to_hf`` writes them back along with the
model type the expert count implies.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from ...adapters import FULL, SLIDING, DecoderConfig, Preset
from ...errors import ConfigError

MOE_KEYS = (
    "num_experts",
    "num_experts_per_tok",
    "moe_intermediate_size",
    "norm_topk_prob",
    "decoder_sparse_step",
    "mlp_only_layers",
)


@dataclass(frozen=True)
class Qwen3Config(DecoderConfig):
    model_type = "qwen3"
    architecture = "Qwen3ForCausalLM"

    max_position_embeddings: int = 32768
    num_experts: int = 0  # 0: dense
    num_experts_per_tok: int = 8
    moe_intermediate_size: int = 768
    norm_topk_prob: bool = False
    decoder_sparse_step: int = 1
    mlp_only_layers: tuple[int, ...] = ()

    @property
    def is_moe(self) -> bool:
        return self.num_experts > 0

    def is_sparse_layer(self, i: int) -> bool:
        """Whether layer ``i`` is a mixture of experts (transformers' Qwen3Moe rule)."""
        step = (i + 1) % self.decoder_sparse_step == 0
        return self.is_moe and i not in self.mlp_only_layers and step

    def validate(self) -> None:
        super().validate()
        if self.is_moe and not 0 < self.num_experts_per_tok <= self.num_experts:
            raise ConfigError(
                f"Qwen3 MoE num_experts_per_tok ({self.num_experts_per_tok}) must be between 1 "
                f"and num_experts ({self.num_experts})."
            )

    @classmethod
    def prepare(cls, d: dict[str, Any]) -> dict[str, Any]:
        d = super().prepare(d)
        moe = d.get("model_type") == "qwen3_moe" or bool(d.get("num_experts"))
        d["num_experts"] = d.get("num_experts") if moe else 0
        n, window = d.get("num_hidden_layers", 0), d.get("sliding_window")
        types = d.get("layer_types") or [
            SLIDING if i >= d.get("max_window_layers", 28) else FULL for i in range(n)
        ]
        if moe:  # Qwen3Moe applies the window to every layer
            types = [SLIDING] * n
        if not d.get("use_sliding_window") or window is None or SLIDING not in types:
            types, window = None, None
        d["layer_types"], d["sliding_window"] = types, window
        return d

    def to_hf(self) -> dict[str, Any]:
        out = super().to_hf()
        types = list(self.layer_types or (FULL,) * self.num_hidden_layers)
        out.update(use_sliding_window=SLIDING in types, layer_types=types)
        if not self.is_moe:
            out.update(max_window_layers=self.num_hidden_layers)
            return {k: v for k, v in out.items() if k not in MOE_KEYS}
        if SLIDING in types and FULL in types:
            raise ConfigError(
                "This Qwen3-MoE config mixes sliding and full attention layers, which "
                "transformers' Qwen3MoeConfig cannot express (its window applies to every "
                "layer); make layer_types all sliding or None to export it."
            )
        del out["layer_types"]
        return dict(out, architectures=["Qwen3MoeForCausalLM"], model_type="qwen3_moe")


_SRC = "https://huggingface.co/Qwen/{}/blob/main/config.json"
_Q06 = Qwen3Config(
    vocab_size=151_936, hidden_size=1024, intermediate_size=3072, num_hidden_layers=28,
    num_attention_heads=16, num_key_value_heads=8, head_dim=128, max_position_embeddings=40_960,
    rope_parameters={"rope_theta": 1e6}, tie_word_embeddings=True, bos_token_id=151_643,
    eos_token_id=151_645,
)  # fmt: skip
_TINY = Qwen3Config.tiny(intermediate_size=352, num_key_value_heads=2, head_dim=32)


def _size(width: int, mlp: int, layers: int, heads: int, **kw: Any) -> Qwen3Config:
    dims = dict(hidden_size=width, intermediate_size=mlp, num_hidden_layers=layers)
    return replace(_Q06, **dims, num_attention_heads=heads, **kw)


_UNTIED = dict(tie_word_embeddings=False)
_MOE = dict(num_key_value_heads=4, num_experts=128, moe_intermediate_size=768, norm_topk_prob=True)
PRESETS: dict[str, Preset] = {
    "0.6B": Preset(_Q06, _SRC.format("Qwen3-0.6B"), "Qwen3 0.6B: 28 layers, 1024 wide, tied head"),
    "1.7B": Preset(_size(2048, 6144, 28, 16), _SRC.format("Qwen3-1.7B"), "Qwen3 1.7B: tied head"),
    "4B": Preset(_size(2560, 9728, 36, 32), _SRC.format("Qwen3-4B"), "Qwen3 4B: tied head"),
    "8B": Preset(_size(4096, 12288, 36, 32, **_UNTIED), _SRC.format("Qwen3-8B"), "Qwen3 8B"),
    "14B": Preset(_size(5120, 17408, 40, 40, **_UNTIED), _SRC.format("Qwen3-14B"), "Qwen3 14B"),
    "32B": Preset(_size(5120, 25600, 64, 64, **_UNTIED), _SRC.format("Qwen3-32B"), "Qwen3 32B"),
    "30B-A3B": Preset(
        _size(2048, 6144, 48, 32, **_UNTIED, **_MOE),
        _SRC.format("Qwen3-30B-A3B"),
        "Qwen3 MoE 30B-A3B: 48 layers, 128 experts, 8 active per token",
    ),
    # portagpt's own CPU sizes: the bundled BPE's vocabulary, so they train from scratch.
    "tiny": Preset(_TINY, "", "4 layers, 128 wide, GQA 4/2, QK-norm, ~7M params: minutes on CPU"),
    "tiny-moe": Preset(
        replace(_TINY, num_experts=8, num_experts_per_tok=2, moe_intermediate_size=96),
        "",
        "tiny with 8 experts of width 96 per layer, 2 active per token",
    ),
}

SMOKE_CONFIG = Qwen3Config.smoke(head_dim=16)

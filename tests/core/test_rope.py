"""RoPE recipes match transformers' own, in both config spellings."""

from __future__ import annotations

import pytest
import torch

from portagpt.core.rope import RopeConfig, inv_freq_and_scale, rope_params_from_hf
from portagpt.errors import ConfigError

CASES = {
    "default": {"rope_type": "default", "rope_theta": 10000.0},
    "linear": {"rope_type": "linear", "rope_theta": 10000.0, "factor": 8.0},
    "llama3": {
        "rope_type": "llama3",
        "rope_theta": 500000.0,
        "factor": 32.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192,
    },
    "yarn": {
        "rope_type": "yarn",
        "rope_theta": 500000.0,
        "factor": 8.0,
        "original_max_position_embeddings": 8192,
        "beta_fast": 32,
        "beta_slow": 1,
    },
    "yarn-attention-factor": {
        "rope_type": "yarn",
        "rope_theta": 10000.0,
        "factor": 4.0,
        "attention_factor": 1.2,
        "original_max_position_embeddings": 4096,
    },
}


@pytest.mark.parametrize("name", list(CASES))
def test_inverse_frequencies_and_scaling_match_transformers(name: str) -> None:
    from transformers import LlamaConfig
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    params = dict(CASES[name])
    hf = LlamaConfig(hidden_size=256, num_attention_heads=4, max_position_embeddings=32768, rope_parameters=dict(params))
    ours = rope_params_from_hf({"rope_parameters": params, "max_position_embeddings": 32768})
    inv, scale = inv_freq_and_scale(ours, head_dim=64)
    if name == "default":
        ref = 1.0 / (10000.0 ** (torch.arange(0, 64, 2).float() / 64))
        ref_scale = 1.0
    else:
        ref, ref_scale = ROPE_INIT_FUNCTIONS[params["rope_type"]](hf, "cpu")
    torch.testing.assert_close(inv, ref.float(), rtol=1e-6, atol=0)
    assert scale == pytest.approx(ref_scale)


def test_transformers_4x_spelling_reads_the_same_as_5x() -> None:
    v5 = {"rope_parameters": dict(CASES["llama3"]), "max_position_embeddings": 131072}
    scaling = {k: v for k, v in CASES["llama3"].items() if k not in ("rope_theta", "rope_type")}
    v4 = {"rope_theta": 500000.0, "rope_scaling": {"type": "llama3", **scaling}, "max_position_embeddings": 131072}
    assert rope_params_from_hf(v4) == rope_params_from_hf(v5)


def test_per_layer_type_parameters_pick_the_layer_type() -> None:
    hf = {
        "rope_parameters": {
            "full_attention": {"rope_type": "linear", "rope_theta": 1e6, "factor": 8.0},
            "sliding_attention": {"rope_type": "default", "rope_theta": 1e4},
        }
    }
    assert rope_params_from_hf(hf, "full_attention") == RopeConfig(1e6, "linear", {"factor": 8.0})
    assert rope_params_from_hf(hf, "sliding_attention") == RopeConfig(1e4, "default", {})
    with pytest.raises(ConfigError, match="per layer type"):
        rope_params_from_hf(hf)


def test_unknown_rope_type_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="longrope"):
        rope_params_from_hf({"rope_scaling": {"rope_type": "longrope", "factor": 2.0}})

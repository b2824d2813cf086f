"""RoPE recipes match transformers' own, in both config spellings."""

from __future__ import annotations

import types

import pytest
import torch

from portagpt.core.rope import (
    RopeConfig,
    RopeFrequencies,
    RotaryEmbedding,
    inv_freq_and_scale,
    register_rope,
    rope_frequencies,
    rope_params_from_hf,
    rope_types,
)
from portagpt.errors import ConfigError, PluginError

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
    with pytest.raises(ConfigError, match="'mrope'.*register_rope"):
        rope_params_from_hf({"rope_scaling": {"rope_type": "mrope", "factor": 2.0}})


LONGROPE = {
    "rope_type": "longrope",
    "rope_theta": 10000.0,
    "short_factor": [1.0 + 0.05 * i for i in range(32)],
    "long_factor": [1.0 + 0.9 * i for i in range(32)],
    "original_max_position_embeddings": 4096,
}


@pytest.mark.parametrize("factor", [None, 2.0])
def test_longrope_short_and_long_sets_match_transformers(factor: float | None) -> None:
    from transformers import LlamaConfig
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    params = dict(LONGROPE, **({"factor": factor} if factor else {}))
    hf = LlamaConfig(
        hidden_size=256,
        num_attention_heads=4,
        max_position_embeddings=32768,
        rope_parameters=dict(params),
    )
    ours = rope_frequencies(
        rope_params_from_hf({"rope_parameters": params, "max_position_embeddings": 32768}), 64
    )
    short, scale = ROPE_INIT_FUNCTIONS["longrope"](hf, "cpu")
    long, _ = ROPE_INIT_FUNCTIONS["longrope"](hf, "cpu", seq_len=4097)
    torch.testing.assert_close(ours.inv_freq, short, rtol=1e-6, atol=0)
    torch.testing.assert_close(ours.long_inv_freq, long, rtol=1e-6, atol=0)
    assert ours.attention_scaling == pytest.approx(scale)
    assert ours.long_from == 4096


def test_su_spelling_and_top_level_original_context_read_as_longrope() -> None:
    scaling = {k: v for k, v in LONGROPE.items() if k not in ("rope_type", "rope_theta")}
    old = {
        "rope_scaling": {"type": "su", **scaling, "original_max_position_embeddings": 99},
        "original_max_position_embeddings": 4096,  # Phi-3 writes it here, and it wins
        "max_position_embeddings": 131072,
    }
    rope = rope_params_from_hf(old)
    assert rope.type == "longrope"
    assert rope.params["original_max_position_embeddings"] == 4096
    assert rope.params["factor"] == 32.0  # max / original, as transformers defaults it


def test_longrope_factor_lists_of_the_wrong_length_are_a_clear_error() -> None:
    rope = rope_params_from_hf({"rope_parameters": LONGROPE, "max_position_embeddings": 8192})
    with pytest.raises(ConfigError, match=r"'short_factor' \(LongRoPE\) must list 8 numbers"):
        rope_frequencies(rope, 16)


def test_rotary_embedding_switches_to_the_long_set_at_the_original_context() -> None:
    rope = rope_params_from_hf({"rope_parameters": LONGROPE, "max_position_embeddings": 8192})
    emb = RotaryEmbedding(rope, 64)
    assert emb.reprefill_at == 4096
    f = rope_frequencies(rope, 64)
    pos = torch.tensor([[0, 5]])
    for last, inv in ((4095, f.inv_freq), (4096, f.long_inv_freq)):
        cos, _ = emb(torch.cat([pos, torch.tensor([[last]])], 1), torch.float32)
        expected = (5 * inv).cos() * f.attention_scaling
        torch.testing.assert_close(cos[0, 1, :32], expected)


def test_a_plugin_recipe_is_read_from_config_json_and_used_by_the_tables() -> None:
    def halved(rope: RopeConfig, dim: int) -> RopeFrequencies:
        base = 1.0 / rope.theta ** (torch.arange(0, dim, 2).float() / dim)
        return RopeFrequencies(base / rope.params["factor"], attention_scaling=0.5)

    def defaults(params: dict, hf: dict) -> None:
        params.setdefault("factor", hf["max_position_embeddings"] / 1024)

    register_rope(
        "test_halved", halved, config_defaults=defaults, aliases=("test_half",), replace=True
    )
    assert "test_halved" in rope_types()
    hf = {"rope_scaling": {"type": "test_half"}, "max_position_embeddings": 2048}
    rope = rope_params_from_hf(hf)
    assert rope == RopeConfig(10000.0, "test_halved", {"factor": 2.0})
    emb = RotaryEmbedding(rope, 8)
    plain = 1.0 / 10000.0 ** (torch.arange(0, 8, 2).float() / 8)
    torch.testing.assert_close(emb.inv_freq, plain / 2)
    assert emb.attention_scaling == 0.5 and emb.reprefill_at is None


def test_registering_a_taken_recipe_name_is_refused() -> None:
    with pytest.raises(PluginError, match="'yarn'.*replace=True"):
        register_rope("yarn", lambda rope, dim: RopeFrequencies(torch.ones(dim // 2)))
    with pytest.raises(PluginError, match="'su'"):
        register_rope("mine", lambda rope, dim: RopeFrequencies(torch.ones(1)), aliases=("su",))


def test_a_recipe_module_imported_twice_registers_its_recipe_again() -> None:
    def twice(rope: RopeConfig, dim: int) -> RopeFrequencies:
        return RopeFrequencies(torch.ones(dim // 2))

    register_rope("test_twice", twice, replace=True)
    again = types.FunctionType(twice.__code__, twice.__globals__, "twice")
    again.__qualname__ = twice.__qualname__
    assert register_rope("test_twice", again).frequencies is again

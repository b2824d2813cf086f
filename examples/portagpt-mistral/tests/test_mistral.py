"""portagpt-mistral's own tests: the portagpt conformance kit, plus what is specific to Mistral."""

from __future__ import annotations

import pytest
from portagpt_mistral.config import PRESETS, SMOKE_CONFIG, MistralConfig
from portagpt_mistral.plugin import FAMILY

from portagpt.registry import build_registry
from portagpt.smoke_tests import FamilyConformance

cache_specs, config_from_hf = FAMILY.cache_specs, MistralConfig.from_hf


class TestMistralConformance(FamilyConformance):
    """Every portagpt conformance check (parity with transformers' MistralForCausalLM included)."""

    family = "mistral"


def test_family_is_registered_through_its_entry_point_with_its_distribution_name():
    reg = build_registry(autoload=True)
    fam = reg.get("mistral")
    assert fam.distribution == "portagpt-mistral"
    assert reg.plugin_of["mistral"] == "mistral"
    assert reg.for_model_type("mistral") is fam


def test_sliding_window_applies_to_every_layer_and_null_means_full_attention():
    assert {s.window for s in cache_specs(SMOKE_CONFIG)} == {SMOKE_CONFIG.sliding_window}
    v03 = PRESETS["7B-v0.3"].config
    assert {s.window for s in cache_specs(v03)} == {None}


def test_config_keeps_an_explicit_head_dim_and_derives_a_missing_one():
    base = {
        "model_type": "mistral",
        "vocab_size": 100,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
    }
    assert config_from_hf(base).head_dim == 16
    assert config_from_hf({**base, "head_dim": 24}).head_dim == 24
    # num_key_value_heads absent: multi-head attention, as transformers reads it
    no_kv = {k: v for k, v in base.items() if k != "num_key_value_heads"}
    assert config_from_hf(no_kv).num_key_value_heads == 4


def test_grouped_query_heads_must_divide_the_query_heads():
    from portagpt.errors import ConfigError

    with pytest.raises(ConfigError, match="multiple of"):
        config_from_hf(
            {
                "vocab_size": 100,
                "hidden_size": 60,
                "intermediate_size": 128,
                "num_hidden_layers": 2,
                "num_attention_heads": 6,
                "num_key_value_heads": 4,
            }
        )

"""Hostile RoPE configs: a LongRoPE checkpoint whose factor lists do not fit its heads."""

from __future__ import annotations

import json

from harness import assert_clean_error, run_cli, unchanged
from transformers import LlamaConfig

from portagpt.smoke_tests.reference import write_hf_checkpoint

ROPE = {
    "rope_type": "longrope",
    "rope_theta": 10000.0,
    "short_factor": [1.0] * 8,
    "long_factor": [2.0] * 8,
    "original_max_position_embeddings": 16,
}


def test_longrope_factor_list_of_the_wrong_length_is_refused_naming_the_key(tmp_path):
    sizes = dict(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1)
    heads = dict(num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64)
    write_hf_checkpoint(LlamaConfig(**sizes, **heads, rope_parameters=dict(ROPE)), tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["rope_parameters"]["short_factor"] = [1.0] * 3
    (tmp_path / "config.json").write_text(json.dumps(config))
    with unchanged(tmp_path):
        result = run_cli("load", tmp_path)
    assert_clean_error(result, "short_factor", "8 numbers", "found 3")

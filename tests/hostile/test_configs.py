"""Broken config.json values through `portagpt load`: refused before anything is built, naming the file and key.

Every value is checked for type and range (a string where a number belongs,
null, zero or negative sizes, a zero RoPE base, a negative YaRN factor, head
counts that do not divide), and the error blames the config, not the weights.
A config that asks for far more layers than the checkpoint holds is refused
from the headers, in well under a second of work.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from corpus import broken_copy, edit_config, good_checkpoint
from harness import assert_clean_error, run_cli, unchanged


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return good_checkpoint(tmp_path_factory.mktemp("corpus"))


YARN = {"rope_type": "yarn", "factor": -4.0, "original_max_position_embeddings": 32}
CASES: dict[str, tuple[dict[str, Any], str]] = {
    "size as a string": ({"hidden_size": "64"}, "'hidden_size'"),
    "heads null": ({"num_attention_heads": None}, "'num_attention_heads'"),
    "rope_theta zero": ({"rope_theta": 0}, "'rope_theta'"),
    "rope_theta not a number": ({"rope_theta": "abc"}, "'rope_theta'"),
    "negative yarn factor": ({"rope_scaling": YARN, "rope_parameters": None}, "factor"),
    "zero vocabulary": ({"vocab_size": 0}, "'vocab_size'"),
    "negative layer count": ({"num_hidden_layers": -1}, "'num_hidden_layers'"),
    "heads that do not divide": ({"num_key_value_heads": 3}, "num_key_value_heads"),
    "negative norm eps": ({"rms_norm_eps": -1e-6}, "'rms_norm_eps'"),
    "boolean as a string": ({"tie_word_embeddings": "yes"}, "'tie_word_embeddings'"),
    "fractional size": ({"intermediate_size": 1.5}, "'intermediate_size'"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_config_value_is_refused_naming_config_json_and_the_key(good: Path, tmp_path: Path, case: str) -> None:
    changes, key = CASES[case]
    folder = broken_copy(good, tmp_path / "ckpt", lambda f: edit_config(f, **changes))
    with unchanged(folder):
        result = run_cli("load", folder)
    text = assert_clean_error(result, "config.json", key)
    assert "corrupt" not in text and "non-finite" not in text, "a config error blamed on the weights"


def test_bad_value_in_a_config_given_with_config_flag_names_that_file(good: Path, tmp_path: Path) -> None:
    folder = broken_copy(good, tmp_path / "ckpt", lambda f: None)
    other = tmp_path / "other.json"
    other.write_text((good / "config.json").read_text().replace('"rope_theta": 10000.0', '"rope_theta": -1'))
    with unchanged(tmp_path):
        result = run_cli("load", folder, "--config", other)
    assert_clean_error(result, "other.json", "rope_theta")


def test_a_huge_layer_count_is_refused_from_the_headers_quickly(good: Path, tmp_path: Path) -> None:
    folder = broken_copy(good, tmp_path / "ckpt", lambda f: edit_config(f, num_hidden_layers=100_000))
    with unchanged(folder):
        t0 = time.perf_counter()
        result = run_cli("load", folder, timeout=300)
        seconds = time.perf_counter() - t0
    assert_clean_error(result, "config.json", "num_hidden_layers", "100000", "2 layers")
    assert seconds < 60, f"took {seconds:.0f} s: the config was built before it was checked"


def test_inspect_does_not_call_ok_what_load_refuses(good: Path, tmp_path: Path) -> None:
    folder = broken_copy(good, tmp_path / "ckpt", lambda f: edit_config(f, rope_theta=0))
    with unchanged(folder):
        result = run_cli("inspect", folder)
    assert result.returncode == 1, result
    assert "loads as is" not in result.stdout and "would not load" in result.stdout, result
    assert "'rope_theta'" in result.stdout and "Traceback" not in result.stderr

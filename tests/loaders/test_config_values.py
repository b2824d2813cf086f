"""Config values checked before anything is built: the key table, the dataclass types, the headers."""

from __future__ import annotations

import dataclasses
import time

import pytest

from portagpt.errors import ConfigError, ConfigMismatchError, WeightMismatchError
from portagpt.loaders.config_values import KEYS, KINDS, check_against_names, check_config, check_hf
from portagpt.registry import get_registry

BAD = {
    "pos_int": ["64", None, 0, -3, 1.5, True],
    "nonneg_int": ["1", -1, 2.0, False],
    "pos_float": ["abc", 0, -1e-6, float("nan"), float("inf"), True],
    "nonneg_float": ["0", -0.1, float("nan")],
    "fraction": [0, 1.5, "0.5"],
    "dropout": [1, -0.1, "0"],
    "bool": ["yes", 1, None],
    "str": [5, "", []],
    "token_ids": ["2", -1, [1, "2"]],
    "any_token_id": ["1", 1.0],
    "str_list": ["full_attention", [1]],
    "int_list": [[1, -1], "0"],
    "pos_float_list": [[1.0, 0], 2.0],
}


def test_every_kind_has_bad_values_that_it_refuses() -> None:
    assert set(BAD) == set(KINDS)
    for kind, values in BAD.items():
        _, test = KINDS[kind]
        for v in values:
            if v is None:
                continue
            assert not test(v), (kind, v)


@pytest.mark.parametrize("key", sorted(k for k, (kind, _) in KEYS.items() if kind in BAD))
def test_a_bad_value_of_each_known_key_names_the_file_and_the_key(key: str) -> None:
    kind, nullable = KEYS[key]
    for value in BAD[kind]:
        if value is None and nullable:
            continue
        with pytest.raises(ConfigError, match=rf"'cfg.json'.*'{key}'"):
            check_hf({key: value}, "'cfg.json'")


def test_rope_dicts_are_checked_flat_and_per_layer_type() -> None:
    with pytest.raises(ConfigError, match=r"'rope_scaling.factor' is -4"):
        check_hf({"rope_scaling": {"rope_type": "yarn", "factor": -4}}, "'c'")
    nested = {"full_attention": {"rope_theta": 0}, "sliding_attention": {"rope_theta": 1e4}}
    with pytest.raises(ConfigError, match=r"'rope_parameters.full_attention.rope_theta'"):
        check_hf({"rope_parameters": nested}, "'c'")
    with pytest.raises(ConfigError, match=r"'text_config.hidden_size'"):
        check_hf({"text_config": {"hidden_size": "64"}}, "'c'")


def test_heads_that_do_not_divide_are_refused() -> None:
    with pytest.raises(ConfigError, match="num_key_value_heads"):
        check_hf({"num_attention_heads": 4, "num_key_value_heads": 3}, "'c'")


def test_every_registered_family_config_passes_and_a_wrong_type_in_it_is_caught() -> None:
    for fam in get_registry().families.values():
        check_config(fam.smoke_config, fam.name)
        for preset in fam.presets.values():
            check_config(preset.config, fam.name)
        field = next(f for f in dataclasses.fields(fam.smoke_config) if f.name == "vocab_size")
        object.__setattr__(bad := dataclasses.replace(fam.smoke_config), field.name, "128")
        with pytest.raises(ConfigError, match="'vocab_size'"):
            check_config(bad, fam.name)


def test_more_layers_than_the_headers_hold_is_refused_at_once() -> None:
    @dataclasses.dataclass
    class Cfg:
        num_hidden_layers: int

    names = [f"model.layers.{i}.mlp.up.weight" for i in range(2)] + ["model.embed.weight"]
    t0 = time.perf_counter()
    with pytest.raises(ConfigMismatchError, match="2 layers, the config says 100000") as info:
        check_against_names(Cfg(100_000), names, "'config.json'", "'ckpt'")
    assert time.perf_counter() - t0 < 0.1
    assert isinstance(info.value, WeightMismatchError)
    check_against_names(Cfg(2), names, "'config.json'", "'ckpt'")

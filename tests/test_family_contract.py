"""Contract v2: what the host gives every family (config translation, defaults, weight-map
helpers, the scratch tokenizer), and the docs' worked plugin, run as written."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest
import torch

from portagpt.adapters import (
    DecoderConfig,
    Family,
    Rule,
    WeightMap,
    drop,
    identity,
    scratch_tokenizer,
    sized_split,
)
from portagpt.core import decoder
from portagpt.errors import CheckpointError, ConfigError, TokenizerError
from portagpt.registry import build_registry
from portagpt.smoke_tests import run_smoke
from portagpt.smoke_tests.plugins import load_plugin_modules

DOCS = Path(__file__).resolve().parents[1] / "docs" / "plugins.md"


@dataclasses.dataclass(frozen=True)
class ToyConfig(DecoderConfig):
    model_type = "toy"
    architecture = "ToyForCausalLM"
    sliding_window: int | None = 4096


class ToyForCausalLM(decoder.CausalLM):
    pass


def _json(d: dict) -> dict:
    return json.loads(json.dumps(d))


def test_config_reads_4x_and_5x_spellings_and_a_nested_text_config_alike():
    base = dict(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2)
    base.update(num_attention_heads=4, max_position_embeddings=64)
    old = dict(base, rope_theta=5e5, rope_scaling={"type": "linear", "factor": 2.0})
    new = dict(base, rope_parameters={"rope_type": "linear", "rope_theta": 5e5, "factor": 2.0})
    nested = {"model_type": "wrapper", "text_config": new}
    assert ToyConfig.from_hf(old) == ToyConfig.from_hf(new) == ToyConfig.from_hf(nested)
    cfg = ToyConfig.from_hf(new)
    assert (cfg.num_key_value_heads, cfg.head_dim) == (4, 8)  # resolved once, generically
    assert cfg.sliding_window == 4096  # absent: the field's default
    assert ToyConfig.from_hf(dict(new, sliding_window=None)).sliding_window is None  # null kept
    assert ToyConfig.from_hf(_json(cfg.to_hf())) == cfg
    assert ToyConfig(**_json(dataclasses.asdict(cfg))) == cfg  # the sidecar's dict round trip


def test_config_errors_name_the_key():
    with pytest.raises(ConfigError, match="lacks the key 'hidden_size'"):
        ToyConfig.from_hf({"vocab_size": 10})
    with pytest.raises(ConfigError, match="multiple of num_key_value_heads"):
        ToyConfig.smoke(num_key_value_heads=3)


def test_family_fields_default_to_what_the_config_and_model_declare():
    fam = Family(name="toy", build_model=ToyForCausalLM, smoke_config=ToyConfig.smoke())
    assert fam.problems() == []
    assert fam.hf_model_types == ("toy",) and fam.transformers_class == "ToyForCausalLM"
    assert fam.cache_specs(fam.smoke_config)[0].window == 4096
    assert dataclasses.replace(fam, transformers_class=None).transformers_class is None
    names = {n for r in fam.weight_map(fam.smoke_config).rules for n in r.native}
    with torch.device("meta"):
        model = fam.build_model(fam.smoke_config)
    assert {re.sub(r"\.\d+\.", ".{}.", n) for n in model.state_dict()} == names


def test_sized_split_maps_a_fused_grouped_query_projection_both_ways():
    wmap = WeightMap([Rule(("qkv",), ("q", "k", "v"), sized_split([8, 4, 4]))])
    fused = torch.randn(16, 3)
    native, _ = wmap.to_native({"qkv": fused})
    assert [tuple(t.shape) for t in native.values()] == [(8, 3), (4, 3), (4, 3)]
    back, _ = wmap.to_hf(native)
    assert torch.equal(back["qkv"], fused)


def test_a_failing_transform_is_a_checkpoint_error_naming_the_tensor():
    wmap = WeightMap([Rule(("model.qkv",), ("q", "k", "v"), sized_split([8, 4, 4]))])
    with pytest.raises(CheckpointError, match=r"model\.qkv \(15, 3\).*rows"):
        wmap.to_native({"model.qkv": torch.zeros(15, 3)})


def test_identity_rules_and_wildcard_drops():
    wmap = WeightMap([*identity("a.{}.w"), drop("vision_tower.*")])
    native, plan = wmap.to_native({"a.0.w": torch.ones(1), "vision_tower.x.3.y": torch.ones(1)})
    assert list(native) == ["a.0.w"] and not plan.unmatched and not plan.incomplete


def test_scratch_tokenizer_is_the_bundled_bpe_when_the_vocabulary_fits():
    assert scratch_tokenizer(50257).encode("Hello world") == [15496, 995]
    with pytest.raises(TokenizerError, match="vocabulary of 256 ids"):
        scratch_tokenizer(256)


def test_the_worked_fused_projection_plugin_in_the_docs_conforms(tmp_path: Path):
    section = DOCS.read_text().split("## 7.")[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    (tmp_path / "phi3_plugin.py").write_text(code)
    extras = load_plugin_modules([str(tmp_path / "phi3_plugin.py")])
    reg = build_registry(autoload=False, extra_plugins=extras)
    report = run_smoke("phi3", registry=reg, workdir=tmp_path)
    assert report.passed, report.format()
    assert not any(r.status == "SKIP" for r in report.results)  # parity with transformers ran

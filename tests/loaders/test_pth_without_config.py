"""A .pth without config.json: the family from --family (or the names), the config from a preset fitted to the shapes."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

import portagpt
from portagpt.errors import ConfigError, WeightMismatchError
from portagpt.loaders import load_full
from portagpt.loaders.choice import choose
from portagpt.loaders.sources import locate
from portagpt.loaders.state_dict import StateDictSource
from portagpt.registry import get_family

GPT2 = get_family("gpt2")


def chapter5_state(cfg, seed: int = 0) -> dict[str, torch.Tensor]:
    """What chapter 5's ``torch.save(model.state_dict(), "model.pth")`` holds: its names plus att.mask buffers."""
    torch.manual_seed(seed)
    model = GPT2.build_model(cfg)
    model.init_weights()
    state = dict(model.state_dict())
    n = cfg.context_length
    for i in range(cfg.n_layers):
        state[f"trf_blocks.{i}.att.mask"] = torch.triu(torch.ones(n, n), diagonal=1)
    return state


# chapter 5's training config, at the width of the 'tiny' preset so the test stays small
CH5 = replace(GPT2.preset("tiny"), context_length=128, qkv_bias=False, tie_word_embeddings=False, drop_rate=0.1)


@pytest.fixture(scope="module")
def ch5_pth(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, torch.nn.Module]:
    folder = tmp_path_factory.mktemp("ch5")
    state = chapter5_state(CH5)
    torch.save(state, folder / "model.pth")
    model = GPT2.build_model(replace(CH5, drop_rate=0.0))
    model.load_state_dict({k: v for k, v in state.items() if not k.endswith("att.mask")})
    return folder / "model.pth", model.eval()


def test_with_family_alone_the_fitted_preset_is_named_but_its_head_count_never_taken(ch5_pth) -> None:
    path, _ = ch5_pth
    with pytest.raises(ConfigError, match=r"fit gpt2's preset 'tiny'.*n_heads=4.*pass --preset tiny"):
        load_full(path, family="gpt2")


def test_chapter5_model_pth_loads_with_the_preset_confirmed(ch5_pth) -> None:
    path, reference = ch5_pth
    loaded = load_full(path, family="gpt2", preset="tiny")
    assert loaded.config.context_length == 128 and not loaded.config.qkv_bias
    assert not loaded.config.tie_word_embeddings
    assert loaded.extras["config_source"].startswith("preset tiny adjusted")
    ids = torch.tensor([[1, 2, 3, 400, 5000]])
    with torch.no_grad():
        assert torch.equal(loaded.model(ids), reference(ids))


def test_without_family_the_error_names_the_family_the_tensor_names_suggest(ch5_pth) -> None:
    path, _ = ch5_pth
    with pytest.raises(ConfigError, match=r"no config\.json beside it .* pass --family gpt2"):
        load_full(path)


def test_a_preset_that_cannot_be_fitted_says_a_config_json_is_needed(ch5_pth) -> None:
    path, _ = ch5_pth
    with pytest.raises(WeightMismatchError, match=r"no config\.json.*--config config\.json"):
        portagpt.load(path, family="gpt2", preset="124M")


def test_explicit_config_json_beats_the_preset_search(ch5_pth, tmp_path: Path) -> None:
    path, _ = ch5_pth
    cfg = tmp_path / "config.json"
    cfg.write_text(__import__("json").dumps(GPT2.config_to_hf(replace(CH5, qkv_bias=True))))
    # qkv_bias=True in config.json: the checkpoint lacks the biases, and the check says so
    with pytest.raises(WeightMismatchError, match=r"missing tensor\(s\): trf_blocks\.0\.att\.W_key\.bias"):
        portagpt.load(path, config=cfg)


def test_real_chapter5_gpt_config_124m_is_recognised_from_shapes_alone() -> None:
    # GPT_CONFIG_124M of chapter 5 (context 256, no qkv bias, separate out_head), on meta: no data
    cfg = replace(GPT2.preset("124M"), context_length=256, qkv_bias=False, tie_word_embeddings=False)
    with torch.device("meta"):
        model = GPT2.build_model(cfg)
    state = dict(model.state_dict())
    for i in range(cfg.n_layers):
        state[f"trf_blocks.{i}.att.mask"] = torch.empty(256, 256, device="meta")
    source = StateDictSource(state)
    fake = type("Loc", (), {"where": "'model.pth'", "folder": Path("/nonexistent")})()
    choice = choose(fake, source, family="gpt2", preset="124M")
    assert choice.config == replace(cfg, drop_rate=0.0)
    assert choice.source.startswith("preset 124M adjusted")


def test_unknown_names_without_config_ask_for_a_config(tmp_path: Path) -> None:
    torch.save({"encoder.layer.0.weight": torch.zeros(2, 2)}, tmp_path / "weird.pth")
    with pytest.raises(ConfigError, match=r"configuration is unknown\. Pass --config config\.json"):
        portagpt.load(tmp_path / "weird.pth")
    assert locate(tmp_path / "weird.pth").kind == "state_dict"

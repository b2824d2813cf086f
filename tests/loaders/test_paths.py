"""Every way into portagpt gives the same model: identical logits whatever the loader or the format."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from ckpts import VOCAB, logits_of, write_tokenizer

import portagpt
from portagpt.loaders import from_transformers, load_full, save_hf, save_native, to_transformers
from portagpt.loaders.hf import hf_config_object
from portagpt.registry import get_family, get_registry

GPT2 = get_family("gpt2")


@pytest.fixture(scope="module")
def meta_logits(gpt2_ref) -> torch.Tensor:
    out = logits_of(portagpt.load(gpt2_ref.folder)[0], gpt2_ref.ids)
    torch.testing.assert_close(out, gpt2_ref.logits, rtol=1e-5, atol=1e-5)
    return out


@pytest.mark.parametrize("loader", ["meta", "safetensors", "state_dict", "hf"])
def test_every_loader_gives_identical_logits(gpt2_ref, meta_logits, loader: str) -> None:
    loaded = load_full(gpt2_ref.folder, loader=loader)
    assert loaded.loader == loader and loaded.report.ok
    assert torch.equal(logits_of(loaded.model, gpt2_ref.ids), meta_logits)


def test_sharded_checkpoint_loads_through_its_index_and_ignores_files_it_does_not_name(gpt2_sharded, gpt2_ref, meta_logits, copy_of) -> None:
    folder = copy_of(gpt2_sharded)
    # a stray file from another checkpoint: the index does not name it, so it is never read
    torch.save({}, folder / "unrelated.pth")
    (folder / "model-99999-of-99999.safetensors").write_bytes(b"not a safetensors file")
    loaded = load_full(folder)
    shards = set(json.loads((folder / "model.safetensors.index.json").read_text())["weight_map"].values())
    assert sorted(Path(f).name for f in loaded.extras["files"]) == sorted(shards)
    assert torch.equal(logits_of(loaded.model, gpt2_ref.ids), meta_logits)


def test_index_json_and_bare_safetensors_paths_load_the_same_model(gpt2_ref, gpt2_sharded, meta_logits) -> None:
    by_index = load_full(gpt2_sharded / "model.safetensors.index.json")
    by_file = load_full(gpt2_ref.folder / "model.safetensors")  # config.json is beside it
    for loaded in (by_index, by_file):
        assert torch.equal(logits_of(loaded.model, gpt2_ref.ids), meta_logits)


def test_tokenizer_of_the_checkpoint_is_returned(gpt2_ref) -> None:
    _, tok = portagpt.load(gpt2_ref.folder)
    assert tok is not None and tok.encode("w3 w7") == [3, 7] and tok.eos_token_id == VOCAB - 1


def test_in_memory_transformers_model_converts_both_ways(gpt2_ref, meta_logits) -> None:
    model = from_transformers(gpt2_ref.hf)
    assert torch.equal(logits_of(model, gpt2_ref.ids), meta_logits)
    same, _ = portagpt.load(gpt2_ref.hf)
    assert torch.equal(logits_of(same, gpt2_ref.ids), meta_logits)
    # copies by default: changing the portagpt model leaves the transformers one alone
    with torch.no_grad():
        model.tok_emb.weight.zero_()
    assert gpt2_ref.hf.transformer.wte.weight.abs().sum() > 0
    back = to_transformers(same)
    assert type(back).__name__ == "GPT2LMHeadModel"
    with torch.no_grad():
        out = back(input_ids=gpt2_ref.ids).logits
    assert torch.equal(out, gpt2_ref.hf(input_ids=gpt2_ref.ids).logits)


def test_hf_folder_export_loads_in_transformers_with_identical_logits(gpt2_ref, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    model, _ = portagpt.load(gpt2_ref.folder)
    save_hf(model, tmp_path / "export", tokenizer_from=gpt2_ref.folder)
    hf = AutoModelForCausalLM.from_pretrained(tmp_path / "export")
    with torch.no_grad():
        out = hf(input_ids=gpt2_ref.ids).logits
    assert torch.equal(out, gpt2_ref.logits)
    assert (tmp_path / "export" / "tokenizer.json").is_file()


def test_native_checkpoint_folder_round_trips(gpt2_ref, meta_logits, tmp_path: Path) -> None:
    model, _ = portagpt.load(gpt2_ref.folder)
    save_native(model, tmp_path / "native")
    assert (tmp_path / "native" / "portagpt.json").is_file()
    loaded = load_full(tmp_path / "native")
    assert loaded.layout == "native"
    assert torch.equal(logits_of(loaded.model, gpt2_ref.ids), meta_logits)


@pytest.mark.parametrize("family", [None, GPT2])
def test_training_checkpoints_of_core_checkpoint_load(gpt2_ref, meta_logits, tmp_path: Path, family) -> None:
    from portagpt.core.checkpoint import save_checkpoint

    model, _ = portagpt.load(gpt2_ref.folder)
    save_checkpoint(tmp_path / "ckpt", model, family=family, meta={"step": 3})
    loaded = load_full(tmp_path / "ckpt")
    assert loaded.family.name == "gpt2" and loaded.layout == "native"
    assert torch.equal(logits_of(loaded.model, gpt2_ref.ids), meta_logits)


def _native_state(gpt2_ref) -> dict[str, torch.Tensor]:
    model, _ = portagpt.load(gpt2_ref.folder)
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("layout", ["plain", "model_state_dict", "compiled", "hf_names"])
def test_pth_state_dicts_load_in_every_layout(gpt2_ref, meta_logits, tmp_path: Path, layout: str) -> None:
    state = _native_state(gpt2_ref)
    if layout == "model_state_dict":
        blob = {"model_state_dict": state, "optimizer_state_dict": {"state": {}, "param_groups": [{"lr": 1e-3, "params": [0]}]}}
    elif layout == "compiled":
        blob = {f"_orig_mod.{k}": v for k, v in state.items()}
    elif layout == "hf_names":
        blob = {k: v.clone() for k, v in gpt2_ref.hf.state_dict().items()}
    else:
        blob = state
    torch.save(blob, tmp_path / "model.pth")
    (tmp_path / "config.json").write_text((gpt2_ref.folder / "config.json").read_text())
    loaded = load_full(tmp_path / "model.pth")
    assert loaded.layout == ("hf" if layout == "hf_names" else "native")
    assert loaded.extras["config_source"] == "config.json"
    assert torch.equal(logits_of(loaded.model, gpt2_ref.ids), meta_logits)


def test_state_dict_loader_reads_a_pth_eagerly_with_the_same_result(gpt2_ref, meta_logits, tmp_path: Path) -> None:
    torch.save(_native_state(gpt2_ref), tmp_path / "model.pth")
    loaded = load_full(tmp_path / "model.pth", loader="state_dict", config=gpt2_ref.folder / "config.json")
    assert torch.equal(logits_of(loaded.model, gpt2_ref.ids), meta_logits)


def test_loaded_model_does_not_depend_on_the_file_it_came_from(gpt2_ref, meta_logits, tmp_path: Path, copy_of) -> None:
    folder = copy_of(gpt2_ref.folder)
    model, _ = portagpt.load(folder)
    torch.save(_native_state(gpt2_ref), tmp_path / "model.pth")
    from_pth, _ = portagpt.load(tmp_path / "model.pth", config=folder / "config.json")
    # overwrite both files in place, as a training run saving to the same path would
    (folder / "model.safetensors").write_bytes(b"\0" * 64)
    torch.save({"x": torch.zeros(1)}, tmp_path / "model.pth")
    assert torch.equal(logits_of(model, gpt2_ref.ids), meta_logits)
    assert torch.equal(logits_of(from_pth, gpt2_ref.ids), meta_logits)
    for p in model.parameters():
        assert p.is_contiguous()


def test_dtype_cast_and_auto(gpt2_ref, tmp_path: Path) -> None:
    model, _ = portagpt.load(gpt2_ref.folder, dtype="bfloat16")
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    save_native(model, tmp_path / "bf16")
    kept, _ = portagpt.load(tmp_path / "bf16", dtype="auto")
    assert {p.dtype for p in kept.parameters()} == {torch.bfloat16}
    loaded = load_full(tmp_path / "bf16", dtype="float32", loader="state_dict")
    assert loaded.report.dtypes == {"bfloat16": loaded.report.expected}
    assert {p.dtype for p in loaded.model.parameters()} == {torch.float32}


FAMILIES = sorted(n for n, f in get_registry().families.items() if f.transformers_class)


@pytest.mark.parametrize("name", FAMILIES)
def test_every_registered_family_loads_identically_through_each_path(name: str, tmp_path: Path) -> None:
    from portagpt.smoke_tests.reference import write_hf_checkpoint

    fam = get_family(name)
    cfg = fam.smoke_config
    hf = write_hf_checkpoint(hf_config_object(fam, cfg), tmp_path / "hf", max_shard_size="40KB")
    write_tokenizer(tmp_path / "hf")
    ids = torch.randint(0, cfg.vocab_size, (1, 9), generator=torch.Generator().manual_seed(2))
    base = logits_of(load_full(tmp_path / "hf").model, ids)
    with torch.no_grad():
        torch.testing.assert_close(base, hf(input_ids=ids).logits.float(), rtol=1e-4, atol=1e-4)
    for loader in ("safetensors", "state_dict"):
        assert torch.equal(logits_of(load_full(tmp_path / "hf", loader=loader).model, ids), base), loader
    assert torch.equal(logits_of(from_transformers(hf), ids), base)
    model = load_full(tmp_path / "hf").model
    save_native(model, tmp_path / "native")
    assert torch.equal(logits_of(load_full(tmp_path / "native").model, ids), base)
    back = to_transformers(model)
    with torch.no_grad():
        assert torch.equal(back(input_ids=ids).logits, hf(input_ids=ids).logits)

"""portagpt convert: HF -> native -> HF is bitwise identical, files say what they are, writes are atomic."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from ckpts import write_tokenizer
from safetensors import safe_open

from portagpt.cli import main
from portagpt.errors import ConfigError, UsageError
from portagpt.loaders import convert, load_full, save_native
from portagpt.loaders.hf import hf_config_object
from portagpt.registry import get_family, get_registry


def read_all(folder: Path) -> tuple[dict[str, torch.Tensor], list[dict[str, str]]]:
    tensors: dict[str, torch.Tensor] = {}
    metas = []
    for f in sorted(folder.glob("*.safetensors")):
        with safe_open(str(f), framework="pt") as h:
            metas.append(h.metadata() or {})
            tensors.update({k: h.get_tensor(k) for k in h.keys()})
    return tensors, metas


def assert_bitwise_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert sorted(a) == sorted(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), k


def test_hf_to_native_to_hf_is_bitwise_identical(gpt2_ref, tmp_path: Path) -> None:
    convert(gpt2_ref.folder, "native", tmp_path / "native")
    convert(tmp_path / "native", "hf", tmp_path / "back")
    original, _ = read_all(gpt2_ref.folder)
    back, metas = read_all(tmp_path / "back")
    assert_bitwise_equal(original, back)
    assert metas == [{"format": "pt", "portagpt_format": "hf", "portagpt_family": "gpt2", "portagpt_format_version": "1"}]
    native, metas = read_all(tmp_path / "native")
    assert metas[0]["portagpt_format"] == "native" and "trf_blocks.0.att.W_query.weight" in native
    assert json.loads((tmp_path / "native" / "portagpt.json").read_text())["family"] == "gpt2"
    for name in ("tokenizer.json", "tokenizer_config.json", "config.json"):
        assert (tmp_path / "back" / name).is_file()


@pytest.mark.parametrize("name", sorted(n for n, f in get_registry().families.items() if f.transformers_class))
def test_round_trip_is_bitwise_for_every_family_and_sharded(name: str, tmp_path: Path) -> None:
    from portagpt.smoke_tests.reference import write_hf_checkpoint

    fam = get_family(name)
    write_hf_checkpoint(hf_config_object(fam, fam.smoke_config), tmp_path / "hf", max_shard_size="30KB")
    convert(tmp_path / "hf", "native", tmp_path / "native", max_shard_size="30KB")
    assert (tmp_path / "native" / "model.safetensors.index.json").is_file()
    convert(tmp_path / "native", "hf", tmp_path / "back")
    assert_bitwise_equal(read_all(tmp_path / "hf")[0], read_all(tmp_path / "back")[0])


def test_a_file_is_never_converted_into_the_layout_it_has(gpt2_ref, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="already a hf checkpoint"):
        convert(gpt2_ref.folder, "hf", tmp_path / "x")
    convert(gpt2_ref.folder, "native", tmp_path / "native")
    with pytest.raises(UsageError, match="already a native checkpoint .*portagpt_format=native"):
        convert(tmp_path / "native", "native", tmp_path / "y")
    convert(tmp_path / "native", "hf", tmp_path / "back")
    with pytest.raises(UsageError, match="portagpt_format=hf"):
        convert(tmp_path / "back", "hf", tmp_path / "z")
    assert not any((tmp_path / n).exists() for n in "xyz")


def test_failed_conversion_leaves_nothing_behind(gpt2_ref, tmp_path: Path, monkeypatch) -> None:
    import safetensors.torch

    real = safetensors.torch.save_file
    calls = []

    def fail_on_second(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        calls.append(1)
        if len(calls) == 2:
            raise OSError("No space left on device")
        return real(*args, **kwargs)

    monkeypatch.setattr(safetensors.torch, "save_file", fail_on_second)
    with pytest.raises(OSError, match="No space"):
        convert(gpt2_ref.folder, "native", tmp_path / "out", max_shard_size="20KB")
    assert len(calls) == 2
    assert list(tmp_path.iterdir()) == []


def test_existing_output_folder_is_refused_untouched(gpt2_ref, tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    with pytest.raises(UsageError, match="already exists and is not an empty folder"):
        convert(gpt2_ref.folder, "native", tmp_path / "out")
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["keep.txt"]


def test_model_transformers_cannot_express_exports_native_only(tmp_path: Path) -> None:
    fam = get_family("gpt2")
    from dataclasses import replace

    model = fam.build_model(replace(fam.smoke_config, qkv_bias=False))
    model.init_weights()
    save_native(model, tmp_path / "native")
    assert not (tmp_path / "native" / "config.json").exists()  # the config lives in portagpt.json
    loaded = load_full(tmp_path / "native")
    assert loaded.extras["config_source"] == "portagpt.json" and not loaded.config.qkv_bias
    with pytest.raises(ConfigError, match="cannot be exported as a transformers checkpoint"):
        convert(tmp_path / "native", "hf", tmp_path / "hf")
    assert not (tmp_path / "hf").exists()


def test_cli_convert_writes_a_folder_transformers_loads(gpt2_ref, tmp_path: Path, capsys) -> None:
    from transformers import AutoModelForCausalLM

    assert main(["convert", str(gpt2_ref.folder), "--to", "native", "--out", str(tmp_path / "n")]) == 0
    assert main(["convert", str(tmp_path / "n"), "--to", "hf", "--out", str(tmp_path / "h"), "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["layout"] == "hf" and result["source_layout"] == "native" and "tokenizer.json" in result["tokenizer_files"]
    hf = AutoModelForCausalLM.from_pretrained(tmp_path / "h")
    with torch.no_grad():
        assert torch.equal(hf(input_ids=gpt2_ref.ids).logits, gpt2_ref.hf(input_ids=gpt2_ref.ids).logits)
    assert main(["convert", str(tmp_path / "h"), "--to", "hf", "--out", str(tmp_path / "again")]) == 2
    err = capsys.readouterr().err
    assert "already a hf checkpoint" in " ".join(err.split()) and not (tmp_path / "again").exists()


def test_pth_converts_to_safetensors_in_either_layout(gpt2_ref, tmp_path: Path) -> None:
    model = load_full(gpt2_ref.folder).model
    torch.save({"model_state_dict": model.state_dict()}, tmp_path / "model.pth")
    write_tokenizer(tmp_path)
    (tmp_path / "config.json").write_text((gpt2_ref.folder / "config.json").read_text())
    convert(tmp_path / "model.pth", "native", tmp_path / "n")
    assert read_all(tmp_path / "n")[1][0]["portagpt_format"] == "native"
    convert(tmp_path / "model.pth", "hf", tmp_path / "h")
    assert_bitwise_equal(read_all(gpt2_ref.folder)[0], read_all(tmp_path / "h")[0])
    with pytest.raises(UsageError, match="already a native checkpoint"):
        convert(tmp_path / "n", "native", tmp_path / "again")

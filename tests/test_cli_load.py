"""``portagpt load`` and ``portagpt inspect`` on real (tiny) checkpoints, human and --json output."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from loaders.ckpts import write_gpt2

from portagpt.cli import main

JSON_KEYS = {"family", "loader", "params", "dtype", "load_seconds", "peak_rss_bytes", "checkpoint_bytes", "checks", "sample"}


@pytest.fixture(scope="module")
def sharded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("cli") / "sharded"
    write_gpt2(folder, max_shard_size="20KB")
    return folder


def last_json(out: str) -> dict:
    return json.loads(out.strip().splitlines()[-1])


@pytest.mark.parametrize("loader", ["auto", "meta", "safetensors", "state_dict", "hf"])
def test_load_json_reports_the_whole_stack(sharded: Path, capsys, loader: str) -> None:
    assert main(["load", str(sharded), "--loader", loader, "--json", "--prompt", "w1 w2 w3"]) == 0
    r = last_json(capsys.readouterr().out)
    assert JSON_KEYS <= set(r)
    assert r["family"] == "gpt2" and r["loader"] == ("meta" if loader == "auto" else loader)
    assert r["params"] == 30592 and r["dtype"] == "float32"
    assert r["checkpoint_bytes"] == sum(p.stat().st_size for p in sharded.glob("*.safetensors"))
    assert r["peak_rss_bytes"] > r["checkpoint_bytes"] and r["load_seconds"] > 0
    assert r["checks"]["shapes"]["ok"] and r["checks"]["forward"]["finite"]
    assert len(r["checks"]["files"]) == len(list(sharded.glob("*.safetensors"))) + 1  # + config.json
    sample = r["sample"]
    assert sample["prompt_ids"] == [1, 2, 3] and len(sample["new_ids"]) <= 8 and isinstance(sample["text"], str)


def test_load_samples_are_the_same_greedy_ids_whatever_the_loader(sharded: Path, capsys) -> None:
    runs = []
    for loader in ("meta", "state_dict", "hf"):
        assert main(["load", str(sharded), "--loader", loader, "--json", "--max-new-tokens", "6"]) == 0
        runs.append(last_json(capsys.readouterr().out)["sample"]["new_ids"])
    assert runs[0] == runs[1] == runs[2]


def test_load_human_output_names_each_check(sharded: Path, capsys) -> None:
    assert main(["load", "--checkpoint", str(sharded), "--dtype", "bfloat16"]) == 0
    out = capsys.readouterr().out
    for word in ("family", "files", "sha256     not computed", "shapes", "forward", "sample", "telemetry"):
        assert word in out
    assert "-> bfloat16" in out and out.strip().endswith("ok")


def test_load_needs_something_to_load(capsys) -> None:
    assert main(["load"]) == 2
    assert "Nothing to load" in capsys.readouterr().err


def test_non_finite_logits_fail_the_forward_check(tmp_path: Path, capsys) -> None:
    from safetensors.torch import load_file, save_file

    folder = tmp_path / "nan"
    write_gpt2(folder)
    state = load_file(str(folder / "model.safetensors"))
    state["transformer.ln_f.weight"][0] = float("nan")
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    assert main(["load", str(folder)]) == 2
    assert "non-finite logit" in capsys.readouterr().err


def test_inspect_reads_no_weights_and_reports_coverage(sharded: Path, capsys, monkeypatch) -> None:
    from portagpt.loaders.safetensors_index import TensorIndex

    monkeypatch.setattr(TensorIndex, "get", lambda *a: pytest.fail("inspect read a tensor"))
    assert main(["inspect", str(sharded), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["family"] == "gpt2" and info["layout"] == "hf" and info["ok"]
    assert info["tensors"] == 28 and info["dtypes"] == {"float32": 28}
    assert info["coverage"]["share"] == 1.0 and info["coverage"]["missing"] == []
    assert info["config"]["n_layers"] == 2 and info["parameters"] == 30592
    assert main(["inspect", str(sharded)]) == 0
    assert "28/28 checkpoint tensors claimed" in capsys.readouterr().out


def test_inspect_shows_what_is_missing_and_exits_1(tmp_path: Path, capsys) -> None:
    from safetensors.torch import load_file, save_file

    folder = tmp_path / "partial"
    write_gpt2(folder)
    state = load_file(str(folder / "model.safetensors"))
    del state["transformer.h.0.ln_1.bias"]
    state["transformer.h.0.attn.rotary"] = torch.zeros(2)
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    assert main(["inspect", str(folder), "--json"]) == 1
    info = json.loads(capsys.readouterr().out)
    assert info["coverage"]["missing"] == ["trf_blocks.0.norm1.shift"]
    assert info["coverage"]["unclaimed"] == ["transformer.h.0.attn.rotary"]
    assert info["coverage"]["claimed"] == 27 and info["coverage"]["total"] == 28


def test_inspect_of_a_pth_without_config_explains_what_to_pass(tmp_path: Path, capsys) -> None:
    from portagpt.registry import get_family

    model = get_family("gpt2").build_model(get_family("gpt2").smoke_config)
    torch.save(model.state_dict(), tmp_path / "model.pth")
    assert main(["inspect", str(tmp_path / "model.pth")]) == 1
    out = capsys.readouterr().out
    assert "family     unknown" in out and "pass --family gpt2" in " ".join(out.split())
    assert main(["inspect", str(tmp_path / "model.pth"), "--family", "gpt2", "--json"]) == 1
    assert "pass --preset" in json.loads(capsys.readouterr().out)["error"]  # heads are never guessed
    args = ["inspect", str(tmp_path / "model.pth"), "--family", "gpt2", "--preset", "tiny", "--json"]
    assert main(args) == 0
    assert json.loads(capsys.readouterr().out)["config_source"].startswith("preset")

"""The book's files both ways, against the book's own package (llms-from-scratch's GPTModel)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import portagpt
from portagpt.cli import main
from portagpt.core.generate import generate
from portagpt.errors import ConfigError
from portagpt.loaders import convert, load_full

ch04 = pytest.importorskip("llms_from_scratch.ch04", reason="the book's package llms-from-scratch is not installed")

# six heads: in no GPT-2 preset, so a preset's head count would be wrong (and is never taken)
BOOK_CFG = {
    "vocab_size": 300,
    "context_length": 32,
    "emb_dim": 48,
    "n_heads": 6,
    "n_layers": 2,
    "drop_rate": 0.1,
    "qkv_bias": False,
}
IDS = torch.tensor([[1, 5, 9, 200, 42, 7, 3]])


def book_model(cfg: dict, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return ch04.GPTModel(cfg).eval()


@pytest.fixture(scope="module")
def book_pth(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, torch.nn.Module]:
    folder = tmp_path_factory.mktemp("book")
    model = book_model(BOOK_CFG)
    torch.save(model.state_dict(), folder / "model.pth")
    (folder / "model_config.json").write_text(json.dumps(BOOK_CFG))
    return folder / "model.pth", model


def greedy_book(model: torch.nn.Module, ids: torch.Tensor, n: int) -> list[int]:
    out = ch04.generate_text_simple(model, ids, max_new_tokens=n, context_size=BOOK_CFG["context_length"])
    return out[0, ids.shape[1]:].tolist()


def test_book_model_pth_loads_with_its_config_dict_beside_it(book_pth) -> None:
    path, book = book_pth
    loaded = load_full(path)
    assert loaded.family.name == "gpt2" and "book" in loaded.extras["config_source"]
    assert loaded.config.n_heads == 6 and not loaded.config.tie_word_embeddings
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(IDS), book(IDS), atol=1e-5, rtol=0)
    ours = generate(loaded.model, IDS[0].tolist(), max_new_tokens=10).new_ids[0]
    assert ours == greedy_book(book, IDS, 10)


def test_book_config_dict_is_accepted_from_python_and_as_config_flag(book_pth, tmp_path: Path, capsys) -> None:
    path, book = book_pth
    bare = tmp_path / "bare.pth"
    bare.write_bytes(path.read_bytes())  # no model_config.json beside this one
    model, _ = portagpt.load(bare, config=dict(BOOK_CFG))
    with torch.no_grad():
        torch.testing.assert_close(model(IDS), book(IDS), atol=1e-5, rtol=0)
    cfg = tmp_path / "GPT_CONFIG.json"
    cfg.write_text(json.dumps(BOOK_CFG))
    assert main(["load", str(bare), "--config", str(cfg), "--json", "--max-new-tokens", "2"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["ok"] and "book config dict" in report["config_source"]


def test_without_the_config_the_head_count_is_never_taken_from_a_preset(book_pth, tmp_path: Path) -> None:
    path, _ = book_pth
    bare = tmp_path / "model.pth"
    bare.write_bytes(path.read_bytes())
    with pytest.raises(ConfigError, match=r"attention heads cannot be read.*--preset .*--config FILE\.json"):
        portagpt.load(bare, family="gpt2")
    proc = subprocess.run(
        [sys.executable, "-m", "portagpt", "load", str(bare), "--family", "gpt2"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "--config FILE.json" in " ".join(proc.stderr.split())


def test_a_book_dict_with_a_bad_value_names_the_key(book_pth) -> None:
    path, _ = book_pth
    with pytest.raises(ConfigError, match=r"'qkv_bias' must be true or false, found 'no'"):
        portagpt.load(path, config={**BOOK_CFG, "qkv_bias": "no"})
    with pytest.raises(ConfigError, match=r"lacks 'drop_rate'"):
        portagpt.load(path, config={k: v for k, v in BOOK_CFG.items() if k != "drop_rate"})


def test_round_trip_book_to_portagpt_to_book_is_bitwise(book_pth, tmp_path: Path) -> None:
    path, book = book_pth
    assert main(["convert", str(path), "--to", "native", "--out", str(tmp_path / "run")]) == 0
    assert main(["convert", str(tmp_path / "run"), "--to", "book", "--out", str(tmp_path / "back.pth")]) == 0
    original = torch.load(path, weights_only=True)
    back = torch.load(tmp_path / "back.pth", weights_only=True)
    assert list(back) == list(original)
    assert all(torch.equal(back[k], original[k]) and back[k].dtype == original[k].dtype for k in original)
    assert json.loads((tmp_path / "back_config.json").read_text()) == BOOK_CFG
    fresh = ch04.GPTModel(BOOK_CFG)
    fresh.load_state_dict(torch.load(tmp_path / "back.pth", weights_only=True))  # strict


def test_a_transformers_gpt2_converts_to_a_strictly_loadable_book_model(tmp_path: Path) -> None:
    from loaders.ckpts import write_gpt2

    hf = write_gpt2(tmp_path / "hf")  # tied head, qkv biases
    result = convert(tmp_path / "hf", "book", tmp_path / "model.pth")
    assert result["files"] == ["model.pth", "model_config.json"]
    cfg = json.loads((tmp_path / "model_config.json").read_text())
    assert cfg["qkv_bias"] is True and cfg["n_heads"] == 4
    book = ch04.GPTModel(cfg)
    book.load_state_dict(torch.load(tmp_path / "model.pth", weights_only=True))  # strict
    book.eval()
    ids = torch.tensor([[3, 1, 4, 1, 5, 9, 2, 6]])
    with torch.no_grad():
        torch.testing.assert_close(book(ids), hf(ids).logits, atol=1e-5, rtol=0)
    assert greedy_book(book, ids, 6) == generate(hf_to_ours(tmp_path / "hf"), ids[0].tolist(), max_new_tokens=6).new_ids[0]


def hf_to_ours(folder: Path) -> torch.nn.Module:
    return portagpt.load(folder)[0]


def test_to_book_refuses_to_overwrite_and_other_families(book_pth, tmp_path: Path) -> None:
    path, _ = book_pth
    (tmp_path / "model.pth").write_bytes(b"keep")
    with pytest.raises(portagpt.errors.UsageError, match="already exists"):
        convert(path, "book", tmp_path / "model.pth")
    assert (tmp_path / "model.pth").read_bytes() == b"keep"
    with pytest.raises(portagpt.errors.UsageError, match=r"give --out a \.pth name"):
        convert(path, "book", tmp_path / "outdir")


def test_a_config_json_with_qkv_bias_false_is_honoured(book_pth, tmp_path: Path) -> None:
    path, book = book_pth
    hf = {"model_type": "gpt2", "vocab_size": 300, "n_positions": 32, "n_embd": 48, "n_head": 6,
          "n_layer": 2, "tie_word_embeddings": False, "qkv_bias": False}
    (tmp_path / "config.json").write_text(json.dumps(hf))
    model, _ = portagpt.load(path, config=tmp_path / "config.json")
    assert not model.config.qkv_bias
    with torch.no_grad():
        torch.testing.assert_close(model(IDS), book(IDS), atol=1e-5, rtol=0)


def test_a_family_that_contradicts_the_book_dict_is_refused(book_pth) -> None:
    path, _ = book_pth
    with pytest.raises(ConfigError, match="Leave --family out"):
        portagpt.load(path, family="llama")

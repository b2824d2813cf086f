"""Bad foreign-format input through the real CLI: one paragraph naming the file/key, nothing written."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from hostile.harness import assert_clean_error, run_cli, unchanged

from .test_book import BOOK_CFG, book_model
from .test_meta import tiny_llama, write_meta

pytestmark = pytest.mark.hostile


@pytest.fixture(scope="module")
def pristine_meta(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_meta(tmp_path_factory.mktemp("m") / "meta", tiny_llama(300), shards=2, max_seq_len=64)


@pytest.fixture
def meta(pristine_meta: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(pristine_meta, tmp_path / "meta"))


@pytest.fixture
def book(tmp_path: Path) -> Path:
    folder = tmp_path / "book"
    folder.mkdir()
    torch.save(book_model(BOOK_CFG).state_dict(), folder / "model.pth")
    (folder / "model_config.json").write_text(json.dumps(BOOK_CFG))
    return folder / "model.pth"


def _edit_params(folder: Path, **changes: object) -> None:
    params = json.loads((folder / "params.json").read_text())
    params.update(changes)
    (folder / "params.json").write_text(json.dumps(params))


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"n_heads": "4"}, "'n_heads' must be a positive integer"),
        ({"multiple_of": 1000}, "multiple_of 1000"),
        ({"vocab_size": 999}, "vocab_size 999"),
        ({"use_scaled_rope": True}, "rope_scaling_factor"),
    ],
    ids=["heads-string", "ffn-width", "vocab", "scaled-rope-factor"],
)
def test_meta_params_json_that_does_not_fit_is_named(meta: Path, change: dict, named: str) -> None:
    _edit_params(meta, **change)
    with unchanged(meta):
        assert_clean_error(run_cli("load", meta), "params.json", named)


def test_meta_params_json_that_is_not_json_is_named(meta: Path) -> None:
    (meta / "params.json").write_text("{dim: 64")
    with unchanged(meta):
        assert_clean_error(run_cli("load", meta), "params.json", "not valid JSON")


def test_meta_shards_from_different_checkpoints_are_refused(meta: Path) -> None:
    part = torch.load(meta / "consolidated.01.pth")
    del part["layers.1.ffn_norm.weight"]
    torch.save(part, meta / "consolidated.01.pth")
    with unchanged(meta):
        assert_clean_error(run_cli("load", meta), "consolidated.01.pth", "different checkpoints")


def test_meta_tensor_with_a_foreign_name_is_named_not_dropped(meta: Path) -> None:
    for f in ("consolidated.00.pth", "consolidated.01.pth"):
        part = torch.load(meta / f)
        part["layers.0.attention.rotary.weight"] = torch.zeros(2)
        torch.save(part, meta / f)
    with unchanged(meta):
        assert_clean_error(run_cli("load", meta), "layers.0.attention.rotary.weight")


def test_meta_tokenizer_model_that_is_neither_kind_is_named(meta: Path) -> None:
    (meta / "tokenizer.model").write_bytes(b"\x00\x01garbage\xff" * 10)
    with unchanged(meta):
        assert_clean_error(run_cli("load", meta), "tokenizer.model")


@pytest.mark.parametrize(
    ("change", "named"),
    [({"n_heads": 0}, "'n_heads' must be a positive integer"), ({"n_heads": 5}, "divisible"),
     ({"n_layers": 3}, "n_layers=3")],
    ids=["zero-heads", "heads-not-dividing", "layers-not-matching-weights"],
)
def test_book_config_dict_that_does_not_fit_is_named(book: Path, change: dict, named: str) -> None:
    (book.parent / "model_config.json").write_text(json.dumps({**BOOK_CFG, **change}))
    with unchanged(book.parent):
        assert_clean_error(run_cli("load", book), named)


def test_convert_to_a_format_of_another_family_writes_nothing(book: Path, meta: Path, tmp_path: Path) -> None:
    with unchanged(tmp_path):
        assert_clean_error(run_cli("convert", book, "--to", "meta", "--out", tmp_path / "m"), "--to hf")
        assert_clean_error(run_cli("convert", meta, "--to", "book", "--out", tmp_path / "b.pth"), "--to hf")
        assert_clean_error(run_cli("convert", book, "--to", "onnx", "--out", tmp_path / "x"), "book", "meta")
        assert_clean_error(run_cli("convert", book, "--to", "book", "--out", book), "checkpoint itself")


def test_chat_with_a_context_too_small_is_refused(book: Path) -> None:
    assert_clean_error(run_cli("chat", book, "--max-context", "1", stdin="hi\n"), "--max-context")

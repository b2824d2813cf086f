"""Broken tokenizer files: `load` never reports "ok" while sampling from raw ids, and `inspect` agrees.

A checkpoint that ships no tokenizer loads with a note; one that ships
tokenizer files that are damaged, disagree with each other, or hold more ids
than the model has embeddings, is refused naming the file.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from corpus import broken_copy, good_checkpoint, write_tokenizer
from harness import assert_clean_error, assert_ok, run_cli, unchanged


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return good_checkpoint(tmp_path_factory.mktemp("corpus"))


def _truncated(folder: Path) -> None:
    path = folder / "tokenizer.json"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _empty_object(folder: Path) -> None:
    (folder / "tokenizer.json").write_text("{}")


def _binary(folder: Path) -> None:
    (folder / "tokenizer.json").write_bytes(bytes(range(256)) * 8)


def _config_not_object(folder: Path) -> None:
    (folder / "tokenizer_config.json").write_text(json.dumps(["eos_token", "<eos>"]))


def _unknown_eos(folder: Path) -> None:
    (folder / "tokenizer_config.json").write_text(json.dumps({"eos_token": "<|not-in-vocab|>"}))


def _too_many_ids(folder: Path) -> None:
    write_tokenizer(folder, vocab=300)  # the model has 128 embeddings


CASES: dict[str, tuple[Callable[[Path], Any], tuple[str, ...]]] = {
    "truncated tokenizer.json": (_truncated, ("tokenizer.json",)),
    "empty object": (_empty_object, ("tokenizer.json",)),
    "binary garbage": (_binary, ("tokenizer.json",)),
    "tokenizer_config not an object": (_config_not_object, ("tokenizer_config.json",)),
    "eos token not in the vocabulary": (_unknown_eos, ("tokenizer_config.json", "<|not-in-vocab|>")),
    "more ids than embeddings": (_too_many_ids, ("tokenizer.json", "300", "128")),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_broken_tokenizer_files_fail_load_naming_the_file(good: Path, tmp_path: Path, case: str) -> None:
    damage, names = CASES[case]
    folder = broken_copy(good, tmp_path / "ckpt", damage)
    with unchanged(folder):
        result = run_cli("load", folder)
    assert "\nok" not in result.stdout
    assert_clean_error(result, *names)


def test_generate_and_inspect_refuse_a_damaged_tokenizer_too(good: Path, tmp_path: Path) -> None:
    folder = broken_copy(good, tmp_path / "ckpt", _truncated)
    with unchanged(folder):
        gen = run_cli("generate", "--checkpoint", folder, "--prompt", "w1 w2", "--max-new-tokens", "2")
        info = run_cli("inspect", folder)
    assert_clean_error(gen, "tokenizer.json")
    assert info.returncode == 1 and "would not load" in info.stdout and "tokenizer.json" in info.stdout, info


def test_a_checkpoint_without_tokenizer_files_loads_with_a_note(good: Path, tmp_path: Path) -> None:
    def strip(folder: Path) -> None:
        (folder / "tokenizer.json").unlink()
        (folder / "tokenizer_config.json").unlink()

    folder = broken_copy(good, tmp_path / "ckpt", strip)
    with unchanged(folder):
        result = run_cli("load", folder, "--json")
    assert_ok(result)
    assert json.loads(result.stdout.strip().splitlines()[-1])["sample"]["note"]

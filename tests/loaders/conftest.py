"""Fixtures of the loader tests: one transformers GPT-2 checkpoint (single file and sharded)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from ckpts import VOCAB, Reference, write_gpt2, write_tokenizer


@pytest.fixture(scope="session")
def gpt2_ref(tmp_path_factory: pytest.TempPathFactory) -> Reference:
    folder = tmp_path_factory.mktemp("gpt2") / "hf"
    hf = write_gpt2(folder)
    ids = torch.randint(0, VOCAB, (2, 11), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        logits = hf(input_ids=ids, use_cache=False).logits.float()
    return Reference(folder, hf, ids, logits)


@pytest.fixture(scope="session")
def gpt2_sharded(tmp_path_factory: pytest.TempPathFactory, gpt2_ref: Reference) -> Path:
    """The same weights as gpt2_ref, saved in several shards with an index.json."""
    folder = tmp_path_factory.mktemp("gpt2") / "sharded"
    gpt2_ref.hf.save_pretrained(str(folder), max_shard_size="20KB")
    write_tokenizer(folder)
    assert len(list(folder.glob("*.safetensors"))) > 2
    return folder


@pytest.fixture()
def copy_of(tmp_path: Path):
    """copy_of(folder) -> a private copy the test may damage."""

    def make(src: Path, name: str = "copy") -> Path:
        dst = tmp_path / name
        shutil.copytree(src, dst)
        return dst

    return make



"""Tiny checkpoints for the loader and CLI tests: transformers GPT-2 folders with a word-level tokenizer."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

VOCAB = 128


@dataclass
class Reference:
    folder: Path  # save_pretrained output, one model.safetensors + tokenizer files
    hf: torch.nn.Module  # the transformers model that wrote it
    ids: torch.Tensor
    logits: torch.Tensor  # transformers' logits for ids


def write_tokenizer(folder: Path) -> None:
    """A word-level tokenizer.json with VOCAB ids (w0..w125, [UNK], <eos>), built with `tokenizers`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    vocab = {f"w{i}": i for i in range(VOCAB - 2)}
    vocab["[UNK]"], vocab["<eos>"] = VOCAB - 2, VOCAB - 1
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.decoder = decoders.WordPiece(prefix="##")
    tok.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps({"eos_token": "<eos>"}))


def gpt2_hf_config(**changes):
    from transformers import GPT2Config

    kw = dict(vocab_size=VOCAB, n_positions=32, n_embd=32, n_layer=2, n_head=4, bos_token_id=VOCAB - 1, eos_token_id=VOCAB - 1)
    kw.update(changes)
    return GPT2Config(**kw)


def write_gpt2(folder: Path, seed: int = 0, max_shard_size: str | None = None, **changes) -> torch.nn.Module:
    from portagpt.smoke_tests.reference import write_hf_checkpoint

    hf = write_hf_checkpoint(gpt2_hf_config(**changes), folder, seed=seed, max_shard_size=max_shard_size)
    write_tokenizer(folder)
    return hf



def logits_of(model: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(ids).float()

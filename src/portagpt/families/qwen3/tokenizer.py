"""Qwen3's tokenizer: the checkpoint's tokenizer.json, or GPT-2's BPE for models trained here.

Qwen checkpoints ship a ``tokenizer.json`` (a byte-level BPE of 151k entries,
shared by dense and MoE models), read with the ``tokenizers`` library. A model
built from a preset and trained from scratch has no tokenizer of its own: it
uses GPT-2's byte-level BPE (bundled, offline), which is why the ``tiny``
presets have GPT-2's 50257-entry vocabulary.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ...adapters.tokenizer import HFTokenizer, Tokenizer
from ...errors import TokenizerError
from ..gpt2.tokenizer import gpt2_tokenizer


def load_tokenizer(folder: Path | None, cfg: Any = None) -> Tokenizer:
    """``folder``'s tokenizer.json; with no folder, GPT-2's BPE (needs a vocab of >= 50257 ids).

    ``folder=None`` means "a model trained from scratch from a preset": the
    GPT-2 tokenizer is returned when the config's vocabulary can hold its ids,
    and a :class:`TokenizerError` is raised otherwise. A folder without a
    tokenizer.json gets the same GPT-2 tokenizer only when portagpt's trainer
    wrote it (it has the ``portagpt.json`` sidecar; the trainer tokenises with
    ``load_tokenizer(None, cfg)``); any other such folder is an error, since a
    real checkpoint's vocabulary is not GPT-2's.
    """
    if folder is not None:
        from ...loaders.pipeline import SIDECAR

        folder = Path(folder)
        if (folder / "tokenizer.json").is_file() or not (folder / SIDECAR).is_file():
            return HFTokenizer.from_folder(folder)
    tok = gpt2_tokenizer()
    vocab = getattr(cfg, "vocab_size", None)
    if vocab is not None and vocab < tok.vocab_size:
        raise TokenizerError(
            f"This Qwen3 config has a vocabulary of {vocab} ids, too small for GPT-2's BPE "
            f"({tok.vocab_size} ids), and no checkpoint folder with a tokenizer.json was given. "
            "Pass the checkpoint folder, or use a preset with vocab_size >= 50257 (e.g. 'tiny')."
        )
    return tok

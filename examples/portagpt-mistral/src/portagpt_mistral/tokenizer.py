"""Mistral's tokenizer: the checkpoint's own ``tokenizer.json``, read with ``tokenizers``.

Mistral ships SentencePiece-style BPE (v0.1/v0.3) or Tekken (Nemo) as a
``tokenizer.json``; both load through portagpt's :class:`HFTokenizer`.
There is no built-in fallback vocabulary, so a model built from a preset
without a checkpoint folder has no tokenizer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from portagpt.adapters import HFTokenizer, Tokenizer
from portagpt.errors import TokenizerError


def load_tokenizer(folder: Path | None, cfg: Any = None) -> Tokenizer:
    if folder is None or not (Path(folder) / "tokenizer.json").is_file():
        where = "no checkpoint folder was given" if folder is None else f"{str(folder)!r} has no tokenizer.json"
        raise TokenizerError(
            f"A Mistral model needs its checkpoint's tokenizer.json, but {where}. Point at a "
            "folder saved by transformers (save_pretrained writes tokenizer.json), or download "
            "the checkpoint with its tokenizer."
        )
    return HFTokenizer.from_folder(folder)

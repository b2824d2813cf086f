"""GPT-2's tokenizer: the checkpoint's tokenizer.json, else the bundled byte-level BPE (its own)."""

from __future__ import annotations

from ...adapters.tokenizer import BPE_EOT as EOT
from ...adapters.tokenizer import bundled_bpe as gpt2_tokenizer
from ...adapters.tokenizer import load_tokenizer_or_bundled as load_tokenizer

__all__ = ["EOT", "gpt2_tokenizer", "load_tokenizer"]

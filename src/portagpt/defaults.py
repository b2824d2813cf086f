"""Defaults that name a family, kept out of the shared layers (core/, loaders/, adapters/).

A leaf module like :mod:`portagpt.errors`: the training plan reads these when
neither a flag nor a checkpoint decides.
"""

from __future__ import annotations

DEFAULT_FAMILY = "gpt2"  # `portagpt train` without --family, --checkpoint or a resumed run
SCRATCH_TOKENIZER_KIND = "bundled GPT-2 BPE (tiktoken)"  # run.json's name for it

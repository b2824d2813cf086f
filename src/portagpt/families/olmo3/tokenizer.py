"""Olmo 3's tokenizer: the checkpoint's tokenizer.json (the cl100k-style BPE of Dolma 3).

Stop ids and the chat template come from the checkpoint's tokenizer_config.json /
generation_config.json through :class:`HFTokenizer`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ...adapters.tokenizer import HFTokenizer, Tokenizer
from ..gpt2.tokenizer import gpt2_tokenizer


def load_tokenizer(folder: Path | None, cfg: Any = None) -> Tokenizer:
    """The tokenizer.json in ``folder``; raises TokenizerError when the folder has none.

    With no folder at all (a model trained from scratch from the ``tiny`` preset,
    which uses the GPT-2 vocabulary of 50,257 entries), GPT-2's packaged BPE is
    returned, so from-scratch training works offline. A folder without a
    tokenizer.json that portagpt's trainer wrote (it has the ``portagpt.json``
    sidecar) was trained with that same GPT-2 BPE, and gets it back.
    """
    if folder is None:
        return gpt2_tokenizer()
    from ...loaders.pipeline import SIDECAR

    folder = Path(folder)
    if not (folder / "tokenizer.json").is_file() and (folder / SIDECAR).is_file():
        return gpt2_tokenizer()
    return HFTokenizer.from_folder(folder)

"""GPT-2's byte-level BPE through tiktoken, built offline from the packaged ranks file."""

from __future__ import annotations

from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from ...adapters.tokenizer import HFTokenizer, TiktokenTokenizer, Tokenizer

EOT = 50256
# GPT-2's pre-tokenisation pattern (the one tiktoken's "gpt2" encoding uses).
PAT_STR = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


@lru_cache(maxsize=1)
def gpt2_encoding() -> Any:
    import tiktoken
    from tiktoken.load import load_tiktoken_bpe

    ranks_file = resources.files("portagpt").joinpath("data/gpt2.tiktoken")
    with resources.as_file(ranks_file) as path:
        ranks = load_tiktoken_bpe(str(path))
    return tiktoken.Encoding(
        name="gpt2", pat_str=PAT_STR, mergeable_ranks=ranks, special_tokens={"<|endoftext|>": EOT}
    )


def gpt2_tokenizer() -> TiktokenTokenizer:
    return TiktokenTokenizer(gpt2_encoding(), eos_token_id=EOT)


def load_tokenizer(folder: Path | None, cfg: Any = None) -> Tokenizer:
    """The checkpoint's tokenizer.json when it ships one, else GPT-2's own BPE (offline)."""
    if folder is not None and (Path(folder) / "tokenizer.json").is_file():
        return HFTokenizer.from_folder(folder)
    return gpt2_tokenizer()

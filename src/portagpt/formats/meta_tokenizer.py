"""The ``tokenizer.model`` of Meta's releases: SentencePiece (Llama 2) or tiktoken (Llama 3).

* Llama 2: a SentencePiece model, read with the ``sentencepiece`` package;
  ``encode`` puts BOS first, as Meta's generation code and transformers do.
* Llama 3, 3.1, 3.2: the same file name holds tiktoken BPE ranks (one
  ``base64-token rank`` pair per line), read with ``tiktoken`` and Meta's
  pre-tokenisation pattern; Meta's 256 special tokens follow the ranks
  (``<|begin_of_text|>`` first, then ``<|end_of_text|>``, ...,
  ``<|eot_id|>``, reserved ones filling the rest). ``encode`` puts
  ``<|begin_of_text|>`` first; generation stops at ``<|end_of_text|>``,
  ``<|eom_id|>`` and ``<|eot_id|>``.

The ranks file is parsed here rather than with ``tiktoken.load``, whose cache
is keyed by the file's path (a file rewritten at the same path would be read
stale).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..adapters.tokenizer import ChatTemplateMixin, TiktokenTokenizer
from ..errors import TokenizerError

NAME = "tokenizer.model"
LLAMA3_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
NUM_RESERVED = 256
LLAMA3_SPECIALS = [
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|reserved_special_token_0|>",
    "<|reserved_special_token_1|>",
    "<|finetune_right_pad_id|>",
    "<|step_id|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eom_id|>",
    "<|eot_id|>",
    "<|python_tag|>",
]
LLAMA3_SPECIALS += [
    f"<|reserved_special_token_{2 + i}|>" for i in range(NUM_RESERVED - len(LLAMA3_SPECIALS))
]
LLAMA3_STOPS = ("<|end_of_text|>", "<|eom_id|>", "<|eot_id|>")
_RANK_LINE = re.compile(rb"^[A-Za-z0-9+/=]+ \d+$")


def kind(folder: Path) -> str | None:
    """``"tiktoken"``, ``"sentencepiece"`` or None (no tokenizer.model)."""
    path = Path(folder) / NAME
    if not path.is_file():
        return None
    with open(path, "rb") as f:
        first = f.readline().rstrip(b"\r\n")
    return "tiktoken" if _RANK_LINE.match(first) else "sentencepiece"


def read_ranks(path: Path) -> dict[bytes, int]:
    ranks: dict[bytes, int] = {}
    for no, line in enumerate(path.read_bytes().splitlines(), 1):
        if not line:
            continue
        try:
            token, rank = line.split()
            ranks[base64.b64decode(token, validate=True)] = int(rank)
        except (ValueError, binascii.Error):
            raise TokenizerError(
                f"{str(path)!r} line {no} is not 'base64-token rank' (a tiktoken ranks file); the "
                "file is corrupted. Download tokenizer.model again."
            ) from None
    return ranks


class MetaTiktokenTokenizer(TiktokenTokenizer):
    """Llama 3's tokenizer: tiktoken BPE, Meta's specials, BOS first."""

    def __init__(self, encoding: Any, specials: dict[str, int]) -> None:
        super().__init__(encoding, eos_token_id=specials["<|end_of_text|>"])
        self.bos_token_id = specials["<|begin_of_text|>"]
        self.stop_token_ids = tuple(specials[s] for s in LLAMA3_STOPS)
        self.special_tokens_map = {"bos_token": "<|begin_of_text|>", "eos_token": "<|end_of_text|>"}

    def encode(self, text: str) -> list[int]:
        return [self.bos_token_id, *super().encode(text)]


def llama3_tokenizer(path: Path) -> MetaTiktokenTokenizer:
    import tiktoken

    ranks = read_ranks(path)
    specials = {tok: len(ranks) + i for i, tok in enumerate(LLAMA3_SPECIALS)}
    enc = tiktoken.Encoding(
        name=str(path), pat_str=LLAMA3_PATTERN, mergeable_ranks=ranks, special_tokens=specials
    )
    return MetaTiktokenTokenizer(enc, specials)


class SentencePieceTokenizer(ChatTemplateMixin):
    """Llama 2's tokenizer: a SentencePiece model, BOS first."""

    def __init__(self, processor: Any) -> None:
        self.sp = processor
        self.vocab_size = int(processor.vocab_size())
        self.bos_token_id = int(processor.bos_id())
        eos = int(processor.eos_id())
        self.eos_token_id = eos if eos >= 0 else None
        pad = int(processor.pad_id())
        self.pad_token_id = pad if pad >= 0 else self.eos_token_id
        self.stop_token_ids = (eos,) if eos >= 0 else ()
        self.chat_template = None
        self.special_tokens_map = {}

    def encode(self, text: str) -> list[int]:
        ids = list(self.sp.encode(text))
        return [self.bos_token_id, *ids] if self.bos_token_id >= 0 else ids

    def decode(self, ids: Iterable[int]) -> str:
        return str(self.sp.decode([int(i) for i in ids]))


def sentencepiece_tokenizer(path: Path) -> SentencePieceTokenizer:
    import sentencepiece

    sp = sentencepiece.SentencePieceProcessor()
    try:
        sp.Load(str(path))
    except (OSError, RuntimeError) as exc:
        raise TokenizerError(
            f"{str(path)!r} is neither tiktoken ranks nor a SentencePiece model ({exc}); the file "
            "is corrupted. Download tokenizer.model again."
        ) from None
    return SentencePieceTokenizer(sp)


def load(folder: Path) -> Any:
    """The folder's tokenizer.model as a tokenizer, or None when there is none."""
    found = kind(folder)
    if found is None:
        return None
    path = Path(folder) / NAME
    return llama3_tokenizer(path) if found == "tiktoken" else sentencepiece_tokenizer(path)


def special_ids(folder: Path) -> dict[str, Any]:
    """``bos_token_id`` / ``eos_token_id`` for the model config (empty without a tokenizer)."""
    tok = load(folder)
    if tok is None:
        return {}
    eos = list(tok.stop_token_ids)
    return {"bos_token_id": tok.bos_token_id, "eos_token_id": eos[0] if len(eos) == 1 else eos}


# ---- as transformers' files, for a converted folder ------------------------------------
def _llama3_files(path: Path, dst: Path) -> list[str]:
    from tokenizers import processors
    from transformers.convert_slow_tokenizer import TikTokenConverter

    tok = TikTokenConverter(
        vocab_file=str(path), pattern=LLAMA3_PATTERN, extra_special_tokens=LLAMA3_SPECIALS
    ).converted()
    bos = "<|begin_of_text|>"
    tok.post_processor = processors.Sequence(
        [
            processors.ByteLevel(trim_offsets=False),
            processors.TemplateProcessing(
                single=f"{bos} $A",
                pair=f"{bos} $A {bos} $B",
                special_tokens=[(bos, tok.token_to_id(bos))],
            ),
        ]
    )
    tok.save(str(dst / "tokenizer.json"))
    config = {
        "bos_token": bos,
        "eos_token": "<|end_of_text|>",
        "tokenizer_class": "PreTrainedTokenizerFast",
    }
    (dst / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
    return ["tokenizer.json", "tokenizer_config.json"]


def _sentencepiece_files(path: Path, dst: Path) -> list[str]:
    import shutil
    import tempfile

    from transformers import AutoTokenizer

    sp = sentencepiece_tokenizer(path).sp
    config = {
        "tokenizer_class": "LlamaTokenizer",
        "bos_token": sp.id_to_piece(sp.bos_id()),
        "eos_token": sp.id_to_piece(sp.eos_id()),
        "unk_token": sp.id_to_piece(sp.unk_id()),
        "add_bos_token": True,
    }
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copyfile(path, Path(tmp) / NAME)
        (Path(tmp) / "tokenizer_config.json").write_text(json.dumps(config))
        tok = AutoTokenizer.from_pretrained(tmp)  # transformers converts the SentencePiece model
        saved = tok.save_pretrained(str(dst))
    return sorted({Path(f).name for f in saved if (dst / Path(f).name).is_file()})


def hf_files(loc: Any, dst: Path) -> list[str]:
    """tokenizer.json + tokenizer_config.json made from tokenizer.model, for a converted folder.

    tiktoken ranks go through transformers' ``TikTokenConverter`` (BOS added by the
    post-processor); a SentencePiece model through transformers' own conversion. The
    converted SentencePiece tokenizer does not collapse runs of whitespace as
    sentencepiece's normaliser does (transformers' behaviour, kept).
    """
    found = kind(loc.folder)
    if found is None:
        return []
    path = Path(loc.folder) / NAME
    return _llama3_files(path, dst) if found == "tiktoken" else _sentencepiece_files(path, dst)


"""The hostile corpus's raw material: one tiny good checkpoint, and ways to break copies of it.

:func:`good_checkpoint` writes (once per session) a transformers Llama with
random weights and a word-level ``tokenizer.json``; every case copies it and
damages the copy (:func:`broken_copy`), so a case differs from a loadable
checkpoint by exactly the fault it names. The safetensors helpers rewrite a
file's header or bytes directly, to craft files that parse but lie.
"""

from __future__ import annotations

import json
import shutil
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

VOCAB = 128
LAYERS = 2
_CACHE: dict[str, Path] = {}


def write_tokenizer(folder: Path, vocab: int = VOCAB) -> None:
    """A word-level tokenizer.json (w0.., [UNK], <eos>) built with the `tokenizers` library."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    words = {f"w{i}": i for i in range(vocab - 2)}
    words["[UNK]"], words["<eos>"] = vocab - 2, vocab - 1
    tok = Tokenizer(models.WordLevel(words, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.decoder = decoders.WordPiece(prefix="##")
    tok.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps({"eos_token": "<eos>"}))


def good_checkpoint(root: Path, tied: bool = False) -> Path:
    """A save_pretrained Llama folder (2 layers, 32 wide, GQA 4/2, RoPE) with its tokenizer."""
    key = f"{root}:{tied}"
    if key in _CACHE:
        return _CACHE[key]
    from transformers import LlamaConfig

    from portagpt.smoke_tests.reference import write_hf_checkpoint

    folder = root / ("good-tied" if tied else "good")
    cfg = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=LAYERS,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        rope_theta=10000.0,
        tie_word_embeddings=tied,
        bos_token_id=VOCAB - 1,
        eos_token_id=VOCAB - 1,
    )
    write_hf_checkpoint(cfg, folder)
    write_tokenizer(folder)
    _CACHE[key] = folder
    return folder


def broken_copy(good: Path, dest: Path, damage: Callable[[Path], Any]) -> Path:
    """A copy of ``good`` at ``dest`` with ``damage(dest)`` applied."""
    shutil.copytree(good, dest)
    damage(dest)
    return dest


# ---- config.json -----------------------------------------------------------------------
def edit_config(folder: Path, **changes: Any) -> None:
    """Set (or with the value ``DELETE``, remove) keys of ``folder/config.json``."""
    path = folder / "config.json"
    cfg = json.loads(path.read_text())
    for k, v in changes.items():
        if v is DELETE:
            cfg.pop(k, None)
        else:
            cfg[k] = v
    path.write_text(json.dumps(cfg))


DELETE = object()


# ---- safetensors, byte by byte ----------------------------------------------------------
def read_raw(path: Path) -> tuple[dict[str, Any], bytes]:
    """(header dict, data bytes) of a safetensors file."""
    blob = path.read_bytes()
    (n,) = struct.unpack("<Q", blob[:8])
    return json.loads(blob[8 : 8 + n]), blob[8 + n :]


def write_raw(path: Path, header: dict[str, Any], data: bytes, raw_header: bytes | None = None) -> None:
    """Write ``header`` (or ``raw_header`` verbatim) and ``data`` as a safetensors file."""
    head = raw_header if raw_header is not None else json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(head)) + head + data)


def tensors_by_offset(header: dict[str, Any]) -> list[str]:
    return sorted((k for k in header if k != "__metadata__"), key=lambda k: header[k]["data_offsets"][0])


def rewrite(folder: Path, fn: Callable[[dict[str, Any], bytes], tuple[dict[str, Any], bytes]]) -> None:
    """Apply ``fn(header, data) -> (header, data)`` to ``folder/model.safetensors``."""
    path = folder / "model.safetensors"
    header, data = read_raw(path)
    write_raw(path, *fn(header, data))

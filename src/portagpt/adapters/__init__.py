"""The family contract: :class:`Family`, configs, weight maps, tokenizers, presets."""

from __future__ import annotations

from .config import FULL, SLIDING, DecoderConfig, HFConfig, config_to_dict, text_config
from .family import Family, Preset
from .tokenizer import (
    HFTokenizer,
    TiktokenTokenizer,
    Tokenizer,
    bundled_bpe,
    load_tokenizer,
    load_tokenizer_or_bundled,
    scratch_tokenizer,
)
from .weights import (
    IDENTITY,
    Rule,
    Transform,
    WeightMap,
    drop,
    identity,
    rename,
    sized_split,
    split,
    stack,
    transpose,
)

__all__ = [
    "FULL",
    "IDENTITY",
    "SLIDING",
    "DecoderConfig",
    "Family",
    "HFConfig",
    "HFTokenizer",
    "Preset",
    "Rule",
    "TiktokenTokenizer",
    "Tokenizer",
    "Transform",
    "WeightMap",
    "bundled_bpe",
    "config_to_dict",
    "drop",
    "identity",
    "load_tokenizer",
    "load_tokenizer_or_bundled",
    "rename",
    "scratch_tokenizer",
    "sized_split",
    "split",
    "stack",
    "text_config",
    "transpose",
]

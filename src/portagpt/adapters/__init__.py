"""The family contract: :class:`Family`, weight maps, tokenizers, presets."""

from __future__ import annotations

from .family import Family, Preset, config_to_dict, text_config
from .tokenizer import HFTokenizer, TiktokenTokenizer, Tokenizer
from .weights import IDENTITY, Rule, Transform, WeightMap, drop, rename, split, stack, transpose

__all__ = [
    "IDENTITY",
    "Family",
    "HFTokenizer",
    "Preset",
    "Rule",
    "TiktokenTokenizer",
    "Tokenizer",
    "Transform",
    "WeightMap",
    "config_to_dict",
    "drop",
    "rename",
    "split",
    "stack",
    "text_config",
    "transpose",
]

"""Loaders: every way in produces the same model.

``load(source)`` accepts a checkpoint folder (transformers ``save_pretrained``
output or a portagpt checkpoint), and returns ``(model, tokenizer)``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from .pipeline import Loaded, load_folder, parse_dtype

__all__ = ["Loaded", "load", "load_full", "parse_dtype"]


def load_full(
    source: str | Path,
    *,
    family: str | None = None,
    dtype: str | torch.dtype | None = "float32",
    device: str | torch.device = "cpu",
    tokenizer: bool | str = "auto",
) -> Loaded:
    """Load ``source`` and return the model with its load report (see :class:`Loaded`)."""
    return load_folder(Path(source), family=family, dtype=dtype, device=device, tokenizer=tokenizer)


def load(
    source: str | Path,
    *,
    family: str | None = None,
    dtype: str | torch.dtype | None = "float32",
    device: str | torch.device = "cpu",
    tokenizer: bool | str = "auto",
) -> tuple[torch.nn.Module, Any]:
    """Load a model and its tokenizer: ``model, tokenizer = portagpt.load(path)``.

    ``family`` forces the family (else it comes from config.json's model_type);
    ``dtype`` casts every floating tensor (``"auto"`` keeps the checkpoint's);
    ``tokenizer="auto"`` returns None when the checkpoint ships no tokenizer,
    ``True`` raises instead, ``False`` skips it.
    """
    loaded = load_full(source, family=family, dtype=dtype, device=device, tokenizer=tokenizer)
    return loaded.model, loaded.tokenizer

"""Loaders: every way in produces the same model.

``portagpt.load(source)`` accepts a checkpoint folder (``save_pretrained``
output, sharded or not, or a portagpt checkpoint), a ``.safetensors`` file, a
PyTorch ``.pth`` state dict, an in-memory transformers model, or (``repo_id=``)
a Hugging Face hub id; ``family=`` alone loads the family's default hub repo.
It returns ``(model, tokenizer)``; :func:`load_full` returns the whole
:class:`Loaded` record (checks, timings, where the config came from).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..adapters.family import Family
from ..errors import UsageError
from .export import convert, save_hf, save_native
from .hf import from_transformers, to_transformers
from .load import load_located
from .pipeline import FAMILY_KEY, FORMAT_KEY, LOADERS, Loaded, parse_dtype
from .sources import Located, locate, locate_repo

__all__ = [
    "FAMILY_KEY",
    "FORMAT_KEY",
    "LOADERS",
    "Loaded",
    "convert",
    "from_transformers",
    "load",
    "load_full",
    "locate_source",
    "parse_dtype",
    "save_hf",
    "save_native",
    "to_transformers",
]


def locate_source(
    source: str | Path | None = None,
    *,
    repo_id: str | None = None,
    revision: str | None = None,
    family: str | Family | None = None,
) -> Located:
    """Where the weights are: a local path, a hub id, or the family's default hub repo."""
    if source is not None and repo_id is not None:
        raise UsageError("Pass a checkpoint path or a hub id (repo_id / --repo-id), not both.")
    if source is not None:
        return locate(source)
    if repo_id is None and family is not None:
        from ..registry import get_family

        fam = family if isinstance(family, Family) else get_family(family)
        if not fam.default_repo_id:
            raise UsageError(
                f"Family {fam.name!r} has no default hub repository; pass --checkpoint PATH or --repo-id ID."
            )
        repo_id = fam.default_repo_id
    if repo_id is None:
        raise UsageError("Nothing to load: pass a checkpoint path, --repo-id ID, or --family NAME.")
    return locate_repo(repo_id, revision)


def load_full(
    source: str | Path | nn.Module | None = None,
    *,
    repo_id: str | None = None,
    revision: str | None = None,
    family: str | Family | None = None,
    preset: str | None = None,
    config: Any = None,
    dtype: str | torch.dtype | None = "float32",
    device: str | torch.device = "cpu",
    tokenizer: bool | str = "auto",
    loader: str = "auto",
) -> Loaded:
    """Load ``source`` and return the model with its load report (see :class:`Loaded`)."""
    if isinstance(source, nn.Module):
        from .hf import from_transformers_full

        return from_transformers_full(source, family=family, dtype=dtype, device=device)
    loc = locate_source(source, repo_id=repo_id, revision=revision, family=family)
    return load_located(
        loc, family=family, preset=preset, config=config, dtype=dtype, device=device,
        tokenizer=tokenizer, loader=loader,
    )  # fmt: skip


def load(
    source: str | Path | nn.Module | None = None,
    *,
    repo_id: str | None = None,
    revision: str | None = None,
    family: str | Family | None = None,
    preset: str | None = None,
    config: Any = None,
    dtype: str | torch.dtype | None = "float32",
    device: str | torch.device = "cpu",
    tokenizer: bool | str = "auto",
    loader: str = "auto",
) -> tuple[nn.Module, Any]:
    """Load a model and its tokenizer: ``model, tokenizer = portagpt.load(path)``.

    ``family`` forces the family (else it comes from config.json's model_type);
    ``preset``/``config`` give the config of a checkpoint without config.json;
    ``dtype`` casts every floating tensor (``"auto"`` keeps the checkpoint's);
    ``tokenizer="auto"`` returns None when the checkpoint ships no tokenizer,
    ``True`` raises instead, ``False`` skips it; ``loader`` is one of
    ``auto``/``meta``/``mmap``/``safetensors``/``state_dict``/``hf`` (see ``pipeline.py``).
    """
    loaded = load_full(
        source, repo_id=repo_id, revision=revision, family=family, preset=preset, config=config,
        dtype=dtype, device=device, tokenizer=tokenizer, loader=loader,
    )  # fmt: skip
    return loaded.model, loaded.tokenizer

"""The top of the load path: check a located checkpoint, then load it with the chosen loader.

:func:`load_located` runs :func:`~.choice.check_source` (family, config and the
strict check), then reads the weights with one of the loaders
(``pipeline.LOADERS``: the meta-device pipeline, mmap, whole safetensors
files, a classic state dict, or transformers' ``from_pretrained`` via
``hf.py``) and the tokenizer, and returns a :class:`~.pipeline.Loaded`.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from ..adapters.family import Family
from ..errors import UsageError
from .choice import check_source
from .hf import load_with_transformers
from .pipeline import (
    LOADERS,
    Loaded,
    load_tokenizer_for,
    materialise,
    materialise_eager,
    parse_device,
    parse_dtype,
    read_whole,
)
from .sources import Located, locate
from .state_dict import StateDictSource


def load_located(
    loc: Located,
    *,
    family: str | Family | None = None,
    preset: str | None = None,
    config: Any = None,
    dtype: str | torch.dtype | None = "float32",
    device: str | torch.device = "cpu",
    tokenizer: bool | str = "auto",
    loader: str = "auto",
) -> Loaded:
    """Check, then load ``loc`` with the chosen loader."""
    t0 = time.perf_counter()
    if loader not in LOADERS:
        raise UsageError(f"Unknown loader {loader!r}. Use one of: {', '.join(LOADERS)}.")
    loader = "meta" if loader == "auto" else loader
    if loader == "safetensors" and loc.kind != "safetensors":
        raise UsageError(f"--loader safetensors needs safetensors files; {loc.where} is a {loc.kind} file.")
    if loader == "hf" and loc.kind != "safetensors":
        raise UsageError(
            f"--loader hf loads a save_pretrained folder through transformers; {loc.where} is a "
            f"{loc.kind} file. Use --loader meta or state_dict."
        )
    want = parse_dtype(dtype)
    device = parse_device(device)
    source, choice, prep = check_source(loc, family=family, preset=preset, config=config)
    where = loc.where
    if loader in ("meta", "mmap"):
        model = materialise(prep, source, want, device, where, zero_copy=loader == "mmap")
    elif loader == "safetensors":
        model = materialise(prep, read_whole(loc), want, device, where)
    elif loader == "state_dict":
        model = materialise_eager(prep, read_whole(loc), want, device, where)
    else:
        model = load_with_transformers(
            loc.folder, choice.family, want, device, choice.config, override=bool(choice.notes)
        )
    if isinstance(source, StateDictSource):
        source.close()
    if loc.format is not None and loc.format.tokenizer is not None and tokenizer is not False:
        tok = loc.format.tokenizer(loc, choice.config)
        if tok is None and tokenizer is True:
            tok = load_tokenizer_for(choice.family, loc.folder, choice.config, True)
    else:
        tok = load_tokenizer_for(choice.family, loc.folder, choice.config, tokenizer)
    return Loaded(
        model=model,
        tokenizer=tok,
        family=choice.family,
        config=choice.config,
        source=loc.repo_id or str(loc.path),
        loader=loader,
        layout=prep.layout,
        report=prep.report,
        checkpoint_bytes=source.file_bytes(),
        load_seconds=time.perf_counter() - t0,
        extras={
            "config_source": choice.source,
            "config_changes": choice.changes,
            "notes": list(choice.notes),
            "files": [str(f) for f in loc.files],
            "kind": loc.kind,
            "coverage": prep.coverage,
            "repo_id": loc.repo_id,
            "folder": str(loc.folder),
        },
    )


def load_folder(
    folder: Path,
    *,
    family: str | Family | None = None,
    dtype: str | torch.dtype | None = "float32",
    device: str | torch.device = "cpu",
    tokenizer: bool | str = "auto",
) -> Loaded:
    """Load a local checkpoint folder or file (kept for callers of the first version)."""
    return load_located(locate(folder), family=family, dtype=dtype, device=device, tokenizer=tokenizer)

"""Tied weights the checkpoint stores anyway: equal, or the model is untied (never dropped).

When the config ties two tensors (an output head sharing the embedding), the
model has one tensor and a checkpoint's copy of the other is redundant, as
long as it holds the same values. A checkpoint whose copy differs (an untied
head under a config that says tied) would lose that tensor silently. So each
stored tied copy is read and compared with its source; when they differ the
config is untied (the one boolean config field whose flip removes exactly that
tie, found by trying each, no field named here) and the check runs again; when
no field unties it, the load is refused naming the tensor.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import torch

from ..errors import WeightMismatchError


def read_native(prep: Any, source: Any, name: str) -> torch.Tensor:
    """The tensor the checkpoint maps to native ``name`` (the source must be open)."""
    for step in prep.steps:
        if name in step.native:
            inputs = [source.get(prep.source_names[n]) for n in step.hf]
            outputs = step.to_native(inputs)  # a failing transform names its tensors
            return outputs[list(step.native).index(name)]
    raise KeyError(name)


def stored_as(prep: Any, name: str) -> str:
    """How native ``name`` is called in the checkpoint (``name`` itself for native checkpoints)."""
    for step in prep.steps:
        if name in step.native:
            hf = [prep.source_names.get(n, n) for n in step.hf]
            return name if hf == [name] else f"{', '.join(hf)} (the model's {name})"
    return name


def untie_field(family: Any, cfg: Any, pairs: set[tuple[str, str]]) -> tuple[str, Any] | None:
    """``(change, config)``: the one boolean field whose flip unties ``pairs`` and keeps every other tie."""
    if not dataclasses.is_dataclass(cfg):
        return None
    before = set(family.tied_weights(cfg))
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if not isinstance(value, bool) or not f.init:
            continue
        try:
            new = dataclasses.replace(cfg, **{f.name: not value})
        except (TypeError, ValueError):
            continue
        after = set(family.tied_weights(new))
        if not (after & pairs) and after == before - pairs:
            return f"{f.name}={not value!r}", new
    return None


def _differences(prep: Any, source: Any, pairs: list[tuple[str, str]]) -> list[tuple[str, str, str]]:
    """(copy, source, how it differs) for each stored tied copy that is not equal to its source."""
    out = []
    with source:
        for dst, src in pairs:
            a, b = read_native(prep, source, dst), read_native(prep, source, src)
            if a.shape != b.shape:
                out.append((dst, src, f"shape {tuple(a.shape)} vs {tuple(b.shape)}"))
            elif not torch.equal(a.float(), b.float()):
                diff = float((a.float() - b.float()).abs().max())
                out.append((dst, src, f"max |difference| {diff:.3g}"))
    return out


def verify_ties(
    prep: Any, source: Any, where: str, reprepare: Callable[[Any], Any]
) -> tuple[Any, list[str]]:
    """``prep`` (or one for the untied config) and notes on what was untied.

    ``reprepare(config)`` runs the strict check again for another config.
    """
    ignored = set(prep.report.ignored)
    pairs = [(d, s) for d, s in prep.tied if d in ignored]
    if not pairs:
        return prep, []
    differ = _differences(prep, source, pairs)
    if not differ:
        return prep, []
    listing = "; ".join(
        f"{stored_as(prep, d)} differs from {stored_as(prep, s)} ({how})" for d, s, how in differ
    )
    found = untie_field(prep.family, prep.config, {(d, s) for d, s, _ in differ})
    if found is not None:
        change, cfg = found
        new = reprepare(cfg)
        if new.report.ok:
            return new, [
                f"the config ties these weights but {where} stores them apart: {listing}. Loaded "
                f"untied ({change}), so no stored tensor is dropped; set {change} in config.json "
                "to make this explicit."
            ]
    raise WeightMismatchError(
        f"{where}: the config ties weights that the checkpoint stores apart: {listing}. Tying would "
        "drop the stored copy, and the config cannot be untied "
        + ("(the untied model does not fit the checkpoint either)" if found else "(no config field unties them)")
        + ". Set tie_word_embeddings (or the family's tying option) to false in config.json."
    )

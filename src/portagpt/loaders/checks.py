"""Strict weight checks, run on names, shapes and dtypes before any tensor data is read.

:func:`compare` takes what the model expects (names and shapes of a model
built on the meta device) and what the checkpoint will produce once mapped
(names, shapes and dtypes from headers, mapped with meta tensors), and reports
every missing, unexpected and mismatched tensor at once, sorted and capped,
with hints that point at the likely cause. Nothing is ever filled in at
random: a missing weight is an error.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import torch

from ..errors import WeightMismatchError

SHOW = 8
_LAYER = re.compile(r"(?:^|\.)(\d+)\.")


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


@dataclass
class Report:
    """The outcome of comparing a checkpoint with a model; ``ok`` when it loads exactly."""

    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)
    incomplete: list[tuple[str, list[str]]] = field(default_factory=list)
    wrong_dtype: list[tuple[str, str, str]] = field(default_factory=list)  # (name, expected kind, found)
    ignored: list[str] = field(default_factory=list)  # present, but the model ties it to another
    dtypes: dict[str, int] = field(default_factory=dict)  # checkpoint dtype -> tensor count
    expected: int = 0
    layers: tuple[int | None, int | None] = (None, None)  # (checkpoint, model) layer counts
    hints: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched or self.incomplete or self.wrong_dtype)

    @property
    def problems(self) -> int:
        return len(self.missing) + len(self.unexpected) + len(self.mismatched) + len(self.incomplete) + len(self.wrong_dtype)

    def summary(self) -> dict[str, object]:
        return {
            "ok": self.ok,
            "expected": self.expected,
            "missing": len(self.missing),
            "unexpected": len(self.unexpected),
            "mismatched": len(self.mismatched),
            "incomplete": len(self.incomplete),
            "wrong_dtype": len(self.wrong_dtype),
            "ignored": len(self.ignored),
            "dtypes": dict(self.dtypes),
        }

    def message(self, what: str) -> str:
        parts = [f"{what} does not match the model:"]

        def listing(title: str, items: list[str]) -> None:
            if not items:
                return
            shown = items[:SHOW]
            more = f" ... and {len(items) - SHOW} more" if len(items) > SHOW else ""
            parts.append(f"{len(items)} {title}: " + ", ".join(shown) + more + ".")

        listing("missing tensor(s)", self.missing)
        listing("unexpected tensor(s)", self.unexpected)
        listing(
            "tensor(s) of the wrong shape",
            [f"{n} (model expects {tuple(e)}, checkpoint has {tuple(f)})" for n, e, f in self.mismatched],
        )
        listing(
            "incomplete tensor group(s)",
            [f"{n} (needs also {', '.join(m)})" for n, m in self.incomplete],
        )
        listing(
            "tensor(s) of the wrong kind of dtype",
            [f"{n} (model expects {e}, checkpoint has {f})" for n, e, f in self.wrong_dtype],
        )
        parts += self.hints
        if not self.hints:
            parts.append(
                "Check that config.json belongs to these weights and that --family is right "
                "(`portagpt inspect PATH` shows what the checkpoint holds)."
            )
        return " ".join(parts)

    def raise_if_bad(self, what: str) -> None:
        if not self.ok:
            raise WeightMismatchError(self.message(what))


def layer_count(names: Iterable[str]) -> int | None:
    """Number of numbered blocks in a set of names (max first index + 1), if any."""
    found = [int(m.group(1)) for n in names if (m := _LAYER.search(n))]
    return max(found) + 1 if found else None


def _kind(dtype: torch.dtype) -> str:
    if dtype.is_floating_point:
        return "floating point"
    return "bool" if dtype == torch.bool else "integer"


def compare(
    expected: Mapping[str, torch.Tensor],
    produced: Mapping[str, torch.Tensor],
    *,
    unmatched: Iterable[str] = (),
    incomplete: Iterable[tuple[str, list[str]]] = (),
    optional: Iterable[str] = (),
    tied: Iterable[tuple[str, str]] = (),
) -> Report:
    """Compare expected vs produced names, shapes and dtype kinds.

    ``optional`` names may be absent (a tied head, written or not); when one is
    present and the model does not expect it, it is listed as ``ignored``.
    """
    optional = set(optional)
    tied = tuple(tied)
    rep = Report(expected=len(expected))
    rep.dtypes = dict(Counter(dtype_name(t.dtype) for t in produced.values()))
    rep.missing = sorted(n for n in expected if n not in produced and n not in optional)
    rep.unexpected = sorted(set(unmatched) | {n for n in produced if n not in expected and n not in optional})
    rep.ignored = sorted(n for n in produced if n not in expected and n in optional)
    rep.mismatched = sorted(
        (n, tuple(expected[n].shape), tuple(produced[n].shape))
        for n in expected
        if n in produced and tuple(expected[n].shape) != tuple(produced[n].shape)
    )
    rep.wrong_dtype = sorted(
        (n, _kind(expected[n].dtype), dtype_name(produced[n].dtype))
        for n in expected
        if n in produced and _kind(expected[n].dtype) != _kind(produced[n].dtype)
    )
    rep.incomplete = sorted(incomplete)
    rep.layers = (layer_count(produced), layer_count(expected))
    if not rep.ok:
        rep.hints = hints(rep, expected, produced, tied)
    return rep


def hints(
    rep: Report,
    expected: Mapping[str, torch.Tensor],
    produced: Mapping[str, torch.Tensor],
    tied: tuple[tuple[str, str], ...],
) -> list[str]:
    """Likely causes of a failed comparison, most specific first."""
    out: list[str] = []
    have, want = rep.layers
    if have is not None and want is not None and have != want:
        out.append(
            f"The checkpoint has {have} layers, the config says {want}: config.json does not belong "
            "to these weights (fix the layer count, e.g. num_hidden_layers/n_layer, or use the matching "
            "config.json)."
        )
    dims: Counter[tuple[int, int]] = Counter()
    for _, e, f in rep.mismatched:
        for a, b in zip(e, f, strict=False):
            if a != b:
                dims[(a, b)] += 1
    if dims:
        (a, b), count = dims.most_common(1)[0]
        out.append(
            f"{'Most shape mismatches' if len(rep.mismatched) > 1 else 'The shape mismatch'} ({count}) "
            f"{'are' if count > 1 else 'is'} a dimension of {b} in the checkpoint where the config gives "
            f"{a}: a size in config.json (hidden size, intermediate size, heads, head_dim or vocab "
            "size) contradicts the weights."
        )
    tied_dst = {d for d, _ in tied}
    for name in rep.missing:
        if name in tied_dst or len(rep.missing) > 2:
            continue
        twins = [p for p, t in produced.items() if tuple(t.shape) == tuple(expected[name].shape) and p != name]
        if twins:
            out.append(
                f"{name} is missing and tie_word_embeddings is false, so the model does not tie it; "
                f"if the checkpoint shares it with {twins[0]}, set tie_word_embeddings to true in "
                "config.json."
            )
        else:
            out.append(f"{name} is missing: the checkpoint is incomplete or of another configuration.")
    if rep.wrong_dtype:
        out.append(
            "A weight stored as integers or booleans is not a (quantised) checkpoint portagpt can load; "
            "use an unquantised floating-point checkpoint."
        )
    many = max(1, len(expected) // 2)
    if len(rep.unexpected) >= many and len(rep.missing) >= many:
        out.append(
            "Almost nothing matches: these look like weights of another family or layout; check "
            "config.json's model_type and --family."
        )
    return out

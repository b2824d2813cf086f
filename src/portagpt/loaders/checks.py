"""Strict weight checks, run on shapes before any tensor data is read.

:func:`compare` takes what the model expects (names and shapes of a model
built on the meta device) and what the checkpoint will produce once mapped
(names and shapes from safetensors headers, mapped with meta tensors), and
reports every missing, unexpected and mismatched tensor at once, sorted and
capped, with hints that point at the likely cause.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import torch

from ..errors import WeightMismatchError

SHOW = 8
_LAYER = re.compile(r"(?:^|\.)(\d+)\.")


@dataclass
class Report:
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)
    incomplete: list[tuple[str, list[str]]] = field(default_factory=list)
    hints: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched or self.incomplete)

    def summary(self) -> dict[str, int]:
        return {
            "missing": len(self.missing),
            "unexpected": len(self.unexpected),
            "mismatched": len(self.mismatched),
            "incomplete": len(self.incomplete),
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


def compare(
    expected: Mapping[str, torch.Tensor],
    produced: Mapping[str, torch.Tensor],
    *,
    unmatched: Iterable[str] = (),
    incomplete: Iterable[tuple[str, list[str]]] = (),
    optional: Iterable[str] = (),
    tied: Iterable[tuple[str, str]] = (),
) -> Report:
    """Compare expected vs produced names and shapes; ``optional`` names may be absent or extra."""
    optional = set(optional)
    rep = Report()
    rep.missing = sorted(n for n in expected if n not in produced and n not in optional)
    rep.unexpected = sorted(set(unmatched) | {n for n in produced if n not in expected and n not in optional})
    rep.mismatched = sorted(
        (n, tuple(expected[n].shape), tuple(produced[n].shape))
        for n in expected
        if n in produced and tuple(expected[n].shape) != tuple(produced[n].shape)
    )
    rep.incomplete = sorted(incomplete)
    if rep.ok:
        return rep
    # ---- hints ------------------------------------------------------------------
    have, want = layer_count(produced), layer_count(expected)
    if have is not None and want is not None and have != want:
        rep.hints.append(
            f"The checkpoint has {have} layers, the config says {want}: config.json does not belong "
            "to these weights (fix num_hidden_layers/n_layer, or use the matching config.json)."
        )
    dims: dict[tuple[int, int], int] = {}
    for _, e, f in rep.mismatched:
        for a, b in zip(e, f):
            if a != b:
                dims[(a, b)] = dims.get((a, b), 0) + 1
    if dims and len(rep.mismatched) > 1:
        (a, b), count = max(dims.items(), key=lambda kv: kv[1])
        rep.hints.append(
            f"Most shape mismatches ({count}) are a dimension of {b} in the checkpoint where the config "
            f"gives {a}: a size in config.json (hidden size, intermediate size, heads, head_dim or "
            "vocab size) contradicts the weights."
        )
    tied_dst = {d for d, _ in tied}
    for name in rep.missing:
        twins = [p for p, t in produced.items() if tuple(t.shape) == tuple(expected[name].shape) and p != name]
        if twins and name not in tied_dst and len(rep.missing) <= 2:
            rep.hints.append(
                f"{name} is missing and the model does not tie it; if the checkpoint ties it to "
                f"{twins[0]}, set tie_word_embeddings to true in config.json."
            )
    if rep.unexpected and len(rep.unexpected) >= max(1, len(expected)) // 2 and len(rep.missing) >= len(expected) // 2:
        rep.hints.append(
            "Almost nothing matches: these look like weights of another family or layout; check "
            "config.json's model_type and --family."
        )
    return rep

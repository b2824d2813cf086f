"""Declarative, invertible weight maps: Hugging Face tensor names <-> native names.

A :class:`WeightMap` is a list of :class:`Rule` s. Each rule pairs a group of
HF name patterns with a group of native name patterns; ``{}`` stands for an
integer index (a layer, an expert) and is matched in order; in a drop rule
``*`` stands for any text (``drop("vision_tower.*")``). Most rules are
one-to-one renames; a rule with a :class:`Transform` reshapes, transposes,
splits or fuses tensors, and a rule with no native side drops the HF tensors
(for example precomputed RoPE buffers).

Because transforms are plain tensor functions, they run on meta tensors too:
the loaders map *shapes* from safetensors headers alone, before any weight is
read, and compare them with a model built on the meta device. A transform that
raises (a plugin's bug, or a tensor of an unexpected shape) becomes a
:class:`~portagpt.errors.CheckpointError` naming the transform and the tensors.

Building blocks: :func:`identity` (same name on both sides), :func:`rename`,
:func:`drop`, and the transforms :func:`transpose`, :func:`split` (equal
parts), :func:`sized_split` (parts of given sizes: a fused q/k/v with fewer
key/value heads, a fused gate/up), :func:`stack` (one tensor per expert).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import torch

from ..errors import CheckpointError

TensorFn = Callable[[Sequence[torch.Tensor]], Sequence[torch.Tensor]]


@dataclass(frozen=True)
class Transform:
    """A named pair of inverse tensor functions (HF group -> native group and back)."""

    name: str
    to_native: TensorFn
    to_hf: TensorFn


def _identity(ts: Sequence[torch.Tensor]) -> Sequence[torch.Tensor]:
    return list(ts)


IDENTITY = Transform("identity", _identity, _identity)


def transpose() -> Transform:
    """Swap the two dims of a 2-D weight (Conv1D-style ``(in, out)`` checkpoints)."""
    return Transform("transpose", lambda ts: [ts[0].t()], lambda ts: [ts[0].t()])


def split(parts: int, dim: int = 0, then: Transform = IDENTITY) -> Transform:
    """One HF tensor <-> ``parts`` equal native chunks along ``dim`` (after ``then``)."""

    def fwd(ts: Sequence[torch.Tensor]) -> Sequence[torch.Tensor]:
        (t,) = then.to_native(ts)
        return list(torch.chunk(t, parts, dim=dim))

    def inv(ts: Sequence[torch.Tensor]) -> Sequence[torch.Tensor]:
        return then.to_hf([torch.cat(list(ts), dim=dim)])

    return Transform(f"split{parts}" + ("" if then is IDENTITY else f"+{then.name}"), fwd, inv)


def sized_split(sizes: Sequence[int], dim: int = 0, then: Transform = IDENTITY) -> Transform:
    """One HF tensor <-> native parts of ``sizes`` along ``dim`` (after ``then``).

    For fused projections whose parts differ in size, e.g. a fused q/k/v with
    grouped-query heads: ``sized_split([H * hd, Hkv * hd, Hkv * hd])``.
    """
    sizes = [int(n) for n in sizes]

    def fwd(ts: Sequence[torch.Tensor]) -> Sequence[torch.Tensor]:
        (t,) = then.to_native(ts)
        if t.shape[dim] != sum(sizes):
            raise ValueError(f"dim {dim} has {t.shape[dim]} rows, the parts need {sum(sizes)}")
        return list(torch.split(t, sizes, dim=dim))

    def inv(ts: Sequence[torch.Tensor]) -> Sequence[torch.Tensor]:
        return then.to_hf([torch.cat(list(ts), dim=dim)])

    label = "+".join(str(n) for n in sizes)
    return Transform(f"split[{label}]" + ("" if then is IDENTITY else f"+{then.name}"), fwd, inv)


def stack(dim: int = 0) -> Transform:
    """Several HF tensors (one per expert) <-> one native tensor stacked along ``dim``."""
    return Transform(
        "stack",
        lambda ts: [torch.stack(list(ts), dim=dim)],
        lambda ts: list(torch.unbind(ts[0], dim=dim)),
    )


def _compile(pattern: str) -> re.Pattern[str]:
    parts = [re.escape(p).replace(r"\*", ".*") for p in pattern.split("{}")]  # "*": any text
    return re.compile(r"(\d+)".join(parts) + r"\Z")


def _fill(pattern: str, idx: Sequence[int]) -> str:
    return pattern.format(*idx)


@dataclass(frozen=True)
class Rule:
    """HF names ``hf`` <-> native names ``native`` (empty: dropped on import, not exported)."""

    hf: tuple[str, ...]
    native: tuple[str, ...]
    transform: Transform = IDENTITY
    optional: bool = False  # the HF side may be absent (e.g. a tied head written anyway)

    def __post_init__(self) -> None:
        counts = {p.count("{}") for p in (*self.hf, *self.native)}
        if len(counts) > 1:
            raise ValueError(f"Rule {self.hf} <-> {self.native}: every pattern needs the same number of '{{}}'.")


def rename(hf: str, native: str, transform: Transform = IDENTITY, optional: bool = False) -> Rule:
    return Rule((hf,), (native,), transform, optional)


def identity(*names: str, optional: bool = False) -> list[Rule]:
    """One rule per name, the same on both sides (modules named like the checkpoint)."""
    return [Rule((n,), (n,), IDENTITY, optional) for n in names]


def drop(hf: str) -> Rule:
    """HF tensors read from no checkpoint slot (e.g. ``"vision_tower.*"``: ``*`` is any text)."""
    return Rule((hf,), (), IDENTITY, True)


def _apply(
    tf: Transform, to_native: bool, ins: list[torch.Tensor], src: Sequence[str], dst: Sequence[str]
) -> Sequence[torch.Tensor]:
    """The transform on ``ins``; a failure (or a wrong count) as a CheckpointError naming them."""
    fn, name, count = (tf.to_native if to_native else tf.to_hf), repr(tf.name), len(dst)
    shapes = ", ".join(f"{n} {tuple(t.shape)}" for n, t in zip(src, ins, strict=False))
    try:
        outs = list(fn(ins))
    except Exception as exc:  # a plugin's transform: any error, reported with the tensors
        raise CheckpointError(
            f"The weight-map transform {name} failed on {shapes} (to make {', '.join(dst)}): "
            f"{type(exc).__name__}: {exc}. The checkpoint's tensors do not have the shapes this "
            "family's weight map expects, or the transform has a bug."
        ) from exc
    if len(outs) != count:
        raise CheckpointError(
            f"The weight-map transform {name} made {len(outs)} tensor(s) from {shapes}, but its "
            f"rule names {count}: {', '.join(dst)}. Fix the rule or the transform."
        )
    return outs


@dataclass
class Step:
    """One concrete application of a rule: these HF names become those native names."""

    rule: Rule
    hf: tuple[str, ...]
    native: tuple[str, ...]

    def to_native(self, hf_tensors: list[torch.Tensor]) -> Sequence[torch.Tensor]:
        """The native tensors of this step (errors name the tensors, see :func:`_apply`)."""
        return _apply(self.rule.transform, True, hf_tensors, self.hf, self.native)

    def to_hf(self, native_tensors: list[torch.Tensor]) -> Sequence[torch.Tensor]:
        return _apply(self.rule.transform, False, native_tensors, self.native, self.hf)


@dataclass
class Plan:
    """The outcome of matching a set of names against a map, before any tensor is touched."""

    steps: list[Step] = field(default_factory=list)
    unmatched: list[str] = field(default_factory=list)  # names no rule claims
    incomplete: list[tuple[str, list[str]]] = field(default_factory=list)  # (name, missing group members)

    def produced(self) -> list[str]:
        return [n for s in self.steps for n in s.native]


class WeightMap:
    """An ordered list of rules; the first rule whose first pattern matches a name claims it."""

    def __init__(self, rules: Iterable[Rule]) -> None:
        self.rules = list(rules)
        self._hf = [[_compile(p) for p in r.hf] for r in self.rules]
        self._native = [[_compile(p) for p in r.native] for r in self.rules]

    def __repr__(self) -> str:
        return f"WeightMap({len(self.rules)} rules)"

    # ---- planning ------------------------------------------------------------
    def _plan(self, names: Iterable[str], to_native: bool) -> Plan:
        names = list(names)
        pool = set(names)
        plan = Plan()
        claimed: set[str] = set()
        src_side = self._hf if to_native else self._native
        for name in names:
            if name in claimed:
                continue
            for rule, pats in zip(self.rules, src_side, strict=False):
                if not pats:
                    continue  # a drop rule has no native side
                m = next((p.match(name) for p in pats if p.match(name)), None)
                if m is None:
                    continue
                idx = tuple(int(g) for g in m.groups())
                src_patterns = rule.hf if to_native else rule.native
                group = tuple(_fill(p, idx) for p in src_patterns)
                if len(src_patterns) == 1:
                    group = (name,)  # the name itself (a "*" pattern cannot be filled in)
                missing = [g for g in group if g not in pool]
                if missing:
                    plan.incomplete.append((name, missing))
                    claimed.update(g for g in group if g in pool)
                    break
                claimed.update(group)
                dst_patterns = rule.native if to_native else rule.hf
                dst = tuple(_fill(p, idx) for p in dst_patterns)
                plan.steps.append(Step(rule, group if to_native else dst, dst if to_native else group))
                break
            else:
                plan.unmatched.append(name)
        return plan

    def plan_to_native(self, hf_names: Iterable[str]) -> Plan:
        """Match HF names; steps say which native tensors each HF group becomes."""
        return self._plan(hf_names, to_native=True)

    def plan_to_hf(self, native_names: Iterable[str]) -> Plan:
        """Match native names (for export); dropped HF tensors are not recreated."""
        return self._plan(native_names, to_native=False)

    # ---- conversion ----------------------------------------------------------
    @staticmethod
    def run_to_native(plan: Plan, get: Callable[[str], torch.Tensor]) -> Iterator[tuple[str, torch.Tensor]]:
        """Yield (native name, tensor) for each step, fetching HF tensors lazily with ``get``."""
        for step in plan.steps:
            if not step.native:
                continue
            outs = step.to_native([get(n) for n in step.hf])
            yield from zip(step.native, outs, strict=True)

    @staticmethod
    def run_to_hf(plan: Plan, get: Callable[[str], torch.Tensor]) -> Iterator[tuple[str, torch.Tensor]]:
        """Yield (HF name, tensor) for each step, fetching native tensors lazily with ``get``."""
        for step in plan.steps:
            outs = step.to_hf([get(n) for n in step.native])
            yield from zip(step.hf, outs, strict=True)

    def to_native(self, hf_state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], Plan]:
        plan = self.plan_to_native(hf_state)
        return dict(self.run_to_native(plan, hf_state.__getitem__)), plan

    def to_hf(self, native_state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], Plan]:
        plan = self.plan_to_hf(native_state)
        return dict(self.run_to_hf(plan, native_state.__getitem__)), plan

"""Value checks written as tables: ``{key: Rule(flag, need, test, fix)}``.

A :class:`Rule` names the flag that sets a value, what the value must be, the
test, and the fix; :func:`check_rules` raises one
:class:`~portagpt.errors.UsageError` for the first value its rule rejects::

    --epochs must be a whole number >= 1, got 0; train for at least one epoch, e.g. --epochs 10.

The tables: :data:`portagpt.core.train.CONFIG_RULES` (the trainer's
hyper-parameters) and :data:`portagpt.core.run_settings.SETTING_RULES` (the
data settings of ``portagpt train``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..errors import UsageError


@dataclass(frozen=True)
class Rule:
    """One checked value: the flag that sets it, what it must be, the test, and the fix."""

    flag: str
    need: str  # "a whole number >= 1"
    ok: Callable[[Any], bool]
    fix: str
    optional: bool = False  # None is allowed (the feature is off)


def whole(low: int) -> Callable[[Any], bool]:
    """A whole number (not a bool) >= ``low``."""
    return lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= low


def finite(low: float, *, strict: bool) -> Callable[[Any], bool]:
    """A finite number above ``low`` (``strict``) or at least ``low``."""

    def ok(v: Any) -> bool:
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
            return False
        return v > low if strict else v >= low

    return ok


def one_of(*choices: Any) -> Callable[[Any], bool]:
    return lambda v: v in choices


def check_rules(values: dict[str, Any], rules: dict[str, Rule]) -> None:
    """Raise UsageError for the first value of ``values`` its rule rejects."""
    for key, rule in rules.items():
        value = values.get(key)
        if value is None and rule.optional:
            continue
        if value is None or not rule.ok(value):
            raise UsageError(f"{rule.flag} must be {rule.need}, got {value!r}; {rule.fix}")

"""``FamilyConformance``: subclass it in a plugin's own tests to get every check as a test method.

::

    from portagpt.smoke_tests import FamilyConformance

    class TestMistralConformance(FamilyConformance):
        family = "mistral"          # a registered name, or a Family record

One test method per check (``test_meta_build``, ..., ``test_transformers_parity``);
a check that does not apply (no transformers class, transformers missing) is
skipped, a failing one fails with the check's detail and the plugin and
distribution that supplied the family. The checks of one class share one
scratch folder and the same configs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import pytest

from . import CHECK_NAMES
from .runner import SmokeContext, resolve_family, run_check


def outcome(ctx: SmokeContext, header: str, name: str) -> None:
    """Run check ``name`` in pytest terms: pass, ``pytest.skip`` or ``pytest.fail`` with the detail."""
    from .checks import CHECKS

    result = run_check(name, CHECKS[name], ctx)
    if result.skipped:
        pytest.skip(result.detail)
    if not result.passed:
        pytest.fail(f"{header}: check {name!r} failed: {result.detail}", pytrace=False)


def _test_method(name: str) -> Callable[..., None]:
    def test(self: FamilyConformance) -> None:
        ctx, header = type(self).portagpt_context()
        outcome(ctx, header, name)

    test.__name__ = f"test_{name}"
    test.__doc__ = f"Conformance check {name!r} of portagpt.smoke_tests."
    return test


class FamilyConformance:
    """Base class of a family's conformance tests; set ``family`` (name or Family).

    The checks of one class share a :class:`SmokeContext`, made on first use and
    closed by ``teardown_class`` (call ``super().teardown_class()`` if you override it).
    """

    family: ClassVar[Any] = None
    registry: ClassVar[Any] = None  # a portagpt Registry; None = the process-wide one

    @classmethod
    def portagpt_context(cls) -> tuple[SmokeContext, str]:
        """(context, report header) of this class, made on first use."""
        state = cls.__dict__.get("_portagpt_state")
        if state is None:
            if cls.family is None:
                raise TypeError(f"{cls.__name__} must set `family = \"name\"` (or a Family record).")
            fam, plugin = resolve_family(cls.family, cls.registry)
            src = f"{fam.distribution} {fam.version}".strip() or "?"
            state = (SmokeContext(fam), f"family {fam.name!r} (plugin {plugin!r}, distribution {src})")
            cls._portagpt_state = state
        return state

    @classmethod
    def teardown_class(cls) -> None:
        state = cls.__dict__.get("_portagpt_state")
        if state is not None:
            state[0].close()
            del cls._portagpt_state


for _name in CHECK_NAMES:
    setattr(FamilyConformance, f"test_{_name}", _test_method(_name))
del _name

"""The conformance runner: every check, on one family's tiny ``smoke_config``, with a report.

:func:`run_smoke` resolves a family (a registered name or a :class:`Family`
record), builds a :class:`SmokeContext` (shared configs, token ids, a scratch
folder) and runs each check of :data:`~portagpt.smoke_tests.checks.CHECKS`
in order. A check returns a one-line detail (pass), raises :class:`CheckFailed`
(fail), raises :class:`Skip` (does not apply, e.g. no transformers class), or
raises anything else -- which is a failure too, reported with the exception
and the line of the family's code that raised it, so one broken check never
hides the others.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..adapters.family import Family
from ..errors import UnknownFamilyError, UsageError
from .checks import CHECKS
from .context import (  # noqa: F401 - the runner's public names, defined one layer down
    MIN_SEQ,
    SEED,
    SHORT_WINDOW,
    CheckFailed,
    CheckResult,
    Skip,
    SmokeContext,
    SmokeReport,
    long_config,
    run_check,
    windows_of,
)


def resolve_family(family: str | Family, registry: Any = None) -> tuple[Family, str]:
    """The Family record and the plugin name that supplied it."""
    from ..registry import get_registry

    reg = registry if registry is not None else get_registry()
    if isinstance(family, Family):
        return family, reg.plugin_of.get(family.name, "(given directly)")
    try:
        fam = reg.get(family)
    except UnknownFamilyError as exc:
        related = [e for e in reg.errors if repr(family) in e or f" {family} " in e] or reg.errors
        if related:
            raise UnknownFamilyError(
                f"{exc} Plugin problems that may explain it: " + " | ".join(related)
            ) from None
        raise
    return fam, reg.plugin_of.get(fam.name, "?")


def run_smoke(
    family: str | Family,
    *,
    checks: Sequence[str] | None = None,
    registry: Any = None,
    workdir: str | Path | None = None,
    on_result: Callable[[CheckResult], None] | None = None,
) -> SmokeReport:
    """Run the conformance checks (all, or those named) on ``family``; never raises for a check.

    Raises :class:`~portagpt.errors.UnknownFamilyError` for an unknown family name,
    or a :class:`~portagpt.errors.UsageError` for an unknown check name.
    """
    fam, plugin = resolve_family(family, registry)
    names = list(checks) if checks else list(CHECKS)
    unknown = [n for n in names if n not in CHECKS]
    if unknown:
        raise UsageError(
            f"Unknown smoke check(s) {', '.join(map(repr, unknown))}. Known: {', '.join(CHECKS)}."
        )
    report = SmokeReport(fam.name, fam.distribution, fam.version, plugin)
    ctx = SmokeContext(fam, workdir)
    try:
        for name in names:
            result = run_check(name, CHECKS[name], ctx)
            report.results.append(result)
            if on_result is not None:
                on_result(result)
    finally:
        ctx.close()
    return report

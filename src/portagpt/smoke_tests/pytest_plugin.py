"""pytest plugin (``pytest11`` entry point ``portagpt``): ``--portagpt-family NAME``.

With ``--portagpt-family mistral`` (repeatable, or ``a,b``) pytest collects one
test per conformance check for each named family, as
``portagpt-smoke[mistral]::meta_build`` and so on, next to whatever else it
collects (``-k portagpt-smoke`` runs only those). ``--portagpt-plugin
MODULE_OR_FILE`` registers an extra family plugin first (a module name, or a
path to a ``.py`` file), for plugins that are not installed.

pytest loads this module in every run in an environment where portagpt is
installed, so without the option it does nothing, and it never imports torch
at import time.
"""

from __future__ import annotations

from typing import Any

import pytest

FAMILY_OPT = "--portagpt-family"
PLUGIN_OPT = "--portagpt-plugin"
_CONTEXTS = pytest.StashKey[dict]()
_REGISTRY = pytest.StashKey[Any]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("portagpt", "portagpt family conformance kit")
    group.addoption(
        FAMILY_OPT,
        action="append",
        default=[],
        metavar="NAME",
        help="collect the portagpt conformance checks for family NAME (repeatable, or a,b,c)",
    )
    group.addoption(
        PLUGIN_OPT,
        action="append",
        default=[],
        metavar="MODULE",
        help="register an extra portagpt family plugin (module name or .py path) before collecting",
    )


def _families(config: pytest.Config) -> list[str]:
    names: list[str] = []
    for value in config.getoption(FAMILY_OPT) or []:
        names += [n.strip() for n in value.split(",") if n.strip() and n.strip() not in names]
    return names


def _registry(config: pytest.Config) -> Any:
    if _REGISTRY not in config.stash:
        from ..registry import build_registry, get_registry
        from .plugins import load_plugin_modules

        extras = load_plugin_modules(config.getoption(PLUGIN_OPT) or [])
        config.stash[_REGISTRY] = build_registry(extra_plugins=extras) if extras else get_registry()
    return config.stash[_REGISTRY]


class SmokeItem(pytest.Item):
    """One conformance check of one family."""

    def __init__(self, *, family: str, check: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.family = family
        self.check = check

    def _context(self) -> tuple[Any, str]:
        from .runner import SmokeContext, resolve_family

        contexts = self.config.stash.setdefault(_CONTEXTS, {})
        if self.family not in contexts:
            fam, plugin = resolve_family(self.family, _registry(self.config))
            src = f"{fam.distribution} {fam.version}".strip() or "?"
            header = f"family {fam.name!r} (plugin {plugin!r}, distribution {src})"
            contexts[self.family] = (SmokeContext(fam), header)
        return contexts[self.family]

    def runtest(self) -> None:
        from .conformance import outcome

        ctx, header = self._context()
        outcome(ctx, header, self.check)

    def reportinfo(self) -> tuple[Any, int | None, str]:
        return self.path, None, f"portagpt-smoke[{self.family}]::{self.check}"


class FamilyCollector(pytest.Collector):
    """The checks of one family."""

    def __init__(self, *, family: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.family = family

    def collect(self) -> list[pytest.Item]:
        from . import CHECK_NAMES

        return [SmokeItem.from_parent(self, name=c, family=self.family, check=c) for c in CHECK_NAMES]


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(
    session: pytest.Session, config: pytest.Config, items: list[pytest.Item]
) -> None:
    families = _families(config)
    if not families:
        return
    from ..errors import PortagptError
    from .runner import resolve_family

    for fam in families:
        try:
            resolve_family(fam, _registry(config))
        except PortagptError as exc:
            raise pytest.UsageError(f"{FAMILY_OPT} {fam}: {exc}") from None
    for fam in families:
        name = f"portagpt-smoke[{fam}]"
        collector = FamilyCollector.from_parent(session, name=name, nodeid=name, family=fam)
        found = collector.collect()
        # report them as collected, as if they came from a file (counts, --collect-only, xdist)
        config.hook.pytest_collectreport(
            report=pytest.CollectReport(collector.nodeid, "passed", None, list(found))
        )
        for item in found:
            config.hook.pytest_itemcollected(item=item)
        items.extend(found)


def pytest_unconfigure(config: pytest.Config) -> None:
    for ctx, _ in config.stash.get(_CONTEXTS, {}).values():
        ctx.close()

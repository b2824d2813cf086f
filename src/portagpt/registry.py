"""The family registry: a pluggy ``PluginManager("portagpt")`` that finds every family.

Built-in families are plugins registered exactly like third-party ones; the
only difference is where the module comes from. Third-party packages are
found through the ``portagpt`` entry-point group, unless
``PORTAGPT_DISABLE_PLUGIN_AUTOLOAD=1``; ``PORTAGPT_PLUGINS=a,b`` allow-lists
entry points by name.

The host owns validation: it calls each plugin's hook on its own, so one
plugin that raises (anything, ``sys.exit`` included), fails to import, or
registers a malformed family, is reported (naming the plugin and its
distribution) while every other family keeps working. On a clash, a family
name or ``model_type`` already registered, the first registration stays
(built-in families are registered first, so they always survive) and the
plugin that lost is reported.
"""

from __future__ import annotations

import importlib
import importlib.metadata as md
import importlib.util
import os
import pkgutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pluggy

from . import hookspecs
from .adapters.family import Family
from .errors import UnknownFamilyError

ENTRY_POINT_GROUP = "portagpt"
AUTOLOAD_ENV = "PORTAGPT_DISABLE_PLUGIN_AUTOLOAD"
ALLOW_ENV = "PORTAGPT_PLUGINS"


@dataclass
class Registry:
    """The families found, where each came from, and what went wrong."""

    pm: pluggy.PluginManager
    families: dict[str, Family] = field(default_factory=dict)
    model_types: dict[str, str] = field(default_factory=dict)  # model_type -> family name
    errors: list[str] = field(default_factory=list)
    plugin_of: dict[str, str] = field(default_factory=dict)  # family name -> plugin name

    def get(self, name: str) -> Family:
        try:
            return self.families[name]
        except KeyError:
            raise UnknownFamilyError(
                f"Unknown family {name!r}. Known: {', '.join(sorted(self.families)) or '(none)'}. "
                "To add one, install a package that registers it through the 'portagpt' entry-point "
                "group (see the plugin author's guide in the README)."
            ) from None

    def for_model_type(self, model_type: str) -> Family:
        try:
            return self.families[self.model_types[model_type]]
        except KeyError:
            known = ", ".join(sorted(self.model_types)) or "(none)"
            raise UnknownFamilyError(
                f"No family serves config.json model_type {model_type!r}. Known model types: {known}. "
                "Pass --family NAME if the checkpoint is of a known family under another name, or "
                "install a plugin package that adds this family (see the plugin author's guide)."
            ) from None

    # ---- registration ----------------------------------------------------
    def _owner(self, name: str) -> str:
        fam = self.families[name]
        return f"plugin {self.plugin_of.get(name, '?')!r} (distribution {fam.distribution or '?'})"

    def _add(self, family: Any, plugin_name: str, dist: str, version: str) -> None:
        where = f"plugin {plugin_name!r} (distribution {dist} {version})".replace(" )", ")")
        if not isinstance(family, Family):
            self.errors.append(f"{where} registered {family!r}, which is not a portagpt.adapters.Family.")
            return
        problems = family.problems()
        if problems:
            self.errors.append(f"{where} registered family {family.name!r} with problems: " + "; ".join(problems))
            return
        family = family.with_source(dist, version)
        if family.name in self.families:
            self.errors.append(
                f"{where} registered family {family.name!r}, a name {self._owner(family.name)} "
                "registered first; the first registration is kept and this one ignored. Rename the "
                "plugin's family, or uninstall one of the two."
            )
            return
        self.families[family.name] = family
        self.plugin_of[family.name] = plugin_name
        for mt in family.hf_model_types:
            if mt in self.model_types:
                self.errors.append(
                    f"{where} registered family {family.name!r} for model_type {mt!r}, which "
                    f"{self.model_types[mt]!r} from {self._owner(self.model_types[mt])} serves "
                    f"already; config.json files of that model_type keep going to "
                    f"{self.model_types[mt]!r} (pass --family {family.name} to use the other)."
                )
                continue
            self.model_types[mt] = family.name

    def collect(self, dists: dict[str, tuple[str, str]]) -> None:
        """Call every plugin's hook on its own, recording failures per plugin."""
        impls = self.pm.hook.portagpt_register_families.get_hookimpls()
        # built-ins first (a stable sort keeps registration order otherwise), so they win clashes
        for impl in sorted(impls, key=lambda i: dists.get(i.plugin_name, ("?", ""))[0] != "portagpt"):
            name = impl.plugin_name
            dist, version = dists.get(name, ("?", ""))

            def register(family: Any, _n: str = name, _d: str = dist, _v: str = version) -> None:
                self._add(family, _n, _d, _v)

            try:
                impl.function(register=register)
            except KeyboardInterrupt:
                raise
            except BaseException as exc:  # a plugin's bug, sys.exit included, must not take the others down
                self.errors.append(
                    f"plugin {name!r} (distribution {dist}) raised in portagpt_register_families: "
                    f"{describe_exception(exc)}"
                )


def describe_exception(exc: BaseException) -> str:
    """``Type: message`` for a report line (``sys.exit(code)`` spelled as such)."""
    if isinstance(exc, SystemExit):
        return f"it called sys.exit({exc.code!r})"
    return f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"


def builtin_families() -> list[str]:
    """The family folders shipped inside portagpt (each has a ``plugin`` module)."""
    from . import families

    return sorted(
        m.name
        for m in pkgutil.iter_modules(families.__path__)
        if m.ispkg and importlib.util.find_spec(f"portagpt.families.{m.name}.plugin") is not None
    )


def _portagpt_version() -> str:
    try:
        return md.version("portagpt")
    except md.PackageNotFoundError:
        return "dev"


def build_registry(
    autoload: bool | None = None, extra_plugins: Sequence[tuple[object, str, str]] = ()
) -> Registry:
    """A fresh registry: built-in families, entry-point plugins (unless disabled), then extras.

    ``extra_plugins`` are ``(plugin object or module, plugin name, distribution label)``
    triples registered as if an entry point had supplied them (``portagpt smoke --plugin``,
    tests of misbehaving plugins).
    """
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    reg = Registry(pm)
    dists: dict[str, tuple[str, str]] = {}
    version = _portagpt_version()
    for fam in builtin_families():
        module = importlib.import_module(f"portagpt.families.{fam}.plugin")
        pm.register(module, name=f"portagpt.{fam}")
        dists[f"portagpt.{fam}"] = ("portagpt", version)
    if autoload is None:
        autoload = os.environ.get(AUTOLOAD_ENV, "") in ("", "0", "false", "False")
    if autoload:
        allow = {a.strip() for a in os.environ.get(ALLOW_ENV, "").split(",") if a.strip()}
        for ep in md.entry_points(group=ENTRY_POINT_GROUP):
            if allow and ep.name not in allow:
                continue
            dist = ep.dist.name if ep.dist is not None else "?"
            dver = ep.dist.version if ep.dist is not None else ""
            try:
                plugin = ep.load()
            except KeyboardInterrupt:
                raise
            except BaseException as exc:  # sys.exit at import time too
                reg.errors.append(
                    f"plugin {ep.name!r} (distribution {dist}) failed to import ({ep.value}): "
                    f"{describe_exception(exc)}"
                )
                continue
            if pm.is_registered(plugin):
                continue
            try:
                pm.register(plugin, name=ep.name)
            except KeyboardInterrupt:
                raise
            except BaseException as exc:
                reg.errors.append(
                    f"plugin {ep.name!r} (distribution {dist}) could not be registered: "
                    f"{describe_exception(exc)}"
                )
                continue
            dists[ep.name] = (dist, dver)
    for plugin, name, dist in extra_plugins:
        if pm.is_registered(plugin):
            continue  # installed already (an entry point, a built-in or a repeat): registered once
        try:
            pm.register(plugin, name=name)
        except KeyboardInterrupt:
            raise
        except BaseException as exc:
            reg.errors.append(
                f"plugin {name!r} (distribution {dist}) could not be registered: {describe_exception(exc)}"
            )
            continue
        dists[name] = (dist, "")
    reg.collect(dists)
    return reg


_REGISTRY: Registry | None = None


def get_registry(refresh: bool = False) -> Registry:
    """The process-wide registry, built on first use."""
    global _REGISTRY
    if _REGISTRY is None or refresh:
        _REGISTRY = build_registry()
    return _REGISTRY


def get_family(name: str) -> Family:
    return get_registry().get(name)


def family_for_model_type(model_type: str) -> Family:
    return get_registry().for_model_type(model_type)


def list_families() -> list[str]:
    return sorted(get_registry().families)

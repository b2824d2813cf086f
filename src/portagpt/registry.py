"""The family registry: a pluggy ``PluginManager("portagpt")`` that finds every family.

Built-in families are plugins registered exactly like third-party ones; the
only difference is where the module comes from. Third-party packages are
found through the ``portagpt`` entry-point group, unless
``PORTAGPT_DISABLE_PLUGIN_AUTOLOAD=1``; ``PORTAGPT_PLUGINS=a,b`` allow-lists
entry points by name.

The host owns validation: it calls each plugin's hook on its own, so one
plugin that raises, or registers a malformed family, is reported (naming the
plugin and its distribution) while every other family keeps working. Two
plugins claiming one family name or ``model_type`` is an error naming both;
the name is then refused until one of them is removed.
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
from .errors import PluginError, UnknownFamilyError

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
    clashes: dict[str, list[str]] = field(default_factory=dict)  # name or model_type -> sources
    plugin_of: dict[str, str] = field(default_factory=dict)  # family name -> plugin name

    def get(self, name: str) -> Family:
        if name in self.clashes:
            raise PluginError(
                f"Family {name!r} is claimed by several plugins: {', '.join(self.clashes[name])}. "
                f"Uninstall one of them, or allow-list plugins with {ALLOW_ENV}=..."
            )
        try:
            return self.families[name]
        except KeyError:
            raise UnknownFamilyError(
                f"Unknown family {name!r}. Known: {', '.join(sorted(self.families)) or '(none)'}. "
                "To add one, install a package that registers it through the 'portagpt' entry-point "
                "group (see the plugin author's guide in the README)."
            ) from None

    def for_model_type(self, model_type: str) -> Family:
        if model_type in self.clashes:
            raise PluginError(
                f"model_type {model_type!r} is claimed by several plugins: {', '.join(self.clashes[model_type])}. "
                "Pass --family to choose, or uninstall one of them."
            )
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
    def _source(self, family: Family) -> str:
        return f"{family.name!r} from {family.distribution or '?'}"

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
        if family.name in self.families or family.name in self.clashes:
            prev = self.families.pop(family.name, None)
            srcs = self.clashes.setdefault(family.name, [] if prev is None else [prev.distribution])
            srcs.append(dist)
            self.errors.append(f"family name {family.name!r} is claimed by {' and '.join(srcs)}.")
            return
        for mt in family.hf_model_types:
            if mt in self.model_types or mt in self.clashes:
                other = self.model_types.pop(mt, None)
                srcs = self.clashes.setdefault(mt, [])
                if other is not None:
                    owner = self.families.get(other)  # gone if its own name clashed meanwhile
                    srcs.append(f"{other} ({owner.distribution if owner else '?'})")
                srcs.append(f"{family.name} ({dist})")
                self.errors.append(f"model_type {mt!r} is claimed by {' and '.join(srcs)}.")
        self.families[family.name] = family
        self.plugin_of[family.name] = plugin_name
        for mt in family.hf_model_types:
            if mt not in self.clashes:
                self.model_types[mt] = family.name

    def collect(self, dists: dict[str, tuple[str, str]]) -> None:
        """Call every plugin's hook on its own, recording failures per plugin."""
        for impl in self.pm.hook.portagpt_register_families.get_hookimpls():
            name = impl.plugin_name
            dist, version = dists.get(name, ("?", ""))

            def register(family: Any, _n: str = name, _d: str = dist, _v: str = version) -> None:
                self._add(family, _n, _d, _v)

            try:
                impl.function(register=register)
            except Exception as exc:  # a plugin's own bug must not take the others down
                self.errors.append(
                    f"plugin {name!r} (distribution {dist}) raised in portagpt_register_families: "
                    f"{type(exc).__name__}: {exc}"
                )


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
            except Exception as exc:
                reg.errors.append(
                    f"plugin {ep.name!r} (distribution {dist}) failed to import ({ep.value}): "
                    f"{type(exc).__name__}: {exc}"
                )
                continue
            if pm.is_registered(plugin):
                continue
            try:
                pm.register(plugin, name=ep.name)
            except Exception as exc:
                reg.errors.append(f"plugin {ep.name!r} (distribution {dist}) could not be registered: {exc}")
                continue
            dists[ep.name] = (dist, dver)
    for plugin, name, dist in extra_plugins:
        if pm.is_registered(plugin):
            continue  # installed already (an entry point, a built-in or a repeat): registered once
        try:
            pm.register(plugin, name=name)
        except Exception as exc:
            reg.errors.append(f"plugin {name!r} (distribution {dist}) could not be registered: {exc}")
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

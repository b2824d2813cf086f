"""Extra family plugins named on the command line (``portagpt smoke --plugin``, ``--portagpt-plugin``).

A spec is a module name (``my_pkg.plugin``), ``module:attribute`` (an object
holding the hook), or a path to a ``.py`` file. Each becomes a
``(plugin, name, distribution)`` triple for
:func:`portagpt.registry.build_registry`; the distribution reads
``local:<spec>`` so reports say where the family came from. A plugin that
cannot be imported is a :class:`~portagpt.errors.PluginError` naming the spec.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..errors import PluginError


def load_plugin(spec: str) -> tuple[Any, str, str]:
    """Import one plugin spec; returns ``(plugin, plugin name, distribution label)``."""
    dist = f"local:{spec}"
    try:
        if spec.endswith(".py") or Path(spec).is_file():
            path = Path(spec)
            if not path.is_file():
                raise FileNotFoundError(f"no file {str(path)!r}")
            name = path.stem
            loader_spec = importlib.util.spec_from_file_location(f"portagpt_local_plugin_{name}", path)
            if loader_spec is None or loader_spec.loader is None:
                raise ImportError(f"{str(path)!r} is not an importable Python file")
            plugin = importlib.util.module_from_spec(loader_spec)
            loader_spec.loader.exec_module(plugin)
            return plugin, name, dist
        module_name, _, attr = spec.partition(":")
        plugin = importlib.import_module(module_name)
        if attr:
            plugin = getattr(plugin, attr)
        return plugin, spec, dist
    except (Exception, SystemExit) as exc:  # a plugin that calls sys.exit at import is a bad plugin
        raise PluginError(
            f"Cannot load the plugin {spec!r}: {type(exc).__name__}: {exc}. Pass an importable module "
            "name (my_pkg.plugin), module:attribute, or the path of a .py file that defines "
            "portagpt_register_families."
        ) from None


def load_plugin_modules(specs: Iterable[str]) -> list[tuple[Any, str, str]]:
    return [load_plugin(s) for s in specs]

"""Extra family plugins named on the command line (``portagpt smoke --plugin``, ``--portagpt-plugin``).

A spec is a module name (``my_pkg.plugin``), ``module:attribute`` (an object
holding the hook), or a path to a ``.py`` file. A file inside a package (its
folder has an ``__init__.py``, as in the documented plugin layout
``src/my_pkg/plugin.py``) is imported as part of that package, by its dotted
name with the package's parent folder on ``sys.path``, so its relative
imports work; a lone file is imported on its own. Each becomes a
``(plugin, name, distribution)`` triple for
:func:`portagpt.registry.build_registry`; the distribution reads
``local:<spec>`` so reports say where the family came from. A plugin that
cannot be imported is a :class:`~portagpt.errors.PluginError` naming the spec.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
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
            return _import_file(path.resolve()), path.stem, dist
        module_name, _, attr = spec.partition(":")
        plugin = importlib.import_module(module_name)
        if attr:
            plugin = getattr(plugin, attr)
        return plugin, spec, dist
    except PluginError:
        raise
    except (Exception, SystemExit) as exc:  # a plugin that calls sys.exit at import is a bad plugin
        raise PluginError(
            f"Cannot load the plugin {spec!r}: {type(exc).__name__}: {exc}. Pass an importable module "
            "name (my_pkg.plugin), module:attribute, or the path of a .py file that defines "
            "portagpt_register_families."
        ) from None


def package_module_name(path: Path) -> tuple[Path, str] | None:
    """For a file inside a package: (the folder holding the top package, the dotted module name)."""
    parts = [path.stem] if path.name != "__init__.py" else []
    folder = path.parent
    if not (folder / "__init__.py").is_file():
        return None
    while (folder / "__init__.py").is_file():
        parts.insert(0, folder.name)
        folder = folder.parent
    return folder, ".".join(parts)


def _import_file(path: Path) -> Any:
    found = package_module_name(path)
    if found is None:  # a lone file: import it on its own
        loader_spec = importlib.util.spec_from_file_location(f"portagpt_local_plugin_{path.stem}", path)
        if loader_spec is None or loader_spec.loader is None:
            raise ImportError(f"{str(path)!r} is not an importable Python file")
        plugin = importlib.util.module_from_spec(loader_spec)
        sys.modules[loader_spec.name] = plugin  # dataclasses (and pickling) look modules up here
        try:
            loader_spec.loader.exec_module(plugin)
        except BaseException:
            del sys.modules[loader_spec.name]
            raise
        return plugin
    root, dotted = found
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    plugin = importlib.import_module(dotted)
    origin = Path(getattr(plugin, "__file__", "") or "").resolve()
    if origin != path:
        raise PluginError(
            f"The plugin file {str(path)!r} is the module {dotted!r} of its package, but that "
            f"module is already imported from {str(origin)!r} (another copy, e.g. an installed "
            "one). Pass one copy only: uninstall the other, or pass the module name "
            f"({dotted}) to check the copy Python imports."
        )
    return plugin


def load_plugin_modules(specs: Iterable[str]) -> list[tuple[Any, str, str]]:
    return [load_plugin(s) for s in specs]

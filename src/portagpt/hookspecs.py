"""The whole plugin contract: one pluggy hook.

A plugin is any module or object with a function decorated ``@hookimpl`` named
``portagpt_register_families``; it receives ``register`` and calls it once per
family it provides::

    from portagpt import hookimpl
    from portagpt.adapters import Family

    @hookimpl
    def portagpt_register_families(register):
        register(Family(name="mistral", ...))

Third-party packages expose such a module through the ``portagpt`` entry-point
group (``[project.entry-points.portagpt] mistral = "my_pkg.plugin"``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pluggy

PROJECT = "portagpt"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def portagpt_register_families(register: Callable[[Any], None]) -> None:
    """Call ``register(family)`` for each :class:`portagpt.adapters.Family` this plugin provides."""

"""Checkpoint tensor names and building on the meta device: what detection and planning share.

:func:`strip_prefixes` drops the wrappers ``torch.compile`` (``_orig_mod.``)
and DDP (``module.``) put in names; :func:`name_patterns` replaces layer and
expert indices by ``{}``; :func:`empty_init` (from :mod:`portagpt.core.meta`)
builds a model on the meta device without running its initialisers. The bottom of the load path: used
by family detection (``configs.py``) and the planner (``pipeline.py``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from ..core.checkpoint_format import WRAPPER_PREFIXES, strip_wrapper_prefixes
from ..core.meta import empty_init  # noqa: F401  (re-exported: the loaders build on meta with it)

STRIP_PREFIXES = WRAPPER_PREFIXES
_INDEX = re.compile(r"\.\d+(?=\.|$)")


def strip_prefixes(names: list[str]) -> dict[str, str]:
    """Checkpoint name -> name without ``_orig_mod.``/``module.`` wrappers (torch.compile, DDP)."""
    return {n: strip_wrapper_prefixes(n) for n in names}


def name_patterns(names: Iterable[str]) -> set[str]:
    """Names with their layer/expert indices replaced by ``{}``."""
    return {_INDEX.sub(".{}", n) for n in names}


"""Checkpoint tensor names and building on the meta device: what detection and planning share.

:func:`strip_prefixes` drops the wrappers ``torch.compile`` (``_orig_mod.``)
and DDP (``module.``) put in names; :func:`name_patterns` replaces layer and
expert indices by ``{}``; :func:`empty_init` builds a model on the meta
device without running its initialisers. The bottom of the load path: used
by family detection (``configs.py``) and the planner (``pipeline.py``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import torch

from ..core.checkpoint_format import WRAPPER_PREFIXES, strip_wrapper_prefixes

STRIP_PREFIXES = WRAPPER_PREFIXES
_INDEX = re.compile(r"\.\d+(?=\.|$)")


def strip_prefixes(names: list[str]) -> dict[str, str]:
    """Checkpoint name -> name without ``_orig_mod.``/``module.`` wrappers (torch.compile, DDP)."""
    return {n: strip_wrapper_prefixes(n) for n in names}


def name_patterns(names: Iterable[str]) -> set[str]:
    """Names with their layer/expert indices replaced by ``{}``."""
    return {_INDEX.sub(".{}", n) for n in names}


@contextmanager
def empty_init() -> Iterator[None]:
    """Build on the meta device with ``torch.nn.init``'s fill functions as no-ops.

    Values come from the checkpoint, so initialising is wasted work; on meta it
    is also slow the first time (running ``normal_`` on meta imports
    torch._dynamo, about 2 s).
    """
    init = torch.nn.init
    names = [n for n in dir(init) if n.endswith("_") and not n.startswith("_")]
    saved = {n: getattr(init, n) for n in names}
    for n in names:
        setattr(init, n, lambda tensor, *args, **kwargs: tensor)
    try:
        with torch.device("meta"):
            yield
    finally:
        for n, fn in saved.items():
            setattr(init, n, fn)

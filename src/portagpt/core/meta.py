"""Building a model on the meta device without running its initialisers.

Shapes are all a planner needs (names, sizes, dtypes), and the values come
from a checkpoint anyway. Running ``torch.nn.init``'s fills on meta tensors is
not free: the first one imports ``torch._dynamo`` and its dependencies (sympy,
mpmath: about 800 modules, ~2 s and ~75 MiB of resident memory on this
machine), a cost a load would otherwise pay before reading a byte.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def empty_init() -> Iterator[None]:
    """Build on the meta device with ``torch.nn.init``'s fill functions as no-ops."""
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

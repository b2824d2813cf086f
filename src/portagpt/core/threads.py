"""How many CPU threads small operations run on.

torch runs many CPU ops on all its threads (``torch.get_num_threads()``). For
an op of a few microseconds of work -- a decode step's attention over a short
context, its RoPE angles, every op of a tiny model -- handing work to a second
thread costs more than it saves, and on a busy machine it is far worse: the op
waits until the other thread is scheduled again. Measured on 2 shared CPU
cores (``bench/generate_speed.py``), a 270M-parameter decode step spent most of
its time in such waits.

:class:`Threads` sets the count for one block and restores it after;
:func:`one_thread_if_small` picks one thread for ops below ``SMALL_OP_ELEMENTS``
elements of work. Both do nothing while ``torch.compile`` traces (a compiled
graph runs its own kernels).
"""

from __future__ import annotations

import torch

SMALL_OP_ELEMENTS = 1 << 18  # ~1 MiB of fp32: microseconds of work on one core


class Threads:
    """Run the block on ``n`` torch threads (None: leave the count), restoring it after."""

    __slots__ = ("before", "n")

    def __init__(self, n: int | None) -> None:
        self.n = n
        self.before = 0

    def __enter__(self) -> None:
        if self.n is not None:
            self.before = torch.get_num_threads()
            if self.before != self.n:
                torch.set_num_threads(self.n)

    def __exit__(self, *exc: object) -> None:
        if self.n is not None and self.before != self.n:
            torch.set_num_threads(self.before)


_LEAVE = Threads(None)  # stateless when n is None: safe to share


def one_thread_if_small(elements: int) -> Threads:
    """One thread for an op touching fewer than ``SMALL_OP_ELEMENTS`` elements, else unchanged."""
    if elements >= SMALL_OP_ELEMENTS or torch.compiler.is_compiling():
        return _LEAVE
    return Threads(1)

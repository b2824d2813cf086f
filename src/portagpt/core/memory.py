"""How the process's C heap treats large freed buffers (glibc), for training and loading on CPU.

torch's CPU tensors come from ``malloc``. glibc serves every request above its
mmap threshold (at most 32 MiB) with a fresh ``mmap`` and gives it back with
``munmap`` when the tensor is freed, so each large temporary of a training
step -- the (N, vocabulary) logits and their gradient, the output head's and
the embedding's weight gradients, 100-160 MB each at chapter 5's 124M
settings -- arrives as pages the kernel has to fault in and zero again, every
step. On a virtual machine that hands freed guest pages back to its host
(free-page reporting, as on the development machine), each fault is a trip
to the host: measured with ``bench/train_speed.py`` on 2 cores, the same
124M step took 1.9 s with freed memory kept and 2.4-4.2 s without (two
threads; the spread is the faults), and the embedding gradient's zero-fill
alone took up to 1.8 s of a 3.4 s step.

:func:`keep_freed_memory` makes glibc keep what the step frees for the next
step for the duration of a block (``M_MMAP_MAX = 0``: large buffers come from
the heap; ``M_TRIM_THRESHOLD`` at its maximum: freed heap stays with the
process), then restores glibc's defaults and trims the heap, so memory is held
only while training runs. Steady-state memory is the step's peak, which the
step reaches anyway; ``Trainer.fit`` uses it on CPU. :func:`release_free_memory`
hands freed heap pages back (``malloc_trim``), for the loaders. On a C library
without these calls both do nothing.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import threading
from collections.abc import Iterator
from typing import Any

M_TRIM_THRESHOLD = -1  # mallopt parameters, from glibc's <malloc.h>
M_MMAP_MAX = -4
GLIBC_MMAP_MAX = 65536  # glibc's defaults, restored after a block
GLIBC_TRIM_THRESHOLD = 128 * 1024
TRIM_NEVER = 2**31 - 1  # mallopt takes an int


def _libc() -> Any:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
        libc.malloc_trim.argtypes = (ctypes.c_size_t,)
        return libc
    except (OSError, AttributeError):  # not glibc (musl, macOS, Windows): nothing to tune
        return None


_LIBC = _libc()
_LOCK = threading.Lock()
_DEPTH = 0  # nested keep_freed_memory blocks (threads share the heap)


def available() -> bool:
    """Whether this C library has glibc's ``mallopt`` and ``malloc_trim``."""
    return _LIBC is not None


def release_free_memory() -> None:
    """Hand freed heap pages back to the OS (glibc ``malloc_trim``); nothing elsewhere."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


@contextlib.contextmanager
def keep_freed_memory(enabled: bool = True) -> Iterator[bool]:
    """Keep freed large buffers in the process for the block (see the module docstring).

    Yields whether it is in effect (False when ``enabled`` is False or the C
    library is not glibc). Nested and concurrent blocks share one setting,
    restored when the outermost ends.
    """
    global _DEPTH
    if not enabled or _LIBC is None:
        yield False
        return
    with _LOCK:
        _DEPTH += 1
        if _DEPTH == 1:
            _LIBC.mallopt(M_MMAP_MAX, 0)
            _LIBC.mallopt(M_TRIM_THRESHOLD, TRIM_NEVER)
    try:
        yield True
    finally:
        with _LOCK:
            _DEPTH -= 1
            if _DEPTH == 0:
                _LIBC.mallopt(M_MMAP_MAX, GLIBC_MMAP_MAX)
                _LIBC.mallopt(M_TRIM_THRESHOLD, GLIBC_TRIM_THRESHOLD)
                _LIBC.malloc_trim(0)

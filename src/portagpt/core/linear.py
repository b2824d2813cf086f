"""The linear layer every built-in family uses, with a decode path for few-row inputs on CPU.

Decoding one token multiplies a single row by every weight matrix: a GEMV,
bound by how fast the weights stream from memory. On CPU, ``F.linear`` hands
that to one MKL ``sgemv``/``sgemm`` call, which runs on one core and, for the
short rows of transformer weights (640-3072 inputs), streams at about half of
what that one core can read; the other cores sit idle. Measured on the
development machine (2 cores, fp32, weights far past the caches):
``F.linear`` 10-14 GB/s, the same product split into row blocks 24-35 GB/s,
plain streaming reads with both cores ~48 GB/s.

So for inputs of at most ``SPLIT_MAX_ROWS`` rows on CPU, with more than one
torch thread and no autograd, :func:`linear` splits the weight's rows into
``k`` blocks (a free view) and multiplies them in one batched call
(``torch.bmm``), which torch runs across its threads. The input is passed as
a broadcast (stride-0) batch of its transpose, the layout MKL's batched GEMM
takes its fast path on. Under ``torch.compile`` the same product is written
as ``(weight * x).sum(-1)``, which inductor fuses into one parallel,
vectorised reduction that streams the weight once with every thread.

Which of the two streams faster is a property of the machine at the time
(measured on the same machine on different days: the split at 38-45 GB/s
against MKL's 19-23, then MKL at 35 against the split's 16), so eager
decoding times both, ``SPLIT_TRIALS`` calls each per weight shape, row count
and thread count, and keeps the faster for the rest of the process
(``SPLIT_CHOICE = "always"`` skips the race).

Everything else (training, prefill, GPU, one thread, other dtypes) is plain
``F.linear``. The result equals ``F.linear``'s up to float rounding (a
different summation order), which the family parity tests bound.

``Linear`` subclasses ``nn.Linear``: parameter names, ``state_dict`` keys,
initialisation and ``isinstance(m, nn.Linear)`` are unchanged, so checkpoints
and weight maps do not see it. Third-party families get the same decode speed
by using it (or calling :func:`linear`) instead of ``nn.Linear``.
"""

from __future__ import annotations

import math
import time

import torch
import torch.nn.functional as F
from torch import nn

SPLIT_MAX_ROWS = 4  # past this many rows MKL's GEMM uses the threads itself
SPLIT_MIN_BYTES = 256 * 2**10  # smaller weights stay in cache: nothing to win
SPLIT_BLOCKS_PER_THREAD = 4  # row blocks per thread
SPLIT_TRIALS = 3  # timed calls of each product per (shape, rows, threads) before one is kept
SPLIT_CHOICE = "measure"  # "measure": the faster of the two per shape; "always": the split


class _Race:
    """Best time of ``F.linear`` (0) and of the row split (1) for one shape, rows and threads."""

    __slots__ = ("best", "count")

    def __init__(self) -> None:
        self.best = [math.inf, math.inf]
        self.count = [0, 0]

    def next(self) -> tuple[int, bool]:
        """(which product to run, whether to time it)."""
        if min(self.count) < SPLIT_TRIALS:
            return (0 if self.count[0] <= self.count[1] else 1), True
        return (0 if self.best[0] <= self.best[1] else 1), False

    def record(self, which: int, seconds: float) -> None:
        self.best[which] = min(self.best[which], seconds)
        self.count[which] += 1


_RACES: dict[tuple[int, int, int, int], _Race] = {}


def _rows(x: torch.Tensor, in_features: int) -> int:
    return x.numel() // in_features if in_features else 0


def _small(weight: torch.Tensor) -> bool:
    """A weight that stays in cache: the decode path has nothing to win on it."""
    return weight.numel() * weight.element_size() < SPLIT_MIN_BYTES


def _decode_path(x: torch.Tensor, weight: torch.Tensor) -> bool:
    return (
        not _small(weight)  # first: small layers leave
        and x.device.type == "cpu"
        and x.dtype == torch.float32
        and weight.dtype == torch.float32
        and weight.dim() == 2
        and 0 < _rows(x, weight.shape[1]) <= SPLIT_MAX_ROWS
        and weight.is_contiguous()
        and not (torch.is_grad_enabled() and (weight.requires_grad or x.requires_grad))
    )


def split_gemv(x: torch.Tensor, weight: torch.Tensor, blocks: int) -> torch.Tensor:
    """``x @ weight.T`` for an (M, in) ``x`` with few rows, as one batched product over
    ``blocks`` row blocks of ``weight`` (M, out); rows past a whole number of blocks are
    done by one plain product."""
    out_f, in_f = weight.shape
    m = x.shape[0]
    main = out_f - out_f % blocks
    xt = x.t().expand(blocks, in_f, m)  # strides (0, 1, in): MKL's fast batched layout
    y = torch.bmm(weight[:main].view(blocks, main // blocks, in_f), xt)  # (blocks, rows, M)
    y = y.view(main, m)
    if main < out_f:
        y = torch.cat((y, torch.mm(weight[main:], x.t())), dim=0)
    return y.t() if m > 1 else y.view(1, out_f)


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``F.linear(x, weight, bias)``, with the few-row CPU decode path described above."""
    if not _decode_path(x, weight):
        return F.linear(x, weight, bias)
    in_f, out_f = weight.shape[1], weight.shape[0]
    x2 = x.reshape(-1, in_f)
    if torch.compiler.is_compiling():
        y = (weight.unsqueeze(0) * x2.unsqueeze(1)).sum(-1)  # inductor: one fused reduction
    else:
        threads = torch.get_num_threads()
        if threads < 2:
            return F.linear(x, weight, bias)
        y = _measured_product(x2, weight, threads)
    if bias is not None:
        y = y + bias
    return y.reshape(*x.shape[:-1], out_f)


def _measured_product(x2: torch.Tensor, weight: torch.Tensor, threads: int) -> torch.Tensor:
    """The row split or ``F.linear``, whichever measured faster for this shape (see above)."""
    if SPLIT_CHOICE == "always":
        return split_gemv(x2, weight, threads * SPLIT_BLOCKS_PER_THREAD)
    key = (weight.shape[0], weight.shape[1], x2.shape[0], threads)
    race = _RACES.get(key)
    if race is None:
        race = _RACES[key] = _Race()
    which, timed = race.next()
    start = time.perf_counter() if timed else 0.0
    if which:
        y = split_gemv(x2, weight, threads * SPLIT_BLOCKS_PER_THREAD)
    else:
        y = F.linear(x2, weight)
    if timed:
        race.record(which, time.perf_counter() - start)
    return y


class Linear(nn.Linear):
    """``nn.Linear`` whose forward is :func:`linear` (same parameters, same state_dict)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _small(self.weight):  # straight to F.linear: a tiny model's decode step feels
            return F.linear(x, self.weight, self.bias)  # every call it makes per layer
        return linear(x, self.weight, self.bias)

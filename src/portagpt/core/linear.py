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

Everything else (training, prefill, GPU, one thread, other dtypes) is plain
``F.linear``. The result equals ``F.linear``'s up to float rounding (a
different summation order), which the family parity tests bound.

``Linear`` subclasses ``nn.Linear``: parameter names, ``state_dict`` keys,
initialisation and ``isinstance(m, nn.Linear)`` are unchanged, so checkpoints
and weight maps do not see it. Third-party families get the same decode speed
by using it (or calling :func:`linear`) instead of ``nn.Linear``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

SPLIT_MAX_ROWS = 4  # past this many rows MKL's GEMM uses the threads itself
SPLIT_MIN_BYTES = 256 * 2**10  # smaller weights stay in cache: nothing to win
SPLIT_BLOCKS_PER_THREAD = 4  # row blocks per thread


def _rows(x: torch.Tensor, in_features: int) -> int:
    return x.numel() // in_features if in_features else 0


def _decode_path(x: torch.Tensor, weight: torch.Tensor) -> bool:
    return (
        weight.numel() * weight.element_size() >= SPLIT_MIN_BYTES  # first: small layers leave
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
        y = split_gemv(x2, weight, threads * SPLIT_BLOCKS_PER_THREAD)
    if bias is not None:
        y = y + bias
    return y.reshape(*x.shape[:-1], out_f)


class Linear(nn.Linear):
    """``nn.Linear`` whose forward is :func:`linear` (same parameters, same state_dict)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x, self.weight, self.bias)

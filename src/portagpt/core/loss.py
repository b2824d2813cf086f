"""Next-token cross-entropy over a large vocabulary, a few rows at a time, and the optimizer.

``F.cross_entropy`` on (N, V) logits writes the whole log-softmax (N x V
floats), and its backward writes a dense (N, V) one-hot gradient of the
``nll_loss`` and then a third (N, V) tensor for the log-softmax's gradient.
At chapter 5's settings (N = 2 x 256 rows, V = 50,257) each is 103 MB, far
past the caches; on the tiny preset, whose matmuls are small, these passes
were a quarter of a training step (measured with ``torch.profiler``, 2 CPU
threads).

:func:`chunked_cross_entropy` computes the same mean loss from one
``logsumexp`` per block of rows (``CHUNK_ELEMENTS`` floats, a block that stays
in cache), keeping only the (N,) log-sum-exps for the backward, which writes
the gradient ``(softmax - onehot) / n`` block by block into one (N, V) tensor:
one read of the logits forward, one read and one write backward. Logits of
other dtypes (bf16 under autocast) are upcast a block at a time, so no fp32
copy of the whole logits is made. Values and gradients equal
``F.cross_entropy``'s up to float rounding (``tests/core/test_loss.py``);
``ignore_index`` rows count as in ``F.cross_entropy`` (left out of the mean).

:func:`adamw` builds ``torch.optim.AdamW`` with the fused implementation where
torch has one for every parameter (CPU and CUDA, floating dtypes). torch's
default on CPU is the per-parameter loop: six elementwise passes over every
parameter and its two moments, 37 % of a chapter-5 step at 124M parameters;
fused, one pass (under 6 %). Same update up to float rounding.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

CHUNK_ELEMENTS = 1 << 20  # logits per block: 4 MiB of fp32, in a CPU's last-level cache
IGNORE_INDEX = -100  # F.cross_entropy's default


def _rows_per_chunk(vocab: int) -> int:
    return max(1, CHUNK_ELEMENTS // max(vocab, 1))


class _ChunkedCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, logits: torch.Tensor, targets: torch.Tensor, ignore_index: int
    ) -> torch.Tensor:
        n, vocab = logits.shape
        rows = _rows_per_chunk(vocab)
        lse = torch.empty(n, dtype=torch.float32, device=logits.device)  # (N,)
        for s in range(0, n, rows):
            block = logits[s : s + rows]
            torch.logsumexp(block.float(), dim=-1, out=lse[s : s + rows])
        valid = targets != ignore_index
        safe = torch.where(valid, targets, 0)
        picked = logits.gather(1, safe[:, None]).squeeze(1).float()  # (N,) target logits
        count = valid.sum()
        loss = torch.where(valid, lse - picked, 0.0).sum() / count
        ctx.save_for_backward(logits, safe, lse, valid, count)
        return loss

    @staticmethod
    def backward(  # type: ignore[override]
        ctx: Any, grad: torch.Tensor
    ) -> tuple[torch.Tensor, None, None]:
        logits, safe, lse, valid, count = ctx.saved_tensors
        n, vocab = logits.shape
        rows = _rows_per_chunk(vocab)
        weight = valid.float() * (grad.float() / count)  # (N,) d loss / d row, 0 where ignored
        out = torch.empty_like(logits)
        same_dtype = logits.dtype == torch.float32
        for s in range(0, n, rows):
            e = min(s + rows, n)
            block = out[s:e] if same_dtype else None
            block = torch.sub(logits[s:e].float(), lse[s:e, None], out=block)  # log-softmax
            block.exp_().mul_(weight[s:e, None])  # softmax * weight
            block.scatter_add_(1, safe[s:e, None], -weight[s:e, None])  # - onehot * weight
            if not same_dtype:
                out[s:e].copy_(block)
        return out, None, None


def chunked_cross_entropy(
    logits: torch.Tensor, targets: torch.Tensor, ignore_index: int = IGNORE_INDEX
) -> torch.Tensor:
    """Mean cross-entropy of (N, V) ``logits`` against (N,) ``targets`` (an fp32 scalar),
    ``F.cross_entropy(logits.float(), targets)`` without the full log-softmax."""
    if logits.dim() != 2 or targets.shape != logits.shape[:1]:
        raise ValueError(
            f"chunked_cross_entropy takes (N, V) logits and (N,) targets, got "
            f"{tuple(logits.shape)} and {tuple(targets.shape)}; flatten batch and time first."
        )
    return _ChunkedCrossEntropy.apply(logits, targets, ignore_index)


def _fusable(params: Iterable[torch.Tensor]) -> bool:
    for p in params:
        if type(p) not in (nn.Parameter, torch.Tensor):  # DTensor (FSDP2) and other subclasses
            return False
        if p.device.type not in ("cpu", "cuda") or not p.is_floating_point():
            return False
    return True


def adamw(groups: list[dict[str, Any]], lr: float, betas: tuple[float, float]) -> torch.optim.AdamW:
    """``torch.optim.AdamW(groups, lr, betas)``, fused where torch supports every parameter."""
    params = [p for g in groups for p in g["params"]]
    if params and _fusable(params):
        try:
            return torch.optim.AdamW(groups, lr=lr, betas=betas, fused=True)
        except (RuntimeError, ValueError):  # a torch build without the fused kernel here
            pass
    return torch.optim.AdamW(groups, lr=lr, betas=betas)

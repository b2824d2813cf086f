"""Causal self-attention on ``scaled_dot_product_attention`` with grouped-query heads.

:func:`attend` is the one call every family's attention layer makes after it
has projected, normed and rotated q/k/v and asked the :class:`AttentionContext`
for the keys/values to attend over. It picks SDPA, or an explicit softmax when
the family soft-caps attention logits (SDPA cannot).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .threads import one_thread_if_small


def repeat_kv(x: torch.Tensor, groups: int) -> torch.Tensor:
    """(B, Hkv, T, hd) -> (B, Hkv * groups, T, hd), each KV head shared by ``groups`` query heads."""
    if groups == 1:
        return x
    B, H, T, D = x.shape
    return x[:, :, None].expand(B, H, groups, T, D).reshape(B, H * groups, T, D)


def attend(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None,
    is_causal: bool,
    scale: float | None = None,
    softcap: float | None = None,
) -> torch.Tensor:
    """Attention of q (B, H, Tq, hd) over k/v (B, Hkv, Tk, hd); returns (B, Tq, H * hd).

    ``mask`` is boolean, True = may attend, broadcastable to (B, H, Tq, Tk).
    """
    B, H, Tq, D = q.shape
    Hkv = k.shape[1]
    groups = H // Hkv
    if softcap is None and Tq == 1 and torch.compiler.is_compiling():
        # a compiled decode step: plain softmax attention, which inductor fuses into a few
        # loops (its SDPA is an opaque call, and with the fixed-shape cache's mask a slow one)
        qg = q.view(B, Hkv, groups, D)  # the query heads sharing a KV head: rows of one query
        scores = (qg @ k.transpose(-2, -1)) * (scale if scale is not None else D**-0.5)
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        out = torch.softmax(scores.float(), dim=-1).to(q.dtype) @ v  # (B, Hkv, G, hd)
        return out.reshape(B, 1, H * D)
    with one_thread_if_small(B * H * Tq * k.shape[2] * D):  # see core/threads.py
        return _attend(q, k, v, mask, is_causal, scale, softcap)


def _attend(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None,
    is_causal: bool,
    scale: float | None,
    softcap: float | None,
) -> torch.Tensor:
    B, H, Tq, D = q.shape
    groups = H // k.shape[1]
    if softcap is None and Tq == 1 and groups > 1:
        # decode: SDPA shares each KV head among its query heads itself (no repeat_kv copy of
        # the whole cache per step). Measured on 2 busy CPU cores, this stays ~4x faster than
        # folding the query heads into rows of one (B, Hkv, G, hd) query, whose small GEMMs
        # stall on contended threads; on one thread the two cost the same.
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale, enable_gqa=True)
        return out.transpose(1, 2).reshape(B, Tq, H * D)
    k, v = repeat_kv(k, groups), repeat_kv(v, groups)
    if softcap is None:
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, is_causal=is_causal and mask is None, scale=scale
        )
    else:
        scores = (q @ k.transpose(-2, -1)) * (scale if scale is not None else D**-0.5)
        scores = torch.tanh(scores / softcap) * softcap
        if is_causal and mask is None:
            Tk = k.shape[2]
            mask = torch.ones(Tq, Tk, dtype=torch.bool, device=q.device).tril(Tk - Tq)
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        out = torch.softmax(scores.float(), dim=-1).to(q.dtype) @ v
    return out.transpose(1, 2).reshape(B, Tq, H * D)

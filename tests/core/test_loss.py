"""The chunked cross-entropy equals F.cross_entropy (values and gradients); AdamW is fused."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from portagpt.core import loss as loss_mod
from portagpt.core.loss import adamw, chunked_cross_entropy


@pytest.fixture
def small_chunks(monkeypatch):
    """Blocks of 3 rows over a vocabulary of 97, so the row blocks and a partial last one run."""
    monkeypatch.setattr(loss_mod, "CHUNK_ELEMENTS", 3 * 97)


def _pair(n: int, vocab: int, dtype: torch.dtype = torch.float32):
    torch.manual_seed(0)
    base = (torch.randn(n, vocab) * 4).to(dtype)
    targets = torch.randint(0, vocab, (n,))
    return base, targets


@pytest.mark.parametrize("n", [1, 3, 10])
def test_chunked_loss_and_gradient_equal_cross_entropy(small_chunks, n):
    base, targets = _pair(n, 97)
    a = base.clone().requires_grad_()
    b = base.clone().requires_grad_()
    ref = F.cross_entropy(a, targets)
    ours = chunked_cross_entropy(b, targets)
    (ref * 1.7).backward()
    (ours * 1.7).backward()
    torch.testing.assert_close(ours, ref, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(b.grad, a.grad, rtol=1e-5, atol=1e-7)


def test_chunked_loss_leaves_ignored_rows_out_of_the_mean(small_chunks):
    base, targets = _pair(8, 97)
    targets[[1, 6]] = -100
    a = base.clone().requires_grad_()
    b = base.clone().requires_grad_()
    F.cross_entropy(a, targets).backward()
    ours = chunked_cross_entropy(b, targets)
    ours.backward()
    torch.testing.assert_close(ours, F.cross_entropy(base, targets), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(b.grad, a.grad, rtol=1e-5, atol=1e-7)
    assert b.grad[[1, 6]].abs().max() == 0


def test_chunked_loss_upcasts_bf16_logits_block_by_block(small_chunks):
    base, targets = _pair(7, 97, torch.bfloat16)
    a = base.clone().requires_grad_()
    b = base.clone().requires_grad_()
    F.cross_entropy(a.float(), targets).backward()
    ours = chunked_cross_entropy(b, targets)
    ours.backward()
    assert ours.dtype == torch.float32 and b.grad.dtype == torch.bfloat16
    torch.testing.assert_close(ours, F.cross_entropy(base.float(), targets))
    torch.testing.assert_close(b.grad, a.grad)


def test_chunked_loss_refuses_unflattened_logits():
    with pytest.raises(ValueError, match="flatten"):
        chunked_cross_entropy(torch.zeros(2, 3, 5), torch.zeros(2, 3, dtype=torch.long))


def test_adamw_is_fused_on_cpu_and_steps_like_the_default():
    torch.manual_seed(0)
    w0 = torch.randn(5, 4)
    fused_p, plain_p = torch.nn.Parameter(w0.clone()), torch.nn.Parameter(w0.clone())
    fused = adamw([{"params": [fused_p], "weight_decay": 0.1}], 1e-2, (0.9, 0.999))
    plain = torch.optim.AdamW([plain_p], lr=1e-2, weight_decay=0.1)
    assert fused.defaults["fused"] is True
    for step in range(3):
        g = torch.randn(5, 4, generator=torch.Generator().manual_seed(step))
        fused_p.grad, plain_p.grad = g.clone(), g.clone()
        fused.step()
        plain.step()
    torch.testing.assert_close(fused_p, plain_p, rtol=1e-6, atol=1e-7)

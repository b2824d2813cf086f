"""The KV cache and attention context: chunked decoding equals the full forward pass."""

from __future__ import annotations

import pytest
import torch

from portagpt.core.cache import LayerSpec, make_cache
from portagpt.families.gpt2.config import GPT2Config
from portagpt.families.gpt2.model import GPT2Model


def _model(windows: list[int | None]) -> GPT2Model:
    cfg = GPT2Config(vocab_size=97, context_length=64, emb_dim=32, n_heads=4, n_layers=len(windows))
    model = GPT2Model(cfg)
    model.init_weights()
    model.layer_specs = [LayerSpec(4, 8, w) for w in windows]
    return model.eval()


@pytest.mark.parametrize(
    "chunks",
    [[30], [1] * 30, [12, 1, 1, 1, 3, 1, 11], [3, 9, 18], [1, 4, 1, 2, 1, 21]],
    ids=["prefill", "token-by-token", "mixed", "chunks", "small-first"],
)
def test_chunked_decoding_with_cache_matches_full_forward_past_sliding_windows(chunks: list[int]) -> None:
    model = _model([5, None, 7])
    ids = torch.randint(0, 97, (2, 30))
    with torch.no_grad():
        full = model(ids)
        cache = make_cache(model.layer_specs, batch=2, max_len=40)
        outs, start = [], 0
        for n in chunks:
            outs.append(model(ids[:, start : start + n], cache=cache))
            start += n
    torch.testing.assert_close(torch.cat(outs, 1), full, atol=1e-5, rtol=0)


def test_sliding_layer_cache_never_holds_more_than_the_window() -> None:
    model = _model([5, None])
    cache = make_cache(model.layer_specs, batch=1, max_len=40)
    assert cache.layers[0].k.shape[2] == 5
    assert cache.layers[1].k.shape[2] == 40


def test_sliding_window_changes_the_output_once_the_sequence_is_longer() -> None:
    ids = torch.randint(0, 97, (1, 12))
    torch.manual_seed(1)
    windowed = _model([4])
    torch.manual_seed(1)
    full = _model([None])
    with torch.no_grad():
        a, b = windowed(ids), full(ids)
    torch.testing.assert_close(a[:, :4], b[:, :4])  # inside the window: identical
    assert (a[:, 4:] - b[:, 4:]).abs().max() > 1e-3  # past it: different


def test_left_padded_batch_matches_unpadded_rows_with_and_without_cache() -> None:
    model = _model([5, None, 7])
    ids = torch.randint(1, 97, (2, 30))
    mask = torch.ones(2, 30, dtype=torch.long)
    mask[1, :4] = 0
    padded = ids.clone()
    padded[1, :4] = 0
    with torch.no_grad():
        ref0, ref1 = model(ids[:1]), model(ids[1:, 4:])
        out = model(padded, attention_mask=mask)
        cache = make_cache(model.layer_specs, batch=2, max_len=40)
        first = model(padded[:, :10], cache=cache, attention_mask=mask[:, :10])
        rest = [model(padded[:, i : i + 1], cache=cache) for i in range(10, 30)]
    cached = torch.cat([first, *rest], 1)
    for got in (out, cached):
        torch.testing.assert_close(got[:1], ref0, atol=1e-5, rtol=0)
        torch.testing.assert_close(got[1:, 4:], ref1, atol=1e-5, rtol=0)


def test_cache_overflow_is_a_clear_error() -> None:
    from portagpt.errors import UsageError

    model = _model([None])
    cache = make_cache(model.layer_specs, batch=1, max_len=4)
    with pytest.raises(UsageError, match="max_len"):
        model(torch.zeros(1, 5, dtype=torch.long), cache=cache)


# ---- the one-token decode step ------------------------------------------------------------
def _padded_batch() -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.randint(1, 97, (2, 30))
    mask = torch.ones(2, 30, dtype=torch.long)
    mask[1, :4] = 0
    ids[1, :4] = 0
    return ids, mask


@pytest.mark.parametrize("padded", [False, True], ids=["unpadded", "left-padded"])
@pytest.mark.parametrize("fixed_shape", [False, True], ids=["in-place", "fixed-shape"])
def test_one_token_steps_match_the_full_forward_past_windows(padded: bool, fixed_shape: bool) -> None:
    """Both decode forms (slices of the cache, and the fixed-shape form torch.compile traces:
    every slot with a mask, position from ``length_t``) give the full forward's logits."""
    model = _model([5, None, 7])
    ids, mask = _padded_batch()
    if not padded:
        mask = torch.ones_like(mask)
    with torch.no_grad():
        full = model(ids, attention_mask=mask)
        cache = make_cache(model.layer_specs, batch=2, max_len=40)
        outs = [model(ids[:, :6], cache=cache, attention_mask=mask[:, :6])]
        for i in range(6, 30):
            if fixed_shape:
                cache.length_t = torch.tensor([cache.length])
                outs.append(model(ids[:, i : i + 1], cache=cache))
                cache.length += 1  # the fixed-shape step leaves the bookkeeping to its caller
            else:
                outs.append(model(ids[:, i : i + 1], cache=cache))
    cached = torch.cat(outs, 1)
    real = mask.bool()
    torch.testing.assert_close(cached[real], full[real], atol=1e-5, rtol=0)


def test_unpadded_decode_step_reads_keys_in_place_without_a_mask() -> None:
    from portagpt.core.cache import attention_context

    model = _model([5, None])
    cache = make_cache(model.layer_specs, batch=1, max_len=40)
    with torch.no_grad():
        model(torch.randint(0, 97, (1, 12)), cache=cache)  # the 5-slot ring is full
        ctx = attention_context(model.layer_specs, torch.zeros(1, 1, dtype=torch.long), cache)
        k = v = torch.randn(1, 4, 1, 8)
        for i, slots in enumerate([5, 13]):
            keys, values, mask, causal = ctx.attend_kv(i, k, v)
            assert mask is None and not causal
            assert keys.shape[2] == slots
            assert keys.data_ptr() == cache.layers[i].k.data_ptr()  # a view, not a copy
        assert ctx.positions.tolist() == [[12]]


def test_padded_decode_step_masks_padding_only_while_a_layer_can_see_it() -> None:
    from portagpt.core.cache import attention_context

    model = _model([3, None])
    cache = make_cache(model.layer_specs, batch=2, max_len=20)
    ids, mask = _padded_batch()  # row 1: 4 padding positions
    step = torch.zeros(2, 1, dtype=torch.long)
    k = v = torch.randn(2, 4, 1, 8)
    with torch.no_grad():
        model(ids[:, :5], cache=cache, attention_mask=mask[:, :5])
        ctx = attention_context(model.layer_specs, step, cache)
        assert ctx.positions.tolist() == [[5], [1]]  # padding does not count
        ring_mask = ctx.attend_kv(0, k, v)[2]  # the ring holds positions 3, 4, 5: 3 is padding
        assert ring_mask is not None and ring_mask[1].flatten().tolist() == [False, True, True]
        assert ctx.attend_kv(1, k, v)[2][1].flatten().tolist() == [False] * 4 + [True] * 2
        ctx.finish()
        model(step, cache=cache)  # position 6 written; next, the ring holds 5, 6, 7: all real
        ctx = attention_context(model.layer_specs, step, cache)
        assert ctx.attend_kv(0, k, v)[2] is None
        assert ctx.attend_kv(1, k, v)[2] is not None  # the full layer still sees the padding

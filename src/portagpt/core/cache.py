"""KV caches built from a family's per-layer spec, and the per-step attention context.

A family declares, for each layer, a :class:`LayerSpec`: its KV heads, head
size, and either full attention or a sliding window of ``window`` positions
(a query at position ``i`` sees keys ``j`` with ``i - window < j <= i``, as
transformers defines it). :func:`make_cache` turns the specs into
preallocated buffers:

* a full layer gets one buffer of ``max_len`` positions, filled left to right;
* a sliding layer gets a ring of ``window`` slots, so it never holds more than
  ``window`` positions however long the sequence grows.

Models never build masks themselves: at the start of each forward pass they
call :func:`attention_context`, which computes RoPE positions and one mask per
distinct layer kind (once per step, not once per layer), and each attention
layer calls ``ctx.attend_kv(layer_idx, k, v)`` to store its new keys/values and
get back what to attend over. Without a cache the same call just returns the
keys it was given with a causal (and, if needed, sliding) mask, so training and
decoding share one code path.

Behind that call sits one small class per cache kind, made once per pass for
each distinct kind: :class:`FullLayers` (the left-to-right buffer),
:class:`RingLayers` (the sliding ring) and :class:`FixedShapeStep` (the
compiled one-token step, for either kind). Each computes its mask and knows
how to write and read its layers' caches.

The steady-state decode step (one new token per row, no new mask) takes a fast
path whose Python work and allocations do not grow with the context: RoPE
positions are a slice of a table the cache keeps, keys/values are a slice of
the preallocated buffers, and no mask is built unless left padding is still in
reach (then it is a slice of the cache's padding mask, or, for a full sliding
ring, one gather over the window).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..errors import UsageError


@dataclass(frozen=True)
class LayerSpec:
    """What one attention layer needs from a cache."""

    n_kv_heads: int
    head_dim: int
    window: int | None = None  # None: full attention; N: sliding window of N positions

    @property
    def kind(self) -> int | None:
        return self.window


class LayerCache:
    """Preallocated keys/values of one layer, (B, n_kv, slots, head_dim)."""

    def __init__(
        self, spec: LayerSpec, batch: int, max_len: int, dtype: torch.dtype, device: torch.device | str
    ) -> None:
        self.spec = spec
        self.slots = min(spec.window, max_len) if spec.window else max_len
        shape = (batch, spec.n_kv_heads, self.slots, spec.head_dim)
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)


@dataclass
class KVCache:
    """All layers' caches plus the bookkeeping shared by every layer.

    ``length`` counts positions already written (padding included); ``key_valid``
    (B, max_len) marks real tokens, for left-padded batches. ``positions``
    (B, max_len) is the RoPE position of every slot (padding skipped), assuming
    the tokens still to come are real; ``pad_end`` is the first position from
    which every key is real (0: no padding).

    Positions are always written left to right, so which position a sliding
    ring's slot holds follows from ``length`` alone (:meth:`held_positions`).

    ``length_t`` is for compiled decoding (``torch.compile`` wants shapes and
    Python values that do not change from step to step): while it is set, a
    one-token step without a mask reads its position from this (1,) tensor,
    writes with ``index_copy_``, attends over every slot with a mask, and
    advances nothing; the caller keeps ``length`` and ``length_t`` in step.
    """

    layers: list[LayerCache]
    max_len: int
    batch: int
    length: int = 0
    key_valid: torch.Tensor | None = None  # (B, max_len) bool, None = no padding
    positions: torch.Tensor = field(default_factory=lambda: torch.empty(0, 0, dtype=torch.long))
    pad_end: int = 0
    # slots per distinct window (None: full layers), for the decode fast path
    kinds: dict[int | None, int] = field(default_factory=dict)
    length_t: torch.Tensor | None = None  # (1,) long: the position of a compiled decode step

    @property
    def device(self) -> torch.device:
        return self.layers[0].k.device

    def reset(self) -> None:
        self.length = 0
        self.key_valid = None
        self.pad_end = 0
        self.positions = _arange_positions(self.batch, self.max_len, self.device)
        self.length_t = None

    def held_positions(self, slots: int) -> torch.Tensor:
        """(slots,) absolute position held by each slot of a ring of ``slots`` (-1: empty)."""
        last = self.length - 1
        slot = torch.arange(slots, device=self.device)
        held = last - (last - slot).remainder(slots)
        return held.masked_fill(held < 0, -1)

    def set_key_valid(self, key_valid: torch.Tensor, end: int) -> None:
        """Record which of the first ``end`` positions are real tokens (the rest count as real)."""
        if self.key_valid is None:
            self.key_valid = torch.ones(
                self.batch, self.max_len, dtype=torch.bool, device=key_valid.device
            )
        self.key_valid[:, :end] = key_valid
        self.positions = (self.key_valid.long().cumsum(-1) - 1).clamp(min=0)
        padding = (~self.key_valid).any(0).nonzero()
        self.pad_end = int(padding[-1]) + 1 if len(padding) else 0


def _arange_positions(batch: int, max_len: int, device: torch.device | str) -> torch.Tensor:
    return torch.arange(max_len, device=device).expand(batch, max_len)


def make_cache(
    specs: list[LayerSpec],
    batch: int,
    max_len: int,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> KVCache:
    """Preallocate a cache for ``batch`` sequences of up to ``max_len`` positions."""
    layers = [LayerCache(s, batch, max_len, dtype, device) for s in specs]
    cache = KVCache(layers=layers, max_len=max_len, batch=batch)
    cache.positions = _arange_positions(batch, max_len, device)
    cache.kinds = {layer.spec.window: layer.slots for layer in layers}
    return cache


# ---- one forward pass ------------------------------------------------------------------
@dataclass
class _Pass:
    """What every layer kind of one forward pass shares: where the new tokens go, which keys
    are real."""

    cache: KVCache | None
    start: int  # position of the first new token (-1 in the fixed-shape step: a tensor there)
    T: int  # new tokens per row
    q_pos: torch.Tensor | None  # (T,) absolute (padded) query positions; None in the fast paths
    key_valid: torch.Tensor | None  # (B, >= end) bool, None = every key real
    decode: bool = False  # one new token per row, no new mask: the steady-state step

    @property
    def end(self) -> int:
        return self.start + self.T


def _build_mask(
    p: _Pass, kpos: torch.Tensor, window: int | None
) -> tuple[torch.Tensor | None, bool]:
    """(mask, is_causal) for queries ``p.q_pos`` over keys at absolute positions ``kpos``."""
    assert p.q_pos is not None
    if p.key_valid is None and p.start == 0 and (window is None or window >= p.T):
        # keys are exactly the T new ones and every key is in reach: plain causal
        return None, p.T > 1
    q, k = p.q_pos[:, None], kpos[None, :]
    allowed = (k >= 0) & (k <= q)
    if window is not None:
        allowed = allowed & (k > q - window)
    if p.key_valid is not None:
        valid = p.key_valid[:, kpos.clamp(min=0)]  # (B, Tk)
        allowed = allowed[None] & valid[:, None, :]
        # A fully masked row (a padding query) would give NaN; let it see itself.
        allowed = allowed | (~allowed.any(-1, keepdim=True) & (k == q)[None])
        return allowed[:, None], False
    if not torch.compiler.is_compiling() and bool(allowed.all()):  # no .item() in a graph
        return None, False
    return allowed[None, None], False


class FullLayers:
    """Full-attention layers: a buffer of ``max_len`` positions written left to right.

    The new keys go to positions ``start .. end`` and the layer attends over
    ``0 .. end``, a view of the buffer. In the steady-state decode step the mask
    is a slice of the cache's padding mask (None without padding).
    """

    window: int | None = None

    def __init__(self, p: _Pass) -> None:
        self.p = p
        if p.decode:
            valid = p.key_valid
            self.mask = None if valid is None else valid[:, None, None, : p.end]
            self.causal = False
        else:
            assert p.q_pos is not None
            kpos = p.q_pos if p.cache is None else torch.arange(0, p.end, device=p.q_pos.device)
            self.mask, self.causal = _build_mask(p, kpos, None)

    def attend_kv(
        self, lc: LayerCache | None, k: torch.Tensor, v: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, bool]:
        if lc is None:
            return k, v, self.mask, self.causal
        start, end = self.p.start, self.p.end
        lc.k[:, :, start:end] = k
        lc.v[:, :, start:end] = v
        return lc.k[:, :, :end], lc.v[:, :, :end], self.mask, self.causal


class RingLayers:
    """Sliding-window layers: a ring of ``window`` slots (fewer if the cache is shorter).

    Until the ring wraps, slot ``i`` holds position ``i`` and it reads like a
    full buffer. Once full, a one-token step overwrites the oldest slot and
    attends over every slot (all within the window); a chunk attends over what
    the ring held plus the new keys, then keeps the last ``slots`` of them.
    """

    def __init__(self, p: _Pass, window: int) -> None:
        self.p, self.window = p, window
        cache = p.cache
        self.slots = min(window, cache.max_len) if cache is not None else window
        self.mode = "none" if cache is None else "slice" if p.end <= self.slots else "ring"
        if cache is not None and p.start > 0 and p.T > 1:
            self.mode = "chunk"
        if p.decode:
            self.mask, self.causal = self._decode_mask(), False
        else:
            self.mask, self.causal = _build_mask(p, self._key_positions(), window)

    def _decode_mask(self) -> torch.Tensor | None:
        p, cache, valid = self.p, self.p.cache, self.p.key_valid
        assert cache is not None
        if self.mode == "slice":
            return None if valid is None else valid[:, None, None, : p.end]
        # a full ring: slots hold positions start - slots + 1 .. start, all in the window
        if valid is None or p.start - self.slots + 1 >= cache.pad_end:
            return None
        held = cache.held_positions(self.slots)
        held[p.start % self.slots] = p.start
        return valid[:, held][:, None, None, :]

    def _key_positions(self) -> torch.Tensor:
        """Absolute positions of the keys attended over, in order (-1: an empty slot)."""
        p, cache = self.p, self.p.cache
        assert p.q_pos is not None
        if cache is None or p.start == 0:
            return p.q_pos  # no cache, or a first prefill: only the new keys
        held = cache.held_positions(self.slots)
        if p.T == 1:  # the new key overwrites slot start % slots, then every slot is read
            held[p.start % self.slots] = p.start
            return held
        return torch.cat([held, p.q_pos])

    def attend_kv(
        self, lc: LayerCache | None, k: torch.Tensor, v: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, bool]:
        p = self.p
        if lc is None:
            return k, v, self.mask, self.causal
        if p.T == 1 and p.start > 0:
            if self.mode == "slice" and p.decode:
                at, n = p.start, p.end  # the ring has not wrapped: read it like a full buffer
            else:
                at, n = p.start % lc.slots, lc.slots
            lc.k[:, :, at] = k[:, :, 0]
            lc.v[:, :, at] = v[:, :, 0]
            return lc.k[:, :, :n], lc.v[:, :, :n], self.mask, self.causal
        keys, values = k, v
        if self.mode == "chunk":
            keys, values = torch.cat([lc.k, k], dim=2), torch.cat([lc.v, v], dim=2)
        keep = min(p.T, lc.slots)  # keep the last `slots` new positions in the ring
        pos = torch.arange(p.end - keep, p.end, device=k.device)
        lc.k[:, :, pos % lc.slots] = k[:, :, -keep:]
        lc.v[:, :, pos % lc.slots] = v[:, :, -keep:]
        return keys, values, self.mask, self.causal


class FixedShapeStep:
    """The compiled one-token step of any layer kind: the same shapes and Python state at every
    position, so ``torch.compile`` traces it once.

    The position is the (1,) tensor ``KVCache.length_t``; the new key is written with
    ``index_copy_`` and the layer attends over every slot, with a mask of the slots
    that hold a real key at or before the position.
    """

    def __init__(self, cache: KVCache, pos: torch.Tensor, window: int | None) -> None:
        self.window = window
        slots = cache.kinds[window]
        slot = torch.arange(slots, device=pos.device)
        if window is None:
            self.at, held = pos, slot  # slot i holds position i
        else:
            self.at = pos.remainder(slots)
            held = pos - (pos - slot).remainder(slots)  # after this step's write
        allowed = (held >= 0) & (held <= pos)  # (slots,)
        mask = allowed[None, None, None, :]
        if cache.key_valid is not None:
            mask = mask & cache.key_valid[:, None, None, :].index_select(3, held.clamp(min=0))
        self.mask = mask

    def attend_kv(
        self, lc: LayerCache | None, k: torch.Tensor, v: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, bool]:
        assert lc is not None
        lc.k.index_copy_(2, self.at, k)
        lc.v.index_copy_(2, self.at, v)
        return lc.k, lc.v, self.mask, False


LayerKind = FullLayers | RingLayers | FixedShapeStep


class AttentionContext:
    """Everything the attention layers of one forward pass share.

    ``positions`` (B, T) are the RoPE positions (left padding skipped). It holds
    one object per distinct layer kind (:class:`FullLayers`, :class:`RingLayers`,
    or :class:`FixedShapeStep` in a compiled step) with the mask to pass to SDPA
    (``None`` when no mask is needed) and how to write/read that kind's cache.
    """

    def __init__(
        self,
        specs: list[LayerSpec],
        seq_len: int,
        batch: int,
        device: torch.device,
        cache: KVCache | None = None,
        attention_mask: torch.Tensor | None = None,
    ) -> None:
        self.specs, self.cache, self.T = specs, cache, seq_len
        windows = {s.window for s in specs}
        fixed = cache is not None and cache.length_t is not None
        if fixed and seq_len == 1 and attention_mask is None:
            assert cache is not None and cache.length_t is not None
            pos = cache.length_t
            self.start = -1  # unknown to Python; finish() leaves the bookkeeping to the caller
            self.positions = cache.positions.index_select(1, pos)  # (B, 1)
            self.key_valid = cache.key_valid
            self.kinds: dict[int | None, LayerKind] = {
                w: FixedShapeStep(cache, pos, w) for w in windows
            }
            return
        p = self._pass(seq_len, batch, device, cache, attention_mask)
        self.start, self.key_valid = p.start, p.key_valid
        self.kinds = {w: FullLayers(p) if w is None else RingLayers(p, w) for w in windows}

    def _pass(
        self,
        T: int,
        batch: int,
        device: torch.device,
        cache: KVCache | None,
        attention_mask: torch.Tensor | None,
    ) -> _Pass:
        """Check the step against the cache, record padding, and compute the RoPE positions."""
        start = cache.length if cache is not None else 0
        end = start + T
        if cache is not None and end > cache.max_len:
            raise UsageError(
                f"The KV cache holds {cache.max_len} positions but this step needs {end}; "
                "make the cache with a larger max_len (prompt length + max new tokens)."
            )
        if cache is not None and T == 1 and start > 0 and attention_mask is None:
            # the steady-state decode step: O(1) Python work, slices of what the cache keeps
            self.positions = cache.positions[:, start:end]  # (B, 1)
            return _Pass(cache, start, T, None, cache.key_valid, decode=True)
        key_valid = _key_valid(T, batch, device, cache, attention_mask)
        if cache is not None and key_valid is not None:
            cache.set_key_valid(key_valid, end)
        # RoPE positions: count of real tokens before each position.
        if key_valid is None:
            self.positions = torch.arange(start, end, device=device).unsqueeze(0).expand(batch, -1)
        else:
            self.positions = (key_valid.long().cumsum(-1) - 1).clamp(min=0)[:, start:end]
        return _Pass(cache, start, T, torch.arange(start, end, device=device), key_valid)

    def attend_kv(
        self, layer_idx: int, k: torch.Tensor, v: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, bool]:
        """Store this layer's new (B, Hkv, T, hd) keys/values; return (keys, values, mask,
        is_causal)."""
        lc = self.cache.layers[layer_idx] if self.cache is not None else None
        return self.kinds[self.specs[layer_idx].window].attend_kv(lc, k, v)

    def finish(self) -> None:
        """Advance the cache after all layers ran (called by the model at the end of forward)."""
        if self.cache is not None and self.start >= 0:
            self.cache.length = self.start + self.T


def _key_valid(
    T: int,
    batch: int,
    device: torch.device,
    cache: KVCache | None,
    attention_mask: torch.Tensor | None,
) -> torch.Tensor | None:
    """Which keys are real tokens, over all positions 0..end (None = all real)."""
    start = cache.length if cache is not None else 0
    end = start + T
    if attention_mask is not None:
        am = attention_mask.to(device=device, dtype=torch.bool)
        if am.shape[1] == T and start > 0 and cache is not None and cache.key_valid is not None:
            am = torch.cat([cache.key_valid[:, :start], am], dim=1)
        if am.shape[1] != end:
            raise UsageError(
                f"attention_mask covers {am.shape[1]} positions; expected {end} "
                f"(the {start} cached plus {T} new) or {T} (the new ones)."
            )
        return None if bool(am.all()) else am
    if cache is not None and cache.key_valid is not None:
        # decoding after a padded prompt: new tokens are real
        new = torch.ones(batch, T, dtype=torch.bool, device=device)
        return torch.cat([cache.key_valid[:, :start], new], dim=1)
    return None


def attention_context(
    specs: list[LayerSpec],
    input_ids: torch.Tensor,
    cache: KVCache | None = None,
    attention_mask: torch.Tensor | None = None,
) -> AttentionContext:
    """Build the shared attention context for one forward pass over ``input_ids`` (B, T)."""
    B, T = input_ids.shape
    return AttentionContext(specs, T, B, input_ids.device, cache, attention_mask)

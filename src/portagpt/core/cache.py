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


class AttentionContext:
    """Everything the attention layers of one forward pass share.

    ``positions`` (B, T) are the RoPE positions (left padding skipped).
    Per layer kind it holds the mask to pass to SDPA (``None`` when no mask is
    needed), whether ``is_causal`` can be used instead, and how to write/read
    the cache.
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
        self.specs = specs
        self.cache = cache
        self.T = seq_len
        self._static: dict[int | None, tuple[torch.Tensor, torch.Tensor]] | None = None
        self._decode: dict[int | None, tuple[int, int, torch.Tensor | None]] | None = None
        if cache is not None and cache.length_t is not None and seq_len == 1:
            if attention_mask is None:
                self._init_static(cache, cache.length_t)
                return
        start = cache.length if cache is not None else 0
        self.start = start
        end = start + seq_len
        if cache is not None and seq_len == 1 and start > 0 and end <= cache.max_len:
            if attention_mask is None:
                self._init_decode(cache, start)
                return
        if cache is not None and end > cache.max_len:
            from ..errors import UsageError

            raise UsageError(
                f"The KV cache holds {cache.max_len} positions but this step needs {end}; "
                "make the cache with a larger max_len (prompt length + max new tokens)."
            )

        # Which keys are real tokens, over all positions 0..end (None = all real).
        key_valid: torch.Tensor | None = None
        if attention_mask is not None:
            am = attention_mask.to(device=device, dtype=torch.bool)
            if am.shape[1] == seq_len and start > 0 and cache is not None and cache.key_valid is not None:
                am = torch.cat([cache.key_valid[:, :start], am], dim=1)
            if am.shape[1] != end:
                from ..errors import UsageError

                raise UsageError(
                    f"attention_mask covers {am.shape[1]} positions; expected {end} "
                    f"(the {start} cached plus {seq_len} new) or {seq_len} (the new ones)."
                )
            key_valid = None if bool(am.all()) else am
        elif cache is not None and cache.key_valid is not None:
            # decoding after a padded prompt: new tokens are real
            key_valid = torch.cat(
                [cache.key_valid[:, :start], torch.ones(batch, seq_len, dtype=torch.bool, device=device)],
                dim=1,
            )
        if cache is not None and key_valid is not None:
            cache.set_key_valid(key_valid, end)
        self.key_valid = key_valid

        # RoPE positions: count of real tokens before each position.
        if key_valid is None:
            self.positions = torch.arange(start, end, device=device).unsqueeze(0).expand(batch, -1)
        else:
            self.positions = (key_valid.long().cumsum(-1) - 1).clamp(min=0)[:, start:end]

        q_pos = torch.arange(start, end, device=device)  # absolute (padded) query positions
        self.q_pos = q_pos
        self._masks: dict[int | None, tuple[torch.Tensor | None, bool]] = {}
        for window in {s.window for s in specs}:
            self._masks[window] = self._build_mask(window)

    def _init_decode(self, cache: KVCache, start: int) -> None:
        """One new token per row: per layer kind, where to write it, how many slots to read, and
        the mask (None unless left padding is still in reach)."""
        end = start + 1
        self.positions = cache.positions[:, start:end]  # (B, 1)
        self.key_valid = cache.key_valid
        valid = cache.key_valid
        plans: dict[int | None, tuple[int, int, torch.Tensor | None]] = {}
        for window, slots in cache.kinds.items():
            if window is None or end <= slots:
                # slots 0..start hold positions 0..start, all within reach of the query
                mask = None if valid is None else valid[:, None, None, :end]
                plans[window] = (start, end, mask)
            else:
                # a full ring: slots hold positions start - slots + 1 .. start, all in the window
                mask = None
                if valid is not None and start - slots + 1 < cache.pad_end:
                    held = cache.held_positions(slots)
                    held[start % slots] = start
                    mask = valid[:, held][:, None, None, :]
                plans[window] = (start % slots, slots, mask)
        self._decode = plans

    def _init_static(self, cache: KVCache, pos: torch.Tensor) -> None:
        """One new token per row at position ``pos`` (a (1,) tensor), with shapes and Python
        state that are the same every step: what ``torch.compile`` can trace once."""
        self.start = -1  # unknown to Python; finish() leaves the bookkeeping to the caller
        self.positions = cache.positions.index_select(1, pos)  # (B, 1)
        self.key_valid = valid = cache.key_valid
        plans: dict[int | None, tuple[torch.Tensor, torch.Tensor]] = {}
        for window, slots in cache.kinds.items():
            slot = torch.arange(slots, device=pos.device)
            if window is None:
                at, held = pos, slot  # slot i holds position i
            else:
                at = pos.remainder(slots)
                held = pos - (pos - slot).remainder(slots)  # after this step's write
            allowed = (held >= 0) & (held <= pos)  # (slots,)
            if valid is None:
                mask = allowed[None, None, None, :]
            else:
                mask = allowed[None, None, None, :] & valid[:, None, None, :].index_select(
                    3, held.clamp(min=0)
                )
            plans[window] = (at, mask)
        self._static = plans

    # ---- masks --------------------------------------------------------------
    def _key_positions(self, window: int | None) -> torch.Tensor:
        """Absolute positions of the keys a layer of this kind attends over, in order."""
        cache = self.cache
        new = self.q_pos
        if cache is None:
            return new
        if window is None:
            return torch.arange(0, self.start + self.T, device=new.device)
        slots = min(window, cache.max_len)
        if self.start == 0:
            return new  # first prefill: only the new keys
        held = cache.held_positions(slots)
        if self.T == 1:
            # the new key overwrites slot pos % slots, then all slots are attended over
            keys = held.clone()
            keys[self.start % slots] = self.start
            return keys
        # later chunk: attend over what the ring holds, then the new keys
        return torch.cat([held, new])

    def _build_mask(self, window: int | None) -> tuple[torch.Tensor | None, bool]:
        kpos = self._key_positions(window)  # (Tk,)
        q = self.q_pos[:, None]
        k = kpos[None, :]
        if self.key_valid is None and self.start == 0 and (window is None or window >= self.T):
            # keys are exactly the T new ones and every key is in reach: plain causal
            return None, self.T > 1
        allowed = (k >= 0) & (k <= q)
        if window is not None:
            allowed = allowed & (k > q - window)
        if self.key_valid is not None:
            valid = self.key_valid[:, kpos.clamp(min=0)]  # (B, Tk)
            allowed = allowed[None] & valid[:, None, :]
            # A fully masked row (a padding query) would give NaN; let it see itself.
            allowed = allowed | (~allowed.any(-1, keepdim=True) & (k == q)[None])
            return allowed[:, None], False
        if bool(allowed.all()):
            return None, False
        return allowed[None, None], False

    # ---- the per-layer call ------------------------------------------------
    def attend_kv(
        self, layer_idx: int, k: torch.Tensor, v: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, bool]:
        """Store this layer's new (B, Hkv, T, hd) keys/values; return (keys, values, mask, is_causal)."""
        window = self.specs[layer_idx].window
        if self._static is not None:
            at, smask = self._static[window]
            lc = self.cache.layers[layer_idx]  # type: ignore[union-attr]
            lc.k.index_copy_(2, at, k)
            lc.v.index_copy_(2, at, v)
            return lc.k, lc.v, smask, False
        if self._decode is not None:
            at, n, dmask = self._decode[window]
            lc = self.cache.layers[layer_idx]  # type: ignore[union-attr]
            lc.k[:, :, at : at + 1] = k
            lc.v[:, :, at : at + 1] = v
            return lc.k[:, :, :n], lc.v[:, :, :n], dmask, False
        mask, causal = self._masks[window]
        cache = self.cache
        if cache is None:
            return k, v, mask, causal
        lc = cache.layers[layer_idx]
        start, end = self.start, self.start + self.T
        if window is None:
            lc.k[:, :, start:end] = k
            lc.v[:, :, start:end] = v
            return lc.k[:, :, :end], lc.v[:, :, :end], mask, causal
        slots = lc.slots
        if self.T == 1 and start > 0:
            idx = start % slots
            lc.k[:, :, idx] = k[:, :, 0]
            lc.v[:, :, idx] = v[:, :, 0]
            return lc.k, lc.v, mask, causal
        if start == 0:
            keys, values = k, v
        else:
            keys, values = torch.cat([lc.k, k], dim=2), torch.cat([lc.v, v], dim=2)
        # keep the last `slots` new positions in the ring
        keep = min(self.T, slots)
        pos = torch.arange(end - keep, end, device=k.device)
        lc.k[:, :, pos % slots] = k[:, :, -keep:]
        lc.v[:, :, pos % slots] = v[:, :, -keep:]
        return keys, values, mask, causal

    def finish(self) -> None:
        """Advance the cache after all layers ran (called by the model at the end of forward)."""
        if self.cache is not None and self._static is None:
            self.cache.length = self.start + self.T


def attention_context(
    specs: list[LayerSpec],
    input_ids: torch.Tensor,
    cache: KVCache | None = None,
    attention_mask: torch.Tensor | None = None,
) -> AttentionContext:
    """Build the shared attention context for one forward pass over ``input_ids`` (B, T)."""
    B, T = input_ids.shape
    return AttentionContext(specs, T, B, input_ids.device, cache, attention_mask)

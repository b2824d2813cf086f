"""The conformance checks that need only the family and torch: building, forward, training, caching.

Each check is ``check_<name>(ctx) -> str``: it returns a one-line detail when
the family conforms and raises :class:`CheckFailed` (or :class:`Skip`) when it
does not. Every tolerance is stated in the failure message. The checks that
read or write checkpoints and compare with transformers live in
:mod:`.interop`; :data:`CHECKS` lists them all, in the order they run.
"""

from __future__ import annotations

import gc
import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from ..core.cache import make_cache
from .context import CheckFailed, SmokeContext
from .interop import (
    check_config_roundtrip,
    check_save_load_roundtrip,
    check_transformers_parity,
    check_weight_map_roundtrip,
)

CACHE_ATOL = 1e-4  # fp32: cached decoding vs one full forward pass
BF16_REL = 0.05  # bf16 logits vs fp32 logits, relative L2 error
RSS_FLOOR = 64 * 2**20  # meta build: RSS may grow by this much (Python objects, allocator noise)


def maxdiff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).abs().max()) if a.numel() else 0.0


def names_of(items: list[str], k: int = 5) -> str:
    more = f" ... and {len(items) - k} more" if len(items) > k else ""
    return ", ".join(items[:k]) + more


def tensors(model: torch.nn.Module) -> list[tuple[str, torch.Tensor]]:
    return [*model.named_parameters(), *model.named_buffers()]


def _rss() -> int | None:
    try:
        import psutil

        return int(psutil.Process().memory_info().rss)
    except ImportError:
        try:
            with open("/proc/self/statm") as fh:
                import os

                return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except OSError:
            return None


def _real_preset(family: Any) -> tuple[str, Any] | None:
    """The first preset reproducing a published config (else the first preset)."""
    presets = dict(family.presets)
    for name, p in presets.items():
        if p.source:
            return name, p.config
    return next(iter((n, p.config) for n, p in presets.items()), None)


# ---- building ------------------------------------------------------------------------
def check_meta_build(ctx: SmokeContext) -> str:
    fam = ctx.family
    with torch.device("meta"):
        model = fam.build_model(ctx.cfg)
    real = [n for n, t in tensors(model) if not t.is_meta]
    if real:
        raise CheckFailed(
            f"built under torch.device('meta'), {len(real)} tensor(s) were still allocated for real: "
            f"{names_of(real)}. __init__ must create tensors without an explicit device (fill "
            "values in init_weights())."
        )
    for attr in ("layer_specs", "init_weights", "tie_weights", "config"):
        if not hasattr(model, attr):
            raise CheckFailed(f"the model lacks {attr!r}, which the model contract requires.")
    preset = _real_preset(fam)
    if preset is None:
        return "smoke config: every tensor on meta (no presets to measure)"
    name, cfg = preset
    gc.collect()
    before = _rss()
    with torch.device("meta"):
        big = fam.build_model(cfg)
    after = _rss()
    real = [n for n, t in tensors(big) if not t.is_meta]
    if real:
        raise CheckFailed(f"preset {name!r} built on meta still allocated {names_of(real)}.")
    would = sum(t.numel() * t.element_size() for _, t in tensors(big))
    if before is None or after is None:
        return f"smoke + preset {name!r} ({would / 2**30:.2f} GiB): every tensor on meta"
    grew = after - before
    limit = max(RSS_FLOOR, would // 50)
    if grew > limit:
        raise CheckFailed(
            f"building preset {name!r} on meta grew RSS by {grew / 2**20:.0f} MiB (limit "
            f"{limit / 2**20:.0f} MiB, its weights are {would / 2**20:.0f} MiB): something in "
            "__init__ computes real data (a mask or table made with an explicit device?)."
        )
    return (
        f"smoke + preset {name!r}: {would / 2**30:.2f} GiB of tensors all on meta, "
        f"RSS grew {grew / 2**20:.1f} MiB"
    )


# ---- forward -------------------------------------------------------------------------
def _forward_ids(ctx: SmokeContext) -> torch.Tensor:
    return ctx.ids(2, min(int(ctx.cfg.context_length), 12))


def check_forward_fp32(ctx: SmokeContext) -> str:
    fam, cfg = ctx.family, ctx.cfg
    model = ctx.build()
    specs = list(fam.cache_specs(cfg))
    if list(model.layer_specs) != specs:
        raise CheckFailed(
            f"model.layer_specs ({model.layer_specs}) differs from family.cache_specs(cfg) ({specs})."
        )
    ids = _forward_ids(ctx)
    with torch.no_grad():
        logits = model(ids)
        last = model(ids, logits_to_keep=1)
    B, T = ids.shape
    want = (B, T, int(cfg.vocab_size))
    if tuple(logits.shape) != want or logits.dtype != torch.float32:
        raise CheckFailed(f"(B, T) ids gave logits {tuple(logits.shape)} {logits.dtype}; expected {want} float32.")
    if not bool(torch.isfinite(logits).all()):
        raise CheckFailed("fp32 logits contain NaN or inf right after init_weights().")
    if tuple(last.shape) != (B, 1, want[2]) or maxdiff(last, logits[:, -1:]) > 1e-5:
        raise CheckFailed(
            f"logits_to_keep=1 gave {tuple(last.shape)}, max |diff| to the last position "
            f"{maxdiff(last[:, -1:], logits[:, -1:]):.2e}; expected ({B}, 1, {want[2]}) and equal values."
        )
    return f"ids {tuple(ids.shape)} -> logits {want} float32, finite; logits_to_keep=1 matches"


def check_forward_bf16(ctx: SmokeContext) -> str:
    model = ctx.build()
    ids = _forward_ids(ctx)
    with torch.no_grad():
        ref = model(ids).float()
        model.to(torch.bfloat16)
        out = model(ids)
    if out.dtype != torch.bfloat16:
        raise CheckFailed(f"a model cast to bfloat16 returned {out.dtype} logits; expected bfloat16.")
    if out.shape != ref.shape or not bool(torch.isfinite(out).all()):
        raise CheckFailed(f"bf16 logits {tuple(out.shape)} (fp32 {tuple(ref.shape)}) or not finite.")
    rel = float((out.float() - ref).norm() / ref.norm().clamp_min(1e-12))
    if rel > BF16_REL:
        raise CheckFailed(f"bf16 logits are {rel:.3f} away from fp32 (relative L2, limit {BF16_REL}).")
    return f"logits {tuple(out.shape)} bfloat16, finite; relative L2 vs fp32 {rel:.4f}"


def _loss(model: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    logits = model(ids[:, :-1])
    return F.cross_entropy(logits.flatten(0, 1).float(), ids[:, 1:].flatten())


def check_finite_loss(ctx: SmokeContext) -> str:
    model = ctx.build().train()
    ids = ctx.ids(2, min(int(ctx.cfg.context_length), 16) + 1, seed=3)
    loss = _loss(model, ids)
    if not math.isfinite(loss.item()):
        raise CheckFailed(f"cross-entropy at init is {loss.item()}.")
    loss.backward()
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    bad = [n for n, p in params if p.grad is not None and not bool(torch.isfinite(p.grad).all())]
    if bad:
        raise CheckFailed(f"non-finite gradients in {names_of(bad)}.")
    unused = [n for n, p in params if p.grad is None]
    note = f"; {len(unused)} parameter(s) got no gradient ({names_of(unused, 3)})" if unused else ""
    return f"loss {loss.item():.4f} (ln vocab {math.log(ctx.cfg.vocab_size):.4f}), finite gradients{note}"


def check_train_step_lowers_loss(ctx: SmokeContext) -> str:
    model = ctx.build()
    ids = ctx.ids(2, min(int(ctx.cfg.context_length), 16) + 1, seed=4)
    with torch.no_grad():
        before = _loss(model.eval(), ids).item()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
    model.train()
    _loss(model, ids).backward()
    opt.step()
    with torch.no_grad():
        after = _loss(model.eval(), ids).item()
    if not after < before:
        raise CheckFailed(
            f"one AdamW step (lr 1e-3) on a fixed batch did not lower its loss: {before:.5f} -> {after:.5f}."
        )
    return f"loss {before:.4f} -> {after:.4f} after one AdamW step"


# ---- caching and batching ---------------------------------------------------------------
def check_cache_matches_full_forward(ctx: SmokeContext) -> str:
    cfg, S, note = ctx.long
    model = ctx.build(cfg, perturb=True)
    ids = ctx.ids(2, S, seed=5, cfg=cfg)
    cache = make_cache(list(model.layer_specs), 2, S)
    P = min(3, S - 1)
    C = min(4, S - P - 1)
    cuts = [0, P, *([P + C] if C > 0 else []), *range(P + max(C, 0) + 1, S + 1)]
    worst, at = 0.0, 0
    with torch.no_grad():
        full = model(ids)
        for a, b in zip(cuts[:-1], cuts[1:], strict=True):
            out = model(ids[:, a:b], cache=cache)
            d = maxdiff(out, full[:, a:b])
            if d > worst:
                worst, at = d, a
    if worst > CACHE_ATOL:
        raise CheckFailed(
            f"decoding with the KV cache differs from the full forward pass by {worst:.2e} "
            f"(limit {CACHE_ATOL}) from position {at} on, over {S} tokens ({note})."
        )
    if cache.length != S:
        raise CheckFailed(f"after {S} tokens the cache says it holds {cache.length} positions.")
    return f"prefill {P} + chunk {C} + single steps to {S} tokens ({note}); max |diff| {worst:.1e}"


def check_batch_matches_single(ctx: SmokeContext) -> str:
    cfg, S, note = ctx.long
    model = ctx.build(cfg, perturb=True)
    steps = 3
    la = max(2, S - steps)
    lb = max(1, la - 5)
    a, b = ctx.ids(1, la + steps, seed=6, cfg=cfg), ctx.ids(1, lb + steps, seed=7, cfg=cfg)
    pad = la - lb
    batch = torch.cat([a[:, :la], torch.cat([torch.zeros(1, pad, dtype=torch.long), b[:, :lb]], 1)])
    mask = torch.ones(2, la, dtype=torch.long)
    mask[1, :pad] = 0
    worst: dict[str, float] = {}
    with torch.no_grad():
        ref_a, ref_b = model(a), model(b)

        def compare(what: str, out: torch.Tensor, ia: slice, ib: slice, oa: slice, ob: slice) -> None:
            d = max(maxdiff(out[0, oa], ref_a[0, ia]), maxdiff(out[1, ob], ref_b[0, ib]))
            worst[what] = max(worst.get(what, 0.0), d)

        out = model(batch, attention_mask=mask)
        compare("padded forward", out, slice(0, la), slice(0, lb), slice(0, la), slice(pad, la))
        cache = make_cache(list(model.layer_specs), 2, la + steps)
        out = model(batch, cache=cache, attention_mask=mask)
        compare("padded prefill", out, slice(0, la), slice(0, lb), slice(0, la), slice(pad, la))
        for t in range(steps):
            step = torch.stack([a[0, la + t], b[0, lb + t]])[:, None]
            out = model(step, cache=cache)
            compare("decode after padding", out, slice(la + t, la + t + 1), slice(lb + t, lb + t + 1), slice(0, 1), slice(0, 1))
    bad = {k: v for k, v in worst.items() if v > CACHE_ATOL}
    if bad:
        raise CheckFailed(
            "a left-padded batch of 2 differs from the two sequences run alone: "
            + ", ".join(f"{k} by {v:.2e}" for k, v in bad.items())
            + f" (limit {CACHE_ATOL}; lengths {la} and {lb}, {note})."
        )
    return f"lengths {la} and {lb} (left pad {pad}), then {steps} cached steps; max |diff| {max(worst.values()):.1e}"


# ---- generation --------------------------------------------------------------------------
def check_greedy_generation(ctx: SmokeContext) -> str:
    from ..core.generate import generate

    cfg, S, _ = ctx.long
    model = ctx.build(cfg, perturb=True)
    P = min(5, S - 2)
    n = min(10, S - P)
    prompt = ctx.ids(1, P, seed=8, cfg=cfg)[0].tolist()
    first = generate(model, prompt, max_new_tokens=n, temperature=0).new_ids[0]
    again = generate(model, prompt, max_new_tokens=n, temperature=0).new_ids[0]
    nocache = generate(model, prompt, max_new_tokens=n, temperature=0, use_cache=False).new_ids[0]
    if not (first == again == nocache):
        raise CheckFailed(f"greedy ids differ between runs: {first}, {again}, without cache {nocache}.")
    seq = list(prompt)
    with torch.no_grad():  # greedy by hand: argmax of one full forward pass per step
        for _ in range(n):
            seq.append(int(model(torch.tensor([seq]))[0, -1].argmax()))
    if seq[P:] != first:
        raise CheckFailed(f"generate() gave {first}, argmax of full forward passes gives {seq[P:]}.")
    # stop on a token whose first appearance is as late as possible
    firsts = {tok: first.index(tok) for tok in reversed(first)}
    stop, k = max(firsts.items(), key=lambda kv: kv[1])
    res = generate(model, prompt, max_new_tokens=n, temperature=0, stop_token_ids=[stop])
    if res.new_ids[0] != first[:k] or not res.stopped[0]:
        raise CheckFailed(
            f"with stop token {stop} (first produced at step {k}) generation gave {res.new_ids[0]} "
            f"(stopped={res.stopped[0]}); expected {first[:k]} and stopped=True."
        )
    return f"{n} ids deterministic, equal with/without cache and to argmax; stops on {stop} at step {k}"


CHECKS: dict[str, Callable[[SmokeContext], str]] = {
    "meta_build": check_meta_build,
    "forward_fp32": check_forward_fp32,
    "forward_bf16": check_forward_bf16,
    "finite_loss": check_finite_loss,
    "train_step_lowers_loss": check_train_step_lowers_loss,
    "cache_matches_full_forward": check_cache_matches_full_forward,
    "batch_matches_single": check_batch_matches_single,
    "config_roundtrip": check_config_roundtrip,
    "weight_map_roundtrip": check_weight_map_roundtrip,
    "save_load_roundtrip": check_save_load_roundtrip,
    "greedy_generation": check_greedy_generation,
    "transformers_parity": check_transformers_parity,
}

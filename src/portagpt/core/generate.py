"""The generation harness: token ids in, token ids out, for any family's model.

It only relies on the model contract (``adapters/family.py``): ``model(ids,
cache=, attention_mask=, logits_to_keep=)``, ``model.layer_specs`` and
``model.config.context_length``. It never asks which family it runs.

How a call goes:

* prompts of different lengths are left-padded into one (B, P) batch, with a
  mask of real tokens; the mask goes to the prefill forward only (the KV cache
  remembers which keys are padding);
* each step computes logits for the last position only (``logits_to_keep=1``),
  picks the next token (greedy, or temperature -> top-k -> top-p -> min-p ->
  sample), and writes it into a (B, ...) ids buffer that starts 256 slots
  past the prompt and doubles when full (a huge ``max_new_tokens`` costs
  nothing up front; the copies are O(1) amortised per step). Non-finite
  logits stop the call with :class:`~portagpt.errors.NonFiniteError`;
* the context is the last ``context_length`` tokens (chapter 5's
  ``idx[:, -context_size:]``). The cache is used while prompt + generated fits
  in the context; past it every step recomputes over the cropped window
  without a cache, exactly as the no-cache path does, so output with and
  without the cache is the same;
* a model may declare that its cached keys go stale when the sequence grows
  past N positions (LongRoPE switches to its long frequencies there): any
  submodule with an int ``reprefill_at`` attribute (``core.rope.RotaryEmbedding``
  sets it). When a step's sequence first grows past N, the harness drops the
  cache and prefills the whole sequence again (transformers does the same for
  such models), so cached and uncached decoding give the same ids;
* stop tokens end a row. **The stop token is not part of the result** (as in
  chapter 5's ``generate``): ``new_ids`` ends just before it and ``stopped``
  says the row ended that way. A finished row emits ``pad_token_id`` from the
  step it sampled its stop token on; generation ends when every row finished.

``compile=True`` runs the one-token decode steps through ``torch.compile``
(prefill and the cropped-context steps stay eager): the cache is then read
through its fixed-shape form (``KVCache.length_t``: every slot, with a mask),
so the step compiles once and is reused by later calls with the same batch
size and cache length. The compiled step computes the same logits up to
rounding (fused kernels), so greedy ids match the eager ones.

On CPU, models under ``SMALL_MODEL_BYTES`` of weights decode on one thread
(``threads=None``): their steps are a few microseconds of arithmetic per op,
and handing each op to a second thread costs more than it saves (on a busy
machine, a thread that is not scheduled stalls every op). Larger models'
one-token steps run on the count a :class:`~portagpt.core.threads.ThreadChooser`
measures to be faster, torch's count or one, re-checked now and then: which
wins depends on what else the machine runs, not on the model alone. The
prefill runs on the count the chooser prefers once it has timed both (a
prefill on two contended threads costs as much as several steps), on torch's
count before that. ``threads=N`` sets the count for every step
explicitly; torch's own setting is restored between steps, so code running
between streamed tokens never sees the change.

Sampling draws with the exponential-race trick (argmax of ``probs / Exp(1)``
noise), which takes the same B x vocab random numbers every step whatever the
distribution looks like; with ``seed`` set, a private ``torch.Generator`` makes
the same call give the same ids.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Generator, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..errors import CompileError, NonFiniteError, UsageError
from .cache import KVCache, make_cache
from .threads import decode_threads, prefill_threads

Prompt = Sequence[int] | Sequence[Sequence[int]] | torch.Tensor


@dataclass
class GenerationResult:
    """What one :func:`generate` call produced.

    ``new_ids[r]`` are row ``r``'s new tokens, without the stop token;
    ``stopped[r]`` is True when the row ended on a stop token (False: it ran to
    ``max_new_tokens``). ``seconds`` is the wall time of the whole call.
    """

    prompt_ids: list[list[int]]
    new_ids: list[list[int]]
    stopped: list[bool]
    seconds: float

    @property
    def new_tokens(self) -> int:
        return sum(len(ids) for ids in self.new_ids)

    @property
    def tokens_per_second(self) -> float:
        return self.new_tokens / self.seconds if self.seconds > 0 else float("inf")


# ---- options ------------------------------------------------------------------
def check_options(
    max_new_tokens: int,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    min_p: float | None = None,
) -> None:
    """Raise UsageError (naming the CLI flag too) for a nonsensical sampling option."""
    if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise UsageError(
            f"max_new_tokens (--max-new-tokens) must be a whole number >= 1, got {max_new_tokens!r}; "
            "ask for at least one new token, e.g. --max-new-tokens 50."
        )
    if not 0 <= temperature < float("inf"):  # also catches NaN
        raise UsageError(
            f"temperature (--temperature) must be a finite number >= 0, got {temperature!r}; use 0 "
            "for greedy decoding or a positive value such as 0.8 to sample."
        )
    if top_k is not None and (not isinstance(top_k, int) or top_k < 1):
        raise UsageError(
            f"top_k (--top-k) must be a whole number >= 1, got {top_k!r}; leave it out to keep "
            "every token, or pass e.g. --top-k 50."
        )
    if top_p is not None and not 0 < top_p <= 1:
        raise UsageError(
            f"top_p (--top-p) must be in (0, 1], got {top_p!r}; it is the probability mass to "
            "keep, e.g. --top-p 0.9 (1 keeps every token)."
        )
    if min_p is not None and not 0 <= min_p <= 1:
        raise UsageError(
            f"min_p (--min-p) must be in [0, 1], got {min_p!r}; it keeps tokens at least that "
            "fraction as likely as the most likely one, e.g. --min-p 0.05."
        )


# ---- sampling -------------------------------------------------------------------
def top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the ``k`` largest logits of each row (ties with the k-th kept), the rest -inf."""
    if k >= logits.shape[-1]:
        return logits
    kth = torch.topk(logits, k, dim=-1).values[..., -1:]  # (B, 1)
    return logits.masked_fill(logits < kth, float("-inf"))


def top_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Nucleus: keep the smallest top set whose probability reaches ``p`` (the top token always)."""
    if p >= 1:
        return logits
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
    probs = sorted_logits.softmax(dim=-1)
    mass_before = probs.cumsum(dim=-1) - probs  # probability of the tokens ranked above
    drop_sorted = mass_before >= p  # the top token has 0 before it, and p > 0
    drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


def min_p_filter(logits: torch.Tensor, min_p: float) -> torch.Tensor:
    """Keep tokens whose probability is at least ``min_p`` times the row's largest one."""
    if min_p <= 0:
        return logits
    probs = logits.softmax(dim=-1)
    floor = probs.amax(dim=-1, keepdim=True) * min_p
    return logits.masked_fill(probs < floor, float("-inf"))


def next_token(
    logits: torch.Tensor,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    min_p: float | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """(B, vocab) last-position logits -> (B,) next ids: greedy at temperature 0, else sampled.

    Each row is shifted so its largest logit is 0 before dividing by the
    temperature, so a tiny temperature sends the others to -inf (never inf,
    never NaN); below float32's smallest normal number it is greedy outright.
    """
    if temperature < torch.finfo(torch.float32).tiny:  # 0, or too small for float32: greedy
        return logits.argmax(dim=-1)
    logits = logits.float()
    # shift so each row's largest logit is 0 before dividing: the same distribution, but a tiny
    # temperature sends the others to -inf instead of overflowing the top one to inf (NaN)
    logits = (logits - logits.amax(dim=-1, keepdim=True)) / temperature
    if top_k is not None:
        logits = top_k_filter(logits, top_k)
    if top_p is not None:
        logits = top_p_filter(logits, top_p)
    if min_p is not None:
        logits = min_p_filter(logits, min_p)
    probs = logits.softmax(dim=-1)
    noise = torch.empty_like(probs).exponential_(1.0, generator=generator)
    return (probs / noise).argmax(dim=-1)  # a draw from probs; filtered tokens have prob 0


# ---- prompts ------------------------------------------------------------------------
def _prompt_rows(input_ids: Prompt, attention_mask: torch.Tensor | None) -> list[list[int]]:
    """The real (unpadded) token ids of each prompt row."""
    if isinstance(input_ids, torch.Tensor):
        ids = input_ids if input_ids.dim() == 2 else input_ids.reshape(1, -1)
        if input_ids.dim() not in (1, 2) or ids.dtype.is_floating_point:
            raise UsageError(
                f"input_ids must be a 1-D or 2-D tensor of integer token ids, got shape "
                f"{tuple(input_ids.shape)} of {input_ids.dtype}."
            )
        if attention_mask is None:
            return ids.tolist()
        am = attention_mask.reshape(ids.shape).bool()
        if bool((am[:, 1:] < am[:, :-1]).any()):
            raise UsageError(
                "attention_mask must describe left padding (each row: zeros, then ones); this one "
                "has padding after real tokens. Left-pad the prompts, or pass lists of ids and let "
                "generate() pad them."
            )
        return [row[m].tolist() for row, m in zip(ids, am, strict=True)]
    rows = list(input_ids)
    if all(not isinstance(r, (Sequence, torch.Tensor)) for r in rows):  # one prompt of ids
        return [[int(i) for i in rows]]  # type: ignore[arg-type]
    return [[int(i) for i in r] for r in rows]  # type: ignore[union-attr]


def _check_rows(rows: list[list[int]], vocab_size: int | None) -> None:
    if not rows or any(len(r) == 0 for r in rows):
        raise UsageError(
            "Every prompt needs at least one token id (got an empty prompt); start it with the "
            "tokenizer's BOS / end-of-text token if you want unconditional text."
        )
    low = min(min(r) for r in rows)
    high = max(max(r) for r in rows)
    if low < 0 or (vocab_size is not None and high >= vocab_size):
        raise UsageError(
            f"Prompt token ids must lie in [0, {vocab_size}) for this model's vocabulary, found "
            f"ids from {low} to {high}; encode the prompt with the checkpoint's own tokenizer."
        )


def _model_place(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    device, dtype = torch.device("cpu"), torch.float32
    for i, p in enumerate(model.parameters()):
        if i == 0:
            device = p.device
        if p.is_floating_point():
            return device, p.dtype
    return device, dtype


# ---- threads ------------------------------------------------------------------------------
SMALL_MODEL_BYTES = 16 * 2**20  # below this, one CPU thread decodes faster than several


def _weight_bytes(model: nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters())


def step_threads(model: nn.Module, device: torch.device, threads: int | None) -> int | None:
    """Threads for each generation step: ``threads`` if given; on CPU one for a small model;
    else None (torch's setting)."""
    if threads is not None:
        cores = os.cpu_count() or 1
        if not isinstance(threads, int) or not 1 <= threads <= cores:
            raise UsageError(
                f"threads (--threads) must be a whole number from 1 to this machine's {cores} "
                f"CPU cores, got {threads!r}; leave it out to let portagpt choose (one thread for "
                "small models on CPU)."
            )
        return threads
    if device.type == "cpu" and _weight_bytes(model) < SMALL_MODEL_BYTES:
        return 1
    return None


# ---- compiled decode step ----------------------------------------------------------------
_COMPILED = "_portagpt_compiled_forward"  # where a model keeps its compiled forward


def check_cpu_compiler() -> None:
    """Raise CompileError unless inductor finds a C++ compiler (what it builds CPU kernels with)."""
    try:
        from torch._inductor.cpp_builder import get_cpp_compiler

        get_cpp_compiler()
    except Exception as exc:  # noqa: BLE001 - any failure means: no usable C++ compiler
        raise CompileError(
            "compile=True (--compile) needs a C++ compiler on CPU: torch.compile's inductor "
            f"backend builds C++ kernels, and it found none ({type(exc).__name__}: "
            f"{str(exc).strip().splitlines()[0] if str(exc).strip() else 'no detail'}). "
            "Install one (e.g. `apt-get install g++`, or set CXX to a compiler), or run "
            "without compile=True / --compile: the output is the same, only slower."
        ) from exc


def cpu_compiler_available() -> bool:
    """Whether ``compile=True`` can build on CPU here (see :func:`check_cpu_compiler`)."""
    try:
        check_cpu_compiler()
    except CompileError:
        return False
    return True


def compiled_forward(model: nn.Module, device: torch.device) -> Callable[..., torch.Tensor]:
    """``torch.compile(model.forward)``, made once per model and kept on it (not in its state).

    Raises CompileError when the compiler toolchain is missing (on CPU, inductor
    builds C++ and needs a compiler such as g++).
    """
    fn = model.__dict__.get(_COMPILED)
    if fn is not None:
        return fn
    if device.type == "cpu":
        check_cpu_compiler()
    fn = torch.compile(model.forward, dynamic=False)
    model.__dict__[_COMPILED] = fn
    return fn


def _compile_failed(exc: Exception) -> CompileError:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return CompileError(
        f"torch.compile could not build this model's decode step ({type(exc).__name__}: "
        f"{first[:300]}). Run without compile=True / --compile: the output is the same, only "
        "slower; if the message names the C++ compiler, install one (e.g. g++) or set CXX."
    )


# ---- the loop -----------------------------------------------------------------------
def reprefill_points(model: nn.Module) -> tuple[int, ...]:
    """Sequence lengths past which the model's cached keys are stale (sorted, maybe empty).

    Declared by any submodule through an int ``reprefill_at`` attribute; the
    harness never asks which family it runs.
    """
    points = {getattr(m, "reprefill_at", None) for m in model.modules()}
    return tuple(sorted(int(n) for n in points if isinstance(n, int) and n > 0))


class _Run:
    """State of one generation call; every tensor is made and used under inference mode."""

    @torch.inference_mode()
    def __init__(
        self,
        model: nn.Module,
        rows: list[list[int]],
        max_new_tokens: int,
        use_cache: bool,
        context_length: int,
        pad_token_id: int,
        stop_token_ids: tuple[int, ...],
        compile: bool = False,
    ) -> None:
        self.model = model
        device, dtype = _model_place(model)
        self.step: Callable[..., torch.Tensor] | None = (
            compiled_forward(model, device) if compile and use_cache else None
        )
        B, P = len(rows), max(len(r) for r in rows)
        self.B, self.P, self.ctx = B, P, context_length
        self.pad = pad_token_id
        total = P + max_new_tokens
        self.total = total
        # what the model is fed: padding slots hold id 0 (masked out), never pad_token_id,
        # which may be any sentinel (it is only what finished rows report). The buffer grows
        # with the tokens made (see _room), so a huge max_new_tokens costs nothing up front.
        size = min(total, P + 256)
        self.seq = torch.zeros((B, size), dtype=torch.long, device=device)
        self.real = torch.ones((B, size), dtype=torch.bool, device=device)
        for r, ids in enumerate(rows):
            self.seq[r, P - len(ids) : P] = torch.tensor(ids, dtype=torch.long)
            self.real[r, : P - len(ids)] = False
        self.padded = any(len(r) < P for r in rows)
        self.stops = (
            torch.tensor(stop_token_ids, dtype=torch.long, device=device)
            if stop_token_ids
            else None
        )
        self.finished = torch.zeros(B, dtype=torch.bool, device=device)
        self.n_new = torch.full((B,), max_new_tokens, dtype=torch.long, device=device)
        self.cache: KVCache | None = None
        self.reprefill = reprefill_points(model)
        if use_cache and P <= context_length:
            max_len = min(total - 1, context_length)  # the last new token is never fed back
            self.cache = make_cache(model.layer_specs, B, max_len, dtype, device)

    @torch.inference_mode()
    def logits(self, t: int) -> torch.Tensor:
        """(B, vocab) logits for the position after the first P + t tokens."""
        hi = self.P + t
        if self.cache is not None and hi <= self.ctx:
            prefill = t == 0 or self._stale(hi)
            if prefill:
                if t > 0:
                    self.cache.reset()  # re-prefill: the cached keys are stale past this length
                x, mask = self.seq[:, :hi], (self.real[:, :hi] if self.padded else None)
            else:
                x, mask = self.seq[:, hi - 1 : hi], None  # the cache knows the padding
            if not prefill and self.step is not None:
                return self._compiled_logits(x)
            out = self.model(x, cache=self.cache, attention_mask=mask, logits_to_keep=1)
        else:
            self.cache = None  # past the context (or no cache): recompute the cropped window
            lo = max(0, hi - self.ctx)
            mask = self.real[:, lo:hi] if self.padded else None
            out = self.model(self.seq[:, lo:hi], attention_mask=mask, logits_to_keep=1)
        return out[:, -1]

    def _stale(self, hi: int) -> bool:
        """Whether feeding the first ``hi`` tokens crosses a declared re-prefill point."""
        assert self.cache is not None
        return any(self.cache.length <= n < hi for n in self.reprefill)

    def _compiled_logits(self, x: torch.Tensor) -> torch.Tensor:
        cache = self.cache
        assert cache is not None and self.step is not None
        if cache.length_t is None:
            cache.length_t = torch.zeros(1, dtype=torch.long, device=x.device)
        cache.length_t.fill_(cache.length)
        try:
            out = self.step(x, cache=cache, attention_mask=None, logits_to_keep=1)
        except CompileError:
            raise
        except Exception as exc:
            if _is_compile_error(exc):
                raise _compile_failed(exc) from exc
            raise
        cache.length += 1
        return out[:, -1]

    @torch.inference_mode()
    def take(self, t: int, nxt: torch.Tensor) -> torch.Tensor:
        """Record step ``t``'s (B,) picks; returns them with finished rows (just now too) as pad."""
        self._room(self.P + t + 1)
        self.seq[:, self.P + t] = nxt  # finished rows keep being fed real ids; nobody reads them
        if self.stops is None:
            return nxt
        hit = torch.isin(nxt, self.stops) & ~self.finished
        self.n_new = torch.where(hit, t, self.n_new)
        self.finished |= hit
        return torch.where(self.finished, self.pad, nxt)

    def _room(self, n: int) -> None:
        """Grow the buffers (doubling, at most to P + max_new_tokens) to hold ``n`` positions."""
        have = self.seq.shape[1]
        if n <= have:
            return
        size = min(self.total, max(n, 2 * have))
        B = self.seq.shape[0]
        self.seq = torch.cat([self.seq, self.seq.new_zeros((B, size - have))], dim=1)
        self.real = torch.cat([self.real, self.real.new_ones((B, size - have))], dim=1)

    def all_finished(self) -> bool:
        return self.stops is not None and bool(self.finished.all())

    def new_ids(self) -> list[list[int]]:
        counts = self.n_new.tolist()
        return [self.seq[r, self.P : self.P + n].tolist() for r, n in enumerate(counts)]


def check_finite(logits: torch.Tensor, t: int, finished: torch.Tensor) -> None:
    """Raise NonFiniteError when a row still generating has a NaN or infinite logit at step ``t``."""
    if bool(torch.isfinite(logits).all()):  # the common case: two ops per step
        return
    bad = ~torch.isfinite(logits).all(dim=-1) & ~finished
    if bool(bad.any()):
        rows = bad.nonzero().flatten().tolist()
        raise NonFiniteError(
            f"Generation step {t} (new token {t + 1}) produced non-finite logits (NaN or inf) for "
            f"{'row' if len(rows) == 1 else 'rows'} {', '.join(map(str, rows[:8]))}: the weights "
            "hold NaN/inf values or overflow this dtype. Check them with `portagpt load` (its "
            "forward check), or try --dtype float32."
        )


def _is_compile_error(exc: Exception) -> bool:
    """Whether ``exc`` comes from torch.compile's machinery rather than from the model."""
    import subprocess

    from torch._dynamo.exc import TorchDynamoException

    return isinstance(exc, (TorchDynamoException, subprocess.CalledProcessError)) or type(
        exc
    ).__module__.startswith(("torch._inductor", "torch._dynamo"))


def _stop_ids(stop_token_ids: Iterable[int] | int) -> tuple[int, ...]:
    if isinstance(stop_token_ids, int):
        return (stop_token_ids,)
    return tuple(int(i) for i in stop_token_ids)


def _checked_context(model: nn.Module, rows: list[list[int]], context_length: int | None) -> int:
    """The context to keep (default: the model's), once the prompt ids fit its vocabulary."""
    config = getattr(model, "config", None)
    _check_rows(rows, getattr(config, "vocab_size", None))
    model_ctx = getattr(config, "context_length", None)
    ctx = context_length if context_length is not None else model_ctx
    if ctx is None or ctx < 1 or (model_ctx is not None and ctx > model_ctx):
        raise UsageError(
            f"context_length must be between 1 and the model's {model_ctx} positions, got {ctx!r}; "
            "leave it out to use the model's own context length."
        )
    return ctx


def _seeded_generator(device: torch.device, seed: int | None) -> torch.Generator | None:
    """A generator seeded with ``seed``; None (torch's global RNG) without one."""
    if seed is None:
        return None
    generator = torch.Generator(device=device)
    generator.manual_seed(seed)
    return generator


def stream(
    model: nn.Module,
    input_ids: Prompt,
    *,
    max_new_tokens: int,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    min_p: float | None = None,
    stop_token_ids: Iterable[int] | int = (),
    seed: int | None = None,
    use_cache: bool = True,
    context_length: int | None = None,
    pad_token_id: int | None = None,
    attention_mask: torch.Tensor | None = None,
    compile: bool = False,
    threads: int | None = None,
) -> Generator[Any, None, GenerationResult]:
    """Generate token by token; yields as each step is decided, returns a GenerationResult.

    With one prompt it yields each new id as an ``int`` (the stop token is not
    yielded). With B prompts it yields, per step, a (B,) LongTensor where a
    finished row (from the step that sampled its stop token on) holds
    ``pad_token_id``. ``result = yield from stream(...)`` gets the result.
    Arguments are those of :func:`generate`.
    """
    check_options(max_new_tokens, temperature, top_k, top_p, min_p)
    if compile and not use_cache:
        raise UsageError(
            "compile=True (--compile) compiles the cached one-token decode step, and "
            "use_cache=False (--no-cache) has none; drop one of the two."
        )
    stops = _stop_ids(stop_token_ids)
    rows = _prompt_rows(input_ids, attention_mask)
    ctx = _checked_context(model, rows, context_length)
    if pad_token_id is None:
        pad_token_id = stops[0] if stops else 0
    device, _ = _model_place(model)
    fixed = step_threads(model, device, threads)
    n_threads = decode_threads(model, device, fixed)
    first_threads = prefill_threads(n_threads)  # many rows: see the module docstring
    generator = _seeded_generator(device, seed)

    start = time.perf_counter()
    was_training = model.training
    model.eval()
    try:
        run = _Run(model, rows, max_new_tokens, use_cache, ctx, pad_token_id, stops, compile)
        for t in range(max_new_tokens):
            with torch.inference_mode(), (n_threads if t else first_threads):
                logits = run.logits(t)
                check_finite(logits, t, run.finished)
                nxt = next_token(logits, temperature, top_k, top_p, min_p, generator)
                nxt = run.take(t, nxt)
            if run.B == 1:
                if not run.all_finished():
                    yield int(nxt[0])
            else:
                yield nxt.clone()  # a normal tensor, usable outside inference mode
            if run.all_finished():
                break
        new_ids = run.new_ids()
    finally:
        model.train(was_training)
    return GenerationResult(
        prompt_ids=rows,
        new_ids=new_ids,
        stopped=run.finished.tolist(),
        seconds=time.perf_counter() - start,
    )


def generate(
    model: nn.Module,
    input_ids: Prompt,
    *,
    max_new_tokens: int,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    min_p: float | None = None,
    stop_token_ids: Iterable[int] | int = (),
    seed: int | None = None,
    use_cache: bool = True,
    context_length: int | None = None,
    pad_token_id: int | None = None,
    attention_mask: torch.Tensor | None = None,
    callback: Callable[[Any], None] | None = None,
    compile: bool = False,
    threads: int | None = None,
) -> GenerationResult:
    """Continue each prompt by up to ``max_new_tokens`` ids.

    ``input_ids``: one prompt (list of ids, 1-D tensor), several (list of lists,
    left-padded here), or a (B, T) tensor with an optional left-padding
    ``attention_mask``. ``temperature=0`` is greedy; otherwise logits are
    divided by it, then filtered by ``top_k``, ``top_p`` (nucleus) and
    ``min_p`` in that order, and sampled with a generator seeded from ``seed``
    (None: torch's global RNG). ``context_length`` (default: the model's) crops
    the context to its last N tokens. ``use_cache=False`` recomputes the whole
    context each step (same ids, slower). ``callback`` receives what
    :func:`stream` yields, as it is produced. ``compile=True`` runs the cached
    one-token steps through ``torch.compile`` (slow first call; raises
    CompileError when the compiler toolchain is missing). ``threads`` sets the
    torch threads of each step (default: one on CPU for models under
    ``SMALL_MODEL_BYTES``, else measured as it goes: see the module docstring).
    """
    gen = stream(
        model,
        input_ids,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        min_p=min_p,
        stop_token_ids=stop_token_ids,
        seed=seed,
        use_cache=use_cache,
        context_length=context_length,
        pad_token_id=pad_token_id,
        attention_mask=attention_mask,
        compile=compile,
        threads=threads,
    )
    while True:
        try:
            item = next(gen)
        except StopIteration as done:
            return done.value
        if callback is not None:
            callback(item)

"""Multi-turn chat over one KV cache: each turn prefills only the tokens it adds.

A :class:`Chat` holds the conversation (``messages``), one preallocated KV
cache, and the token ids that cache holds. A turn:

1. renders the whole conversation with the tokenizer's chat template
   (jinja2, as transformers renders it, with the generation prompt) and
   tokenises it without adding special tokens (the template writes them);
2. keeps the longest prefix of those ids that the cache already holds and
   prefills only the rest. Usually the prefix is everything up to the new
   user message; when the template spells the last answer differently from
   the ids that were sampled (a different tokenisation of the same text, or
   a template that drops earlier reasoning), the cache is rewound to where
   they agree. A rewind is free for full-attention layers; a model with
   sliding-window layers re-prefills from the start instead, since its rings
   no longer hold the older positions;
3. samples the answer token by token (the sampling of ``core.generate``),
   yielding text as it becomes printable, until an end-of-turn token: the
   tokenizer's stop ids plus the token the template writes after an
   assistant message (e.g. ``<|im_end|>``, ``<|eot_id|>``).

So after every turn, the ids in the cache are exactly the tokenisation of the
rendered conversation up to the answer, the same ids a fresh prefill of the
whole conversation would see. ``turns`` records, per turn, the tokens
prefilled and the conversation's length (what a re-prefill would cost).

Stopping the iteration early (Ctrl-C in the CLI) keeps the answer so far as
the assistant's message; the cache stays consistent because the ids are
recorded only after each forward pass completes.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..errors import TokenizerError, UsageError
from .cache import KVCache, make_cache
from .generate import check_options, next_token, step_threads
from .threads import Threads

SENTINEL = "\u2063portagpt-answer\u2063"  # text no template changes, to find what follows an answer
DEFAULT_MAX_CONTEXT = 4096


class ContextFullError(UsageError):
    """The conversation no longer fits the chat's KV cache."""


@dataclass
class Turn:
    """What one turn cost: tokens prefilled, and the conversation's length (a full re-prefill)."""

    prefilled: int
    conversation: int
    generated: int = 0
    stopped: bool = False


@dataclass
class SamplingOptions:
    max_new_tokens: int = 512
    temperature: float = 0.0
    top_k: int | None = None
    top_p: float | None = None
    min_p: float | None = None
    seed: int | None = None


def encode_rendered(tokenizer: Any, text: str) -> list[int]:
    """Ids of template output: no special tokens added (the template wrote them)."""
    inner = getattr(tokenizer, "tokenizer", None)
    if inner is not None and hasattr(inner, "encode") and hasattr(inner, "get_vocab_size"):
        return list(inner.encode(text, add_special_tokens=False).ids)  # a tokenizers.Tokenizer
    encoding = getattr(tokenizer, "encoding", None)
    if encoding is not None:  # tiktoken
        return list(encoding.encode(text, allowed_special="all"))
    return list(tokenizer.encode(text))


def end_of_turn_ids(tokenizer: Any) -> tuple[int, ...]:
    """The tokenizer's stop ids plus the first token the template writes after an answer."""
    stops = list(getattr(tokenizer, "stop_token_ids", ()) or ())
    convo = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": SENTINEL}]
    try:
        text = tokenizer.apply_chat_template(convo, add_generation_prompt=False)
    except TokenizerError:
        return tuple(stops)
    after = text.split(SENTINEL, 1)[1] if SENTINEL in text else ""
    ids = encode_rendered(tokenizer, after.lstrip(" ")) if after.strip() else []
    if ids and tokenizer.decode(ids[:1]).strip() and ids[0] not in stops:
        stops.append(ids[0])
    return tuple(stops)


@dataclass
class Chat:
    """A multi-turn conversation with ``model`` (see the module docstring)."""

    model: nn.Module
    tokenizer: Any
    system: str | None = None
    options: SamplingOptions = field(default_factory=SamplingOptions)
    max_context: int | None = None
    threads: int | None = None
    messages: list[dict[str, str]] = field(default_factory=list)
    turns: list[Turn] = field(default_factory=list)
    cached_ids: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not getattr(self.tokenizer, "chat_template", None):
            raise TokenizerError(
                "This checkpoint's tokenizer has no chat template (no 'chat_template' in "
                "tokenizer_config.json, no chat_template.jinja), so there is no way to know how it "
                "expects a conversation to be written. Use `portagpt generate --prompt TEXT` for "
                "plain text continuation, or a chat/instruct checkpoint."
            )
        o = self.options
        check_options(o.max_new_tokens, o.temperature, o.top_k, o.top_p, o.min_p)
        if self.system and not self.messages:
            self.messages.append({"role": "system", "content": self.system})
        ctx = int(self.model.config.context_length)
        self.max_len = min(ctx, self.max_context or DEFAULT_MAX_CONTEXT)
        param = next(self.model.parameters())
        self.device, self.dtype = param.device, param.dtype
        specs = self.model.layer_specs
        self.cache: KVCache = make_cache(specs, 1, self.max_len, self.dtype, self.device)
        self.sliding = any(s.window is not None for s in self.model.layer_specs)
        self.stops = end_of_turn_ids(self.tokenizer)
        self.n_threads = Threads(step_threads(self.model, self.device, self.threads))
        self.generator: torch.Generator | None = None
        if o.seed is not None:
            self.generator = torch.Generator(device=self.device)
            self.generator.manual_seed(o.seed)

    # ---- the conversation as ids ---------------------------------------------------
    def render(self, add_generation_prompt: bool = True) -> str:
        return self.tokenizer.apply_chat_template(
            self.messages, add_generation_prompt=add_generation_prompt
        )

    def prompt_ids(self) -> list[int]:
        return encode_rendered(self.tokenizer, self.render())

    def _rewind(self, ids: list[int]) -> int:
        """Keep the cached prefix shared with ``ids``; returns its length."""
        keep = 0
        for a, b in zip(self.cached_ids, ids, strict=False):
            if a != b:
                break
            keep += 1
        keep = min(keep, len(ids) - 1)  # the last prompt token is always fed, for its logits
        if keep < len(self.cached_ids) and self.sliding:
            keep = 0  # rings hold only the last `window` positions: rebuild from the start
        if keep == 0:
            self.cache.reset()
        else:
            self.cache.length = keep
        self.cached_ids = self.cached_ids[:keep]
        return keep

    @torch.inference_mode()
    def _forward(self, ids: list[int]) -> torch.Tensor:
        x = torch.tensor([ids], dtype=torch.long, device=self.device)
        with self.n_threads:
            logits = self.model(x, cache=self.cache, logits_to_keep=1)[:, -1]
        if not torch.isfinite(logits).all():
            raise UsageError(
                "The model produced non-finite logits (NaN or inf) during chat: the weights are "
                "corrupted or overflow this dtype. Try --dtype float32."
            )
        self.cached_ids.extend(ids)  # only once the step is complete
        self.last_logits = logits
        return logits

    # ---- one turn ------------------------------------------------------------------
    def send(self, text: str) -> Iterator[str]:
        """Add the user's ``text`` and stream the answer's text as it is sampled."""
        self.messages.append({"role": "user", "content": text})
        ids = self.prompt_ids()
        room = self.max_len - len(ids)
        if room < 1:
            self.messages.pop()
            raise ContextFullError(
                f"The conversation is {len(ids)} tokens, and the chat's context holds "
                f"{self.max_len}; start a new chat (or raise --max-context up to the model's "
                "context length)."
            )
        keep = self._rewind(ids)
        turn = Turn(prefilled=len(ids) - keep, conversation=len(ids))
        self.turns.append(turn)
        answer: list[int] = []
        shown = ""
        try:
            logits = self._forward(ids[keep:])
            for _ in range(min(self.options.max_new_tokens, room)):
                o, gen = self.options, self.generator
                nxt = int(next_token(logits, o.temperature, o.top_k, o.top_p, o.min_p, gen)[0])
                if nxt in self.stops:
                    turn.stopped = True
                    break
                answer.append(nxt)
                turn.generated = len(answer)
                full = self.tokenizer.decode(answer)
                if not full.endswith("\ufffd") and len(full) > len(shown):  # a whole character
                    yield full[len(shown):]
                    shown = full
                if len(self.cached_ids) >= self.max_len:
                    break
                logits = self._forward([nxt])
        finally:
            self.messages.append({"role": "assistant", "content": self.tokenizer.decode(answer)})

    def say(self, text: str) -> str:
        """One whole turn: the answer's text."""
        return "".join(self.send(text))

    def reset(self) -> None:
        """Forget the conversation (the system message stays)."""
        self.messages = [m for m in self.messages if m["role"] == "system"]
        self.cached_ids = []
        self.turns = []
        self.cache.reset()

"""``portagpt.generate``: text in, text out, over the generation harness.

The API's generate (``portagpt generate``'s twin): encodes the prompt(s) with
the tokenizer, runs :func:`portagpt.core.generate.stream` with the stop tokens
of the tokenizer (else the family), and decodes the new ids with
:class:`TextStream`, which also turns a stream of ids into text pieces.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from typing import Any

from .errors import TokenizerError, UsageError
from .results import Generation

__all__ = ["TextStream", "check_generate_options", "generate"]


class TextStream:
    """Turns ids into text deltas without re-decoding everything each time.

    Each delta is ``decode(context + pending)`` minus ``decode(context)``, where
    the context is the last few ids already shown; this keeps the leading space
    that word-piece decoders drop from a lone first token, and holds back ids
    that end inside a multi-byte character until it completes.
    """

    CONTEXT = 4

    def __init__(self, tokenizer: Any, prompt_ids: Sequence[int]) -> None:
        self.tokenizer = tokenizer
        self.context = list(prompt_ids[-self.CONTEXT :])
        self.base = tokenizer.decode(self.context)
        self.pending: list[int] = []

    def push(self, ids: Sequence[int], final: bool = False) -> str:
        self.pending.extend(int(i) for i in ids)
        if not self.pending:
            return ""
        full = self.tokenizer.decode(self.context + self.pending)
        if full.endswith("\ufffd") and not final:
            return ""  # a character split across tokens: wait for the rest
        if full.startswith(self.base):
            delta = full[len(self.base) :]
        else:
            delta = self.tokenizer.decode(self.pending)
        self.context = (self.context + self.pending)[-self.CONTEXT :]
        self.base = self.tokenizer.decode(self.context)
        self.pending = []
        return delta


def auto_device(name: str) -> str:
    """``auto`` -> ``cuda`` when there is one, else ``cpu``; any other name as given."""
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def _family_of_model(model: Any) -> Any:
    """The registered family whose config class the model's config is (None: not one of ours)."""
    from .registry import get_registry

    cfg_type = type(getattr(model, "config", None))
    for fam in get_registry().families.values():
        if type(fam.smoke_config) is cfg_type:
            return fam
    return None


def _resolve_model(
    model: Any, tokenizer: Any, family: Any, dtype: str, device: str
) -> tuple[Any, Any, Any]:
    """(model, tokenizer, family): a checkpoint path is loaded, a module is taken as it is."""
    from .loaders import load_full
    from .registry import get_family

    if isinstance(model, (str, os.PathLike)):
        loaded = load_full(
            str(model), family=family, dtype=dtype, device=auto_device(device),
            tokenizer=tokenizer is None,
        )  # fmt: skip
        return loaded.model, tokenizer or loaded.tokenizer, loaded.family
    fam = get_family(family) if isinstance(family, str) else family or _family_of_model(model)
    return model, tokenizer, fam


def check_generate_options(
    max_new_tokens: int,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    min_p: float | None = None,
    *,
    use_cache: bool = True,
    compile: bool = False,
    seed: int | None = None,
    threads: int | None = None,
) -> None:
    """Every generation option checked before anything is loaded (UsageError naming the flag)."""
    from .core.generate import check_options

    check_options(max_new_tokens, temperature, top_k, top_p, min_p)
    if compile and not use_cache:
        raise UsageError(
            "--compile compiles the cached one-token decode step, and --no-cache has none; "
            "drop one of the two."
        )
    if seed is not None and not -(2**63) <= seed < 2**64:
        raise UsageError(f"--seed must be a whole number from 0 to 2**64 - 1, got {seed}.")
    cores = os.cpu_count() or 1
    if threads is not None and not 1 <= threads <= cores:
        raise UsageError(
            f"--threads must be from 1 to this machine's {cores} CPU cores, got {threads}; "
            "leave it out to let portagpt choose (one thread for small models on CPU, torch's "
            "default otherwise)."
        )


def generate(
    model: Any,
    tokenizer: Any = None,
    prompt: str | Sequence[str] = "",
    *,
    max_new_tokens: int = 50,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    min_p: float | None = None,
    seed: int | None = None,
    use_cache: bool = True,
    compile: bool = False,
    threads: int | None = None,
    stream: bool = False,
    details: bool = False,
    family: Any = None,
    dtype: str = "float32",
    device: str = "auto",
) -> Any:
    """Continue ``prompt`` (one string, or a list of them) with ``model``; ``portagpt generate``.

    ``model`` is a loaded model (with its ``tokenizer``) or a checkpoint path
    (loaded with ``family``, ``dtype``, ``device``, and its own tokenizer).
    ``temperature=0`` is greedy; otherwise ``top_k``, ``top_p``, ``min_p``
    filter and ``seed`` makes the sample repeatable. Returns the continuation
    (a ``str``, or a list for a list of prompts); with ``details=True`` a
    :class:`~portagpt.results.Generation` (ids, text, timings; a list for a
    list); with ``stream=True`` (one prompt) a generator of text pieces as
    they are decided, whose ``return`` value is the Generation. Generation
    stops at the tokenizer's (else the family's) stop tokens.
    """
    from .core.generate import stream as stream_ids

    check_generate_options(
        max_new_tokens, temperature, top_k, top_p, min_p,
        use_cache=use_cache, compile=compile, seed=seed, threads=threads,
    )  # fmt: skip
    many = not isinstance(prompt, str)
    if many and stream:
        raise UsageError("stream=True streams one prompt; pass a single string, or stream=False.")
    model, tok, fam = _resolve_model(model, tokenizer, family, dtype, device)
    if tok is None:
        raise TokenizerError(
            f"{str(model)[:60]!r} has no tokenizer, so the prompt cannot be encoded. Pass the "
            "tokenizer (model, tokenizer = portagpt.load(path)), or save it next to the weights "
            "(tokenizer.save_pretrained(dir) in transformers)."
        )
    prompts = list(prompt) if many else [prompt]
    rows = [tok.encode(p) for p in prompts]
    stops = tuple(tok.stop_token_ids) or tuple(getattr(fam, "stop_token_ids", ()))
    ids_stream = stream_ids(
        model, rows if many else rows[0], max_new_tokens=max_new_tokens,
        temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p, stop_token_ids=stops,
        seed=seed, use_cache=use_cache, pad_token_id=tok.pad_token_id, compile=compile,
        threads=threads,
    )  # fmt: skip
    name = getattr(fam, "name", None)
    if stream:
        return _text_pieces(ids_stream, tok, prompts[0], rows[0], name)
    result = _drain(ids_stream)
    gens = [
        Generation(
            family=name, prompt=p, prompt_ids=r, new_ids=new,
            text=TextStream(tok, r).push(new, final=True), seconds=result.seconds, stopped=stop,
        )  # fmt: skip
        for p, r, new, stop in zip(prompts, rows, result.new_ids, result.stopped, strict=True)
    ]
    if details:
        return gens if many else gens[0]
    texts = [g.text for g in gens]
    return texts if many else texts[0]


def _drain(gen: Iterator[Any]) -> Any:
    while True:
        try:
            next(gen)
        except StopIteration as done:
            return done.value


def _text_pieces(
    ids_stream: Any, tok: Any, prompt: str, prompt_ids: list[int], family: str | None
) -> Iterator[str]:
    """Text deltas as the ids arrive; returns the Generation."""
    text_stream = TextStream(tok, prompt_ids)
    shown: list[str] = []
    while True:
        try:
            token = next(ids_stream)
        except StopIteration as done:
            result = done.value
            break
        piece = text_stream.push([token])
        if piece:
            shown.append(piece)
            yield piece
    tail = text_stream.push([], final=True)
    if tail:
        shown.append(tail)
        yield tail
    return Generation(
        family=family, prompt=prompt, prompt_ids=prompt_ids, new_ids=result.new_ids[0],
        text="".join(shown), seconds=result.seconds, stopped=result.stopped[0],
    )  # fmt: skip

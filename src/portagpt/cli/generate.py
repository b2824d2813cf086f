"""``portagpt generate``: continue a prompt with any checkpoint portagpt can load.

    portagpt generate --checkpoint DIR --prompt "Every effort moves you" \\
        [--max-new-tokens 50] [--temperature 0] [--top-k K] [--top-p P] [--min-p M] \\
        [--seed S] [--no-cache] [--compile] [--threads N] [--stream] [--json] [--family F] \
        [--dtype D] [--device DEV]

Prints the prompt and its continuation (as chapter 5 does), then one line of
speed on stderr. ``--stream`` prints tokens as they are decided; ``--json``
ends stdout with one JSON object: family, prompt_ids, new_ids, text (the
continuation), tokens_per_second (new tokens / wall seconds of the generation
call), plus new_tokens, seconds and stopped. Generation stops at the
tokenizer's stop tokens; the stop token is not printed. ``--compile`` runs the
cached decode steps through ``torch.compile`` (same ids; the first call spends
time compiling, so it pays off on long generations; on CPU it needs a C++
compiler and says so when there is none).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import Any


def add_parser(sub: argparse._SubParsersAction, parents: list[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "generate",
        parents=parents,
        help="continue a prompt with a checkpoint (greedy or sampled)",
        description="Continue a prompt with a checkpoint folder (transformers or portagpt).",
    )
    p.add_argument("--checkpoint", required=True, metavar="DIR", help="checkpoint folder to load")
    p.add_argument("--prompt", required=True, help="text to continue")
    p.add_argument("--max-new-tokens", type=int, default=50, metavar="N", help="default: 50")
    p.add_argument("--temperature", type=float, default=0.0, help="0 (default) = greedy")
    p.add_argument(
        "--top-k", type=int, default=None, metavar="K", help="sample from the K most likely"
    )
    p.add_argument(
        "--top-p", type=float, default=None, metavar="P", help="nucleus mass to keep, in (0, 1]"
    )
    p.add_argument(
        "--min-p",
        type=float,
        default=None,
        metavar="M",
        help="keep tokens >= M x the top probability",
    )
    p.add_argument(
        "--seed", type=int, default=None, help="seed for sampling (same seed, same text)"
    )
    p.add_argument("--no-cache", action="store_true", help="recompute the whole context every step")
    p.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the decode step (slow first call; needs a C++ compiler on CPU)",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        metavar="N",
        help="torch threads for the generation steps (default: 1 for models under 16 MiB of "
        "weights on CPU, else torch's choice); 1 is faster on a busy machine",
    )
    p.add_argument("--stream", action="store_true", help="print tokens as they are generated")
    p.add_argument("--json", action="store_true", help="end with one JSON object on the last line")
    p.add_argument(
        "--family", default=None, help="force the family instead of config.json's model_type"
    )
    p.add_argument(
        "--dtype", default="float32", help="float32 (default), bfloat16, float16 or auto"
    )
    p.add_argument(
        "--device", default="auto", help="cpu, cuda, cuda:1, ... (default: cuda if present)"
    )
    p.set_defaults(func=run)


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


def _device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def check_new_tokens(n: int, config: object) -> None:
    """Refuse ``--max-new-tokens`` past the model's context: the CLI's bound on one run's cost.

    (``generate()`` in Python goes on past the context, cropping the window each step.)
    """
    from ..errors import UsageError

    ctx = getattr(config, "context_length", None)
    if isinstance(ctx, int) and n > ctx:
        raise UsageError(
            f"--max-new-tokens {n} is more than the model's context of {ctx} tokens; ask for at "
            f"most {ctx} (e.g. --max-new-tokens {min(ctx, 50)})."
        )


def check_args(args: argparse.Namespace) -> Any:
    """Every flag checked before anything is loaded; returns the torch device to load onto."""
    from ..core.generate import check_options
    from ..errors import UsageError
    from ..loaders import parse_dtype
    from ..loaders.pipeline import parse_device

    check_options(args.max_new_tokens, args.temperature, args.top_k, args.top_p, args.min_p)
    if args.compile and args.no_cache:
        raise UsageError(
            "--compile compiles the cached one-token decode step, and --no-cache has none; "
            "drop one of the two."
        )
    if args.seed is not None and not -(2**63) <= args.seed < 2**64:
        raise UsageError(f"--seed must be a whole number from 0 to 2**64 - 1, got {args.seed}.")
    cores = os.cpu_count() or 1
    if args.threads is not None and not 1 <= args.threads <= cores:
        raise UsageError(
            f"--threads must be from 1 to this machine's {cores} CPU cores, got {args.threads}; "
            "leave it out to let portagpt choose (one thread for small models on CPU, torch's "
            "default otherwise)."
        )
    parse_dtype(args.dtype)
    return parse_device(_device(args.device))


def run(args: argparse.Namespace) -> int:
    from ..core.generate import generate
    from ..errors import TokenizerError
    from ..loaders import load_full

    device = check_args(args)
    loaded = load_full(
        args.checkpoint,
        family=args.family,
        dtype=args.dtype,
        device=device,
        tokenizer=True,
    )
    model, tok = loaded.model, loaded.tokenizer
    check_new_tokens(args.max_new_tokens, loaded.config)
    if tok is None:
        raise TokenizerError(
            f"{args.checkpoint!r} has no tokenizer, so the prompt cannot be encoded. Save the "
            "tokenizer next to the weights (tokenizer.save_pretrained(dir) in transformers)."
        )
    prompt_ids = tok.encode(args.prompt)
    stops = tuple(tok.stop_token_ids) or tuple(loaded.family.stop_token_ids)
    text_stream = TextStream(tok, prompt_ids)
    shown: list[str] = []

    def show(piece: str) -> None:
        shown.append(piece)
        if args.stream:
            sys.stdout.write(piece)
            sys.stdout.flush()

    if args.stream:
        sys.stdout.write(args.prompt)
        sys.stdout.flush()
    result = generate(
        model,
        prompt_ids,
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        min_p=args.min_p,
        stop_token_ids=stops,
        seed=args.seed,
        use_cache=not args.no_cache,
        pad_token_id=tok.pad_token_id,
        compile=args.compile,
        threads=args.threads,
        callback=(lambda token: show(text_stream.push([token]))) if args.stream else None,
    )
    new_ids = result.new_ids[0]
    if args.stream:
        show(text_stream.push([], final=True))
        text = "".join(shown)
        sys.stdout.write("\n")
    else:
        text = text_stream.push(new_ids, final=True)
        if not args.json:
            print(args.prompt + text)
    rate = result.tokens_per_second
    print(
        f"[{len(new_ids)} new tokens in {result.seconds:.2f} s: {rate:.1f} tokens/s, "
        f"{loaded.family.name}, {'no cache' if args.no_cache else 'KV cache'}"
        f"{', compiled' if args.compile else ''}, "
        f"{'stopped at a stop token' if result.stopped[0] else 'reached --max-new-tokens'}]",
        file=sys.stderr,
    )
    if args.json:
        print(
            json.dumps(
                {
                    "family": loaded.family.name,
                    "prompt_ids": prompt_ids,
                    "new_ids": new_ids,
                    "text": text,
                    "tokens_per_second": rate,
                    "new_tokens": len(new_ids),
                    "seconds": result.seconds,
                    "stopped": result.stopped[0],
                }
            )
        )
    return 0

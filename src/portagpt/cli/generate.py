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
import sys
from typing import Any

from ..generation import TextStream  # noqa: F401 - re-exported: the streaming decoder
from ..validation import check_new_tokens


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
    add_sampling_args(p)
    p.add_argument("--no-cache", action="store_true", help="recompute the whole context every step")
    p.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the decode step (slow first call; needs a C++ compiler on CPU)",
    )
    p.add_argument("--stream", action="store_true", help="print tokens as they are generated")
    p.add_argument("--json", action="store_true", help="end with one JSON object on the last line")
    p.add_argument(
        "--family", default=None, help="force the family instead of config.json's model_type"
    )
    add_placement_args(p)
    p.set_defaults(func=run)


def add_sampling_args(p: argparse.ArgumentParser) -> None:
    """How each next token is picked, and on how many threads: shared by generate and chat."""
    a = p.add_argument
    a("--temperature", type=float, default=0.0, help="0 (default) = greedy")
    a("--top-k", type=int, default=None, metavar="K", help="sample from the K most likely")
    a("--top-p", type=float, default=None, metavar="P", help="nucleus mass to keep, in (0, 1]")
    a("--min-p", type=float, default=None, metavar="M", help="keep tokens >= M x the top probability")
    a("--seed", type=int, default=None, help="seed for sampling (same seed, same text)")
    a(
        "--threads",
        type=int,
        default=None,
        metavar="N",
        help="torch threads for the generation steps (default: 1 for models under 16 MiB of "
        "weights on CPU, else torch's choice); 1 is faster on a busy machine",
    )


def add_placement_args(p: argparse.ArgumentParser) -> None:
    """Where the model runs and in which dtype: shared by generate and chat."""
    p.add_argument("--dtype", default="float32", help="float32 (default), bfloat16, float16 or auto")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... (default: cuda if present)")




def check_args(args: argparse.Namespace) -> Any:
    """Every flag checked before anything is loaded; returns the torch device to load onto."""
    from ..generation import auto_device, check_generate_options
    from ..loaders import parse_dtype
    from ..loaders.pipeline import parse_device

    check_generate_options(
        args.max_new_tokens, args.temperature, args.top_k, args.top_p, args.min_p,
        use_cache=not args.no_cache, compile=args.compile, seed=args.seed, threads=args.threads,
    )  # fmt: skip
    parse_dtype(args.dtype)
    return parse_device(auto_device(args.device))


def run(args: argparse.Namespace) -> int:
    from .. import api
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
    check_new_tokens(args.max_new_tokens, loaded.config)
    if loaded.tokenizer is None:
        raise TokenizerError(
            f"{args.checkpoint!r} has no tokenizer, so the prompt cannot be encoded. Save the "
            "tokenizer next to the weights (tokenizer.save_pretrained(dir) in transformers)."
        )
    options = dict(
        max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_k=args.top_k,
        top_p=args.top_p, min_p=args.min_p, seed=args.seed, use_cache=not args.no_cache,
        compile=args.compile, threads=args.threads, family=loaded.family,
    )  # fmt: skip
    model, tok = loaded.model, loaded.tokenizer
    if args.stream:
        pieces = api.generate(model, tok, args.prompt, stream=True, **options)
        sys.stdout.write(args.prompt)
        sys.stdout.flush()
        while True:
            try:
                sys.stdout.write(next(pieces))
                sys.stdout.flush()
            except StopIteration as done:
                result = done.value
                break
        sys.stdout.write("\n")
    else:
        result = api.generate(model, tok, args.prompt, details=True, **options)
        if not args.json:
            print(args.prompt + result.text)
    print(
        f"[{result.new_tokens} new tokens in {result.seconds:.2f} s: "
        f"{result.tokens_per_second:.1f} tokens/s, {result.family}, "
        f"{'no cache' if args.no_cache else 'KV cache'}{', compiled' if args.compile else ''}, "
        f"{'stopped at a stop token' if result.stopped else 'reached --max-new-tokens'}]",
        file=sys.stderr,
    )
    if args.json:
        print(json.dumps(result.to_dict()))
    return 0

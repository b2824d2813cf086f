"""``portagpt chat``: an interactive, streaming, multi-turn chat with a checkpoint.

    portagpt chat --checkpoint DIR [--repo-id ID] [--system TEXT] [--max-new-tokens 512]
        [--temperature 0] [--top-k K] [--top-p P] [--min-p M] [--seed S] [--threads N]
        [--max-context N] [--dtype D] [--device DEV] [--json]

Each line read from stdin is one user turn; the answer streams to stdout,
rendered with the checkpoint's chat template and stopped at the template's
end-of-turn token. The KV cache is kept across turns, so a turn prefills only
the tokens it adds; stderr gets one line per turn with the tokens prefilled
against the conversation's length (what re-reading it all would cost).
Ctrl-C stops the current answer (the conversation goes on), Ctrl-D (end of
input) quits; ``/reset`` starts over (also what to do when the conversation
outgrows ``--max-context``: the turn is refused and the session goes on).
``--json`` ends stdout with one JSON object: the messages and, per turn, the
prefill counts. A checkpoint without a chat template is refused.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from .generate import add_placement_args, add_sampling_args
from .load import add_source_args, checkpoint_path


def add_parser(sub: argparse._SubParsersAction, parents: list[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "chat",
        parents=parents,
        help="chat with a checkpoint (its chat template, streaming, KV cache kept across turns)",
        description="Interactive multi-turn chat with a checkpoint that has a chat template.",
    )
    add_source_args(p, family_help="force the family instead of detecting it")
    p.add_argument("--system", default=None, help="a system message to start the conversation")
    p.add_argument("--max-new-tokens", type=int, default=512, metavar="N", help="per answer")
    add_sampling_args(p)
    p.add_argument(
        "--max-context",
        type=int,
        default=None,
        metavar="N",
        help="KV cache positions for the whole conversation (default: the model's, at most 4096)",
    )
    add_placement_args(p)
    p.add_argument("--json", action="store_true", help="end with one JSON object on the last line")
    p.set_defaults(func=run)


def _load(args: argparse.Namespace) -> Any:
    from ..errors import TokenizerError, UsageError
    from ..generation import auto_device
    from ..loaders import load_full

    path = checkpoint_path(args)
    if path is None and args.repo_id is None:
        raise UsageError("Nothing to chat with: pass --checkpoint DIR or --repo-id ID.")
    loaded = load_full(
        path,
        repo_id=args.repo_id,
        revision=args.revision,
        family=args.family,
        preset=args.preset,
        config=args.config,
        dtype=args.dtype,
        device=auto_device(args.device),
        tokenizer=True,
    )
    if loaded.tokenizer is None:
        raise TokenizerError(f"{loaded.source!r} has no tokenizer, so nothing to chat with.")
    return loaded


def _answer(chat: Any, text: str) -> bool:
    """Stream one answer; False when Ctrl-C stopped it."""
    gen = chat.send(text)
    try:
        for piece in gen:
            sys.stdout.write(piece)
            sys.stdout.flush()
    except KeyboardInterrupt:
        gen.close()
        sys.stdout.write(" [stopped]")
        return False
    finally:
        sys.stdout.write("\n")
        sys.stdout.flush()
    return True


def run(args: argparse.Namespace) -> int:
    from .. import api
    from ..core.chat import ContextFullError

    api.check_generate_options(
        args.max_new_tokens, args.temperature, args.top_k, args.top_p, args.min_p,
        seed=args.seed, threads=args.threads,
    )  # fmt: skip
    api.check_max_context(args.max_context)
    loaded = _load(args)
    chat = api.chat(
        loaded.model, loaded.tokenizer, system=args.system, max_new_tokens=args.max_new_tokens,
        temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, min_p=args.min_p,
        seed=args.seed, threads=args.threads, max_context=args.max_context,
    )  # fmt: skip
    tty = sys.stdin.isatty()
    if tty:
        print(
            f"chatting with {loaded.source} ({loaded.family.name}); Ctrl-C stops an answer, "
            "Ctrl-D quits",
            file=sys.stderr,
        )
    while True:
        try:
            if tty:
                sys.stdout.write("> ")
                sys.stdout.flush()
            line = sys.stdin.readline()
        except KeyboardInterrupt:
            print("\n(Ctrl-D quits)", file=sys.stderr)
            continue
        if not line:  # end of input: Ctrl-D, or the pipe closed
            break
        text = line.rstrip("\n")
        if not text.strip():
            continue
        if text.strip() == "/reset":
            chat.reset()
            continue
        t0 = time.perf_counter()
        try:
            _answer(chat, text)
        except ContextFullError as exc:  # the session goes on: /reset, or Ctrl-D
            print(f"portagpt: {exc} Type /reset to start over.", file=sys.stderr)
            continue
        turn = chat.turns[-1]
        print(
            f"[turn {len(chat.turns)}: prefilled {turn.prefilled} of {turn.conversation} "
            f"conversation tokens, {turn.generated} new in {time.perf_counter() - t0:.2f} s"
            f"{', end of turn' if turn.stopped else ''}]",
            file=sys.stderr,
        )
    if args.json:
        turns = [vars(t) for t in chat.turns]
        print(json.dumps({"family": loaded.family.name, "messages": chat.messages, "turns": turns}))
    return 0

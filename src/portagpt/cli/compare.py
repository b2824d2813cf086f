"""``portagpt compare``: train several families under identical conditions and tabulate them.

``portagpt compare --families gpt2,llama,qwen3,gemma3,olmo3 --preset tiny --tokens N --out DIR``
trains each family from scratch (in its own process, so peak memory is its
own) on the same text with the same token budget, context length, batch size,
learning rate and seed, then writes into DIR::

    compare.md     the table: parameters, tokens/s, peak memory, train/val loss,
                   validation bits per byte (fair across tokenizers)
    compare.json   the same numbers, the settings, and every family's curve
    bpb.png/.pdf   validation bits per byte against training bytes seen

and prints the table. ``--families qwen3:tiny-moe`` picks another preset for one
family. Every family, preset and the context length are checked before the
first one trains.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

DEFAULT_FAMILIES = "gpt2,llama,qwen3,gemma3,olmo3"  # = portagpt.api.DEFAULT_FAMILIES


def add_parser(sub: argparse._SubParsersAction, parents: list[argparse.ArgumentParser]) -> None:
    from ..core.compare import CompareSettings

    p = sub.add_parser(
        "compare",
        parents=parents,
        help="train several families on the same text and token budget; table + bits-per-byte plot",
        description="Train each family from scratch under identical conditions (same text, token "
        "budget, context length, batch size, lr, seed), then write compare.md, compare.json and "
        "bpb.png/.pdf (validation bits per byte against bytes seen) into --out.",
    )
    _contestant_and_data_flags(p.add_argument)
    _shared_setting_flags(p.add_argument, CompareSettings())
    _machine_and_output_flags(p.add_argument)
    p.set_defaults(func=run)


def _contestant_and_data_flags(a: Any) -> None:
    a(
        "--families",
        default=DEFAULT_FAMILIES,
        help=f"comma-separated families, each optionally FAMILY:PRESET (default {DEFAULT_FAMILIES})",
    )
    a("--preset", default="tiny", help="preset of families given without one (default tiny)")
    a(
        "--data",
        action="append",
        metavar="PATH",
        help="a .txt file or folder of them; repeatable (default: the bundled corpus)",
    )


def _shared_setting_flags(a: Any, d: Any) -> None:
    """The conditions every family trains under, each defaulting to ``CompareSettings``'."""
    _setting(a, "--tokens", int, d.tokens, "training tokens per family")
    _setting(a, "--context-length", int, d.context_length, "tokens per window")
    _setting(a, "--batch-size", int, d.batch_size, "windows per step")
    _setting(a, "--lr", float, d.lr, "peak AdamW learning rate")
    _setting(a, "--weight-decay", float, d.weight_decay, "AdamW weight decay")
    _setting(a, "--warmup", int, d.warmup_steps, "linear warmup steps")
    _setting(a, "--clip", float, d.grad_clip, "max gradient norm; 0: off")
    _setting(a, "--train-ratio", float, d.train_ratio, "share of the text used for training")
    _setting(a, "--seed", int, d.seed, "seed of weights and data order")
    _setting(a, "--eval-points", int, d.eval_points, "evaluations along the way")


def _setting(a: Any, flag: str, kind: type, default: Any, what: str) -> None:
    """A number flag whose help ends with its default (integers with thousands separators)."""
    shown = f"{default:,}" if kind is int else f"{default}"
    a(flag, type=kind, default=default, help=f"{what} (default {shown})")


def _machine_and_output_flags(a: Any) -> None:
    a("--device", default="cpu", help="cpu, cuda, cuda:N or mps (default cpu)")
    a(
        "--dtype",
        choices=("float32", "bfloat16"),
        default="float32",
        help="compute dtype (bfloat16: autocast)",
    )
    a(
        "--threads",
        type=int,
        default=0,
        help="torch threads per family process (default: torch's choice)",
    )
    a("--out", default="runs/compare", metavar="DIR", help="output folder (default runs/compare)")
    a("--overwrite", action="store_true", help="replace an earlier comparison in --out")
    a("--json", action="store_true", help="end with compare.json's object on one line")


def run(args: argparse.Namespace) -> int:
    from .. import api

    result = api.compare(
        args.families, preset=args.preset, tokens=args.tokens, out=args.out, data=args.data,
        context_length=args.context_length, batch_size=args.batch_size, lr=args.lr,
        weight_decay=args.weight_decay, warmup=args.warmup, clip=args.clip,
        train_ratio=args.train_ratio, seed=args.seed, eval_points=args.eval_points,
        device=args.device, dtype=args.dtype, threads=args.threads, overwrite=args.overwrite,
    )  # fmt: skip
    paths = result.paths
    print()
    print(paths["markdown"].read_text(encoding="utf-8"), end="")
    print(f"\nWrote {paths['markdown']}, {paths['json']}, {paths['png']}, {paths['pdf']}")
    if args.json:
        print(json.dumps(result.to_dict()))
    return 0

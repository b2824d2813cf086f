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

DEFAULT_FAMILIES = "gpt2,llama,qwen3,gemma3,olmo3"  # = portagpt.api.DEFAULT_FAMILIES


def add_parser(sub: argparse._SubParsersAction, parents: list[argparse.ArgumentParser]) -> None:
    from ..core.compare import CompareSettings

    d = CompareSettings()
    p = sub.add_parser(
        "compare",
        parents=parents,
        help="train several families on the same text and token budget; table + bits-per-byte plot",
        description="Train each family from scratch under identical conditions (same text, token "
        "budget, context length, batch size, lr, seed), then write compare.md, compare.json and "
        "bpb.png/.pdf (validation bits per byte against bytes seen) into --out.",
    )
    a = p.add_argument
    a(
        "--families",
        default=DEFAULT_FAMILIES,
        help=f"comma-separated families, each optionally FAMILY:PRESET (default {DEFAULT_FAMILIES})",
    )
    a("--preset", default="tiny", help="preset of families given without one (default tiny)")
    a(
        "--tokens",
        type=int,
        default=d.tokens,
        help=f"training tokens per family (default {d.tokens:,})",
    )
    a("--out", default="runs/compare", metavar="DIR", help="output folder (default runs/compare)")
    a(
        "--data",
        action="append",
        metavar="PATH",
        help="a .txt file or folder of them; repeatable (default: the bundled corpus)",
    )
    a(
        "--context-length",
        type=int,
        default=d.context_length,
        help=f"tokens per window (default {d.context_length})",
    )
    a(
        "--batch-size",
        type=int,
        default=d.batch_size,
        help=f"windows per step (default {d.batch_size})",
    )
    a("--lr", type=float, default=d.lr, help=f"peak AdamW learning rate (default {d.lr:g})")
    a(
        "--weight-decay",
        type=float,
        default=d.weight_decay,
        help=f"AdamW weight decay (default {d.weight_decay})",
    )
    a(
        "--warmup",
        type=int,
        default=d.warmup_steps,
        help=f"linear warmup steps (default {d.warmup_steps})",
    )
    a("--clip", type=float, default=d.grad_clip, help="max gradient norm; 0: off (default 1.0)")
    a(
        "--train-ratio",
        type=float,
        default=d.train_ratio,
        help="share of the text used for training (default 0.9)",
    )
    a("--seed", type=int, default=d.seed, help=f"seed of weights and data order (default {d.seed})")
    a(
        "--eval-points",
        type=int,
        default=d.eval_points,
        help=f"evaluations along the way (default {d.eval_points})",
    )
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
    a("--overwrite", action="store_true", help="replace an earlier comparison in --out")
    a("--json", action="store_true", help="end with compare.json's object on one line")
    p.set_defaults(func=run)


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

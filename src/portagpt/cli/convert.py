"""``portagpt convert PATH --to hf|native|book|meta --out DIR``: rewrite a checkpoint in another layout.

``--to hf`` writes config.json + safetensors that transformers' from_pretrained
loads; ``--to native`` writes portagpt's layout (model's own names, config.json
when expressible, portagpt.json). The strict check runs first; output appears
atomically (a temporary folder renamed at the end); tokenizer files are copied.
"""

from __future__ import annotations

import argparse
import json

from .load import add_source_args, checkpoint_path, human_bytes


def add_parser(sub: argparse._SubParsersAction, parents: list[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("convert", parents=parents, help="convert a checkpoint between the native and HF layouts")
    add_source_args(p, family_help="force the family instead of detecting it")
    p.add_argument(
        "--to",
        required=True,
        metavar="LAYOUT",
        help="what to write: hf, native, book (the book's model.pth + model_config.json) or meta "
        "(Meta's params.json + consolidated.00.pth)",
    )
    p.add_argument(
        "--out",
        required=True,
        metavar="PATH",
        help="new folder to write (must not exist or be empty); for --to book, the .pth file",
    )
    p.add_argument("--dtype", default="auto", help="cast floating tensors (default: keep)")
    p.add_argument("--max-shard-size", default="5GB", help="split the weights into shards of at most this size")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def check_shard_size(text: str) -> int:
    """``--max-shard-size`` in bytes (e.g. 5GB, 500MB, 20KB, or a plain byte count), > 0."""
    from huggingface_hub.serialization._base import parse_size_to_int

    from ..errors import UsageError

    try:
        size = int(text) if str(text).strip().isdigit() else parse_size_to_int(str(text).strip())
    except (ValueError, TypeError):
        size = 0
    if size <= 0:
        raise UsageError(
            f"--max-shard-size {text!r} is not a size: give a positive number of bytes or a number "
            "with a unit (KB, MB, GB, TB), e.g. --max-shard-size 5GB."
        )
    return size


def run(args: argparse.Namespace) -> int:
    from ..errors import UsageError
    from ..loaders import convert, locate_source

    check_shard_size(args.max_shard_size)
    path = checkpoint_path(args)
    if path is None:
        if args.repo_id is None:
            raise UsageError("Nothing to convert: pass a checkpoint PATH or --repo-id ID.")
        path = str(locate_source(repo_id=args.repo_id, revision=args.revision).folder)
    result = convert(
        path,
        args.to,
        args.out,
        family=args.family,
        preset=args.preset,
        config=args.config,
        dtype=args.dtype,
        max_shard_size=args.max_shard_size,
    )
    if args.json:
        print(json.dumps(result))
    elif result["layout"] not in ("hf", "native"):  # a foreign format's files
        print(
            f"wrote {result['out']}: {result['layout']} format ({result['family']}), {result['tensors']} "
            f"tensors, {human_bytes(result['bytes'])}; files {', '.join(result['files'])}"
        )
    else:
        print(
            f"wrote {result['out']}: {result['layout']} layout ({result['family']}), {result['tensors']} tensors, "
            f"{human_bytes(result['bytes'])} in {len(result['files'])} file(s)"
            + (f"; copied {', '.join(result['tokenizer_files'])}" if result["tokenizer_files"] else "")
            + ("" if result["config_json"] else "; no config.json (the config is in portagpt.json)")
        )
    return 0

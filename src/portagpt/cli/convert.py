"""``portagpt convert PATH --to hf|native|book|meta --out DIR``: rewrite a checkpoint in another layout.

``--to hf`` writes config.json + safetensors that transformers' from_pretrained
loads; ``--to native`` writes portagpt's layout (model's own names, config.json
when expressible, portagpt.json). The strict check runs first; output appears
atomically (a temporary folder renamed at the end); tokenizer files are copied.
"""

from __future__ import annotations

import argparse
import json

from ..api import check_shard_size  # noqa: F401 - the --max-shard-size rule (the API's)
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


def run(args: argparse.Namespace) -> int:
    from .. import api

    result = api.convert(
        checkpoint_path(args), to=args.to, out=args.out, repo_id=args.repo_id,
        revision=args.revision, family=args.family, preset=args.preset, config=args.config,
        dtype=args.dtype, max_shard_size=args.max_shard_size,
    ).to_dict()  # fmt: skip
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

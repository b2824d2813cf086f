"""``portagpt inspect PATH``: what a checkpoint holds, without reading any weight.

Family, config summary, tensor count and bytes, dtypes, and the weight map's
coverage (the share of checkpoint tensors it accounts for, and what the model
expects that is missing). Exit status 1 when the checkpoint would not load.
"""

from __future__ import annotations

import argparse
import json

from .load import add_source_args, checkpoint_path, human_bytes


def add_parser(sub: argparse._SubParsersAction, parents: list[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("inspect", parents=parents, help="describe a checkpoint without reading its weights")
    add_source_args(p, family_help="force the family instead of detecting it")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from .. import api

    info = api.inspect(
        checkpoint_path(args), repo_id=args.repo_id, revision=args.revision, family=args.family,
        preset=args.preset, config=args.config,
    ).to_dict()  # fmt: skip
    if args.json:
        print(json.dumps(info))
    else:
        print_human(info)
    return 0 if info.get("ok") else 1


def print_human(info: dict) -> None:
    print(f"{info['path']}: {info['kind']}, {len(info['files'])} file(s), {human_bytes(info['file_bytes'])}")
    dtypes = ", ".join(f"{k} x{v}" for k, v in info["dtypes"].items())
    print(f"  tensors    {info['tensors']}, {human_bytes(info['tensor_bytes'])}; dtypes {dtypes}")
    if info["metadata"]:
        print(f"  metadata   {', '.join(f'{k}={v}' for k, v in info['metadata'].items())}")
    if "error" in info:
        if info.get("family"):
            print(f"  family     {info['family']} (config from {info.get('config_source')})")
            print(f"  error      {info['error']}")
        else:
            print(f"  family     unknown: {info['error']}")
        print("would not load (see above)")
        return
    print(f"  family     {info['family']} ({info['layout']} layout; config from {info['config_source']})")
    cfg = " ".join(f"{k}={v}" for k, v in info["config"].items() if not isinstance(v, (dict, list)))
    print(f"  config     {cfg}")
    print(f"  params     {info['parameters']:,}")
    cov, checks = info["coverage"], info["checks"]
    print(
        f"  coverage   {cov['claimed']}/{cov['total']} checkpoint tensors claimed by the weight map "
        f"({100 * cov['share']:.1f}%); the model expects {checks['expected']}: {checks['missing']} missing, "
        f"{checks['mismatched']} mismatched, {checks['unexpected']} unexpected"
    )
    for key in ("missing", "unclaimed", "mismatched", "ignored"):
        if cov[key]:
            print(f"  {key:<10} {', '.join(cov[key])}")
    for hint in info.get("hints", []):
        print(f"  hint       {hint}")
    if info.get("tokenizer") is None:
        print("  tokenizer  none shipped (load samples from raw ids)")
    print(
        "ok: loads as is (names, shapes, config and tokenizer checked; weight values are read by "
        "`portagpt load`)"
        if info["ok"]
        else "would not load (see above)"
    )

"""``portagpt load``: load a checkpoint and report every check on the way.

The validation stack, in order: file integrity (each safetensors header
against its file size; sha256 digests with ``--verify``, compared with the
Hugging Face cache's record where there is one), the strict name/shape/dtype
check (before any weight is read), a forward pass with finite logits, and a
short greedy sample decoded with the checkpoint's tokenizer. Telemetry: load
seconds, peak RSS (``ru_maxrss``) and the RSS growth, parameters, bytes.
``--json`` prints one JSON object as the last line. The command prints what
:func:`portagpt.validate` returns (:mod:`portagpt.validation` runs the checks).
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

LOADERS = ("auto", "meta", "mmap", "safetensors", "state_dict", "hf")


def add_source_args(p: argparse.ArgumentParser, *, family_help: str) -> None:
    """The ways to name a checkpoint, shared by load/inspect/convert."""
    p.add_argument("path", nargs="?", help="checkpoint folder, .safetensors, .index.json or .pth file")
    p.add_argument("--checkpoint", metavar="PATH", help="same as the positional PATH")
    p.add_argument("--repo-id", metavar="ID", help="Hugging Face hub id (resolved through the HF cache)")
    p.add_argument("--revision", help="hub branch, tag or commit (with --repo-id)")
    p.add_argument("--family", help=family_help)
    p.add_argument("--preset", help="the family preset to build the config from (a .pth without config.json)")
    p.add_argument("--config", metavar="CONFIG_JSON", help="config.json to use instead of the one beside the weights")


def checkpoint_path(args: argparse.Namespace) -> str | None:
    from ..errors import UsageError

    if args.path and args.checkpoint and args.path != args.checkpoint:
        raise UsageError("Give the checkpoint once: as PATH or as --checkpoint PATH, not both.")
    return args.path or args.checkpoint


def add_parser(sub: argparse._SubParsersAction, parents: list[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "load",
        parents=parents,
        help="load a checkpoint and run the validation stack (integrity, shapes, forward, sample)",
        description=__doc__.split("\n\n")[1] if __doc__ else None,
    )
    add_source_args(p, family_help="force the family; alone, load the family's default hub repo")
    p.add_argument("--loader", choices=LOADERS, default="auto", help="how to read the weights (default: meta; mmap: zero-copy views of the file)")
    p.add_argument("--dtype", default="float32", help="float32, bfloat16, float16 or auto (keep the checkpoint's)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--prompt", default="The meaning of life is", help="prompt for the greedy sample")
    p.add_argument("--max-new-tokens", type=int, default=8, help="length of the greedy sample")
    p.add_argument("--verify", action="store_true", help="compute sha256 of every file (and compare with the HF cache)")
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    p.set_defaults(func=run)


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1024 or unit == "GB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} GB"


def run(args: argparse.Namespace) -> int:
    from .. import api

    report = api.validate(
        checkpoint_path(args), repo_id=args.repo_id, revision=args.revision, family=args.family,
        preset=args.preset, config=args.config, loader=args.loader, dtype=args.dtype,
        device=args.device, prompt=args.prompt, max_new_tokens=args.max_new_tokens,
        verify=args.verify,
    )  # fmt: skip
    result = report.to_dict()
    if args.json:
        print(json.dumps(result))
    else:
        print_human(result)
    return 0


def print_human(r: dict[str, Any]) -> None:
    checks = r["checks"]
    shapes = checks["shapes"]
    print(f"portagpt load {r['source']}")
    print(f"  family     {r['family']} ({r['layout']} layout; config from {r['config_source']})")
    if str(r["config_source"]).startswith("preset"):
        print(
            "  note       no config.json: what shapes cannot show (attention heads, norm eps, RoPE) "
            "comes from the preset; pass --config config.json if it differs"
        )
    for note in r.get("notes", []):
        print(f"  note       {note}")
    files = checks["files"]
    sizes = "sizes match headers" if all(f["size_check"].startswith("ok") for f in files) else "; ".join(
        f"{os.path.basename(f['path'])}: {f['size_check']}" for f in files if not f["size_check"].startswith("ok")
    )
    print(f"  files      {len(files)} file(s), {human_bytes(sum(f['bytes'] for f in files))}: {sizes}")
    if not checks["verify"]:
        print("  sha256     not computed (pass --verify)")
    for f in files if checks["verify"] else []:
        status = "verified against " + f["reference"] if f["verified"] else "unverified: no reference digest"
        print(f"  sha256     {os.path.basename(f['path'])} {f['sha256']} ({status})")
    print(
        f"  shapes     {shapes['expected']} tensors expected: {shapes['missing']} missing, "
        f"{shapes['unexpected']} unexpected, {shapes['mismatched']} mismatched"
        + (f", {shapes['ignored']} ignored (tied)" if shapes["ignored"] else "")
        + f"; checkpoint dtypes {', '.join(f'{k} x{v}' for k, v in shapes['dtypes'].items())} -> {r['dtype']}"
    )
    fwd = checks["forward"]
    print(f"  forward    logits {tuple(fwd['shape'])}, all finite (max |logit| {fwd['max_abs']:.3g})")
    s = r["sample"]
    shown = repr(s["text"]) if s["text"] is not None else str(s["new_ids"])
    lead = repr(s["prompt"]) if s["prompt"] is not None else str(s["prompt_ids"])
    print(f"  sample     {lead} -> {shown}" + (f"  ({s['note']})" if s["note"] else ""))
    delta = f" (+{human_bytes(r['rss_delta_bytes'])} RSS)" if r["rss_delta_bytes"] is not None else ""
    print(
        f"  telemetry  load {r['load_seconds']:.3f} s via {r['loader']}, peak RSS "
        f"{human_bytes(r['peak_rss_bytes'])}{delta}, {r['params']:,} parameters, "
        f"{human_bytes(r['checkpoint_bytes'])} checkpoint"
    )
    print("ok")

"""``portagpt load``: load a checkpoint and report every check on the way.

The validation stack, in order: file integrity (each safetensors header
against its file size; sha256 digests with ``--verify``, compared with the
Hugging Face cache's record where there is one), the strict name/shape/dtype
check (before any weight is read), a forward pass with finite logits, and a
short greedy sample decoded with the checkpoint's tokenizer. Telemetry: load
seconds, peak RSS (``ru_maxrss``) and the RSS growth, parameters, bytes.
``--json`` prints one JSON object as the last line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
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


def current_rss() -> int | None:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def peak_rss() -> int:
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1024 or unit == "GB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} GB"


def forward_check(model: Any, ids: list[int]) -> dict[str, Any]:
    import torch

    from ..errors import CheckpointError

    device = next(model.parameters()).device
    with torch.no_grad():
        logits = model(torch.tensor([ids], device=device))
    finite = bool(torch.isfinite(logits).all())
    if not finite:
        bad = int((~torch.isfinite(logits)).sum())
        raise CheckpointError(
            f"The forward pass produced {bad} non-finite logit(s) (NaN or inf) out of {logits.numel()}: "
            "the weights are corrupted or overflow this dtype. Try --dtype float32, or --verify the files."
        )
    return {"shape": list(logits.shape), "finite": finite, "max_abs": float(logits.abs().max())}


def prompt_ids(loaded: Any, prompt: str) -> tuple[list[int], str | None]:
    """Prompt ids for the sample, and a note when the tokenizer cannot serve this model."""
    vocab = int(loaded.config.vocab_size)
    tok = loaded.tokenizer
    if tok is None:
        return [i % vocab for i in range(1, 6)], "no tokenizer: sampled from ids 1..5"
    ids = tok.encode(prompt) or [0]
    if max(ids) >= vocab:
        return [i % vocab for i in range(1, 6)], (
            f"the tokenizer's ids reach {max(ids)} but the model has {vocab} embeddings: sampled from ids 1..5"
        )
    return ids, None


def sample(loaded: Any, ids: list[int], max_new_tokens: int) -> dict[str, Any]:
    from ..core.generate import generate

    stops = loaded.tokenizer.stop_token_ids if loaded.tokenizer is not None else ()
    res = generate(loaded.model, ids, max_new_tokens=max_new_tokens, stop_token_ids=stops)
    new = res.new_ids[0]
    text = None
    if loaded.tokenizer is not None and all(i < loaded.tokenizer.vocab_size for i in new):
        text = loaded.tokenizer.decode(new)
    return {"prompt_ids": ids, "new_ids": new, "text": text, "stopped": res.stopped[0], "seconds": res.seconds}


def run(args: argparse.Namespace) -> int:
    import time

    from ..loaders import locate_source
    from ..loaders.integrity import check_files
    from ..loaders.load import load_located

    from ..core.generate import check_options

    check_options(args.max_new_tokens)
    rss0 = current_rss()
    t0 = time.perf_counter()
    loc = locate_source(checkpoint_path(args), repo_id=args.repo_id, revision=args.revision, family=args.family)
    resolve_s = time.perf_counter() - t0
    extra = [loc.folder / "config.json"] if (loc.folder / "config.json").is_file() else []
    files = check_files([*loc.files, *extra], verify=args.verify)
    loaded = load_located(
        loc,
        family=args.family,
        preset=args.preset,
        config=args.config,
        dtype=args.dtype,
        device=args.device,
        loader=args.loader,
    )
    from .generate import check_new_tokens

    check_new_tokens(args.max_new_tokens, loaded.config)
    peak = peak_rss()
    rss1 = current_rss()
    ids, note = prompt_ids(loaded, args.prompt)
    fwd = forward_check(loaded.model, ids)
    smp = sample(loaded, ids, args.max_new_tokens)
    smp["prompt"] = args.prompt if note is None else None
    smp["note"] = note
    model = loaded.model
    params = sum(p.numel() for p in model.parameters())
    dtypes = sorted({str(p.dtype).removeprefix("torch.") for p in model.parameters()})
    result = {
        "ok": True,
        "source": loaded.source,
        "kind": loc.kind,
        "family": loaded.family.name,
        "loader": loaded.loader,
        "layout": loaded.layout,
        "config_source": loaded.extras.get("config_source"),
        "notes": loaded.extras.get("notes", []),
        "params": params,
        "dtype": dtypes[0] if len(dtypes) == 1 else dtypes,
        "device": str(next(model.parameters()).device),
        "load_seconds": round(loaded.load_seconds, 4),
        "resolve_seconds": round(resolve_s, 4),
        "peak_rss_bytes": peak,
        "rss_delta_bytes": (rss1 - rss0) if rss0 is not None and rss1 is not None else None,
        "checkpoint_bytes": loaded.checkpoint_bytes,
        "checks": {
            "files": [f.to_dict() for f in files],
            "verify": bool(args.verify),
            "shapes": loaded.report.summary(),
            "forward": fwd,
        },
        "sample": smp,
    }
    if args.json:
        print(json.dumps(result))
    else:
        print_human(result, loaded)
    return 0


def print_human(r: dict[str, Any], loaded: Any) -> None:
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

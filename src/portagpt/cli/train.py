"""``portagpt train``: chapter-5 pretraining of any registered family from scratch.

``portagpt train --family gpt2`` trains the family's ``tiny`` preset on the
bundled corpus (The Verdict) and writes ``runs/gpt2-tiny/``::

    loss.png, loss.pdf   train/val loss against tokens seen (epochs on top)
    metrics.jsonl        one JSON object per step, evaluation and sample
    samples.txt          the sample from --prompt after each epoch
    checkpoint/          model.safetensors, portagpt.json, config.json,
                         training_state.pt (the folder --resume reads)

Everything is checked before the run folder is created: flags, the data
(missing or empty files, a split shorter than one window) and the model's
context length, so a bad call leaves nothing behind. ``--resume`` continues
the run in ``--out`` exactly where its checkpoint stopped; flags left out are
taken from the checkpoint, and ``--epochs`` is the total to reach.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

# Defaults of flags left out (and not taken from a resumed checkpoint). Chapter 5
# trains the 124M model with batch 2, lr 4e-4, no warmup and no clipping; the
# small presets learn much faster per CPU-second with batch 1 (18 updates per
# epoch on The Verdict instead of 9), lr 1e-3, a short warmup and clipping.
DEFAULTS: dict[str, Any] = {
    "preset": "tiny",
    "data": None,
    "epochs": 10,
    "batch_size": 1,
    "context_length": None,  # the model's, capped at 256 (chapter 5's training context)
    "stride": None,  # = context length
    "train_ratio": 0.9,
    "lr": 1e-3,
    "weight_decay": 0.1,
    "decay": "all",
    "schedule": "constant",
    "warmup": 9,
    "min_lr_ratio": 0.1,
    "grad_accum": 1,
    "clip": 1.0,
    "eval_freq": 5,
    "eval_iter": 5,
    "save_every": 0,
    "seed": 123,
    "prompt": "Every effort moves you",
    "sample_tokens": 50,
    "dtype": "float32",
}
DEFAULT_CONTEXT_CAP = 256
RUN_KEYS = ("preset", "data", "batch_size", "context_length", "stride", "train_ratio", "seed")
ARTIFACTS = ("loss.png", "loss.pdf", "metrics.jsonl", "samples.txt", "checkpoint")


def add_parser(sub: argparse._SubParsersAction, parents: list[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "train",
        parents=parents,
        help="pretrain a model from scratch (chapter-5 loop)",
        description="Pretrain a family's preset from scratch on text files (default: the bundled "
        "corpus) with the chapter-5 loop; writes the loss plot, metrics, samples and a "
        "checkpoint into --out.",
    )
    a = p.add_argument
    a("--family", default="gpt2", help="model family (see `portagpt families`; default gpt2)")
    a("--preset", help="the family's size preset (default tiny)")
    a(
        "--data",
        action="append",
        metavar="PATH",
        help="a .txt file or a folder of them; repeatable (default: the bundled The Verdict)",
    )
    a("--epochs", type=int, help="total epochs to train (default 10)")
    a("--batch-size", type=int, help="sequences per micro-batch (default 1; chapter 5: 2)")
    a(
        "--context-length",
        type=int,
        help="tokens per training window (default: the model's, at most 256)",
    )
    a("--stride", type=int, help="tokens between window starts (default: the context length)")
    a("--train-ratio", type=float, help="share of the token stream used for training (default 0.9)")
    a(
        "--lr",
        type=float,
        help="peak learning rate of AdamW (default 1e-3; chapter 5: 4e-4 for 124M)",
    )
    a("--weight-decay", type=float, help="AdamW weight decay (default 0.1)")
    a(
        "--decay",
        choices=("all", "matrices"),
        help="decay every parameter (chapter 5, default) or matrices only (no norms/biases/embeddings)",
    )
    a(
        "--schedule",
        choices=("constant", "cosine"),
        help="learning-rate schedule after warmup (default constant)",
    )
    a("--warmup", type=int, help="linear warmup steps (default 9; chapter 5: 0)")
    a("--min-lr-ratio", type=float, help="cosine floor as a fraction of --lr (default 0.1)")
    a("--grad-accum", type=int, help="micro-batches per optimizer step (default 1)")
    a(
        "--clip",
        type=float,
        help="max gradient norm; 0 turns clipping off (default 1.0; chapter 5: off)",
    )
    a("--eval-freq", type=int, help="evaluate every N optimizer steps (default 5)")
    a("--eval-iter", type=int, help="batches per evaluation (default 5)")
    a(
        "--save-every",
        type=int,
        help="also checkpoint every N steps (default 0: at epoch ends only)",
    )
    a("--out", metavar="DIR", help="run folder (default runs/<family>-<preset>)")
    a("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    a("--overwrite", action="store_true", help="replace the outputs of an earlier run in --out")
    a("--seed", type=int, help="seed of weights, data order and dropout (default 123)")
    a("--prompt", help="prompt of the per-epoch sample (default 'Every effort moves you')")
    a("--sample-tokens", type=int, help="tokens in the per-epoch sample; 0 skips it (default 50)")
    a(
        "--threads",
        type=int,
        help="CPU threads for torch (default: torch's choice, one per core); 1 is faster on a busy machine",
    )
    a("--device", default="auto", help="cpu, cuda, cuda:1, mps, or auto (default)")
    a(
        "--dtype",
        choices=("float32", "bfloat16"),
        help="compute dtype; bfloat16 autocasts, weights stay float32 (default float32)",
    )
    a("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


# ---- resolving flags --------------------------------------------------------------------


def _usage(message: str) -> Exception:
    from ..errors import UsageError

    return UsageError(message)


def _resolve_device(name: str) -> Any:
    import torch

    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise _usage(
            f"--device {name!r} is not a device torch knows; use cpu, cuda, cuda:N, mps or auto."
        ) from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise _usage(
            f"--device {name!r} asks for CUDA, but torch sees no CUDA GPU here; use --device cpu (or auto)."
        )
    if (
        device.type == "cuda"
        and device.index is not None
        and device.index >= torch.cuda.device_count()
    ):
        raise _usage(
            f"--device {name!r}: only {torch.cuda.device_count()} CUDA device(s) here; pick cuda:0.."
        )
    if device.type == "mps" and not (
        getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()
    ):
        raise _usage(
            f"--device {name!r} asks for Apple MPS, which is not available here; use --device cpu."
        )
    return device


def _settings(args: argparse.Namespace, saved: dict[str, Any]) -> dict[str, Any]:
    """Each setting: the flag if given, else the resumed run's value, else the default."""
    out = {}
    for key, default in DEFAULTS.items():
        value = getattr(args, key, None)
        out[key] = value if value is not None else saved.get(key, default)
    return out


def _saved_settings(sidecar: dict[str, Any]) -> dict[str, Any]:
    """The settings a checkpoint was trained with, under DEFAULTS' keys."""
    run = dict(sidecar.get("run") or {})
    tc = sidecar.get("train_config") or {}
    mapping = {
        "epochs": "epochs", "lr": "lr", "weight_decay": "weight_decay", "decay": "decay_filter",
        "schedule": "schedule", "warmup": "warmup_steps", "min_lr_ratio": "min_lr_ratio",
        "grad_accum": "grad_accum", "eval_freq": "eval_freq", "eval_iter": "eval_iter",
        "save_every": "save_every", "prompt": "sample_prompt", "sample_tokens": "sample_tokens",
        "dtype": "dtype",
    }  # fmt: skip
    for key, tc_key in mapping.items():
        if tc_key in tc:
            run[key] = tc[tc_key]
    if "grad_clip" in tc:
        run["clip"] = tc["grad_clip"] or 0.0
    return run


def _check_numbers(s: dict[str, Any], model_ctx: int) -> None:
    if s["batch_size"] < 1:
        raise _usage(
            f"--batch-size must be a whole number >= 1, got {s['batch_size']}; chapter 5 uses 2."
        )
    if not 1 <= s["context_length"] <= model_ctx:
        raise _usage(
            f"--context-length {s['context_length']} does not fit the model: it must be between 1 and "
            f"the model's context length {model_ctx} (config.context_length of this preset). Use "
            f"--context-length {min(model_ctx, DEFAULT_CONTEXT_CAP)} or a preset with a longer context."
        )
    if s["stride"] < 1:
        raise _usage(
            f"--stride must be a whole number >= 1, got {s['stride']}; leave it out to use the context length."
        )
    if not 0 < s["train_ratio"] < 1:
        raise _usage(
            f"--train-ratio must lie strictly between 0 and 1, got {s['train_ratio']}; chapter 5 uses 0.9."
        )
    if s["clip"] < 0:
        raise _usage(
            f"--clip must be >= 0 (0 turns clipping off), got {s['clip']}; e.g. --clip 1.0."
        )


def _prepare_out_dir(out: Path, resume: bool, overwrite: bool) -> None:
    """Refuse to mix two runs in one folder; with --overwrite, remove only our own files."""
    if resume:
        return
    found = [name for name in ARTIFACTS if (out / name).exists()]
    if found and not overwrite:
        raise _usage(
            f"The run folder {str(out)!r} already holds an earlier run ({', '.join(found)}). "
            "Pass --resume to continue it, --overwrite to replace it, or --out NEW_DIR for a new run."
        )


def _clear_artifacts(out: Path) -> None:
    import shutil

    for name in ARTIFACTS:
        path = out / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


# ---- the command ---------------------------------------------------------------------------


def run(args: argparse.Namespace) -> int:
    import torch

    from ..core.checkpoint import config_from_dict, read_sidecar
    from ..core.data import build_loaders
    from ..core.train import CHECKPOINT_DIR, TrainConfig, Trainer
    from ..registry import get_family

    family = get_family(args.family)
    preset_name = args.preset or DEFAULTS["preset"]
    out = (
        Path(args.out)
        if args.out
        else Path("runs") / f"{family.name}-{args.preset or DEFAULTS['preset']}"
    )

    # what a resumed run was trained with
    sidecar: dict[str, Any] = {}
    if args.resume:
        sidecar = read_sidecar(out / CHECKPOINT_DIR)
        if sidecar.get("family") not in (None, family.name):
            raise _usage(
                f"The checkpoint in {str(out / CHECKPOINT_DIR)!r} is of family {sidecar['family']!r}, "
                f"not {family.name!r}; pass --family {sidecar['family']}."
            )
    saved = _saved_settings(sidecar)
    s = _settings(args, saved)
    if args.resume and args.preset and saved.get("preset") not in (None, args.preset):
        raise _usage(
            f"The checkpoint was trained with --preset {saved['preset']}, not {args.preset}; "
            "leave --preset out to resume it."
        )
    preset_cfg = family.preset(s["preset"] if args.resume else preset_name)
    model_cfg = (
        config_from_dict(preset_cfg, sidecar["config"]) if sidecar.get("config") else preset_cfg
    )

    model_ctx = int(model_cfg.context_length)
    if s["context_length"] is None:
        s["context_length"] = min(model_ctx, DEFAULT_CONTEXT_CAP)
    if s["stride"] is None:
        s["stride"] = s["context_length"]
    _check_numbers(s, model_ctx)
    train_cfg = TrainConfig(
        epochs=s["epochs"],
        lr=s["lr"],
        weight_decay=s["weight_decay"],
        decay_filter=s["decay"],
        schedule=s["schedule"],
        warmup_steps=s["warmup"],
        min_lr_ratio=s["min_lr_ratio"],
        grad_clip=s["clip"] or None,
        grad_accum=s["grad_accum"],
        eval_freq=s["eval_freq"],
        eval_iter=s["eval_iter"],
        sample_prompt=s["prompt"],
        sample_tokens=s["sample_tokens"],
        save_every=s["save_every"],
        dtype=s["dtype"],
        seed=s["seed"],
    )
    train_cfg.validate()
    device = _resolve_device(args.device)
    if args.threads is not None:
        if args.threads < 1:
            raise _usage(
                f"--threads must be >= 1, got {args.threads}; leave it out for torch's default."
            )
        torch.set_num_threads(args.threads)
    _prepare_out_dir(out, args.resume, args.overwrite)

    # data (every DataError is raised here, before anything is written)
    tokenizer = family.load_tokenizer(None, model_cfg)
    splits = build_loaders(
        tokenizer,
        s["data"],
        context_length=s["context_length"],
        batch_size=s["batch_size"],
        stride=s["stride"],
        train_ratio=s["train_ratio"],
        seed=s["seed"],
    )
    top = max(int(splits.train_loader.dataset.ids.max()), int(splits.val_loader.dataset.ids.max()))
    if top >= model_cfg.vocab_size:
        raise _usage(
            f"The tokenizer produced id {top}, but the model's vocabulary has {model_cfg.vocab_size} "
            "entries; use a preset whose vocab_size matches the family's tokenizer."
        )

    torch.manual_seed(s["seed"])
    model = family.build_model(model_cfg)
    model.init_weights()
    model.to(device)
    n_params = sum(p.numel() for p in model.parameters())
    threads = f" ({torch.get_num_threads()} threads)" if device.type == "cpu" else ""
    print(
        f"Training {family.name} preset {s['preset']} ({n_params / 1e6:.1f}M parameters) on "
        f"{device}{threads}, {train_cfg.epochs} epochs, lr {train_cfg.lr:g}; run folder {out}"
    )
    print(splits.summary())

    if args.overwrite and not args.resume:
        _clear_artifacts(out)
    out.mkdir(parents=True, exist_ok=True)
    run_info = {k: s[k] for k in RUN_KEYS}
    run_info["data"] = [str(p) for p in s["data"]] if s["data"] else None
    trainer = Trainer(
        model,
        splits.train_loader,
        splits.val_loader,
        train_cfg,
        tokenizer=tokenizer,
        out_dir=out,
        device=device,
        family=family,
        run_info=run_info,
        tokens_per_epoch=splits.tokens_per_epoch,
        progress=not args.no_progress,
    )
    start = time.perf_counter()
    history = trainer.fit(resume_from=out / CHECKPOINT_DIR if args.resume else None)
    wall = time.perf_counter() - start
    first, last = history.evals[0], history.evals[-1]
    print(
        f"Done in {wall:.0f} s ({trainer.tokens_seen:,} tokens seen). Train loss {first.train_loss:.3f} -> "
        f"{last.train_loss:.3f}, val loss {first.val_loss:.3f} -> {last.val_loss:.3f} "
        f"(perplexity {last.val_ppl:.1f}).\nWrote {out}/: loss.png, loss.pdf, metrics.jsonl, "
        f"samples.txt, checkpoint/"
    )
    return 0

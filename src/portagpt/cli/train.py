"""``portagpt train``: chapter-5 pretraining of any registered family, from scratch or a checkpoint.

``portagpt train --family gpt2`` trains the family's ``tiny`` preset on the
bundled corpus (The Verdict) and writes ``runs/gpt2-tiny/``::

    loss.png, loss.pdf   train/val loss against tokens seen (epochs on top)
    metrics.jsonl        one JSON object per step, evaluation and sample
    samples.txt          the sample from --prompt after each epoch
    run.json             the settings, the tokenizer used, how the model started
                         and how many processes trained it
    checkpoint/          model.safetensors, portagpt.json, config.json,
                         training_state.pt (the folder --resume reads), and
                         the tokenizer's files when it came from a checkpoint

``--checkpoint PATH`` / ``--repo-id ID`` continue pretraining a loaded model
(any layout ``portagpt load`` reads) with its own tokenizer (its
tokenizer.json, copied into every checkpoint of the run); a preset trains from
scratch with the family's from-scratch tokenizer (GPT-2's BPE for the tiny
presets). ``--context-length`` is the training window, at most the model's own
context. ``torchrun --nproc-per-node N -m portagpt train ...`` trains with DDP
(``--fsdp``: FSDP2), see :mod:`portagpt.core.distributed`; ``--dtype bf16``,
``--compile`` and ``--activation-checkpointing`` work with either.

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
DTYPE_NAMES = {"float32": "float32", "fp32": "float32", "off": "float32",
               "bfloat16": "bfloat16", "bf16": "bfloat16"}  # fmt: skip


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
    a(
        "--family",
        help="model family (see `portagpt families`; default gpt2, or the checkpoint's)",
    )
    a("--preset", help="the family's size preset to train from scratch (default tiny)")
    a("--checkpoint", metavar="PATH", help="continue pretraining this checkpoint (folder or file)")
    a(
        "--repo-id",
        metavar="ID",
        help="continue pretraining a Hugging Face hub model (from the cache)",
    )
    a("--revision", help="hub branch, tag or commit (with --repo-id)")
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
        choices=tuple(DTYPE_NAMES),
        help="compute dtype; bf16/bfloat16 autocasts, weights stay float32 (default float32)",
    )
    a("--autocast", choices=("bf16", "bfloat16", "off"), help="same as --dtype bf16 / float32")
    a(
        "--compile",
        nargs="?",
        const="inductor",
        metavar="BACKEND",
        help="torch.compile the model (backend inductor; aot_eager or eager to skip codegen)",
    )
    a(
        "--activation-checkpointing",
        action="store_true",
        help="recompute each block's activations in backward (less memory, ~30%% more compute)",
    )
    a(
        "--backend",
        help="torch.distributed backend under torchrun: auto (nccl on CUDA, gloo on CPU), gloo, nccl",
    )
    a(
        "--fsdp",
        action="store_true",
        help="under torchrun, shard parameters, gradients and optimizer state (FSDP2) instead of DDP",
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
            f"the model's context length {model_ctx} (its config's context_length). Use "
            f"--context-length {min(model_ctx, DEFAULT_CONTEXT_CAP)} or a model with a longer context."
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
    """Refuse to mix two runs in one folder (checked again under the run folder's lock)."""
    from ..core.run_folder import check_new_run

    if not resume:
        check_new_run(out, overwrite)


# ---- the command ---------------------------------------------------------------------------


def _family_of_preset(preset: str) -> list[str]:
    """The families that define a preset of this name."""
    from ..registry import get_registry

    return sorted(n for n, f in get_registry().families.items() if preset in f.presets)


def _preset_config(family: Any, preset: str) -> Any:
    """``family.preset(preset)``, saying which family a foreign preset belongs to."""
    from ..errors import UnknownPresetError

    try:
        return family.preset(preset)
    except UnknownPresetError as exc:
        owners = _family_of_preset(preset)
        if not owners:
            raise
        raise _usage(
            f"Preset {preset!r} belongs to {', '.join(owners)}, not to --family {family.name}. "
            f"Pass --family {owners[0]}, or one of {family.name}'s presets: "
            f"{', '.join(family.presets)}."
        ) from exc


def _load_start(args: argparse.Namespace) -> Any:
    """The checkpoint to continue (``loaders.load_full``), checked against --family first."""
    from ..core.checkpoint import SIDECAR_FILE
    from ..loaders import load_full, locate_source
    from ..loaders.configs import read_json

    if args.resume:
        raise _usage(
            "--resume continues the run in --out from its own checkpoint; leave --checkpoint and "
            "--repo-id out (they start a new run from a model)."
        )
    if args.preset:
        raise _usage(
            f"--preset {args.preset} builds a model from scratch, while --checkpoint/--repo-id load "
            "one; pass only one of them."
        )
    loc = locate_source(args.checkpoint, repo_id=args.repo_id, revision=args.revision)
    sidecar_path = loc.folder / SIDECAR_FILE
    if args.family and sidecar_path.is_file():
        found = read_json(sidecar_path, SIDECAR_FILE).get("family")
        if found and found != args.family:
            raise _usage(
                f"{loc.where} is a {found} checkpoint (its {SIDECAR_FILE} says so), not "
                f"{args.family}; pass --family {found}, or leave --family out."
            )
    loaded = load_full(
        args.checkpoint,
        repo_id=args.repo_id,
        revision=args.revision,
        family=args.family,
        dtype="float32",
        device="cpu",
        tokenizer="auto",
    )
    if args.family and loaded.family.name != args.family:
        raise _usage(
            f"{loc.where} loads as family {loaded.family.name!r}, not {args.family!r}; pass "
            f"--family {loaded.family.name}."
        )
    return loaded


def _tokenizer_files(folder: Path | None) -> list[Path]:
    from ..loaders.export import TOKENIZER_FILES

    if folder is None:
        return []
    return [folder / n for n in TOKENIZER_FILES if (folder / n).is_file()]


def _tokenizer_record(tokenizer: Any, folder: Path | None, files: list[Path]) -> dict[str, Any]:
    """What the run folder says about the tokenizer it trained with."""
    from_json = any(f.name == "tokenizer.json" for f in files)
    return {
        "kind": "tokenizer.json" if from_json else "bundled GPT-2 BPE (tiktoken)",
        "class": type(tokenizer).__name__,
        "vocab_size": int(tokenizer.vocab_size),
        "eos_token_id": tokenizer.eos_token_id,
        "from": str(folder) if (from_json and folder is not None) else None,
        "files": [f.name for f in files],
    }


def _checkpoint_tokenizer(loaded: Any) -> tuple[Any, Path | None]:
    """The loaded checkpoint's tokenizer, or (a portagpt-trained folder) the one it trained with."""
    from ..core.checkpoint import SIDECAR_FILE
    from ..errors import TokenizerError

    folder = Path(loaded.extras["folder"])
    if loaded.tokenizer is not None:
        return loaded.tokenizer, folder
    if (folder / SIDECAR_FILE).is_file():  # portagpt's own run: the from-scratch tokenizer
        return loaded.family.load_tokenizer(None, loaded.config), None
    raise TokenizerError(
        f"{str(folder)!r} ships no tokenizer.json, so the text cannot be tokenised as this model "
        "expects. Put the model's tokenizer.json (and tokenizer_config.json) next to its weights, "
        "e.g. tokenizer.save_pretrained(dir) in transformers."
    )


def _check_dtype(dtype: str, device: Any) -> None:
    import torch

    if dtype != "bfloat16":
        return
    ok = device.type == "cpu" or (device.type == "cuda" and torch.cuda.is_bf16_supported())
    if not ok:
        raise _usage(
            f"--dtype bf16 autocasts to bfloat16, which {device} does not support here; use "
            "--dtype float32 (or a GPU with bfloat16, compute capability 8.0+)."
        )


def _check_resume_layout(
    saved: dict[str, Any], sidecar: dict[str, Any], info: Any, fsdp: bool
) -> None:
    """A resumed run keeps its sharding, and its process count when it stopped mid-epoch."""
    was_fsdp = saved.get("parallel") == "fsdp"
    if was_fsdp != fsdp:
        raise _usage(
            f"The checkpoint was trained {'with' if was_fsdp else 'without'} --fsdp (its optimizer "
            f"state is stored {'by parameter name' if was_fsdp else 'by position'}); resume it "
            f"{'with' if was_fsdp else 'without'} --fsdp."
        )
    world = int(saved.get("world_size", 1))
    if sidecar.get("batch_in_epoch") and world != info.world_size:
        raise _usage(
            f"The checkpoint stopped mid-epoch with {world} process(es); its place in the epoch "
            f"counts their batches, so resume it with {world} process(es), not {info.world_size}."
        )


def _parallel_plan(args: argparse.Namespace, device: Any, info: Any) -> str | None:
    """The process-group backend (None: one process), every flag checked before any step."""
    from ..core.distributed import resolve_backend

    if args.fsdp and not info.distributed:
        raise _usage(
            "--fsdp shards the model across processes; launch several with torchrun "
            "--nproc-per-node N -m portagpt train ... --fsdp."
        )
    if info.distributed or args.backend:
        return resolve_backend(args.backend, device)
    return None


def run(args: argparse.Namespace) -> int:
    from ..core import distributed as dist
    from ..core.run_folder import release_run_folders

    info = dist.launch_info()
    try:
        return _run(args, info)
    finally:
        release_run_folders()
        dist.destroy_process_group()


def _run(args: argparse.Namespace, info: Any) -> int:
    import torch

    from ..core import distributed as dist
    from ..core.checkpoint import config_from_dict, read_sidecar
    from ..core.data import build_loaders
    from ..core.run_folder import lock_run_folder, run_family, start_run_folder
    from ..core.train import CHECKPOINT_DIR, TrainConfig, Trainer
    from ..errors import DataError
    from ..registry import get_family

    say = print if info.is_main else (lambda *a, **k: None)
    device = dist.device_for(_resolve_device(args.device), info)
    backend = _parallel_plan(args, device, info)
    if args.autocast is not None:
        args.dtype = args.autocast
    if args.dtype is not None:
        args.dtype = DTYPE_NAMES[args.dtype]
    _check_dtype(args.dtype or "float32", device)

    # where the model comes from: a checkpoint, a resumed run, or a preset
    loaded = _load_start(args) if (args.checkpoint or args.repo_id) else None
    resumed = run_family(args.out) if args.resume else None  # --resume: the run's own family
    family = loaded.family if loaded is not None else get_family(args.family or resumed or "gpt2")
    start_name = args.preset or DEFAULTS["preset"]
    if loaded is not None:
        start_name = Path(str(args.repo_id or args.checkpoint).rstrip("/")).name or "checkpoint"
    out = Path(args.out) if args.out else Path("runs") / f"{family.name}-{start_name}"

    # what a resumed run was trained with
    sidecar: dict[str, Any] = {}
    if args.resume:
        if info.is_main and out.is_dir():
            lock_run_folder(out)  # before reading: no other writer may swap it meanwhile
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
    if args.resume:
        _check_resume_layout(saved, sidecar, info, args.fsdp)
    if loaded is not None:
        s["preset"] = None
        model_cfg = loaded.config
        tokenizer, tok_folder = _checkpoint_tokenizer(loaded)
        init: dict[str, Any] = {"checkpoint": args.checkpoint, "repo_id": args.repo_id}
    else:
        if args.resume:
            template = _preset_config(family, s["preset"]) if s["preset"] else family.smoke_config
            model_cfg = (
                config_from_dict(template, sidecar["config"]) if sidecar.get("config") else template
            )
            tok_folder = out / CHECKPOINT_DIR  # its copied tokenizer files, if any
            tokenizer = family.load_tokenizer(tok_folder, model_cfg)
            init = dict(saved.get("init") or {"preset": s["preset"]})
        else:
            model_cfg = _preset_config(family, start_name)
            tok_folder = None
            tokenizer = family.load_tokenizer(None, model_cfg)
            init = {"preset": start_name}
    tok_files = _tokenizer_files(tok_folder)

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
    if args.threads is not None:
        if args.threads < 1:
            raise _usage(
                f"--threads must be >= 1, got {args.threads}; leave it out for torch's default."
            )
        torch.set_num_threads(args.threads)
    _prepare_out_dir(out, args.resume, args.overwrite)

    # data (every DataError is raised here, before anything is written)
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
    global_batch = s["batch_size"] * info.world_size
    train_ds, val_ds = splits.train_loader.dataset, splits.val_loader.dataset
    train_loader = dist.train_loader(train_ds, s["batch_size"], s["seed"], info)
    if len(train_loader) == 0:
        raise DataError(
            f"The training split gives {len(train_ds)} windows, fewer than one global batch of "
            f"{global_batch} ({info.world_size} processes x --batch-size {s['batch_size']}); use "
            "a smaller --batch-size or --context-length, fewer processes, or more text."
        )

    if loaded is not None:
        model = loaded.model
    else:
        torch.manual_seed(s["seed"])
        model = family.build_model(model_cfg)
        model.init_weights()
    model.train()
    model.to(device)
    n_params = sum(p.numel() for p in model.parameters())
    threads = f" ({torch.get_num_threads()} threads)" if device.type == "cpu" else ""
    procs = f", {info.world_size} processes ({'FSDP2' if args.fsdp else 'DDP'}, {backend})"
    origin = init.get("checkpoint") or init.get("repo_id")
    start_text = f"from {origin}" if origin else f"preset {init.get('preset')}"
    say(
        f"Training {family.name} {start_text} ({n_params / 1e6:.1f}M parameters) on "
        f"{device}{threads}{procs if info.distributed else ''}, {train_cfg.epochs} epochs, "
        f"lr {train_cfg.lr:g}, global batch {global_batch}; run folder {out}"
    )
    say(splits.summary())
    tok_info = _tokenizer_record(tokenizer, tok_folder, tok_files)
    say(f"Tokenizer: {tok_info['kind']} ({tok_info['class']}, {tok_info['vocab_size']:,} ids)")

    # wrappers: activation checkpointing, then DDP/FSDP2, then torch.compile
    ddp = None
    if backend is not None and info.distributed:
        dist.init_process_group(info, backend, device)
    if args.activation_checkpointing:
        dist.checkpoint_blocks(model)
    if info.distributed:
        if args.fsdp:
            model = dist.shard_fsdp(model)
        else:
            model = ddp = dist.wrap_ddp(model, device)
    if args.compile:
        model = dist.compile_model(model, args.compile)

    if info.is_main:
        start_run_folder(out, resume=args.resume, overwrite=args.overwrite)
    dist.barrier()
    run_info = {k: s[k] for k in RUN_KEYS}
    run_info["data"] = [str(p) for p in s["data"]] if s["data"] else None
    run_info.update(
        family=family.name,
        init=init,
        tokenizer=tok_info,
        world_size=info.world_size,
        global_batch=global_batch,
        parallel="fsdp" if args.fsdp else ("ddp" if info.distributed else "single"),
        backend=backend,
        dtype=s["dtype"],
        compile=args.compile,
        activation_checkpointing=bool(args.activation_checkpointing),
    )
    common: dict[str, Any] = dict(
        tokenizer=tokenizer,
        out_dir=out,
        device=device,
        family=family,
        run_info=run_info,
        tokens_per_epoch=len(train_loader) * global_batch * s["context_length"],
        progress=not args.no_progress,
        train_eval_loader=dist.eval_loader(train_ds, global_batch),
        checkpoint_files=tok_files,
    )
    val_loader = dist.eval_loader(val_ds, global_batch)
    if info.distributed:
        trainer: Trainer = dist.DistributedTrainer(
            model, train_loader, val_loader, train_cfg, info=info, ddp=ddp, fsdp=args.fsdp, **common
        )
    else:
        trainer = Trainer(model, train_loader, val_loader, train_cfg, **common)
    start = time.perf_counter()
    history = trainer.fit(resume_from=out / CHECKPOINT_DIR if args.resume else None)
    wall = time.perf_counter() - start
    first, last = history.evals[0], history.evals[-1]
    say(
        f"Done in {wall:.0f} s ({trainer.tokens_seen:,} tokens seen). Train loss {first.train_loss:.3f} -> "
        f"{last.train_loss:.3f}, val loss {first.val_loss:.3f} -> {last.val_loss:.3f} "
        f"(perplexity {last.val_ppl:.1f}).\nWrote {out}/: loss.png, loss.pdf, metrics.jsonl, "
        f"samples.txt, run.json, checkpoint/"
    )
    return 0

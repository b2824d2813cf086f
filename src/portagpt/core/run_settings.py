"""The settings of a training run: flags, defaults, what a checkpoint remembers, and the checks.

:class:`TrainOptions` has one field per ``portagpt train`` flag (None: left
out). A setting is the option if given, else the resumed run's value, else
:data:`DEFAULTS`. The value checks are tables: :data:`SETTING_RULES` here for
the data settings, :data:`~portagpt.core.train.CONFIG_RULES` for the trainer's
hyper-parameters; the rest (device, dtype, sharding) are the small functions below;
the run folder's rules are :mod:`portagpt.core.run_folder`'s.
:mod:`portagpt.core.run` plans and executes a run with them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import UsageError
from .rules import Rule, check_rules, finite, whole

if TYPE_CHECKING:
    from .train import TrainConfig

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
# DEFAULTS' key -> the TrainConfig field a checkpoint stores it under
SAVED_AS = {
    "epochs": "epochs", "lr": "lr", "weight_decay": "weight_decay", "decay": "decay_filter",
    "schedule": "schedule", "warmup": "warmup_steps", "min_lr_ratio": "min_lr_ratio",
    "grad_accum": "grad_accum", "eval_freq": "eval_freq", "eval_iter": "eval_iter",
    "save_every": "save_every", "prompt": "sample_prompt", "sample_tokens": "sample_tokens",
    "dtype": "dtype",
}  # fmt: skip
# The data settings TrainConfig does not hold (its own fields: CONFIG_RULES).
SETTING_RULES: dict[str, Rule] = {
    "batch_size": Rule("--batch-size", "a whole number >= 1", whole(1), "chapter 5 uses 2."),
    "stride": Rule("--stride", "a whole number >= 1", whole(1),
                   "leave it out to use the context length."),
    "train_ratio": Rule("--train-ratio", "strictly between 0 and 1",
                        lambda v: finite(0, strict=True)(v) and v < 1, "chapter 5 uses 0.9."),
    "clip": Rule("--clip", ">= 0 (0 turns clipping off)", finite(0, strict=False),
                 "e.g. --clip 1.0."),
    "threads": Rule("--threads", ">= 1", whole(1), "leave it out for torch's default.",
                    optional=True),
}  # fmt: skip


@dataclass
class TrainOptions:
    """What ``portagpt train`` is asked: one field per flag, None where it was left out."""

    family: str | None = None
    preset: str | None = None
    checkpoint: str | None = None
    repo_id: str | None = None
    revision: str | None = None
    data: list[str] | None = None
    epochs: int | None = None
    batch_size: int | None = None
    context_length: int | None = None
    stride: int | None = None
    train_ratio: float | None = None
    lr: float | None = None
    weight_decay: float | None = None
    decay: str | None = None
    schedule: str | None = None
    warmup: int | None = None
    min_lr_ratio: float | None = None
    grad_accum: int | None = None
    clip: float | None = None
    eval_freq: int | None = None
    eval_iter: int | None = None
    save_every: int | None = None
    out: str | None = None
    resume: bool = False
    overwrite: bool = False
    seed: int | None = None
    prompt: str | None = None
    sample_tokens: int | None = None
    threads: int | None = None
    device: str = "auto"
    dtype: str | None = None
    compile: str | None = None  # a torch.compile backend, e.g. "inductor"
    activation_checkpointing: bool = False
    backend: str | None = None
    fsdp: bool = False
    progress: bool = True


# ---- small rules ---------------------------------------------------------------------------


def resolve_device(name: str) -> Any:
    """``auto`` (CUDA, else MPS, else CPU) or a device torch has here; UsageError otherwise."""
    import torch

    mps = getattr(torch.backends, "mps", None)
    has_mps = mps is not None and mps.is_available()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "mps" if has_mps else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UsageError(
            f"--device {name!r} is not a device torch knows; use cpu, cuda, cuda:N, mps or auto."
        ) from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(
            f"--device {name!r} asks for CUDA, but torch sees no CUDA GPU here; use --device cpu (or auto)."
        )
    count = torch.cuda.device_count() if device.type == "cuda" else 0
    if device.type == "cuda" and device.index is not None and device.index >= count:
        raise UsageError(f"--device {name!r}: only {count} CUDA device(s) here; pick cuda:0..")
    if device.type == "mps" and not has_mps:
        raise UsageError(
            f"--device {name!r} asks for Apple MPS, which is not available here; use --device cpu."
        )
    return device


def saved_settings(sidecar: dict[str, Any]) -> dict[str, Any]:
    """The settings a checkpoint was trained with, under DEFAULTS' keys."""
    run = dict(sidecar.get("run") or {})
    tc = sidecar.get("train_config") or {}
    for key, tc_key in SAVED_AS.items():
        if tc_key in tc:
            run[key] = tc[tc_key]
    if "grad_clip" in tc:
        run["clip"] = tc["grad_clip"] or 0.0
    return run


def settings_of(options: TrainOptions, saved: dict[str, Any]) -> dict[str, Any]:
    """Each setting: the option if given, else the resumed run's value, else the default."""
    out = {}
    for key, default in DEFAULTS.items():
        value = getattr(options, key, None)
        out[key] = value if value is not None else saved.get(key, default)
    return out


def check_settings(s: dict[str, Any], model_ctx: int) -> None:
    """The data settings (SETTING_RULES) and the window against the model's context."""
    check_rules(s, {"batch_size": SETTING_RULES["batch_size"]})
    if not 1 <= s["context_length"] <= model_ctx:
        raise UsageError(
            f"--context-length {s['context_length']} does not fit the model: it must be between 1 and "
            f"the model's context length {model_ctx} (its config's context_length). Use "
            f"--context-length {min(model_ctx, DEFAULT_CONTEXT_CAP)} or a model with a longer context."
        )
    check_rules(s, {k: r for k, r in SETTING_RULES.items() if k != "batch_size"})


def train_config_of(s: dict[str, Any]) -> TrainConfig:
    """The trainer's hyper-parameters from the settings, checked (CONFIG_RULES)."""
    from .train import TrainConfig

    cfg = TrainConfig(
        epochs=s["epochs"], lr=s["lr"], weight_decay=s["weight_decay"], decay_filter=s["decay"],
        schedule=s["schedule"], warmup_steps=s["warmup"], min_lr_ratio=s["min_lr_ratio"],
        grad_clip=s["clip"] or None, grad_accum=s["grad_accum"], eval_freq=s["eval_freq"],
        eval_iter=s["eval_iter"], sample_prompt=s["prompt"], sample_tokens=s["sample_tokens"],
        save_every=s["save_every"], dtype=s["dtype"], seed=s["seed"],
    )  # fmt: skip
    cfg.validate()
    return cfg


def check_dtype(dtype: str, device: Any) -> None:
    import torch

    if dtype != "bfloat16":
        return
    ok = device.type == "cpu" or (device.type == "cuda" and torch.cuda.is_bf16_supported())
    if not ok:
        raise UsageError(
            f"--dtype bf16 autocasts to bfloat16, which {device} does not support here; use "
            "--dtype float32 (or a GPU with bfloat16, compute capability 8.0+)."
        )


def check_resume_layout(
    saved: dict[str, Any], sidecar: dict[str, Any], info: Any, fsdp: bool
) -> None:
    """A resumed run keeps its sharding, and its process count when it stopped mid-epoch."""
    was_fsdp = saved.get("parallel") == "fsdp"
    if was_fsdp != fsdp:
        how = "with" if was_fsdp else "without"
        raise UsageError(
            f"The checkpoint was trained {how} --fsdp (its optimizer state is stored "
            f"{'by parameter name' if was_fsdp else 'by position'}); resume it {how} --fsdp."
        )
    world = int(saved.get("world_size", 1))
    if sidecar.get("batch_in_epoch") and world != info.world_size:
        raise UsageError(
            f"The checkpoint stopped mid-epoch with {world} process(es); its place in the epoch "
            f"counts their batches, so resume it with {world} process(es), not {info.world_size}."
        )


def parallel_backend(o: TrainOptions, device: Any, info: Any) -> str | None:
    """The process-group backend (None: one process), every flag checked before any step."""
    from .distributed import resolve_backend

    if o.fsdp and not info.distributed:
        raise UsageError(
            "--fsdp shards the model across processes; launch several with torchrun "
            "--nproc-per-node N -m portagpt train ... --fsdp."
        )
    if info.distributed or o.backend:
        return resolve_backend(o.backend, device)
    return None

"""A training run, planned then executed: the rules of ``portagpt train`` and ``portagpt.train``.

:func:`plan_training` takes :class:`TrainOptions` (one field per ``portagpt
train`` flag; ``None`` means "left out") and decides everything before a byte
is written: the device and process group, where the model comes from (a
preset, a checkpoint, or the run being resumed, whose family, preset, config,
tokenizer and settings are read back from its checkpoint), every setting
(flag, else the resumed run's value, else :data:`DEFAULTS`), the tokenizer, the
data loaders, and the checks on all of them (the value tables of
:data:`SETTING_RULES` and :data:`~portagpt.core.train.CONFIG_RULES`, the
model's context length, the tokenizer's ids against the vocabulary, a resumed
run's sharding and process count, the run folder). :func:`execute` then builds
(or takes) the model, wraps it in a fixed order (activation checkpointing,
then DDP/FSDP2, then ``torch.compile``), locks and prepares the run folder
(:mod:`~portagpt.core.run_folder`: one writer, nothing lost) and trains (the
trainer writes ``run.json`` once a resume is accepted), returning a
:class:`~portagpt.core.results.Run`.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..defaults import DEFAULT_FAMILY, SCRATCH_TOKENIZER_KIND
from ..errors import DataError, TokenizerError, UnknownPresetError, UsageError
from .run_settings import (
    DEFAULT_CONTEXT_CAP,
    DEFAULTS,
    DTYPE_NAMES,
    RUN_KEYS,
    TrainOptions,
    check_dtype,
    check_resume_layout,
    check_settings,
    parallel_backend,
    resolve_device,
    saved_settings,
    settings_of,
    train_config_of,
)
from .train import CHECKPOINT_DIR, TrainConfig

__all__ = ["TrainOptions", "TrainingPlan", "execute", "plan_training", "run_training"]


@dataclass
class TrainingPlan:
    """Everything decided and checked before the run folder is touched."""

    options: TrainOptions
    info: Any  # distributed.LaunchInfo
    device: Any
    backend: str | None
    family: Any
    out: Path
    settings: dict[str, Any]
    model_config: Any
    train_config: TrainConfig
    tokenizer: Any
    tokenizer_files: list[Path]
    init: dict[str, Any]
    loaded: Any  # the checkpoint continued (loaders.Loaded), or None
    splits: Any  # data.DataSplits
    train_loader: Any
    run_info: dict[str, Any] = field(default_factory=dict)

    @property
    def global_batch(self) -> int:
        return int(self.settings["batch_size"]) * self.info.world_size


# ---- where the model comes from -------------------------------------------------------------


def preset_config(family: Any, preset: str) -> Any:
    """``family.preset(preset)``, saying which family a foreign preset belongs to."""
    from ..registry import get_registry

    try:
        return family.preset(preset)
    except UnknownPresetError as exc:
        fams = get_registry().families.items()
        owners = sorted(n for n, f in fams if preset in f.presets)
        if not owners:
            raise
        raise UsageError(
            f"Preset {preset!r} belongs to {', '.join(owners)}, not to --family {family.name}. "
            f"Pass --family {owners[0]}, or one of {family.name}'s presets: "
            f"{', '.join(family.presets)}."
        ) from exc


def load_start(o: TrainOptions) -> Any:
    """The checkpoint to continue (``loaders.load_full``), checked against --family first."""
    from ..loaders import load_full, locate_source
    from ..loaders.configs import read_json
    from .checkpoint import SIDECAR_FILE

    if o.resume:
        raise UsageError(
            "--resume continues the run in --out from its own checkpoint; leave --checkpoint and "
            "--repo-id out (they start a new run from a model)."
        )
    if o.preset:
        raise UsageError(
            f"--preset {o.preset} builds a model from scratch, while --checkpoint/--repo-id load "
            "one; pass only one of them."
        )
    loc = locate_source(o.checkpoint, repo_id=o.repo_id, revision=o.revision)
    sidecar_path = loc.folder / SIDECAR_FILE
    if o.family and sidecar_path.is_file():
        found = read_json(sidecar_path, SIDECAR_FILE).get("family")
        if found and found != o.family:
            raise UsageError(
                f"{loc.where} is a {found} checkpoint (its {SIDECAR_FILE} says so), not "
                f"{o.family}; pass --family {found}, or leave --family out."
            )
    loaded = load_full(
        o.checkpoint, repo_id=o.repo_id, revision=o.revision, family=o.family,
        dtype="float32", device="cpu", tokenizer="auto",
    )  # fmt: skip
    if o.family and loaded.family.name != o.family:
        raise UsageError(
            f"{loc.where} loads as family {loaded.family.name!r}, not {o.family!r}; pass "
            f"--family {loaded.family.name}."
        )
    return loaded


def tokenizer_files(folder: Path | None) -> list[Path]:
    from ..loaders.export import TOKENIZER_FILES

    if folder is None:
        return []
    return [folder / n for n in TOKENIZER_FILES if (folder / n).is_file()]


def tokenizer_record(tokenizer: Any, folder: Path | None, files: list[Path]) -> dict[str, Any]:
    """What the run folder says about the tokenizer it trained with."""
    from_json = any(f.name == "tokenizer.json" for f in files)
    return {
        "kind": "tokenizer.json" if from_json else SCRATCH_TOKENIZER_KIND,
        "class": type(tokenizer).__name__,
        "vocab_size": int(tokenizer.vocab_size),
        "eos_token_id": tokenizer.eos_token_id,
        "from": str(folder) if (from_json and folder is not None) else None,
        "files": [f.name for f in files],
    }


def checkpoint_tokenizer(loaded: Any) -> tuple[Any, Path | None]:
    """The loaded checkpoint's tokenizer, or (a portagpt-trained folder) the one it trained with."""
    from .checkpoint import SIDECAR_FILE

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


@dataclass
class _Start:
    """Where the model comes from: its family, config, tokenizer and how the run began."""

    family: Any
    out: Path
    loaded: Any
    sidecar: dict[str, Any]
    saved: dict[str, Any]
    settings: dict[str, Any]
    config: Any = None
    tokenizer: Any = None
    tokenizer_folder: Path | None = None
    init: dict[str, Any] = field(default_factory=dict)


def _start(o: TrainOptions, info: Any) -> _Start:
    """The family, run folder and settings; a resumed run's family is its checkpoint's."""
    from ..registry import get_family
    from .checkpoint import read_sidecar
    from .run_folder import lock_run_folder, run_family

    loaded = load_start(o) if (o.checkpoint or o.repo_id) else None
    sidecar: dict[str, Any] = {}
    if loaded is not None:
        family = loaded.family
        name = Path(str(o.repo_id or o.checkpoint).rstrip("/")).name or "checkpoint"
    else:
        resumed = run_family(o.out) if o.resume else None  # --resume: the run's own family
        family = get_family(o.family or resumed or DEFAULT_FAMILY)
        name = o.preset or DEFAULTS["preset"]
    out = Path(o.out) if o.out else Path("runs") / f"{family.name}-{name}"
    if o.resume:
        if info.is_main and out.is_dir():
            lock_run_folder(out)  # before reading: no other writer may swap it meanwhile
        sidecar = read_sidecar(out / CHECKPOINT_DIR)
        if sidecar.get("family") not in (None, family.name):
            raise UsageError(
                f"The checkpoint in {str(out / CHECKPOINT_DIR)!r} is of family "
                f"{sidecar['family']!r}, not {family.name!r}; pass --family {sidecar['family']}."
            )
    saved = saved_settings(sidecar)
    s = settings_of(o, saved)
    if o.resume and o.preset and saved.get("preset") not in (None, o.preset):
        raise UsageError(
            f"The checkpoint was trained with --preset {saved['preset']}, not {o.preset}; "
            "leave --preset out to resume it."
        )
    if o.resume:
        check_resume_layout(saved, sidecar, info, o.fsdp)
    return _Start(family, out, loaded, sidecar, saved, s, init={"preset": name})


def _model_and_tokenizer(o: TrainOptions, st: _Start) -> None:
    """Fill in the start's model config, tokenizer and ``init`` record."""
    from .checkpoint import config_from_dict

    family, s = st.family, st.settings
    if st.loaded is not None:
        s["preset"] = None
        st.config = st.loaded.config
        st.tokenizer, st.tokenizer_folder = checkpoint_tokenizer(st.loaded)
        st.init = {"checkpoint": o.checkpoint, "repo_id": o.repo_id}
    elif o.resume:
        template = preset_config(family, s["preset"]) if s["preset"] else family.smoke_config
        saved_cfg = st.sidecar.get("config")
        st.config = config_from_dict(template, saved_cfg) if saved_cfg else template
        st.tokenizer_folder = st.out / CHECKPOINT_DIR  # its copied tokenizer files, if any
        st.tokenizer = family.load_tokenizer(st.tokenizer_folder, st.config)
        st.init = dict(st.saved.get("init") or {"preset": s["preset"]})
    else:
        st.config = preset_config(family, st.init["preset"])
        st.tokenizer = family.load_tokenizer(None, st.config)


# ---- plan ---------------------------------------------------------------------------------


def plan_training(options: TrainOptions, info: Any = None) -> TrainingPlan:
    """Decide and check everything about a run; raises a PortagptError before writing anything."""
    from . import distributed as dist
    from .data import build_loaders
    from .run_folder import check_new_run

    o = dataclasses.replace(options)
    info = info if info is not None else dist.launch_info()
    device = dist.device_for(resolve_device(o.device), info)
    backend = parallel_backend(o, device, info)
    if o.dtype is not None:
        if o.dtype not in DTYPE_NAMES:
            raise UsageError(
                f"--dtype must be one of {', '.join(DTYPE_NAMES)}, got {o.dtype!r}; weights stay "
                "float32 either way."
            )
        o.dtype = DTYPE_NAMES[o.dtype]
    check_dtype(o.dtype or "float32", device)
    if o.compile is True:  # the Python API's compile=True
        o.compile = "inductor"

    st = _start(o, info)
    _model_and_tokenizer(o, st)
    s, model_cfg = st.settings, st.config
    model_ctx = int(model_cfg.context_length)
    if s["context_length"] is None:
        s["context_length"] = min(model_ctx, DEFAULT_CONTEXT_CAP)
    if s["stride"] is None:
        s["stride"] = s["context_length"]
    check_settings({**s, "threads": o.threads}, model_ctx)
    train_cfg = train_config_of(s)
    if not o.resume:
        check_new_run(st.out, o.overwrite)  # checked again under the run folder's lock

    # data (every DataError is raised here, before anything is written)
    splits = build_loaders(
        st.tokenizer, s["data"], context_length=s["context_length"], batch_size=s["batch_size"],
        stride=s["stride"], train_ratio=s["train_ratio"], seed=s["seed"],
    )  # fmt: skip
    train_ds, val_ds = splits.train_loader.dataset, splits.val_loader.dataset
    top = max(int(train_ds.ids.max()), int(val_ds.ids.max()))
    if top >= model_cfg.vocab_size:
        raise UsageError(
            f"The tokenizer produced id {top}, but the model's vocabulary has {model_cfg.vocab_size} "
            "entries; use a preset whose vocab_size matches the family's tokenizer."
        )
    loader = dist.train_loader(train_ds, s["batch_size"], s["seed"], info)
    global_batch = s["batch_size"] * info.world_size
    if len(loader) == 0:
        raise DataError(
            f"The training split gives {len(train_ds)} windows, fewer than one global batch of "
            f"{global_batch} ({info.world_size} processes x --batch-size {s['batch_size']}); use "
            "a smaller --batch-size or --context-length, fewer processes, or more text."
        )
    files = tokenizer_files(st.tokenizer_folder)
    plan = TrainingPlan(
        options=o, info=info, device=device, backend=backend, family=st.family, out=st.out,
        settings=s, model_config=model_cfg, train_config=train_cfg, tokenizer=st.tokenizer,
        tokenizer_files=files, init=st.init, loaded=st.loaded, splits=splits, train_loader=loader,
    )  # fmt: skip
    plan.run_info = _run_info(plan, tokenizer_record(st.tokenizer, st.tokenizer_folder, files))
    return plan


def _run_info(plan: TrainingPlan, tok_info: dict[str, Any]) -> dict[str, Any]:
    """run.json: the settings, the tokenizer, how the model started and who trained it."""
    o, s, info = plan.options, plan.settings, plan.info
    run_info = {k: s[k] for k in RUN_KEYS}
    run_info["data"] = [str(p) for p in s["data"]] if s["data"] else None
    run_info.update(
        family=plan.family.name,
        init=plan.init,
        tokenizer=tok_info,
        world_size=info.world_size,
        global_batch=plan.global_batch,
        parallel="fsdp" if o.fsdp else ("ddp" if info.distributed else "single"),
        backend=plan.backend,
        dtype=s["dtype"],
        compile=o.compile,
        activation_checkpointing=bool(o.activation_checkpointing),
    )
    return run_info


# ---- execute ------------------------------------------------------------------------------


def _build_model(plan: TrainingPlan) -> Any:
    import torch

    if plan.loaded is not None:
        model = plan.loaded.model
    else:
        torch.manual_seed(plan.settings["seed"])
        model = plan.family.build_model(plan.model_config)
        model.init_weights()
    model.train()
    return model.to(plan.device)


def _wrap(plan: TrainingPlan, model: Any) -> tuple[Any, Any]:
    """Activation checkpointing, then DDP/FSDP2, then torch.compile; returns (model, ddp)."""
    from . import distributed as dist

    o, info, ddp = plan.options, plan.info, None
    if plan.backend is not None and info.distributed:
        dist.init_process_group(info, plan.backend, plan.device)
    if o.activation_checkpointing:
        dist.checkpoint_blocks(model)
    if info.distributed:
        if o.fsdp:
            model = dist.shard_fsdp(model)
        else:
            model = ddp = dist.wrap_ddp(model, plan.device)
    if o.compile:
        model = dist.compile_model(model, o.compile)
    return model, ddp


def _announce(plan: TrainingPlan, n_params: int, say: Callable[[str], None]) -> None:
    import torch

    o, info, init, cfg = plan.options, plan.info, plan.init, plan.train_config
    threads = f" ({torch.get_num_threads()} threads)" if plan.device.type == "cpu" else ""
    procs = f", {info.world_size} processes ({'FSDP2' if o.fsdp else 'DDP'}, {plan.backend})"
    origin = init.get("checkpoint") or init.get("repo_id")
    start_text = f"from {origin}" if origin else f"preset {init.get('preset')}"
    say(
        f"Training {plan.family.name} {start_text} ({n_params / 1e6:.1f}M parameters) on "
        f"{plan.device}{threads}{procs if info.distributed else ''}, {cfg.epochs} epochs, "
        f"lr {cfg.lr:g}, global batch {plan.global_batch}; run folder {plan.out}"
    )
    say(plan.splits.summary())
    tok = plan.run_info["tokenizer"]
    say(f"Tokenizer: {tok['kind']} ({tok['class']}, {tok['vocab_size']:,} ids)")


def execute(plan: TrainingPlan, log: Callable[[str], None] | None = print) -> Any:
    """Build, wrap and train the planned run; returns a :class:`~portagpt.core.results.Run`."""
    import torch

    from . import distributed as dist
    from .checkpoint import unwrap_model
    from .results import Run
    from .run_folder import start_run_folder
    from .train import Trainer

    o, info, s = plan.options, plan.info, plan.settings
    say = log if (log is not None and info.is_main) else (lambda *a, **k: None)
    if o.threads is not None:
        torch.set_num_threads(o.threads)
    model = _build_model(plan)
    n_params = sum(p.numel() for p in model.parameters())
    _announce(plan, n_params, say)
    model, ddp = _wrap(plan, model)
    out = plan.out
    if info.is_main:
        start_run_folder(out, resume=o.resume, overwrite=o.overwrite)  # run.json: the trainer's
    dist.barrier()
    train_ds, val_ds = plan.splits.train_loader.dataset, plan.splits.val_loader.dataset
    common: dict[str, Any] = dict(
        tokenizer=plan.tokenizer, out_dir=out, device=plan.device, family=plan.family,
        run_info=plan.run_info, progress=o.progress, log=log,
        tokens_per_epoch=len(plan.train_loader) * plan.global_batch * s["context_length"],
        train_eval_loader=dist.eval_loader(train_ds, plan.global_batch),
        checkpoint_files=plan.tokenizer_files,
    )  # fmt: skip
    val_loader = dist.eval_loader(val_ds, plan.global_batch)
    if info.distributed:
        trainer: Trainer = dist.DistributedTrainer(
            model, plan.train_loader, val_loader, plan.train_config,
            info=info, ddp=ddp, fsdp=o.fsdp, **common,
        )  # fmt: skip
    else:
        trainer = Trainer(model, plan.train_loader, val_loader, plan.train_config, **common)
    start = time.perf_counter()
    history = trainer.fit(resume_from=out / CHECKPOINT_DIR if o.resume else None)
    return Run(
        out=out, family=plan.family.name, history=history, tokens_seen=trainer.tokens_seen,
        seconds=time.perf_counter() - start, parameters=n_params, run_info=plan.run_info,
        is_main=info.is_main, model=unwrap_model(trainer.model), tokenizer=plan.tokenizer,
    )  # fmt: skip


def run_training(options: TrainOptions, log: Callable[[str], None] | None = print) -> Any:
    """Plan, then execute (under torchrun: in this process's group, torn down at the end)."""
    from . import distributed as dist
    from .run_folder import release_run_folders

    info = dist.launch_info()
    try:
        return execute(plan_training(options, info), log=log)
    finally:
        release_run_folders()
        dist.destroy_process_group()

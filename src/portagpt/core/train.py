"""The chapter-5 pretraining loop, for any model mapping (B, T) ids to (B, T, vocab) logits.

``train_model_simple`` from chapter 5, grown the features a real run needs:

* AdamW (chapter 5: ``lr=4e-4, weight_decay=0.1`` on every parameter; or no
  decay on norms, biases and embeddings with ``decay_filter="matrices"``);
* optional linear warmup and cosine decay (``LambdaLR``), gradient clipping,
  gradient accumulation (the loss of each optimizer step is the mean over its
  micro-batches);
* evaluation every ``eval_freq`` optimizer steps on ``eval_iter`` batches, in
  eval mode without gradients: train and validation loss and perplexity. As in
  chapter 5 steps count from 0 and step 0 is evaluated, so the curve starts
  near ``ln(vocab)``. The training loss is measured on the first batches of
  the training split *in order* (not the shuffled loader), so evaluation
  never draws from the data-order generator and resumed runs stay exact;
* tokens seen, a greedy sample from a fixed prompt after every epoch, a
  ``tqdm.auto`` progress bar where one belongs (a Jupyter widget, or a text bar
  when stderr is a terminal; elsewhere only one plain line per evaluation, so
  a log file holds no ``\\r`` frames; see :func:`progress_class`), and, with
  ``out_dir``: ``metrics.jsonl`` (one JSON object per step, evaluation and
  sample) and ``samples.txt`` as it goes, a checkpoint (``out_dir/checkpoint``)
  at every epoch end, ``loss.png``/``loss.pdf`` at the end;
* seeded and resumable: the checkpoint holds optimizer, scheduler, RNG and
  data-order state, so 2 epochs equal 1 epoch + resume for 1 more, also from
  a mid-epoch checkpoint (``save_every``).

Extension points for distributed and faster runs (used by
:class:`~portagpt.core.distributed.DistributedTrainer`): pass
``is_main_process`` (only the main process logs, samples and writes files) and
``world_size``; override :meth:`Trainer.autocast`, :meth:`Trainer.sync_context`
(DDP's ``no_sync`` between accumulation micro-batches), :meth:`Trainer.reduce_mean`,
:meth:`Trainer.loader_loss` (evaluation over all processes),
:meth:`Trainer.model_state`/:meth:`Trainer.optimizer_state` and
:meth:`Trainer.load_weights`/:meth:`Trainer.load_optimizer_state` (sharded
state) and :meth:`Trainer.begin_epoch` (a ``DistributedSampler``'s
``set_epoch`` is already called); wrap the model with ``torch.compile`` or
activation checkpointing before handing it over: checkpoints unwrap it, so
``_orig_mod.`` never reaches a file. ``checkpoint_files`` (e.g. the
tokenizer's files) are copied into every checkpoint. :class:`Callback` gets
every step, evaluation and epoch end.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import random
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from ..errors import UsageError
from .checkpoint import load_training_state, load_weights, save_checkpoint, unwrap_model
from .checkpoint_format import atomic_write_bytes, disk_full
from .loss import adamw, chunked_cross_entropy
from .memory import keep_freed_memory
from .rules import Rule, check_rules, finite, one_of, whole
from .run_folder import CHECKPOINT_DIR, run_folder_lock, write_run_info

METRICS_FILE = "metrics.jsonl"
PLOT_STEM = "loss"
SAMPLES_FILE = "samples.txt"
DTYPES = {"float32": None, "bfloat16": torch.bfloat16}


# ---- configuration ---------------------------------------------------------------


@dataclass
class TrainConfig:
    """Hyper-parameters of one run; the defaults are chapter 5's (``train_model_simple``)."""

    epochs: int = 10
    lr: float = 4e-4
    weight_decay: float = 0.1
    decay_filter: str = "all"  # "all": chapter 5; "matrices": no decay on norms/biases/embeddings
    betas: tuple[float, float] = (0.9, 0.999)
    schedule: str = "constant"  # "constant" or "cosine" (to min_lr_ratio * lr)
    warmup_steps: int = 0  # linear warmup over this many optimizer steps
    min_lr_ratio: float = 0.1
    grad_clip: float | None = None  # max global gradient norm; None: no clipping
    grad_accum: int = 1  # micro-batches per optimizer step
    eval_freq: int = 5  # evaluate every N optimizer steps (step 0 included)
    eval_iter: int = 5  # batches per evaluation, on each split
    sample_prompt: str | None = "Every effort moves you"
    sample_tokens: int = 50
    save_every: int = 0  # also checkpoint every N optimizer steps (0: epoch ends only)
    dtype: str = "float32"  # compute dtype: "float32", or "bfloat16" autocast (weights stay fp32)
    seed: int = 123

    def validate(self) -> None:
        """Raise UsageError naming the CLI flag for any nonsensical value (see CONFIG_RULES)."""
        check_rules(dataclasses.asdict(self), CONFIG_RULES)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["betas"] = list(self.betas)
        return d


# What each TrainConfig field must be, in the order the flags are checked.
CONFIG_RULES: dict[str, Rule] = {
    "epochs": Rule("--epochs", "a whole number >= 1", whole(1),
                   "train for at least one epoch, e.g. --epochs 10."),
    "lr": Rule("--lr", "a positive finite number", finite(0, strict=True),
               "chapter 5 uses --lr 0.0004."),
    "weight_decay": Rule("--weight-decay", ">= 0", finite(0, strict=False),
                         "use 0 for none or e.g. --weight-decay 0.1."),
    "decay_filter": Rule("--decay", "'all' or 'matrices'", one_of("all", "matrices"),
                         "pick one of the two."),
    "schedule": Rule("--schedule", "'constant' or 'cosine'", one_of("constant", "cosine"),
                     "pick one of the two."),
    "warmup_steps": Rule("--warmup", "a whole number of steps >= 0", whole(0),
                         "use 0 for no warmup."),
    "min_lr_ratio": Rule("--min-lr-ratio", "between 0 and 1",
                         lambda v: finite(0, strict=False)(v) and v <= 1,
                         "e.g. 0.1 decays to a tenth of --lr."),
    "grad_clip": Rule("--clip", "a positive max gradient norm", finite(0, strict=True),
                      "e.g. --clip 1.0, or 0 to turn clipping off.", optional=True),
    "grad_accum": Rule("--grad-accum", "a whole number >= 1", whole(1),
                       "use 1 for no accumulation."),
    "eval_freq": Rule("--eval-freq", "a whole number of steps >= 1", whole(1),
                      "chapter 5 uses --eval-freq 5."),
    "eval_iter": Rule("--eval-iter", "a whole number of batches >= 1", whole(1),
                      "chapter 5 uses --eval-iter 5."),
    "sample_tokens": Rule("--sample-tokens", "a whole number >= 0", whole(0),
                          "use 0 to skip the sample."),
    "save_every": Rule("--save-every", "a whole number of steps >= 0", whole(0),
                       "use 0 to save at epoch ends only."),
    "dtype": Rule("--dtype", f"one of {', '.join(DTYPES)}", one_of(*DTYPES),
                  "weights stay float32 either way."),
}  # fmt: skip


# ---- loss --------------------------------------------------------------------------


def calc_loss_batch(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy of one (B, T) batch (computed in float32, a block of
    rows at a time: :func:`~portagpt.core.loss.chunked_cross_entropy`)."""
    logits = model(inputs)  # (B, T, vocab)
    return chunked_cross_entropy(logits.flatten(0, 1), targets.flatten())


def calc_loss_loader(
    loader: DataLoader, model: nn.Module, device: torch.device | str, num_batches: int | None = None
) -> float:
    """Mean of the per-batch losses over the first ``num_batches`` batches (all when None); NaN if empty."""
    n = len(loader) if num_batches is None else min(num_batches, len(loader))
    if n == 0:
        return float("nan")
    total = 0.0
    for i, (inputs, targets) in enumerate(loader):
        if i >= n:
            break
        total += calc_loss_batch(model, inputs.to(device), targets.to(device)).item()
    return total / n


def perplexity(loss: float) -> float:
    """``exp(loss)``; inf where that overflows a float."""
    return math.exp(loss) if loss < 700 else float("inf")


# ---- history -----------------------------------------------------------------------


@dataclass
class EvalRecord:
    step: int  # chapter-5 global step: index of the optimizer step just taken (from 0)
    epoch: int  # 1-based epoch in progress
    tokens_seen: int
    train_loss: float
    val_loss: float
    lr: float
    elapsed_s: float

    @property
    def train_ppl(self) -> float:
        return perplexity(self.train_loss)

    @property
    def val_ppl(self) -> float:
        return perplexity(self.val_loss)

    def to_json(self) -> dict[str, Any]:
        return {
            "type": "eval",
            **dataclasses.asdict(self),
            "train_ppl": self.train_ppl,
            "val_ppl": self.val_ppl,
        }


@dataclass
class TrainHistory:
    """What :meth:`Trainer.fit` returns: every evaluation, every step's loss, every sample."""

    evals: list[EvalRecord] = field(default_factory=list)
    step_losses: list[float] = field(default_factory=list)  # training loss of each optimizer step
    samples: list[str] = field(default_factory=list)  # one per finished epoch
    tokens_per_epoch: int = 0

    @property
    def train_losses(self) -> list[float]:
        return [e.train_loss for e in self.evals]

    @property
    def val_losses(self) -> list[float]:
        return [e.val_loss for e in self.evals]

    @property
    def tokens_seen(self) -> list[int]:
        return [e.tokens_seen for e in self.evals]

    def to_state(self) -> dict[str, Any]:
        return {
            "evals": [dataclasses.asdict(e) for e in self.evals],
            "step_losses": list(self.step_losses),
            "samples": list(self.samples),
            "tokens_per_epoch": self.tokens_per_epoch,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> TrainHistory:
        return cls(
            evals=[EvalRecord(**e) for e in state.get("evals", [])],
            step_losses=list(state.get("step_losses", [])),
            samples=list(state.get("samples", [])),
            tokens_per_epoch=int(state.get("tokens_per_epoch", 0)),
        )


class Callback:
    """Hooks into a run; every method is optional. ``trainer.should_stop = True`` ends it early
    (after the current step, with a checkpoint when the run has an ``out_dir``)."""

    def on_train_begin(self, trainer: Trainer) -> None: ...

    def on_step_end(self, trainer: Trainer, loss: float) -> None: ...

    def on_evaluate(self, trainer: Trainer, record: EvalRecord) -> None: ...

    def on_epoch_end(self, trainer: Trainer, epoch: int) -> None: ...

    def on_train_end(self, trainer: Trainer, history: TrainHistory) -> None: ...


# ---- optimizer and schedule -----------------------------------------------------------


def param_groups(
    model: nn.Module, weight_decay: float, decay_filter: str = "all"
) -> list[dict[str, Any]]:
    """AdamW groups: everything decayed (chapter 5), or none on 1-D tensors and embeddings."""
    params = [p for p in model.parameters() if p.requires_grad]  # shared (tied) tensors once
    if decay_filter == "all":
        return [{"params": params, "weight_decay": weight_decay}]
    embeddings = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    decay = [p for p in params if p.ndim >= 2 and id(p) not in embeddings]
    keep = [p for p in params if p.ndim < 2 or id(p) in embeddings]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": keep, "weight_decay": 0.0}]


def lr_factor(
    step: int, total_steps: int, warmup_steps: int, schedule: str, min_lr_ratio: float
) -> float:
    """Multiplier of the peak lr before optimizer step ``step`` (0-based)."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


# ---- sampling ------------------------------------------------------------------------


def greedy_sample(model: nn.Module, tokenizer: Any, prompt: str, max_new_tokens: int) -> str:
    """The prompt continued greedily by ``max_new_tokens`` tokens, as text.

    Models that follow the family contract (``layer_specs``) go through the
    generation harness (KV cache); any other module gets chapter 5's
    ``generate_text_simple`` loop (full forward per token, cropped context).
    """
    model = unwrap_model(model)
    ids = tokenizer.encode(prompt)
    ctx = getattr(getattr(model, "config", None), "context_length", None)
    was_training = model.training
    model.eval()
    try:
        if hasattr(model, "layer_specs"):
            from .generate import generate

            result = generate(model, ids, max_new_tokens=max_new_tokens, temperature=0.0)
            new = result.new_ids[0]
        else:
            device = next(model.parameters()).device
            seq = torch.tensor([ids], dtype=torch.long, device=device)  # (1, T)
            with torch.no_grad():
                for _ in range(max_new_tokens):
                    window = seq[:, -ctx:] if ctx else seq
                    nxt = model(window)[:, -1].argmax(dim=-1, keepdim=True)  # (1, 1)
                    seq = torch.cat([seq, nxt], dim=1)
            new = seq[0, len(ids) :].tolist()
    finally:
        model.train(was_training)
    return tokenizer.decode(ids + list(new))


# ---- the trainer -------------------------------------------------------------------------


class Trainer:
    """One training run: model + loaders + config (+ where to write, + who is main)."""

    def __init__(
        self,
        model: nn.Module,
        train_loader: DataLoader,
        val_loader: DataLoader,
        config: TrainConfig | None = None,
        *,
        tokenizer: Any = None,
        out_dir: str | Path | None = None,
        device: torch.device | str | None = None,
        family: Any = None,
        callbacks: Sequence[Callback] = (),
        is_main_process: bool = True,
        world_size: int = 1,
        train_eval_loader: DataLoader | None = None,
        tokens_per_epoch: int | None = None,
        progress: bool = True,
        run_info: dict[str, Any] | None = None,
        checkpoint_files: Sequence[str | Path] = (),
        log: Callable[[str], None] | None = print,
    ) -> None:
        self.config = config or TrainConfig()
        self.config.validate()
        self.model = model
        self.train_loader = train_loader
        self.val_loader = val_loader
        self.train_eval_loader = train_eval_loader or DataLoader(
            train_loader.dataset, batch_size=train_loader.batch_size, shuffle=False
        )
        self.tokenizer = tokenizer
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.device = (
            torch.device(device) if device is not None else next(model.parameters()).device
        )
        self.family = family
        self.callbacks = list(callbacks)
        self.is_main_process = is_main_process
        self.world_size = world_size
        self.progress = progress
        self.log_fn = log  # where evaluation lines and samples go; None: nowhere
        self._bar: Any = None
        self.run_info = dict(run_info or {})  # goes into the checkpoint sidecar as "run"
        self.checkpoint_files = [Path(p) for p in checkpoint_files]  # copied into each checkpoint
        # read whole now: the source may be the very checkpoint this run replaces
        self._checkpoint_blobs = [(p.name, p.read_bytes()) for p in self.checkpoint_files]
        if len(train_loader) == 0:
            raise UsageError(
                "The training loader yields no batches; give it more data or a smaller batch size."
            )

        cfg = self.config
        self.steps_per_epoch = math.ceil(len(train_loader) / cfg.grad_accum)
        self.total_steps = cfg.epochs * self.steps_per_epoch
        self.optimizer = adamw(  # fused where torch can: core/loss.py
            param_groups(model, cfg.weight_decay, cfg.decay_filter), cfg.lr, tuple(cfg.betas)
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer,
            lambda s: lr_factor(
                s, self.total_steps, cfg.warmup_steps, cfg.schedule, cfg.min_lr_ratio
            ),
        )
        self.history = TrainHistory(tokens_per_epoch=tokens_per_epoch or self._tokens_per_epoch())
        # position in the run
        self.global_step = -1  # chapter 5: index of the last optimizer step, -1 before the first
        self.epoch = 0  # epochs completed
        self.batch_in_epoch = 0  # micro-batches of the current epoch already consumed
        self.tokens_seen = 0
        self.should_stop = False
        self._epoch_generator_state: torch.Tensor | None = None
        self._elapsed_before = 0.0  # wall time of earlier (resumed) sessions
        self._start = time.perf_counter()

    # ---- extension points (override for DDP, mixed precision, ...) ----------------------
    def autocast(self) -> contextlib.AbstractContextManager:
        """Context for forward passes: bf16 autocast when ``config.dtype`` asks for it."""
        dtype = DTYPES[self.config.dtype]
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    def sync_context(self, last_micro_batch: bool) -> contextlib.AbstractContextManager:
        """Context for one micro-batch's backward (DDP: ``model.no_sync()`` unless last)."""
        return contextlib.nullcontext()

    def reduce_mean(self, value: float) -> float:
        """Average a metric over processes (single process: itself)."""
        return value

    def loader_loss(self, loader: DataLoader) -> float:
        """Mean loss of the first ``eval_iter`` batches of ``loader`` (DDP: over all processes)."""
        return calc_loss_loader(loader, self.model, self.device, self.config.eval_iter)

    def model_state(self) -> dict[str, torch.Tensor] | None:
        """Weights to checkpoint; None: the model's own state dict (FSDP: gathered ones)."""
        return None

    def optimizer_state(self) -> dict[str, Any]:
        return self.optimizer.state_dict()

    def load_weights(self, folder: str | Path) -> None:
        load_weights(folder, self.model)

    def load_optimizer_state(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state)

    def begin_epoch(self, epoch: int) -> None:
        """Called before each epoch's loader is iterated."""
        sampler = getattr(self.train_loader, "sampler", None)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)
        gen = self._generator()
        self._epoch_generator_state = gen.get_state() if gen is not None else None

    def log(self, message: str) -> None:
        """One plain line (main process): above the progress bar when there is one."""
        if not (self.is_main_process and self.log_fn is not None):
            return
        if self._bar is not None and self.log_fn is print:
            self._bar.write(message)
        else:
            self.log_fn(message)

    # ---- pieces of the loop ---------------------------------------------------------------
    def _generator(self) -> torch.Generator | None:
        return getattr(self.train_loader, "generator", None)

    def _tokens_per_epoch(self) -> int:
        inputs, _ = self.train_loader.dataset[0]
        return (
            len(self.train_loader)
            * (self.train_loader.batch_size or 1)
            * inputs.numel()
            * self.world_size
        )

    def _lr(self) -> float:
        return float(self.scheduler.get_last_lr()[0])

    def elapsed(self) -> float:
        return self._elapsed_before + time.perf_counter() - self._start

    def train_step(self, batches: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> float:
        """One optimizer step over ``batches`` (its micro-batches); returns their mean loss."""
        self.model.train()
        total = torch.zeros((), device=self.device)
        n = len(batches)
        for i, (inputs, targets) in enumerate(batches):
            inputs = inputs.to(self.device, non_blocking=True)
            targets = targets.to(self.device, non_blocking=True)
            with self.sync_context(i == n - 1):
                with self.autocast():
                    loss = calc_loss_batch(self.model, inputs, targets)
                (loss / n).backward()
            total += loss.detach()
            self.tokens_seen += inputs.numel() * self.world_size
        if self.config.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return total.item() / n

    @torch.no_grad()
    def evaluate(self) -> EvalRecord:
        """Train/val loss on ``eval_iter`` batches each, in eval mode, without gradients."""
        was_training = self.model.training
        self.model.eval()
        try:
            with self.autocast():
                train_loss = self.loader_loss(self.train_eval_loader)
                val_loss = self.loader_loss(self.val_loader)
        finally:
            self.model.train(was_training)
        record = EvalRecord(
            step=self.global_step,
            epoch=self.epoch + 1 if self.batch_in_epoch else max(self.epoch, 1),
            tokens_seen=self.tokens_seen,
            train_loss=self.reduce_mean(train_loss),
            val_loss=self.reduce_mean(val_loss),
            lr=self._lr(),
            elapsed_s=round(self.elapsed(), 3),
        )
        self.history.evals.append(record)
        self.log(
            f"Ep {record.epoch} (Step {record.step:06d}): "
            f"Train loss {record.train_loss:.3f}, Val loss {record.val_loss:.3f}"
        )
        self._write_metric(record.to_json())
        for cb in self.callbacks:
            cb.on_evaluate(self, record)
        return record

    def sample(self) -> str | None:
        """The chapter-5 sample: the fixed prompt continued greedily (main process only)."""
        cfg = self.config
        if not (
            self.is_main_process
            and self.tokenizer is not None
            and cfg.sample_prompt
            and cfg.sample_tokens
        ):
            return None
        return greedy_sample(self.model, self.tokenizer, cfg.sample_prompt, cfg.sample_tokens)

    # ---- files ---------------------------------------------------------------------------
    def _writes(self) -> bool:
        return self.is_main_process and self.out_dir is not None

    def _write_metric(self, record: dict[str, Any]) -> None:
        if self._writes():
            line = json.dumps(record) + "\n"
            try:
                with open(self.out_dir / METRICS_FILE, "a", encoding="utf-8") as f:
                    f.write(line)
            except OSError as exc:
                raise disk_full(exc, self.out_dir / METRICS_FILE, len(line)) or exc from None

    def _write_samples(self) -> None:
        if self._writes():
            # one line per epoch, as chapter 5 prints it (metrics.jsonl keeps the exact text)
            lines = [f"Epoch {i + 1}: {flat(s)}" for i, s in enumerate(self.history.samples)]
            text = "\n".join(lines) + "\n"
            atomic_write_bytes(self.out_dir / SAMPLES_FILE, text.encode("utf-8"))

    def _start_files(self, resumed: bool) -> None:
        """``run.json`` (with ``run_info``); metrics: empty for a fresh run, a resumed one drops the
        records past its checkpoint (a crash's tail). Each file is replaced atomically."""
        if not self._writes():
            return
        if self.run_info:
            write_run_info(self.out_dir, self.run_info)
        path = self.out_dir / METRICS_FILE
        kept: list[str] = []
        if resumed and path.is_file():
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    if json.loads(line).get("step", -1) <= self.global_step:
                        kept.append(line)
                except json.JSONDecodeError:
                    continue
        atomic_write_bytes(path, "".join(line + "\n" for line in kept).encode("utf-8"))
        if resumed:
            self._write_samples()

    def plot(self) -> list[Path]:
        """Write loss.png and loss.pdf into ``out_dir`` (main process, with evaluations)."""
        if not self._writes() or not self.history.evals:
            return []
        from .plots import plot_losses

        h = self.history
        return plot_losses(
            h.tokens_seen,
            h.train_losses,
            h.val_losses,
            h.tokens_per_epoch,
            self.out_dir / PLOT_STEM,
        )

    # ---- checkpoints ---------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything besides the weights that an exact resume needs."""
        gen = self._generator()
        if gen is None:
            gen_state = None
        elif self.batch_in_epoch > 0 and self._epoch_generator_state is not None:
            gen_state = self._epoch_generator_state  # replay this epoch's order, skip what was done
        else:
            gen_state = gen.get_state()
        return {
            "optimizer": self.optimizer_state(),
            "scheduler": self.scheduler.state_dict(),
            "global_step": self.global_step,
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "tokens_seen": self.tokens_seen,
            "elapsed_s": self.elapsed(),
            "loader_generator": gen_state,
            "rng": {
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
                "python": random.getstate(),
            },
            "history": self.history.to_state(),
        }

    def save_checkpoint(self, folder: str | Path | None = None) -> Path | None:
        """Write a checkpoint (main process); default ``out_dir/checkpoint``."""
        if not self.is_main_process:
            return None
        if folder is None:
            if self.out_dir is None:
                return None
            folder = self.out_dir / CHECKPOINT_DIR
        meta = {
            "step": self.global_step,
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "tokens_seen": self.tokens_seen,
            "train_config": self.config.to_dict(),
            "run": self.run_info,
            "saved_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        return save_checkpoint(
            folder,
            self.model,
            family=self.family,
            meta=meta,
            training_state=self.state_dict(),
            weights=self.model_state(),
            extra_files=self._checkpoint_blobs,
        )

    def load_checkpoint(self, folder: str | Path) -> None:
        """Restore weights and the whole training state from a checkpoint folder."""
        self.load_weights(folder)
        state = load_training_state(folder)
        self.load_optimizer_state(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.global_step = int(state["global_step"])
        self.epoch = int(state["epoch"])
        self.batch_in_epoch = int(state["batch_in_epoch"])
        self.tokens_seen = int(state["tokens_seen"])
        self._elapsed_before = float(state.get("elapsed_s", 0.0))
        self._start = time.perf_counter()
        self.history = TrainHistory.from_state(state["history"])
        gen = self._generator()
        if gen is not None and state.get("loader_generator") is not None:
            gen.set_state(state["loader_generator"])
        rng = state["rng"]
        torch.set_rng_state(rng["torch"])
        if rng.get("cuda") and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
        random.setstate(_python_rng_state(rng["python"]))
        if self.batch_in_epoch >= len(self.train_loader):
            raise UsageError(
                f"The checkpoint stopped after batch {self.batch_in_epoch} of an epoch, but the "
                f"training data now has only {len(self.train_loader)} batches per epoch; resume "
                "with the same --data, --context-length, --stride, --batch-size and --train-ratio."
            )

    # ---- the loop --------------------------------------------------------------------------
    def _batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        it = iter(self.train_loader)
        for _ in range(self.batch_in_epoch):  # mid-epoch resume: same order, skip what was done
            next(it)
        return it

    def fit(self, resume_from: str | Path | None = None) -> TrainHistory:
        """Train ``config.epochs`` epochs in all (resuming counts the ones already done).

        With an ``out_dir``, the run folder is locked for the whole run (one
        writer, see :mod:`portagpt.core.run_folder`); ``run.json`` is written
        only once a resume has been accepted.
        """
        if not self._writes():
            return self._fit(resume_from)
        with run_folder_lock(self.out_dir):
            return self._fit(resume_from)

    def _fit(self, resume_from: str | Path | None) -> TrainHistory:
        cfg = self.config
        if resume_from is not None:
            self.load_checkpoint(resume_from)
            if self.epoch >= cfg.epochs:
                raise UsageError(
                    f"The checkpoint in {str(resume_from)!r} has already trained {self.epoch} "
                    f"epoch(s), and --epochs is {cfg.epochs} (the total, not the number to add). "
                    f"Pass a larger --epochs, e.g. --epochs {self.epoch + 1}, to train on."
                )
        else:
            torch.manual_seed(cfg.seed)
            random.seed(cfg.seed)
        self._start_files(resumed=resume_from is not None)
        for cb in self.callbacks:
            cb.on_train_begin(self)
        bar = self._bar = self._progress_bar()
        try:  # on CPU, each step's large temporaries reuse the last step's pages: core/memory.py
            with keep_freed_memory(self.device.type == "cpu"):
                self._run_epochs(bar)
        finally:
            self._bar = None
            if bar is not None:
                bar.close()
        self.plot()  # once, at the end (or early stop): matplotlib takes ~1 s per figure
        for cb in self.callbacks:
            cb.on_train_end(self, self.history)
        return self.history

    def _progress_bar(self) -> Any:
        tqdm = progress_class() if (self.progress and self.is_main_process) else None
        if tqdm is None:
            return None
        return tqdm(
            total=self.total_steps,
            initial=self.global_step + 1,
            unit="step",
            dynamic_ncols=True,
            leave=False,
        )

    def _run_epochs(self, bar: Any) -> None:
        cfg = self.config
        n_batches = len(self.train_loader)
        for epoch in range(self.epoch, cfg.epochs):
            self.begin_epoch(epoch)
            batches = self._batches()
            while self.batch_in_epoch < n_batches and not self.should_stop:
                k = min(cfg.grad_accum, n_batches - self.batch_in_epoch)
                loss = self.train_step([next(batches) for _ in range(k)])
                self.batch_in_epoch += k
                self.global_step += 1
                self.history.step_losses.append(loss)
                self._write_metric(
                    {
                        "type": "train",
                        "step": self.global_step,
                        "epoch": epoch + 1,
                        "tokens_seen": self.tokens_seen,
                        "loss": loss,
                        "lr": self._lr(),
                    }
                )
                if bar is not None:
                    bar.set_description(f"Ep {epoch + 1}/{cfg.epochs}")
                    bar.set_postfix(
                        loss=f"{loss:.3f}",
                        tok_s=f"{self.tokens_seen / max(self.elapsed(), 1e-9):,.0f}",
                    )
                    bar.update(1)
                for cb in self.callbacks:
                    cb.on_step_end(self, loss)
                if self.global_step % cfg.eval_freq == 0:
                    self.evaluate()
                if (
                    cfg.save_every
                    and (self.global_step + 1) % cfg.save_every == 0
                    and self.batch_in_epoch < n_batches
                ):
                    self.save_checkpoint()
            if self.batch_in_epoch < n_batches:  # stopped early, mid-epoch
                self.save_checkpoint()
                return
            self._end_epoch(epoch)
            if self.should_stop:
                return

    def _end_epoch(self, epoch: int) -> None:
        self.epoch = epoch + 1
        self.batch_in_epoch = 0
        last = self.history.evals[-1].step if self.history.evals else None
        if self.epoch == self.config.epochs and last != self.global_step:
            self.evaluate()  # the final losses, whatever the cadence
        text = self.sample()
        if text is not None:
            self.history.samples.append(text)
            self.log(flat(text))
            self._write_metric(
                {"type": "sample", "step": self.global_step, "epoch": epoch + 1, "text": text}
            )
            self._write_samples()
        for cb in self.callbacks:
            cb.on_epoch_end(self, epoch + 1)
        self.save_checkpoint()


def progress_class() -> Any:
    """The progress bar for where output goes, or None for one plain line per evaluation.

    ``tqdm.auto`` gives a widget in Jupyter (with ipywidgets) and the text bar
    elsewhere; the text bar redraws itself with ``\\r`` frames, which turn a log
    file into hundreds of lines, so it is used only when stderr is a terminal.
    """
    with warnings.catch_warnings():  # no ipywidgets in a kernel: tqdm warns, then falls back
        warnings.simplefilter("ignore")
        from tqdm.auto import tqdm as auto
        from tqdm.autonotebook import tqdm as chosen  # what tqdm.auto builds on: widget or text
    from tqdm.std import tqdm as text_bar

    if chosen is not text_bar:
        return auto  # the Jupyter widget
    isatty = getattr(sys.stderr, "isatty", None)
    return text_bar if isatty is not None and isatty() else None


def flat(text: str) -> str:
    """A sample on one line (chapter 5 prints ``text.replace("\\n", " ")``)."""
    return text.replace("\n", " ")


def _python_rng_state(state: Any) -> tuple:
    """``random.setstate`` wants tuples; a round trip through torch.save may give lists."""
    version, internal, gauss = state
    return (version, tuple(internal), gauss)


def train(
    model: nn.Module,
    train_loader: DataLoader,
    val_loader: DataLoader,
    config: TrainConfig | None = None,
    *,
    resume_from: str | Path | None = None,
    **trainer_kwargs: Any,
) -> TrainHistory:
    """Train with a fresh :class:`Trainer`; see its arguments. Returns the history."""
    return Trainer(model, train_loader, val_loader, config, **trainer_kwargs).fit(resume_from)

"""A fair cross-family comparison: same text, same token budget, same settings, one table.

:func:`compare` trains every ``(family, preset)`` from scratch with the
chapter-5 :class:`~portagpt.core.train.Trainer` under identical conditions --
the same text, the same number of training tokens seen, context length, batch
size, learning rate, schedule and seed -- and measures:

* parameters, training throughput (tokens/s over the optimizer steps only,
  evaluation excluded) and peak memory: on CUDA ``torch.cuda.max_memory_allocated``,
  on CPU the growth of the resident set (``ru_maxrss`` at the end minus the
  resident size before the model is built). Each family trains in a fresh
  process (``multiprocessing`` spawn), so one family's memory never counts
  towards the next;
* the first and final training loss (the trainer's evaluation on the first
  batches of the training split) and the final validation loss;
* validation **bits per byte**: the cross-entropy summed over every token of
  the validation text, divided by ``ln 2`` and by the number of UTF-8 bytes of
  that text. Losses per token are not comparable across tokenizers (a
  tokenizer with longer tokens has fewer, harder ones); bits per byte are.

The split is made on the *text* (the first ``train_ratio`` of the characters
train), so every tokenizer sees exactly the same training and validation
bytes. The validation stream starts with the end-of-text id, so its first real
token is scored too, and the last partial window is scored with the context
that precedes it: every token of the validation text is predicted exactly once.

Along the way every family is evaluated ``eval_points`` times; the curve of
validation bits per byte against training bytes seen (tokens seen times the
training text's bytes per token) is drawn for all families in one plot.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import resource
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import PortagptError, UsageError

if TYPE_CHECKING:  # torch is imported where it is used: `portagpt --help` builds this CLI's parser
    import torch
    from torch import nn

JSON_FILE = "compare.json"
MARKDOWN_FILE = "compare.md"
PLOT_STEM = "bpb"
LN2 = math.log(2.0)


# ---- what every family gets alike ---------------------------------------------------------


@dataclass
class CompareSettings:
    """The conditions shared by every family of one comparison."""

    tokens: int = 12_288  # training tokens each family sees (48 steps of 4 x 64)
    context_length: int = 64
    batch_size: int = 4
    lr: float = 1e-3
    weight_decay: float = 0.1
    warmup_steps: int = 4
    grad_clip: float | None = 1.0
    train_ratio: float = 0.9
    seed: int = 123
    eval_points: int = 8  # evaluations along the way (plus the start and the end)
    eval_iter: int = 4
    data: list[str] | None = None  # None: the bundled corpus
    device: str = "cpu"
    dtype: str = "float32"

    def validate(self) -> None:
        checks = [
            (self.tokens >= 1, "--tokens", self.tokens, "a whole number of tokens >= 1"),
            (self.context_length >= 1, "--context-length", self.context_length, ">= 1"),
            (self.batch_size >= 1, "--batch-size", self.batch_size, ">= 1"),
            (self.eval_points >= 1, "--eval-points", self.eval_points, ">= 1"),
            (0 < self.train_ratio < 1, "--train-ratio", self.train_ratio, "between 0 and 1"),
        ]
        for ok, flag, value, need in checks:
            if not ok:
                raise UsageError(f"{flag} must be {need}, got {value!r}.")

    @property
    def tokens_per_step(self) -> int:
        return self.batch_size * self.context_length

    @property
    def steps(self) -> int:
        return math.ceil(self.tokens / self.tokens_per_step)


@dataclass
class FamilyResult:
    """One row of the table, with its curve."""

    family: str
    preset: str
    parameters: int
    tokenizer: str
    tokens_seen: int
    bytes_seen: int
    steps: int
    train_seconds: float
    tokens_per_s: float
    peak_memory_bytes: int
    memory_kind: str  # "RSS delta" or "CUDA max allocated"
    first_train_loss: float
    final_train_loss: float
    final_val_loss: float  # mean cross-entropy per token over the whole validation text
    val_bpb: float
    val_bytes: int
    val_tokens: int
    train_bytes_per_token: float
    curve: list[dict[str, float]] = field(default_factory=list)


# ---- the data, split on the text --------------------------------------------------------------


@dataclass
class CompareData:
    """The same training and validation text for everyone, tokenised by one family's tokenizer."""

    train_ids: list[int]
    val_ids: list[int]  # end-of-text id first (when the tokenizer has one), then the text
    train_bytes: int
    val_bytes: int

    @property
    def train_bytes_per_token(self) -> float:
        return self.train_bytes / max(1, len(self.train_ids))


def split_text(
    paths: Sequence[str | Path] | None, train_ratio: float
) -> tuple[list[str], list[str]]:
    """The documents cut at ``train_ratio`` of their characters: (training parts, validation parts)."""
    from .data import read_corpus

    docs = [d.text for d in read_corpus(paths)]
    cut = int(train_ratio * sum(len(t) for t in docs))
    train: list[str] = []
    val: list[str] = []
    seen = 0
    for text in docs:
        if seen + len(text) <= cut:
            train.append(text)
        elif seen >= cut:
            val.append(text)
        else:
            train.append(text[: cut - seen])
            val.append(text[cut - seen :])
        seen += len(text)
    return [t for t in train if t], [t for t in val if t]


def tokenize_split(train_texts: list[str], val_texts: list[str], tokenizer: Any) -> CompareData:
    from .data import Document, tokenize_corpus

    train_ids = tokenize_corpus([Document("train", t) for t in train_texts], tokenizer)
    val_ids = tokenize_corpus([Document("val", t) for t in val_texts], tokenizer)
    if tokenizer.eos_token_id is not None:
        val_ids = [tokenizer.eos_token_id, *val_ids]
    return CompareData(
        train_ids,
        val_ids,
        sum(len(t.encode("utf-8")) for t in train_texts),
        sum(len(t.encode("utf-8")) for t in val_texts),
    )


def sum_cross_entropy(
    model: nn.Module,
    ids: Sequence[int],
    context_length: int,
    device: torch.device,
    batch_size: int = 8,
) -> tuple[float, int]:
    """Summed next-token cross-entropy (nats) over every token of ``ids`` after the first, and the count.

    Windows of ``context_length`` targets; the last, shorter one is given the
    context that precedes it, so each token is scored once with as much
    context as fits.
    """
    import torch

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            return _score(model, torch.as_tensor(list(ids)), context_length, device, batch_size)
    finally:
        model.train(was_training)


def _score(
    model: nn.Module, stream: torch.Tensor, L: int, device: torch.device, batch_size: int
) -> tuple[float, int]:
    import torch
    import torch.nn.functional as F

    n_targets = len(stream) - 1
    total, count = 0.0, 0
    full = [s for s in range(0, n_targets, L) if s + L <= n_targets]
    for i in range(0, len(full), batch_size):
        starts = full[i : i + batch_size]
        x = torch.stack([stream[s : s + L] for s in starts]).to(device)  # (B, L)
        y = torch.stack([stream[s + 1 : s + L + 1] for s in starts]).to(device)
        logits = model(x)  # (B, L, vocab)
        total += F.cross_entropy(logits.flatten(0, 1).float(), y.flatten(), reduction="sum").item()
        count += y.numel()
    done = len(full) * L
    if done < n_targets:  # the tail: targets done+1 .. n_targets, with the context before them
        begin = max(0, n_targets - L)
        x = stream[begin:n_targets].unsqueeze(0).to(device)  # (1, T')
        y = stream[begin + 1 : n_targets + 1].to(device)
        logits = model(x)[0, done - begin :]  # only the targets not scored yet
        total += F.cross_entropy(logits.float(), y[done - begin :], reduction="sum").item()
        count += n_targets - done
    return total, count


# ---- one family (runs in its own process) ------------------------------------------------------


def _current_rss() -> int | None:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def _max_rss() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, KiB on Linux


def family_config(family_name: str, preset: str) -> tuple[Any, Any]:
    """(family, preset config), with the registry's own errors for unknown names."""
    from ..registry import get_family

    fam = get_family(family_name)
    return fam, fam.preset(preset)


def check_family(family_name: str, preset: str, settings: CompareSettings) -> None:
    """Everything that can be known to fail before training: names, context, tokenizer, vocabulary."""
    fam, cfg = family_config(family_name, preset)
    ctx = int(cfg.context_length)
    if settings.context_length > ctx:
        raise UsageError(
            f"--context-length {settings.context_length} is longer than {family_name} preset "
            f"{preset!r} supports ({ctx} positions). Use --context-length {ctx} or less, so every "
            "family trains on the same windows."
        )
    tok = fam.load_tokenizer(None, cfg)
    if tok.vocab_size > cfg.vocab_size:
        raise UsageError(
            f"{family_name} preset {preset!r} has {cfg.vocab_size} embedding rows, fewer than its "
            f"from-scratch tokenizer's {tok.vocab_size} ids; pick a preset with a larger vocabulary."
        )


def run_family(
    family_name: str, preset: str, settings: CompareSettings, progress: bool = False
) -> FamilyResult:
    """Train one family under ``settings`` and measure it (call in a fresh process for clean memory)."""
    import torch

    fam, cfg = family_config(family_name, preset)
    device = torch.device(settings.device)
    tokenizer = fam.load_tokenizer(None, cfg)
    data = tokenize_split(*split_text(settings.data, settings.train_ratio), tokenizer)
    loader, val_loader = _loaders(family_name, data, settings)

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    rss_before = _current_rss()
    torch.manual_seed(settings.seed)
    model = fam.build_model(cfg)
    model.init_weights()
    model.to(device)
    n_params = sum(p.numel() for p in model.parameters())

    curve: list[dict[str, float]] = []
    trainer = _measuring_trainer(
        model,
        loader,
        val_loader,
        settings,
        data,
        curve,
        tokenizer=tokenizer,
        device=device,
        family=fam,
        progress=progress,
    )
    trainer.fit()
    if not trainer.history.evals or trainer.history.evals[-1].step != trainer.global_step:
        trainer.evaluate()  # the final point, whatever the cadence
    if device.type == "cuda":
        peak, kind = torch.cuda.max_memory_allocated(device), "CUDA max allocated"
    else:
        peak, kind = _max_rss() - (rss_before or 0), "RSS delta"
    last = curve[-1]
    return FamilyResult(
        family=family_name,
        preset=preset,
        parameters=n_params,
        tokenizer=type(tokenizer).__name__,
        tokens_seen=trainer.tokens_seen,
        bytes_seen=int(last["bytes_seen"]),
        steps=trainer.global_step + 1,
        train_seconds=round(trainer.train_seconds, 3),
        tokens_per_s=trainer.tokens_seen / max(trainer.train_seconds, 1e-9),
        peak_memory_bytes=int(peak),
        memory_kind=kind,
        first_train_loss=curve[0]["train_loss"],
        final_train_loss=last["train_loss"],
        final_val_loss=last["val_loss"],
        val_bpb=last["val_bpb"],
        val_bytes=data.val_bytes,
        val_tokens=len(data.val_ids) - 1,
        train_bytes_per_token=data.train_bytes_per_token,
        curve=curve,
    )


def _loaders(family_name: str, data: CompareData, settings: CompareSettings) -> tuple[Any, Any]:
    """(training loader, validation loader) over windows of ``context_length`` tokens."""
    from torch.utils.data import DataLoader

    from .data import TokenWindowDataset
    from .distributed import train_loader

    L, B = settings.context_length, settings.batch_size
    train_ds = TokenWindowDataset(data.train_ids, L, L)
    val_ds = TokenWindowDataset(data.val_ids, L, L)
    if len(train_ds) < B or len(val_ds) < 1:
        raise UsageError(
            f"The text gives {len(train_ds)} training and {len(val_ds)} validation windows of {L} "
            f"tokens with {family_name}'s tokenizer; at least {B} and 1 are needed. Use a smaller "
            "--context-length or --batch-size, or more text (--data)."
        )
    loader = train_loader(train_ds, B, settings.seed)
    return loader, DataLoader(val_ds, batch_size=B, shuffle=False)


def _train_config(settings: CompareSettings, steps_per_epoch: int) -> Any:
    """The trainer's settings: enough epochs for ``settings.steps``, ``eval_points`` evaluations."""
    from .train import TrainConfig

    steps = settings.steps
    return TrainConfig(
        epochs=math.ceil(steps / steps_per_epoch),
        lr=settings.lr,
        weight_decay=settings.weight_decay,
        warmup_steps=settings.warmup_steps,
        grad_clip=settings.grad_clip,
        eval_freq=max(1, steps // settings.eval_points),
        eval_iter=settings.eval_iter,
        sample_prompt=None,
        sample_tokens=0,
        dtype=settings.dtype,
        seed=settings.seed,
    )


def _measuring_trainer(
    model: nn.Module,
    loader: Any,
    val_loader: Any,
    settings: CompareSettings,
    data: CompareData,
    curve: list[dict[str, float]],
    **trainer_kwargs: Any,
) -> Any:
    """A Trainer that stops at ``settings.tokens``, times its optimizer steps (``train_seconds``)
    and appends a point to ``curve`` at every evaluation: bits per byte over the whole
    validation text."""
    from .train import Callback, Trainer

    L, B = settings.context_length, settings.batch_size

    class Measure(Callback):
        def on_step_end(self, trainer: Trainer, loss: float) -> None:
            if trainer.tokens_seen >= settings.tokens:
                trainer.should_stop = True

        def on_evaluate(self, trainer: Trainer, record: Any) -> None:
            with trainer.autocast():
                nats, count = sum_cross_entropy(trainer.model, data.val_ids, L, trainer.device, B)
            curve.append(
                {
                    "step": record.step,
                    "tokens_seen": record.tokens_seen,
                    "bytes_seen": round(record.tokens_seen * data.train_bytes_per_token),
                    "train_loss": record.train_loss,
                    "val_loss": nats / count,
                    "val_bpb": nats / LN2 / data.val_bytes,
                }
            )

    class TimedTrainer(Trainer):
        train_seconds = 0.0

        def train_step(self, batches: Any) -> float:
            start = time.perf_counter()
            loss = super().train_step(batches)
            self.train_seconds += time.perf_counter() - start
            return loss

    train_cfg = _train_config(settings, len(loader))
    return TimedTrainer(
        model, loader, val_loader, train_cfg, callbacks=[Measure()], **trainer_kwargs
    )


def _child(
    family_name: str, preset: str, settings: CompareSettings, threads: int, conn: Any
) -> None:
    """Entry point of a spawned process: one family, the result (or the error) down the pipe."""
    try:
        if threads > 0:
            import torch

            torch.set_num_threads(threads)
        result = run_family(family_name, preset, settings)
        conn.send(("ok", dataclasses.asdict(result)))
    except PortagptError as exc:
        conn.send(("usage", f"{family_name}: {exc}"))
    except Exception as exc:  # report, do not hang the parent
        conn.send(("error", f"{family_name} {preset} failed: {type(exc).__name__}: {exc}"))
    finally:
        conn.close()


def run_isolated(
    family_name: str, preset: str, settings: CompareSettings, threads: int = 0
) -> FamilyResult:
    """:func:`run_family` in a fresh spawned process (own memory high-water mark)."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(family_name, preset, settings, threads, child))
    proc.start()
    child.close()
    try:
        status, payload = parent.recv()
    except EOFError:
        proc.join()
        raise UsageError(
            f"The process training {family_name} preset {preset!r} died without a result (exit code "
            f"{proc.exitcode}); it may have run out of memory. Try a smaller --batch-size, "
            "--context-length or preset."
        ) from None
    proc.join()
    if status == "usage":
        raise UsageError(payload)
    if status == "error":
        raise RuntimeError(payload)
    return FamilyResult(**payload)


# ---- the whole comparison -------------------------------------------------------------------


def compare(
    families: Sequence[tuple[str, str]],
    settings: CompareSettings,
    *,
    isolate: bool = True,
    threads: int = 0,
    log: Any = print,
) -> list[FamilyResult]:
    """Check every family first, then train them one after another; returns one result each."""
    settings.validate()
    for name, preset in families:
        check_family(name, preset, settings)
    results = []
    for name, preset in families:
        log(f"[{name} {preset}] training {settings.tokens:,} tokens ...")
        start = time.perf_counter()
        if isolate:
            result = run_isolated(name, preset, settings, threads)
        else:
            result = run_family(name, preset, settings)
        log(
            f"[{name} {preset}] {result.parameters / 1e6:.2f}M parameters, loss "
            f"{result.first_train_loss:.3f} -> {result.final_train_loss:.3f}, val "
            f"{result.val_bpb:.3f} bits/byte, {result.tokens_per_s:,.0f} tokens/s "
            f"({time.perf_counter() - start:.0f} s)"
        )
        results.append(result)
    return results


# ---- reports -------------------------------------------------------------------------------


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def markdown_table(results: Sequence[FamilyResult], settings: CompareSettings) -> str:
    """The comparison as a Markdown table, with a line saying what was held equal."""
    head = (
        "| family | preset | parameters | tokens/s | peak memory | train loss (first → final) "
        "| val loss | val bits/byte |\n|---|---|--:|--:|--:|--:|--:|--:|"
    )
    rows = [
        f"| {r.family} | {r.preset} | {r.parameters / 1e6:.2f}M | {r.tokens_per_s:,.0f} "
        f"| {human_bytes(r.peak_memory_bytes)} ({r.memory_kind}) "
        f"| {r.first_train_loss:.3f} → {r.final_train_loss:.3f} | {r.final_val_loss:.3f} "
        f"| {r.val_bpb:.3f} |"
        for r in results
    ]
    data = ", ".join(settings.data) if settings.data else "the bundled corpus (The Verdict)"
    note = (
        f"Each family: {settings.tokens:,} training tokens ({settings.steps} steps of "
        f"{settings.batch_size} x {settings.context_length} tokens), lr {settings.lr:g}, "
        f"warmup {settings.warmup_steps}, clip {settings.grad_clip}, seed {settings.seed}, "
        f"{settings.dtype} on {settings.device}; data: {data}, split {settings.train_ratio:g} of "
        "the text. Bits per byte: summed validation cross-entropy / ln 2 / UTF-8 bytes of the "
        "validation text."
    )
    return "\n".join([head, *rows, "", note]) + "\n"


def plot_bpb(results: Sequence[FamilyResult], out_stem: str | Path) -> list[Path]:
    """Validation bits per byte against training bytes seen, one line per family (PNG and PDF)."""
    fig = bpb_figure(results)
    stem = Path(out_stem)
    paths = [stem.with_suffix(".png"), stem.with_suffix(".pdf")]
    for path in paths:
        fig.savefig(path)
    return paths


def bpb_figure(results: Sequence[FamilyResult]) -> Any:
    """The bits-per-byte curves of :func:`plot_bpb` as a matplotlib Figure."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 3.8))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for r in results:
        xs = [p["bytes_seen"] for p in r.curve]
        ys = [p["val_bpb"] for p in r.curve]
        ax.plot(xs, ys, marker="o", markersize=3, label=f"{r.family} ({r.preset})")
    ax.set_xlabel("Training bytes seen")
    ax.set_ylabel("Validation bits per byte")
    ax.set_title("Same text, same token budget", fontsize="medium")
    ax.legend(loc="upper right", fontsize="small")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def write_reports(
    results: Sequence[FamilyResult], settings: CompareSettings, out: str | Path
) -> dict[str, Path]:
    """compare.json, compare.md, bpb.png and bpb.pdf in ``out``; returns their paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    table = markdown_table(results, settings)
    payload = {
        "settings": dataclasses.asdict(settings),
        "results": [dataclasses.asdict(r) for r in results],
    }
    json_path, md_path = out / JSON_FILE, out / MARKDOWN_FILE
    for path, text in ((json_path, json.dumps(payload, indent=2) + "\n"), (md_path, table)):
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    png, pdf = plot_bpb(results, out / PLOT_STEM)
    return {"json": json_path, "markdown": md_path, "png": png, "pdf": pdf}

"""Training speed: portagpt's Trainer step against the book's own package (chapter 5).

The baseline is ``llms-from-scratch`` itself (a bench/test-only dependency,
``pip install --no-deps llms-from-scratch``): ``llms_from_scratch.ch04.GPTModel``
trained as ``llms_from_scratch.ch05.train_model_simple`` does it (``zero_grad``,
``ch05.calc_loss_batch``, ``backward``, ``step`` of ``torch.optim.AdamW(lr=4e-4,
weight_decay=0.1)``). portagpt's side is ``GPT2Model`` built from the same
config and stepped by ``Trainer.train_step`` inside
``core.memory.keep_freed_memory``, exactly as ``Trainer.fit`` (``portagpt
train``) runs its steps on CPU.

Same settings on every side: the chapter-5 config (untied head, no qkv bias),
the same context and batch, the *same initial weights* (``GPTModel`` under
``torch.manual_seed(123)``; portagpt's chapter-5 names are the book's, so its
state dict loads into both), the same batches (the bundled chapter-5 corpus,
one fixed list), the same thread count. Dropout defaults to 0 so the runs must
agree step for step; the bench prints the largest step-loss difference.

Each side runs in its own fresh process (``--worker``), the sides one after
the other, ``--repeats`` rounds in alternating order, each ``--steps`` timed
steps after one warm-up step: the C heap is per process, and how it treats
large freed buffers is part of what is measured (``core/memory.py``). Three
sides:

* ``portagpt``: as ``portagpt train`` runs;
* ``book``: the book's code as the book runs it (a plain process);
* ``book, memory kept``: the book's step inside the same ``keep_freed_memory``
  block, to show how much of the ratio is the heap setting and how much the
  step itself (the book's best configuration on this machine).

The figure is tokens/s from each side's median step time, with the ratio
portagpt / book. The machine may be shared: compare ratios, not absolute rates.

    python bench/train_speed.py                                  # 124M and tiny, 1 and 2 threads
    python bench/train_speed.py --presets tiny --threads 1 --steps 8
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import replace

import torch

SIDES = ("portagpt", "book", "book, memory kept")


def chapter5_config(preset: str, args: argparse.Namespace):  # noqa: ANN201 - a GPT2Config
    from portagpt.registry import get_family

    return replace(
        get_family("gpt2").preset(preset),
        context_length=args.context_length,
        drop_rate=args.drop_rate,
        qkv_bias=False,
        tie_word_embeddings=False,  # chapter 5's GPTModel has its own out_head
    )


def book_step(model, lr: float):  # noqa: ANN201 - the body of ch05.train_model_simple
    from llms_from_scratch.ch05 import calc_loss_batch

    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.1)  # chapter 5

    def step(x: torch.Tensor, y: torch.Tensor) -> float:
        optimizer.zero_grad()
        loss = calc_loss_batch(x, y, model, torch.device("cpu"))
        loss.backward()
        optimizer.step()
        return loss.item()

    return step


def worker(args: argparse.Namespace) -> None:
    """One side, one thread count, in this process: prints {"times": [...], "losses": [...]}."""
    from llms_from_scratch.ch04 import GPTModel

    from portagpt.core.data import build_loaders
    from portagpt.core.memory import keep_freed_memory
    from portagpt.core.train import TrainConfig, Trainer
    from portagpt.formats.book import book_dict  # the book's config dict, as convert writes it
    from portagpt.registry import get_family

    torch.set_num_threads(args.threads[0])
    family = get_family("gpt2")
    cfg = chapter5_config(args.presets[0], args)
    tok = family.load_tokenizer(None, cfg)
    data = build_loaders(
        tok, context_length=args.context_length, batch_size=args.batch_size, seed=123
    )
    batches: list[tuple[torch.Tensor, torch.Tensor]] = []
    while len(batches) < args.steps + 1:
        batches += list(data.train_loader)
    torch.manual_seed(123)
    book = GPTModel(book_dict(cfg))
    if args.worker == "portagpt":
        model = family.build_model(cfg)
        missing, unexpected = model.load_state_dict(book.state_dict(), strict=False)
        assert not missing and all(k.endswith("att.mask") for k in unexpected)
        del book
        trainer = Trainer(
            model,
            data.train_loader,
            data.val_loader,
            TrainConfig(lr=args.lr, weight_decay=0.1),
            progress=False,
            device="cpu",
        )
        step = lambda x, y: trainer.train_step([(x, y)])  # noqa: E731
    else:
        step = book_step(book, args.lr)
    times, losses = [], []
    with keep_freed_memory(args.worker != "book"):
        for x, y in batches[: args.steps + 1]:
            start = time.perf_counter()
            losses.append(step(x, y))
            times.append(time.perf_counter() - start)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
    print(json.dumps({"times": times[1:], "losses": losses, "peak_rss": peak}))  # step 0: warm-up


def run_side(side: str, preset: str, threads: int, args: argparse.Namespace) -> dict:
    cmd = [
        sys.executable, __file__, "--worker", side, "--presets", preset,
        "--threads", str(threads), "--steps", str(args.steps),
        "--context-length", str(args.context_length), "--batch-size", str(args.batch_size),
        "--drop-rate", str(args.drop_rate), "--lr", str(args.lr),
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"the {side!r} worker failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure(preset: str, args: argparse.Namespace) -> None:
    print(
        f"\n== GPT-2 {preset} (chapter-5 config, untied head): context {args.context_length}, "
        f"batch {args.batch_size}, drop {args.drop_rate}, {args.steps} timed steps (+1 warm-up) "
        f"per process, {args.repeats} rounds, each side in its own process"
    )
    tokens = args.batch_size * args.context_length
    for threads in args.threads:
        times: dict[str, list[float]] = {s: [] for s in SIDES}
        peaks: dict[str, list[int]] = {s: [] for s in SIDES}
        losses: dict[str, list[float]] = {}
        for r in range(args.repeats):
            order = SIDES if r % 2 == 0 else SIDES[::-1]
            for side in order:
                out = run_side(side, preset, threads, args)
                times[side] += out["times"]
                peaks[side].append(out["peak_rss"])
                losses[side] = out["losses"]
        rate = {s: tokens / statistics.median(t) for s, t in times.items()}
        diff = max(
            abs(a - b)
            for s in SIDES[1:]
            for a, b in zip(losses["portagpt"], losses[s], strict=True)
        )
        print(
            f"{threads} thread(s): portagpt {rate['portagpt']:>7,.0f} tok/s | "
            f"book {rate['book']:>7,.0f} tok/s: ratio {rate['portagpt'] / rate['book']:.2f}x | "
            f"book, memory kept {rate['book, memory kept']:>7,.0f} tok/s: ratio "
            f"{rate['portagpt'] / rate['book, memory kept']:.2f}x | "
            f"max step-loss diff {diff:.1e}"
        )
        spread = "   ".join(f"{s}: {min(t):.2f}-{max(t):.2f} s" for s, t in times.items())
        print(f"    step times {spread}")
        rss = "   ".join(f"{s}: {max(p) / 2**30:.2f} GiB" for s, p in peaks.items())
        print(f"    peak RSS of the process {rss}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--presets", nargs="+", default=["124M", "tiny"])
    ap.add_argument("--context-length", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=2)
    ap.add_argument("--steps", type=int, default=4, help="timed steps per process")
    ap.add_argument("--repeats", type=int, default=2, help="rounds of the three sides")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--drop-rate", type=float, default=0.0)
    ap.add_argument("--lr", type=float, default=4e-4)
    ap.add_argument("--worker", choices=SIDES, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args)
        return
    import llms_from_scratch

    print(
        f"torch {torch.__version__}, llms-from-scratch "
        f"{getattr(llms_from_scratch, '__version__', '(installed)')}, CPU"
    )
    for preset in args.presets:
        measure(preset, args)


if __name__ == "__main__":
    main()

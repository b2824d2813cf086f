"""Training speed: portagpt's Trainer step against the book's own package (chapter 5).

The baseline is ``llms-from-scratch`` itself (a bench/test-only dependency,
``pip install --no-deps llms-from-scratch``): ``llms_from_scratch.ch04.GPTModel``
trained as ``llms_from_scratch.ch05.train_model_simple`` does it (``zero_grad``,
``ch05.calc_loss_batch``, ``backward``, ``step`` of ``torch.optim.AdamW(lr=4e-4,
weight_decay=0.1)``). portagpt's side is ``GPT2Model`` built from the same
config and stepped by ``Trainer.train_step`` (its loss and optimizer, as
``portagpt train`` runs them).

Same settings on both sides: the chapter-5 config (untied head, no qkv bias),
the same context and batch, the *same initial weights* (portagpt's
chapter-5 names are the book's, so one state dict loads into both), the same
batches (the bundled chapter-5 corpus, one fixed list), the same thread
count. Dropout defaults to 0 so the two runs must agree step for step (with
dropout the two draw different random masks); the bench prints the largest
step-loss difference over the measured steps.

Both sides live in one process and alternate step by step (``--repeats``
fresh pairs per thread count, each ``--steps`` timed steps after one warm-up
step); the figure is tokens/s from the median step time of each side, with
the ratio portagpt / book, and the spread of the per-step ratios (each pair
of steps ran back to back). The machine may be shared: compare ratios, not
absolute rates.

    python bench/train_speed.py                                  # 124M and tiny, 1 and 2 threads
    python bench/train_speed.py --presets tiny --threads 1 --steps 8
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
from dataclasses import replace

import torch


class BookStepper:
    """The body of ``ch05.train_model_simple``, one step per call."""

    def __init__(self, model, lr: float) -> None:
        self.model = model.train()
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.1)  # ch. 5

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> float:
        from llms_from_scratch.ch05 import calc_loss_batch

        self.optimizer.zero_grad()
        loss = calc_loss_batch(x, y, self.model, torch.device("cpu"))
        loss.backward()
        self.optimizer.step()
        return loss.item()


class PortagptStepper:
    """``Trainer.train_step`` (portagpt's loss and optimizer), one step per call."""

    def __init__(self, model, data, lr: float) -> None:
        from portagpt.core.train import TrainConfig, Trainer

        self.trainer = Trainer(
            model,
            data.train_loader,
            data.val_loader,
            TrainConfig(lr=lr, weight_decay=0.1),
            progress=False,
            device="cpu",
        )

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> float:
        return self.trainer.train_step([(x, y)])


def timed(step, batch) -> tuple[float, float]:
    start = time.perf_counter()
    loss = step(*batch)
    return time.perf_counter() - start, loss


def measure(preset: str, args: argparse.Namespace) -> list[tuple[int, float, float, float]]:
    from llms_from_scratch.ch04 import GPTModel

    from portagpt.core.data import build_loaders
    from portagpt.formats.book import (
        book_dict,  # the book's config dict, as convert --to book writes it
    )
    from portagpt.registry import get_family

    family = get_family("gpt2")
    cfg = replace(
        family.preset(preset),
        context_length=args.context_length,
        drop_rate=args.drop_rate,
        qkv_bias=False,
        tie_word_embeddings=False,  # chapter 5's GPTModel has its own out_head
    )
    tok = family.load_tokenizer(None, cfg)
    data = build_loaders(
        tok, context_length=args.context_length, batch_size=args.batch_size, seed=123
    )
    batches: list[tuple[torch.Tensor, torch.Tensor]] = []
    while len(batches) < args.steps + 1:
        batches += list(data.train_loader)
    batches = batches[: args.steps + 1]
    torch.manual_seed(123)
    book = GPTModel(book_dict(cfg))
    init = {k: v.clone() for k, v in book.state_dict().items()}
    n_params = sum(p.numel() for p in book.parameters())
    print(
        f"\n== GPT-2 {preset}: {n_params / 1e6:.1f}M params, context {args.context_length}, "
        f"batch {args.batch_size}, drop {args.drop_rate}, {args.steps} timed steps "
        f"(+1 warm-up), {args.repeats} alternating repeats"
    )
    rows = []
    for threads in args.threads:
        torch.set_num_threads(threads)
        ours_t, book_t, diffs = [], [], []
        for _ in range(args.repeats):
            ours = family.build_model(cfg)
            missing, unexpected = ours.load_state_dict(init, strict=False)
            assert not missing and all(k.endswith("att.mask") for k in unexpected)
            book = GPTModel(book_dict(cfg))
            book.load_state_dict(init)
            steppers = PortagptStepper(ours, data, args.lr), BookStepper(book, args.lr)
            for i, batch in enumerate(batches):  # the two sides alternate step by step
                (t_o, l_o), (t_b, l_b) = (timed(s, batch) for s in steppers)
                diffs.append(abs(l_o - l_b))
                if i:  # step 0 is the warm-up
                    ours_t.append(t_o)
                    book_t.append(t_b)
            del ours, book, steppers
            gc.collect()  # the Trainer's scheduler lambda is a cycle: free both models now
        per_step = [b / o for o, b in zip(ours_t, book_t, strict=True)]
        o = args.batch_size * args.context_length / statistics.median(ours_t)
        b = args.batch_size * args.context_length / statistics.median(book_t)
        print(
            f"{threads} thread(s): portagpt {o:>8,.0f} tok/s   book {b:>8,.0f} tok/s   "
            f"ratio {o / b:.2f}x (median step times)   per-step ratios "
            f"{min(per_step):.2f}-{max(per_step):.2f}, median {statistics.median(per_step):.2f}x"
            f"   max step-loss diff {max(diffs):.1e}"
        )
        rows.append((threads, o, b, max(diffs)))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--presets", nargs="+", default=["124M", "tiny"])
    ap.add_argument("--context-length", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=2)
    ap.add_argument("--steps", type=int, default=4, help="timed steps per measurement")
    ap.add_argument("--repeats", type=int, default=2, help="alternating measurements")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--drop-rate", type=float, default=0.0)
    ap.add_argument("--lr", type=float, default=4e-4)
    args = ap.parse_args()
    import llms_from_scratch

    print(
        f"torch {torch.__version__}, llms-from-scratch "
        f"{getattr(llms_from_scratch, '__version__', '(installed)')}, CPU"
    )
    for preset in args.presets:
        measure(preset, args)


if __name__ == "__main__":
    main()

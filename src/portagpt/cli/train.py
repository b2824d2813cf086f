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
the run in ``--out`` exactly where its checkpoint stopped; flags left out
(``--family`` too) are taken from the checkpoint, and ``--epochs`` is the total
to reach. The run folder has one writer at a time (an OS lock held for the
whole run); see :mod:`portagpt.core.run_folder` for that and for what
``--overwrite`` may touch.

The command parses and prints; the rules live in :mod:`portagpt.core.run`
(``plan_training`` decides and checks, ``execute`` trains) behind
:func:`portagpt.train`, which this command calls with the same options.
``--json`` ends the output with the run's summary (:meth:`Run.to_dict`).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from ..core.run_settings import DEFAULTS, DTYPE_NAMES  # noqa: F401 - DEFAULTS: the flags' defaults

# TrainOptions' fields that are not plain flags of the same name
_NOT_OPTIONS = {"autocast", "no_progress", "json", "debug", "command", "func"}


def add_parser(sub: argparse._SubParsersAction, parents: list[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "train",
        parents=parents,
        help="pretrain a model from scratch (chapter-5 loop)",
        description="Pretrain a family's preset from scratch on text files (default: the bundled "
        "corpus) with the chapter-5 loop; writes the loss plot, metrics, samples and a "
        "checkpoint into --out.",
    )
    _model_and_data_flags(p.add_argument)
    _optimizer_flags(p.add_argument)
    _run_and_machine_flags(p.add_argument)
    p.set_defaults(func=run)


def _model_and_data_flags(a: Any) -> None:
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


def _optimizer_flags(a: Any) -> None:
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


def _run_and_machine_flags(a: Any) -> None:
    a("--out", metavar="DIR", help="run folder (default runs/<family>-<preset>)")
    a("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    a(
        "--overwrite",
        action="store_true",
        help="replace an earlier run in --out (its checkpoint stays until the new one replaces it)",
    )
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
    a("--json", action="store_true", help="end with one JSON object: the run's history and files")


def options_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The keyword arguments of :func:`portagpt.train` for these flags."""
    options = {k: v for k, v in vars(args).items() if k not in _NOT_OPTIONS}
    if args.autocast is not None:
        options["dtype"] = args.autocast
    options["progress"] = not args.no_progress
    return options


def run(args: argparse.Namespace) -> int:
    from .. import api

    result = api.train(**options_from_args(args), log=print)
    if result.is_main:
        print(result.summary())
        if args.json:
            print(json.dumps(result.to_dict()))
    return 0

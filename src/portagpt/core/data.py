"""Chapter-5 pretraining data: text files -> one token stream -> sliding windows -> loaders.

The pipeline, top to bottom:

1. :func:`read_corpus` reads one or more ``.txt`` files (or every ``*.txt`` under a
   folder, sorted), or the bundled corpus (Edith Wharton's "The Verdict", the
   chapter-5 text) when no path is given.
2. :func:`tokenize_corpus` encodes each document and joins them with the
   tokenizer's end-of-text id, so one document never runs into the next unmarked.
3. :func:`split_tokens` cuts the stream at ``train_ratio`` (deterministic: the
   first part trains, the rest validates). Chapter 5 cuts the *text* at 90 %;
   cutting tokens gives the same picture and exact split sizes.
4. :class:`TokenWindowDataset` serves windows of ``max_length`` tokens every
   ``stride`` tokens; the target is the input shifted left by one.
5. :func:`build_loaders` makes the chapter-5 loaders: train shuffled with
   ``drop_last=True`` from a seeded generator, validation in order with
   ``drop_last=False``.

Every way the data can fail (missing or empty file, empty folder, a split
shorter than one window, fewer windows than one batch) raises
:class:`~portagpt.errors.DataError` saying what was found, what is needed, and
the fix, before any training starts.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

from ..adapters.tokenizer import Tokenizer
from ..errors import DataError

BUNDLED_CORPUS = "the-verdict.txt"


@dataclass(frozen=True)
class Document:
    """One text file's content and where it came from (for messages)."""

    source: str
    text: str


# ---- reading -------------------------------------------------------------


def bundled_corpus() -> Document:
    """The chapter-5 corpus shipped inside the package (20,479 characters)."""
    text = resources.files("portagpt").joinpath("data", BUNDLED_CORPUS).read_text(encoding="utf-8")
    return Document(f"<bundled {BUNDLED_CORPUS}>", text)


def resolve_data_files(paths: Iterable[str | Path]) -> list[Path]:
    """Every file named, with folders expanded to their ``*.txt`` files (recursive, sorted)."""
    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*.txt") if p.is_file())
            if not found:
                raise DataError(
                    f"The data folder {str(path)!r} holds no *.txt files. Put plain-text "
                    "training files (UTF-8, ending in .txt) in it, or pass the files themselves "
                    "with --data FILE."
                )
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            raise DataError(
                f"The data file {str(path)!r} does not exist. Check the path passed to --data, "
                "or leave --data out to train on the bundled corpus (The Verdict)."
            )
    return files


def read_corpus(paths: Sequence[str | Path] | None = None) -> list[Document]:
    """The documents to train on: the files/folders in ``paths``, or the bundled corpus."""
    if not paths:
        return [bundled_corpus()]
    docs = []
    for path in resolve_data_files(paths):
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise DataError(
                f"The data file {str(path)!r} is not UTF-8 text (byte {exc.start}: {exc.reason}). "
                "Convert it to UTF-8 (e.g. iconv -t utf-8) or leave it out."
            ) from None
        if not text.strip():
            raise DataError(
                f"The data file {str(path)!r} is empty ({len(text)} characters, no text). "
                "Fill it with training text or leave it out of --data."
            )
        docs.append(Document(str(path), text))
    return docs


# ---- tokens ----------------------------------------------------------------


def tokenize_corpus(docs: Sequence[Document], tokenizer: Tokenizer) -> list[int]:
    """One token stream: the documents in order, separated by the end-of-text id (if any)."""
    ids: list[int] = []
    sep = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    for i, doc in enumerate(docs):
        if i and sep:
            ids.extend(sep)
        ids.extend(tokenizer.encode(doc.text))
    return ids


def split_tokens(ids: Sequence[int], train_ratio: float = 0.9) -> tuple[list[int], list[int]]:
    """The first ``train_ratio`` of the stream for training, the rest for validation."""
    if not 0.0 < train_ratio < 1.0:
        raise DataError(
            f"train_ratio must lie strictly between 0 and 1, got {train_ratio!r}. "
            "Use e.g. --train-ratio 0.9 (chapter 5's 90/10 split)."
        )
    cut = int(train_ratio * len(ids))
    return list(ids[:cut]), list(ids[cut:])


def num_windows(n_tokens: int, max_length: int, stride: int) -> int:
    """How many (input, target) windows a stream of ``n_tokens`` yields.

    A window needs ``max_length + 1`` tokens (inputs plus the one-token shift);
    starts are ``0, stride, 2 * stride, ... < n_tokens - max_length`` as in chapter 5.
    """
    if n_tokens <= max_length:
        return 0
    return (n_tokens - max_length - 1) // stride + 1


class TokenWindowDataset(Dataset):
    """Windows of ``max_length`` token ids every ``stride`` tokens; targets shifted by one.

    Item ``i`` is ``(ids[s : s + L], ids[s + 1 : s + L + 1])`` with ``s = i * stride``,
    both ``(L,)`` int64 tensors.
    """

    def __init__(self, ids: Sequence[int] | torch.Tensor, max_length: int, stride: int) -> None:
        if max_length < 1 or stride < 1:
            raise DataError(f"max_length and stride must be >= 1, got {max_length} and {stride}.")
        self.ids = torch.as_tensor(ids, dtype=torch.long)  # (N,)
        self.max_length = max_length
        self.stride = stride

    def __len__(self) -> int:
        return num_windows(len(self.ids), self.max_length, self.stride)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not 0 <= index < len(self):
            raise IndexError(f"window {index} out of range (0..{len(self) - 1})")
        start = index * self.stride
        chunk = self.ids[start : start + self.max_length + 1]  # (L + 1,)
        return chunk[:-1], chunk[1:]


def make_loader(
    dataset: Dataset,
    batch_size: int,
    *,
    shuffle: bool,
    drop_last: bool,
    seed: int | None = None,
    num_workers: int = 0,
) -> DataLoader:
    """A DataLoader; shuffling draws from its own generator seeded with ``seed``."""
    generator = None
    if shuffle:
        generator = torch.Generator()
        generator.manual_seed(0 if seed is None else seed)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        drop_last=drop_last,
        num_workers=num_workers,
        generator=generator,
    )


# ---- the whole pipeline ------------------------------------------------------


@dataclass
class DataSplits:
    """The two loaders and the numbers worth printing about them."""

    train_loader: DataLoader
    val_loader: DataLoader
    train_tokens: int
    val_tokens: int
    context_length: int
    stride: int
    sources: list[str]

    @property
    def tokens_per_epoch(self) -> int:
        """Input tokens the training loop sees in one epoch (full batches only)."""
        loader = self.train_loader
        return len(loader) * (loader.batch_size or 1) * self.context_length

    def summary(self) -> str:
        src = self.sources[0] if len(self.sources) == 1 else f"{len(self.sources)} files"
        return (
            f"Data: {src}, {self.train_tokens + self.val_tokens:,} tokens "
            f"(context {self.context_length}, stride {self.stride})\n"
            f"  train: {self.train_tokens:,} tokens, {len(self.train_loader.dataset):,} windows, "
            f"{len(self.train_loader):,} batches\n"
            f"  val:   {self.val_tokens:,} tokens, {len(self.val_loader.dataset):,} windows, "
            f"{len(self.val_loader):,} batches"
        )


def _too_short(
    split: str, n: int, context_length: int, train_ratio: float, total: int
) -> DataError:
    return DataError(
        f"The {split} split has {n:,} tokens ({total:,} in all, train ratio {train_ratio}), but one "
        f"training window needs {context_length + 1:,} (context length {context_length} plus the "
        "one-token shift). Use a smaller --context-length, more text (--data), or another "
        "--train-ratio."
    )


def build_loaders(
    tokenizer: Tokenizer,
    paths: Sequence[str | Path] | None = None,
    *,
    context_length: int,
    batch_size: int,
    stride: int | None = None,
    train_ratio: float = 0.9,
    seed: int = 123,
    num_workers: int = 0,
) -> DataSplits:
    """Read, tokenise, split and window the corpus into chapter-5 train/val loaders.

    ``stride`` defaults to ``context_length`` (non-overlapping windows, as in chapter 5).
    """
    stride = context_length if stride is None else stride
    docs = read_corpus(paths)
    ids = tokenize_corpus(docs, tokenizer)
    train_ids, val_ids = split_tokens(ids, train_ratio)
    for split, part in (("training", train_ids), ("validation", val_ids)):
        if len(part) <= context_length:
            raise _too_short(split, len(part), context_length, train_ratio, len(ids))
    train_ds = TokenWindowDataset(train_ids, context_length, stride)
    val_ds = TokenWindowDataset(val_ids, context_length, stride)
    if len(train_ds) < batch_size:
        raise DataError(
            f"The training split ({len(train_ids):,} tokens) gives {len(train_ds)} windows of "
            f"{context_length} tokens at stride {stride}, fewer than one batch of {batch_size}; "
            "the training loader drops incomplete batches, so it would be empty. Use a smaller "
            "--batch-size, a smaller --stride or --context-length, or more text."
        )
    train_loader = make_loader(
        train_ds, batch_size, shuffle=True, drop_last=True, seed=seed, num_workers=num_workers
    )
    val_loader = make_loader(
        val_ds, batch_size, shuffle=False, drop_last=False, num_workers=num_workers
    )
    return DataSplits(
        train_loader,
        val_loader,
        train_tokens=len(train_ids),
        val_tokens=len(val_ids),
        context_length=context_length,
        stride=stride,
        sources=[d.source for d in docs],
    )

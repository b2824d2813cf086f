"""Chapter-5 data pipeline: windows, split, loaders, and the errors for bad data."""

from __future__ import annotations

from collections.abc import Iterable

import pytest
import torch

from portagpt.core.data import (
    TokenWindowDataset,
    build_loaders,
    num_windows,
    read_corpus,
    split_tokens,
    tokenize_corpus,
)
from portagpt.errors import DataError


class ByteTokenizer:
    """UTF-8 bytes as ids, 256 = end of text: a real, tiny tokenizer for tests."""

    vocab_size = 257
    eos_token_id = 256
    pad_token_id = 256
    stop_token_ids = (256,)
    chat_template = None

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids: Iterable[int]) -> str:
        return bytes(i for i in ids if i < 256).decode("utf-8", errors="replace")


def test_window_targets_are_inputs_shifted_by_one() -> None:
    ids = list(range(100, 140))
    ds = TokenWindowDataset(ids, max_length=8, stride=3)
    for i in range(len(ds)):
        x, y = ds[i]
        assert x.dtype == y.dtype == torch.long
        assert x.shape == y.shape == (8,)
        assert x.tolist() == ids[3 * i : 3 * i + 8]
        assert y.tolist() == ids[3 * i + 1 : 3 * i + 9]


@pytest.mark.parametrize(
    "n,length,stride", [(40, 8, 3), (41, 8, 8), (9, 8, 1), (8, 8, 1), (100, 10, 7)]
)
def test_window_count_matches_chapter5_range(n: int, length: int, stride: int) -> None:
    # chapter 5: for i in range(0, len(token_ids) - max_length, stride)
    expected = len(range(0, n - length, stride))
    assert num_windows(n, length, stride) == expected
    assert len(TokenWindowDataset(list(range(n)), length, stride)) == expected


def test_split_is_deterministic_and_covers_the_stream() -> None:
    ids = list(range(1000))
    train, val = split_tokens(ids, 0.9)
    assert train + val == ids
    assert len(train) == int(0.9 * len(ids))
    assert split_tokens(ids, 0.9) == (train, val)
    train, val = split_tokens(ids, 0.25)
    assert len(train) == 250 and len(val) == 750


def test_bundled_corpus_is_the_default() -> None:
    (doc,) = read_corpus(None)
    assert len(doc.text) == 20479
    assert doc.text.startswith("I HAD always thought Jack Gisburn")


def test_folder_reads_txt_files_sorted_and_separates_documents(tmp_path) -> None:
    (tmp_path / "b.txt").write_text("second")
    (tmp_path / "a.txt").write_text("first")
    (tmp_path / "skip.md").write_text("not text data")
    docs = read_corpus([tmp_path])
    assert [d.text for d in docs] == ["first", "second"]
    tok = ByteTokenizer()
    assert tokenize_corpus(docs, tok) == tok.encode("first") + [256] + tok.encode("second")


def test_loaders_split_sizes_shuffle_and_drop_last(tmp_path) -> None:
    path = tmp_path / "text.txt"
    path.write_text("abcdefghij" * 50)  # 500 tokens
    splits = build_loaders(
        ByteTokenizer(), [path], context_length=16, batch_size=4, train_ratio=0.8, seed=1
    )
    assert (splits.train_tokens, splits.val_tokens) == (400, 100)
    n_train, n_val = num_windows(400, 16, 16), num_windows(100, 16, 16)
    assert len(splits.train_loader.dataset) == n_train
    assert len(splits.train_loader) == n_train // 4  # drop_last=True
    assert len(splits.val_loader) == -(-n_val // 4)  # drop_last=False keeps the short batch
    val_inputs = torch.cat([x for x, _ in splits.val_loader])
    assert val_inputs.tolist() == [splits.val_loader.dataset[i][0].tolist() for i in range(n_val)]
    order = [x[:, 0].tolist() for x, _ in splits.train_loader]
    in_order = [
        [splits.train_loader.dataset[i][0][0].item() for i in range(j, j + 4)]
        for j in range(0, n_train - 3, 4)
    ]
    assert order != in_order[: len(order)]  # shuffled
    assert "400 tokens" in splits.summary() and f"{n_train // 4} batches" in splits.summary()


def test_same_seed_gives_same_order_and_another_seed_another(tmp_path) -> None:
    path = tmp_path / "text.txt"
    path.write_text("".join(chr(97 + i % 26) for i in range(2000)))

    def order(seed: int) -> list[list[int]]:
        s = build_loaders(ByteTokenizer(), [path], context_length=8, batch_size=2, seed=seed)
        return [x[:, 0].tolist() for x, _ in s.train_loader]

    assert order(5) == order(5)
    assert order(5) != order(6)


def test_missing_file_names_it(tmp_path) -> None:
    with pytest.raises(DataError, match="nope.txt.*does not exist"):
        read_corpus([tmp_path / "nope.txt"])


def test_empty_file_names_it(tmp_path) -> None:
    (tmp_path / "empty.txt").write_text("  \n")
    with pytest.raises(DataError, match="empty.txt.*is empty"):
        read_corpus([tmp_path / "empty.txt"])


def test_empty_folder_says_so(tmp_path) -> None:
    with pytest.raises(DataError, match="holds no \\*.txt files"):
        read_corpus([tmp_path])


def test_split_shorter_than_a_window_says_tokens_needed_and_fix(tmp_path) -> None:
    path = tmp_path / "short.txt"
    path.write_text("x" * 100)  # 90 train, 10 val tokens
    with pytest.raises(DataError) as info:
        build_loaders(ByteTokenizer(), [path], context_length=32, batch_size=1)
    msg = str(info.value)
    assert "validation split has 10 tokens" in msg and "needs 33" in msg
    assert "--context-length" in msg and "--train-ratio" in msg


def test_fewer_windows_than_one_batch_says_so(tmp_path) -> None:
    path = tmp_path / "text.txt"
    path.write_text("y" * 400)  # 360 train tokens: 11 windows of 32; 40 val tokens: 1
    with pytest.raises(
        DataError, match="gives 11 windows.*fewer than one batch of 16.*--batch-size"
    ):
        build_loaders(ByteTokenizer(), [path], context_length=32, batch_size=16)

"""``portagpt compare``: the same text and token budget for every family, bits per byte, the reports."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from portagpt.cli import main
from portagpt.core.compare import split_text, sum_cross_entropy, tokenize_split


class NextIdModel(nn.Module):
    """Predicts ``(id + 1) % V`` from the current id alone, with certainty ``margin``."""

    def __init__(self, vocab: int, margin: float) -> None:
        super().__init__()
        self.vocab, self.margin = vocab, margin
        self.calls: list[tuple[int, ...]] = []

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        self.calls.append(tuple(ids.shape))
        nxt = (ids + 1) % self.vocab
        return nn.functional.one_hot(nxt, self.vocab).float() * self.margin  # (B, T, V)


@pytest.mark.parametrize("context", [1, 4, 7, 30, 64])
def test_every_validation_token_is_scored_once_whatever_the_window(context) -> None:
    ids = [i % 5 for i in range(31)]  # 30 targets
    model = NextIdModel(5, margin=2.0)
    nats, count = sum_cross_entropy(model, ids, context, torch.device("cpu"), batch_size=3)
    per_token = -math.log(
        math.exp(2.0) / (math.exp(2.0) + 4)
    )  # right answer, probability e^2/(e^2+4)
    assert count == 30
    assert nats == pytest.approx(30 * per_token, rel=1e-6)
    assert all(t <= context for _, t in model.calls)


def test_a_wrong_next_token_costs_its_full_cross_entropy() -> None:
    ids = [0, 1, 2, 3, 0]  # the last target breaks the pattern (model expects 4)
    nats, count = sum_cross_entropy(NextIdModel(5, margin=50.0), ids, 3, torch.device("cpu"))
    assert count == 4 and nats == pytest.approx(50.0, rel=1e-4)  # only the tail token is wrong


def test_text_split_gives_every_tokenizer_the_same_bytes(tmp_path) -> None:
    (tmp_path / "a.txt").write_text("alpha beta gamma " * 20)
    (tmp_path / "b.txt").write_text("délta épsilon " * 10)
    files = [str(tmp_path / "a.txt"), str(tmp_path / "b.txt")]
    train, val = split_text(files, 0.75)
    whole = (tmp_path / "a.txt").read_text() + (tmp_path / "b.txt").read_text()
    assert "".join(train) + "".join(val) == whole
    assert sum(map(len, train)) == int(0.75 * len(whole))

    from portagpt.adapters import bundled_bpe

    data = tokenize_split(train, val, bundled_bpe())
    assert data.val_bytes == len("".join(val).encode("utf-8"))  # é counts two bytes
    assert data.val_ids[0] == bundled_bpe().eos_token_id  # so the first real token is scored


def test_compare_trains_each_family_alike_and_writes_table_json_and_plot(tmp_path, capsys):
    out = tmp_path / "cmp"
    args = ["compare", "--families", "gpt2,qwen3", "--tokens", "320", "--context-length", "16"]
    args += ["--batch-size", "2", "--eval-points", "3", "--lr", "5e-3", "--out", str(out)]
    assert main([*args, "--threads", "1"]) == 0
    printed = capsys.readouterr().out
    table = (out / "compare.md").read_text()
    assert table in printed
    assert "| gpt2 | tiny |" in table and "| qwen3 | tiny |" in table and "bits/byte" in table
    report = json.loads((out / "compare.json").read_text())
    results = {r["family"]: r for r in report["results"]}
    assert report["settings"]["tokens"] == 320
    for r in results.values():
        assert r["tokens_seen"] == 320 and r["steps"] == 10  # the same budget, 10 steps of 2 x 16
        assert r["final_train_loss"] < r["first_train_loss"]
        assert r["peak_memory_bytes"] > 0 and r["tokens_per_s"] > 0
        assert len(r["curve"]) >= 3
        bpb = r["final_val_loss"] * r["val_tokens"] / math.log(2) / r["val_bytes"]
        assert r["val_bpb"] == pytest.approx(bpb, rel=1e-9)
    assert results["gpt2"]["val_bytes"] == results["qwen3"]["val_bytes"]  # the same text
    for name in ("bpb.png", "bpb.pdf"):
        assert (out / name).stat().st_size > 1000


@pytest.mark.parametrize(
    "extra,needles",
    [
        (["--families", "gpt2,nosuch"], ["Unknown family 'nosuch'"]),
        (["--families", "gpt2,llama:huge"], ["Unknown preset 'huge'"]),
        (["--families", "gpt2", "--context-length", "4096"], ["--context-length 4096", "256"]),
        (["--families", "gpt2,gpt2"], ["twice"]),
        (["--tokens", "0"], ["--tokens"]),
    ],
)
def test_bad_comparison_fails_before_any_training(tmp_path, capsys, extra, needles) -> None:
    out = tmp_path / "cmp"
    assert main(["compare", "--out", str(out), *extra]) == 2
    err = " ".join(capsys.readouterr().err.split())
    for needle in needles:
        assert needle in err, err
    assert not Path(out).exists()

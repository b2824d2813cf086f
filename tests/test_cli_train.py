"""``portagpt train``: bad input fails cleanly before anything is written; a short run works and resumes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from importlib import resources
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from portagpt.adapters.family import Preset
from portagpt.cli import main
from portagpt.families.gpt2.config import PRESETS


@pytest.fixture(autouse=True)
def _micro_preset(monkeypatch):
    """A 1-layer, 16-wide GPT-2 with the real vocabulary: a whole CLI run in a second or two."""
    micro = replace(PRESETS["tiny"].config, context_length=32, emb_dim=16, n_heads=2, n_layers=1)
    monkeypatch.setitem(PRESETS, "micro", Preset(micro, "", "test size"))
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def text(tmp_path) -> Path:
    verdict = (
        resources.files("portagpt").joinpath("data", "the-verdict.txt").read_text(encoding="utf-8")
    )
    path = tmp_path / "text.txt"
    path.write_text(verdict[:3000], encoding="utf-8")  # ~700 tokens
    return path


def train(out: Path, *extra: str, text: Path | None = None) -> int:
    args = ["train", "--preset", "micro", "--out", str(out), "--no-progress", "--batch-size", "4"]
    args += ["--eval-freq", "2", "--eval-iter", "2", "--sample-tokens", "5", "--lr", "5e-3"]
    if text is not None:
        args += ["--data", str(text)]
    return main([*args, *extra])


def assert_clean_failure(capsys, out: Path, *needles: str) -> None:
    err = capsys.readouterr().err
    assert err.startswith("portagpt: error: ")
    assert "Traceback" not in err and "\n\n" not in err.strip()  # one paragraph
    for needle in needles:
        assert needle in " ".join(err.split()), err
    assert not out.exists()


@pytest.mark.parametrize(
    "extra,needles",
    [
        (["--lr", "-0.001"], ["--lr", "positive"]),
        (["--lr", "0"], ["--lr"]),
        (["--epochs", "0"], ["--epochs", ">= 1"]),
        (["--context-length", "64"], ["--context-length 64", "context length 32"]),
        (["--batch-size", "0"], ["--batch-size"]),
        (["--train-ratio", "1.5"], ["--train-ratio"]),
        (["--grad-accum", "0"], ["--grad-accum"]),
        (["--preset", "huge"], ["Unknown preset 'huge'", "tiny"]),
        (["--family", "nosuch"], ["Unknown family 'nosuch'", "gpt2"]),
    ],
)
def test_bad_flags_fail_before_anything_is_written(tmp_path, capsys, text, extra, needles) -> None:
    out = tmp_path / "run"
    assert train(out, *extra, text=text) == 2
    assert_clean_failure(capsys, out, *needles)


def test_missing_data_file(tmp_path, capsys) -> None:
    out = tmp_path / "run"
    assert train(out, text=tmp_path / "missing.txt") == 2
    assert_clean_failure(capsys, out, "missing.txt", "does not exist")


def test_empty_data_file(tmp_path, capsys) -> None:
    (tmp_path / "empty.txt").write_text("")
    out = tmp_path / "run"
    assert train(out, text=tmp_path / "empty.txt") == 2
    assert_clean_failure(capsys, out, "empty.txt", "is empty")


def test_corpus_too_short_for_one_window(tmp_path, capsys) -> None:
    (tmp_path / "short.txt").write_text("Every effort moves you a little further along. " * 3)
    out = tmp_path / "run"
    assert train(out, text=tmp_path / "short.txt") == 2
    assert_clean_failure(capsys, out, "tokens", "needs 33", "--context-length")


def test_resume_without_a_checkpoint(tmp_path, capsys, text) -> None:
    out = tmp_path / "run"
    assert train(out, "--resume", text=text) == 2
    assert_clean_failure(capsys, out, "No checkpoint folder", "without --resume")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_unavailable_device(tmp_path, capsys, text) -> None:
    out = tmp_path / "run"
    assert train(out, "--device", "cuda", text=text) == 2
    assert_clean_failure(capsys, out, "--device 'cuda'", "no CUDA")


def test_short_run_writes_plot_metrics_samples_checkpoint_and_resumes(
    tmp_path, capsys, text
) -> None:
    out = tmp_path / "run"
    assert train(out, "--epochs", "2", text=text) == 0
    stdout = capsys.readouterr().out
    assert "train:" in stdout and "val:" in stdout and "batches" in stdout
    assert "Ep 1 (Step 000000): Train loss" in stdout
    assert "Every effort moves you" in stdout
    for name in ("loss.png", "loss.pdf", "metrics.jsonl", "samples.txt"):
        assert (out / name).stat().st_size > 0, name
    for name in ("model.safetensors", "portagpt.json", "config.json", "training_state.pt"):
        assert (out / "checkpoint" / name).is_file(), name
    side = json.loads((out / "checkpoint" / "portagpt.json").read_text())
    assert side["family"] == "gpt2" and side["epoch"] == 2 and side["run"]["preset"] == "micro"
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in records if r["type"] == "eval"]
    assert evals[-1]["train_loss"] < evals[0]["train_loss"]
    steps_before = max(r["step"] for r in records)

    # a second plain call refuses to mix runs; --resume continues to 3 epochs in all
    assert train(out, "--epochs", "3", text=text) == 2
    assert "--resume" in capsys.readouterr().err
    assert main(["train", "--out", str(out), "--resume", "--epochs", "3", "--no-progress"]) == 0
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in records if r["type"] == "train"]
    assert steps == list(range(len(steps))) and steps[-1] > steps_before
    assert json.loads((out / "checkpoint" / "portagpt.json").read_text())["epoch"] == 3
    assert len((out / "samples.txt").read_text().splitlines()) == 3


def test_one_epoch_plus_resume_equals_two_epochs(tmp_path, text) -> None:
    assert train(tmp_path / "a", "--epochs", "2", text=text) == 0
    assert train(tmp_path / "b", "--epochs", "1", text=text) == 0
    assert (
        main(["train", "--out", str(tmp_path / "b"), "--resume", "--epochs", "2", "--no-progress"])
        == 0
    )
    a = load_file(str(tmp_path / "a" / "checkpoint" / "model.safetensors"))
    b = load_file(str(tmp_path / "b" / "checkpoint" / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-6, atol=1e-7, msg=k)


def test_python_dash_m_entry_point_reports_errors_without_traceback(tmp_path) -> None:
    env = {**os.environ, "PORTAGPT_DISABLE_PLUGIN_AUTOLOAD": "1"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "portagpt",
            "train",
            "--preset",
            "nope",
            "--out",
            str(tmp_path / "r"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "Unknown preset 'nope'" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "r").exists()

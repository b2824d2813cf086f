"""The Python API is the CLI's twin: each function reports what its command prints with ``--json``.

Every test calls one ``portagpt.<function>`` and the matching ``portagpt <command> --json``
with the same arguments and compares the two reports (timings and memory aside); the
errors are the same typed ``PortagptError`` with the same message; a training log
written to a file holds no ``\\r`` progress frames.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
import torch

import portagpt
from portagpt.adapters.family import Preset
from portagpt.cli import main
from portagpt.errors import (
    CheckpointNotFoundError,
    PortagptError,
    UnknownFamilyError,
    UnknownPresetError,
    UsageError,
)
from portagpt.families.gpt2.config import PRESETS

PROMPT = "Every effort moves you"
TIMINGS = {"seconds", "tokens_per_second", "load_seconds", "resolve_seconds", "peak_rss_bytes",
           "rss_delta_bytes", "train_seconds", "tokens_per_s", "peak_memory_bytes",
           "elapsed_s"}  # fmt: skip


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def micro(monkeypatch: pytest.MonkeyPatch) -> str:
    """A 1-layer, 16-wide GPT-2 preset with the real vocabulary: a whole run in a second or two."""
    cfg = replace(PRESETS["tiny"].config, context_length=32, emb_dim=16, n_heads=2, n_layers=1)
    monkeypatch.setitem(PRESETS, "micro", Preset(cfg, "", "test size"))
    return "micro"


@pytest.fixture
def text(tmp_path: Path) -> Path:
    verdict = resources.files("portagpt").joinpath("data", "the-verdict.txt").read_text("utf-8")
    path = tmp_path / "text.txt"
    path.write_text(verdict[:3000], encoding="utf-8")  # ~700 tokens
    return path


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny transformers GPT-2 with GPT-2's vocabulary and tokenizer files."""
    from transformers import GPT2Config

    from portagpt.smoke_tests.reference import write_hf_checkpoint

    folder = tmp_path_factory.mktemp("gpt2-tiny")
    cfg = GPT2Config(vocab_size=50257, n_positions=32, n_embd=32, n_layer=2, n_head=4)
    write_hf_checkpoint(cfg, folder, scale=0.5)
    return folder


def cli_json(capsys: pytest.CaptureFixture[str], *argv: str, code: int = 0) -> dict[str, Any]:
    """Run a command in-process; its last stdout line parsed as JSON."""
    capsys.readouterr()
    assert main([*argv, "--json"]) == code, capsys.readouterr().err
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def without(value: Any, keys: set[str] = TIMINGS) -> Any:
    """The report with timings and memory dropped, at every depth."""
    if isinstance(value, dict):
        return {k: without(v, keys) for k, v in value.items() if k not in keys}
    if isinstance(value, list):
        return [without(v, keys) for v in value]
    return value


def cli_error(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    """The one-paragraph message a failing command prints, unwrapped."""
    capsys.readouterr()
    assert main(list(argv)) == 2
    err = capsys.readouterr().err
    assert err.startswith("portagpt: error: ")
    return " ".join(err.removeprefix("portagpt: error: ").split())


# ---- generate ---------------------------------------------------------------------------------


def test_generate_returns_the_continuation_the_cli_prints(capsys, checkpoint) -> None:
    cli = cli_json(capsys, "generate", "--checkpoint", str(checkpoint), "--prompt", PROMPT,
                   "--max-new-tokens", "12")  # fmt: skip
    gen = portagpt.generate(checkpoint, prompt=PROMPT, max_new_tokens=12, details=True)
    assert without(gen.to_dict()) == without(cli)
    model, tok = portagpt.load(checkpoint)
    assert portagpt.generate(model, tok, PROMPT, max_new_tokens=12) == cli["text"]
    assert str(gen) == PROMPT + cli["text"]


def test_sampled_generation_with_a_seed_matches_the_cli(capsys, checkpoint) -> None:
    flags = ["--temperature", "0.9", "--top-k", "20", "--top-p", "0.95", "--seed", "7"]
    cli = cli_json(capsys, "generate", "--checkpoint", str(checkpoint), "--prompt", PROMPT,
                   "--max-new-tokens", "10", *flags)  # fmt: skip
    model, tok = portagpt.load(checkpoint)
    gen = portagpt.generate(model, tok, PROMPT, max_new_tokens=10, temperature=0.9, top_k=20,
                            top_p=0.95, seed=7, details=True)  # fmt: skip
    assert gen.new_ids == cli["new_ids"] and gen.text == cli["text"]
    assert gen.family == cli["family"] == "gpt2"


def test_streaming_yields_text_pieces_that_join_to_the_text(checkpoint) -> None:
    model, tok = portagpt.load(checkpoint)
    whole = portagpt.generate(model, tok, PROMPT, max_new_tokens=12, details=True)
    pieces = portagpt.generate(model, tok, PROMPT, max_new_tokens=12, stream=True)
    got = []
    while True:
        try:
            got.append(next(pieces))
        except StopIteration as done:
            result = done.value
            break
    assert len(got) > 1 and "".join(got) == whole.text
    assert result.new_ids == whole.new_ids


def test_a_list_of_prompts_gives_a_list_of_texts(checkpoint) -> None:
    model, tok = portagpt.load(checkpoint)
    one = portagpt.generate(model, tok, PROMPT, max_new_tokens=6)
    assert portagpt.generate(model, tok, [PROMPT, PROMPT], max_new_tokens=6) == [one, one]


# ---- validate, inspect, convert ----------------------------------------------------------------


def test_validate_is_the_load_commands_report(capsys, checkpoint) -> None:
    cli = cli_json(capsys, "load", str(checkpoint), "--max-new-tokens", "4")
    report = portagpt.validate(checkpoint, max_new_tokens=4)
    assert isinstance(report, portagpt.Validation) and report.ok
    assert without(report.to_dict()) == without(cli)
    assert report.model is not None and report.checks["forward"]["finite"]


def test_inspect_is_the_inspect_commands_report(capsys, checkpoint) -> None:
    cli = cli_json(capsys, "inspect", str(checkpoint))
    info = portagpt.inspect(checkpoint)
    assert info.to_dict() == cli
    assert info.family == "gpt2" and info["ok"] is True


def test_convert_writes_what_the_convert_command_writes(capsys, checkpoint, tmp_path) -> None:
    cli = cli_json(capsys, "convert", str(checkpoint), "--to", "native", "--out",
                   str(tmp_path / "cli"))  # fmt: skip
    done = portagpt.convert(checkpoint, to="native", out=tmp_path / "api")
    mine = json.loads(json.dumps(done.to_dict()).replace(str(tmp_path / "api"), "OUT"))
    theirs = json.loads(json.dumps(cli).replace(str(tmp_path / "cli"), "OUT"))
    assert mine == theirs and done.layout == "native"
    model, _ = portagpt.load(tmp_path / "api")
    assert sum(p.numel() for p in model.parameters()) > 0


# ---- smoke, compare ----------------------------------------------------------------------------


def test_smoke_reports_the_smoke_commands_results(capsys) -> None:
    checks = "config_roundtrip,forward_fp32"
    cli = cli_json(capsys, "smoke", "--family", "gpt2", "--check", checks)
    results = portagpt.smoke("gpt2", check=checks)
    assert results.passed and without(results.to_dict()) == without(cli)
    assert [r.name for r in results.reports[0].results] == checks.split(",")


def test_compare_returns_the_table_json_and_figure_of_the_command(capsys, tmp_path) -> None:
    flags = dict(tokens=128, context_length=16, batch_size=2, eval_points=2, lr=5e-3, threads=1)
    argv = ["compare", "--families", "gpt2", "--out", str(tmp_path / "cli")]
    for key, value in flags.items():
        argv += [f"--{key.replace('_', '-')}", str(value)]
    cli = cli_json(capsys, *argv)
    cmp = portagpt.compare("gpt2", out=tmp_path / "api", log=None, **flags)
    assert without(cmp.to_dict()) == without(cli)
    assert cmp.table == (tmp_path / "api" / "compare.md").read_text(encoding="utf-8")
    assert json.loads((tmp_path / "api" / "compare.json").read_text()) == cmp.to_dict()
    ax = cmp.figure.axes[0]
    assert [line.get_label() for line in ax.get_lines()] == ["gpt2 (tiny)"]


# ---- train -------------------------------------------------------------------------------------


def train_flags(preset: str, text: Path) -> dict[str, Any]:
    return dict(preset=preset, data=str(text), epochs=2, batch_size=4, eval_freq=2, eval_iter=2,
                sample_tokens=5, lr=5e-3)  # fmt: skip


def test_train_returns_the_run_the_command_reports(capsys, micro, text, tmp_path) -> None:
    flags = train_flags(micro, text)
    argv = ["train", "--out", str(tmp_path / "cli"), "--no-progress"]
    for key, value in flags.items():
        argv += [f"--{key.replace('_', '-')}", str(value)]
    cli = cli_json(capsys, *argv)
    run = portagpt.train(out=tmp_path / "api", progress=False, **flags)
    assert capsys.readouterr() == ("", "")  # progress=False: silent
    drop = TIMINGS | {"out", "checkpoint"}
    assert without(run.to_dict(), drop) == without(cli, drop)
    assert run.val_losses[-1] < run.val_losses[0] and run.tokens[-1] == run.tokens_seen
    assert (run.checkpoint / "model.safetensors").is_file()
    fig = run.plot()
    assert [line.get_label() for line in fig.axes[0].get_lines()] == [
        "Training loss",
        "Validation loss",
    ]
    model, tok = portagpt.load(run.checkpoint)
    assert isinstance(portagpt.generate(model, tok, PROMPT, max_new_tokens=3), str)


def test_resume_continues_the_run_through_the_api(micro, text, tmp_path) -> None:
    first = portagpt.train(out=tmp_path / "r", progress=False, **train_flags(micro, text))
    more = portagpt.train(out=tmp_path / "r", resume=True, epochs=3, progress=False)
    assert more.family == "gpt2" and more.history.evals[0] == first.history.evals[0]
    assert more.tokens_seen > first.tokens_seen and len(more.samples) == 3


# ---- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "call,argv,error",
    [
        (lambda: portagpt.train(lr=-1.0, progress=False), ["train", "--lr", "-1"], UsageError),
        (lambda: portagpt.train(family="nosuch"), ["train", "--family", "nosuch"],
         UnknownFamilyError),
        (lambda: portagpt.train(preset="huge"), ["train", "--preset", "huge"], UnknownPresetError),
        (lambda: portagpt.validate("/nonexistent/ckpt"), ["load", "/nonexistent/ckpt"],
         CheckpointNotFoundError),
        (lambda: portagpt.smoke("nosuch"), ["smoke", "--family", "nosuch"], UnknownFamilyError),
        (lambda: portagpt.compare("gpt2,gpt2"), ["compare", "--families", "gpt2,gpt2"],
         UsageError),
        (lambda: portagpt.inspect("/nonexistent/ckpt"), ["inspect", "/nonexistent/ckpt"],
         CheckpointNotFoundError),
    ],
)  # fmt: skip
def test_api_errors_are_the_commands_errors(capsys, tmp_path, call, argv, error) -> None:
    os.chdir(tmp_path)  # a default run folder (runs/...) would land here, and must not appear
    with pytest.raises(error) as caught:
        call()
    assert isinstance(caught.value, PortagptError)
    assert " ".join(str(caught.value).split()) == cli_error(capsys, *argv)
    assert not (tmp_path / "runs").exists()


def test_generate_checks_its_options_like_the_command(capsys, checkpoint) -> None:
    with pytest.raises(UsageError) as caught:
        portagpt.generate(checkpoint, prompt=PROMPT, max_new_tokens=0)
    argv = ["generate", "--checkpoint", str(checkpoint), "--prompt", PROMPT]
    argv += ["--max-new-tokens", "0"]
    assert " ".join(str(caught.value).split()) == cli_error(capsys, *argv)


# ---- progress ----------------------------------------------------------------------------------


def test_training_log_written_to_a_file_has_no_carriage_returns(text, tmp_path) -> None:
    """Not a terminal: no bar frames, one plain line per evaluation (the default, with progress)."""
    out, log = tmp_path / "run", tmp_path / "train.log"
    argv = [sys.executable, "-m", "portagpt", "train", "--out", str(out), "--data", str(text),
            "--epochs", "1", "--context-length", "32", "--batch-size", "4", "--eval-freq", "2",
            "--eval-iter", "1", "--sample-tokens", "3", "--threads", "1"]  # fmt: skip
    env = {**os.environ, "PORTAGPT_DISABLE_PLUGIN_AUTOLOAD": "1"}
    with open(log, "wb") as f:
        proc = subprocess.run(argv, stdout=f, stderr=subprocess.STDOUT, env=env, timeout=600)
    data = log.read_bytes()
    assert proc.returncode == 0, data.decode()
    assert b"\r" not in data
    lines = data.decode().splitlines()
    evals = [r for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())
             if r["type"] == "eval"]  # fmt: skip
    assert len([ln for ln in lines if ln.startswith("Ep ")]) == len(evals) >= 2
    assert lines[-1].startswith("Wrote ")


@pytest.mark.skipif(sys.platform == "win32", reason="needs a pseudo-terminal")
def test_a_terminal_gets_the_bar_above_the_same_lines(text, tmp_path) -> None:
    import fcntl
    import pty
    import struct
    import termios

    parent, child = pty.openpty()
    fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))  # 120 columns
    argv = [sys.executable, "-m", "portagpt", "train", "--out", str(tmp_path / "run"),
            "--data", str(text), "--epochs", "1", "--context-length", "32", "--batch-size", "4",
            "--eval-freq", "2", "--eval-iter", "1", "--sample-tokens", "3", "--threads", "1"]  # fmt: skip
    env = {**os.environ, "PORTAGPT_DISABLE_PLUGIN_AUTOLOAD": "1"}
    proc = subprocess.Popen(argv, stdout=child, stderr=child, env=env)
    os.close(child)
    out = b""
    while True:
        try:
            chunk = os.read(parent, 4096)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        out += chunk
    assert proc.wait(timeout=600) == 0, out.decode(errors="replace")
    assert b"step/s" in out and b"Ep 1/1:" in out  # the text bar, redrawn in place
    assert out.count(b"Ep 1 (Step ") == 3  # and the evaluation lines, once each


def test_the_text_bar_is_drawn_only_on_a_terminal(monkeypatch) -> None:
    from tqdm.std import tqdm as text_bar

    from portagpt.core.train import progress_class

    class Stream:
        def __init__(self, tty: bool) -> None:
            self.tty = tty

        def isatty(self) -> bool:
            return self.tty

        def write(self, s: str) -> int:
            return len(s)

    monkeypatch.setattr(sys, "stderr", Stream(True))
    assert progress_class() is text_bar
    monkeypatch.setattr(sys, "stderr", Stream(False))
    assert progress_class() is None

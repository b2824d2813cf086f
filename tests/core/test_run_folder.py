"""The run folder: one writer (an OS lock naming its holder), and --resume for every family."""

from __future__ import annotations

import dataclasses
import json
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from portagpt.cli import main
from portagpt.core.checkpoint import config_from_dict, load_training_state, read_sidecar
from portagpt.core.data import build_loaders
from portagpt.core.run_folder import (
    LOCK_FILE,
    PID_FILE,
    holds_run_folder,
    lock_run_folder,
    release_run_folder,
)
from portagpt.core.train import Callback, TrainConfig, Trainer
from portagpt.errors import CheckpointError, RunFolderBusyError
from portagpt.registry import get_registry

VOCAB = 128
HOLD = """
import sys, time
from portagpt.core.run_folder import lock_run_folder
lock_run_folder(sys.argv[1])
print("locked", flush=True)
time.sleep(60)
"""


def hold_in_subprocess(out: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_second_writer_is_refused_naming_the_holders_pid_until_the_holder_dies(tmp_path) -> None:
    out = tmp_path / "run"
    proc = hold_in_subprocess(out)
    try:
        with pytest.raises(RunFolderBusyError, match=rf"pid {proc.pid} .*kill {proc.pid}.*--out NEW_DIR"):
            lock_run_folder(out)
        assert not holds_run_folder(out)
    finally:
        proc.kill()
        proc.wait()
    lock_run_folder(out)  # the kernel released the dead holder's lock
    try:
        assert json.loads((out / PID_FILE).read_text())["pid"] != proc.pid
    finally:
        release_run_folder(out)


def test_lock_is_counted_within_a_process_and_the_pid_file_goes_with_the_last_hold(tmp_path) -> None:
    out = tmp_path / "run"
    lock_run_folder(out)
    lock_run_folder(out)
    release_run_folder(out)
    assert holds_run_folder(out) and (out / PID_FILE).is_file()
    release_run_folder(out)
    assert not holds_run_folder(out) and not (out / PID_FILE).exists()
    assert (out / LOCK_FILE).is_file()  # kept: waiters share one inode


def test_trainer_holds_the_run_folder_for_the_whole_fit(tmp_path) -> None:
    seen = []

    class Probe(Callback):
        def on_step_end(self, trainer, loss):
            seen.append(holds_run_folder(tmp_path / "run"))

    fam = get_registry().get("gpt2")
    torch.manual_seed(0)
    model = fam.build_model(fam.smoke_config)
    model.init_weights()
    ids = torch.arange(400) % fam.smoke_config.vocab_size
    from portagpt.core.data import TokenWindowDataset, make_loader

    train = make_loader(TokenWindowDataset(ids[:300], 16, 16), 2, shuffle=True, drop_last=True, seed=1)
    val = make_loader(TokenWindowDataset(ids[300:], 16, 16), 2, shuffle=False, drop_last=False)
    cfg = TrainConfig(epochs=1, sample_tokens=0)
    Trainer(model, train, val, cfg, out_dir=tmp_path / "run", callbacks=[Probe()], progress=False).fit()
    assert seen and all(seen)
    assert not holds_run_folder(tmp_path / "run")


# ---- --resume without --family, for every family -------------------------------------------


def write_tokenizer(folder: Path) -> list[Path]:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    vocab = {f"w{i}": i for i in range(VOCAB - 2)}
    vocab["[UNK]"], vocab["<eos>"] = VOCAB - 2, VOCAB - 1
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.decoder = decoders.WordPiece(prefix="##")
    folder.mkdir(parents=True, exist_ok=True)
    tok.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps({"eos_token": "<eos>"}))
    return [folder / "tokenizer.json", folder / "tokenizer_config.json"]


@pytest.fixture(scope="module")
def words(tmp_path_factory) -> Path:
    rng = random.Random(0)
    path = tmp_path_factory.mktemp("data") / "words.txt"
    path.write_text(" ".join(f"w{rng.randrange(VOCAB - 2)}" for _ in range(500)))
    return path


def one_epoch_run(fam, out: Path, words: Path, tok_files: list[Path]) -> object:
    """A run folder as `portagpt train` leaves it, written through the Python API."""
    cfg = dataclasses.replace(fam.smoke_config, vocab_size=VOCAB)
    tokenizer = fam.load_tokenizer(tok_files[0].parent, cfg)
    run = {"preset": None, "data": [str(words)], "batch_size": 2, "context_length": 16,
           "stride": 16, "train_ratio": 0.9, "seed": 123, "family": fam.name}  # fmt: skip
    splits = build_loaders(tokenizer, [words], context_length=16, batch_size=2, seed=123)
    torch.manual_seed(0)
    model = fam.build_model(cfg)
    model.init_weights()
    Trainer(
        model, splits.train_loader, splits.val_loader, TrainConfig(epochs=1, sample_tokens=0),
        tokenizer=tokenizer, out_dir=out, family=fam, run_info=run, progress=False,
        checkpoint_files=tok_files,
    ).fit()  # fmt: skip
    return cfg


@pytest.mark.parametrize("family", sorted(get_registry().families))
def test_resume_without_family_continues_the_runs_own_family(tmp_path, words, family) -> None:
    fam = get_registry().get(family)
    out = tmp_path / "run"
    cfg = one_epoch_run(fam, out, words, write_tokenizer(tmp_path / "tok"))
    assert main(["train", "--out", str(out), "--resume", "--epochs", "2", "--no-progress"]) == 0
    side = read_sidecar(out / "checkpoint")
    assert side["family"] == family and side["epoch"] == 2
    assert config_from_dict(type(cfg), side["config"]) == cfg  # nested configs rebuilt as such
    assert json.loads((out / "run.json").read_text())["family"] == family


def test_training_state_without_optimizer_is_a_clear_error(tmp_path, words) -> None:
    fam = get_registry().get("gpt2")
    out = tmp_path / "run"
    one_epoch_run(fam, out, words, write_tokenizer(tmp_path / "tok"))
    path = out / "checkpoint" / "training_state.pt"
    state = torch.load(path, weights_only=True)
    del state["optimizer"]
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=r"training_state\.pt.*no 'optimizer' entry.*--checkpoint"):
        load_training_state(out / "checkpoint")


def test_a_second_writer_is_refused_at_once_not_queued(tmp_path) -> None:
    """Refusal is immediate: a second writer never queues behind the first."""
    out = tmp_path / "run"
    proc = hold_in_subprocess(out)
    try:
        start = time.perf_counter()
        with pytest.raises(RunFolderBusyError):
            lock_run_folder(out)
        assert time.perf_counter() - start < 5
    finally:
        proc.kill()
        proc.wait()

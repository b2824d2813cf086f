"""Run folders under attack: two writers, --overwrite of the source, a crash mid-swap, a full disk.

Every case runs the real CLI in subprocesses (harness.py). One tiny-preset run
of one epoch is trained once per module and copied for each case; cases then
resume it to two epochs. The races are repeated: two processes started
together usually overlap (one is refused by the lock), and when they do not,
the later one is refused by what the earlier one left (a finished run).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from harness import CLI, Result, assert_clean_error, assert_ok, run_cli, unchanged

from portagpt.core.checkpoint import read_sidecar

TRAIN = ["--no-progress", "--threads", "1", "--sample-tokens", "0", "--eval-iter", "1"]
SHAPE = ["--context-length", "32", "--batch-size", "4", "--eval-freq", "100"]
ULIMIT = ["bash", "-c", 'ulimit -f 200; exec "$0" "$@"']  # 200 KiB: every checkpoint is larger
RACES = 3  # per race; each attempt starts two processes together


@pytest.fixture(scope="module")
def text(tmp_path_factory) -> Path:
    from importlib import resources

    verdict = resources.files("portagpt").joinpath("data", "the-verdict.txt").read_text("utf-8")
    path = tmp_path_factory.mktemp("data") / "text.txt"
    path.write_text(verdict[:3000], encoding="utf-8")  # ~750 tokens: 5 steps an epoch
    return path


def fresh(out: Path, text: Path, *extra: str) -> list[str]:
    return ["train", "--out", str(out), "--data", str(text), "--epochs", "1", *SHAPE, *TRAIN, *extra]


def resume(out: Path, epochs: int = 2) -> list[str]:
    return ["train", "--out", str(out), "--resume", "--epochs", str(epochs), *TRAIN]


@pytest.fixture(scope="module")
def base_run(tmp_path_factory, text) -> Path:
    out = tmp_path_factory.mktemp("base") / "run"
    assert_ok(run_cli(*fresh(out, text)))
    return out


@pytest.fixture
def run(base_run, tmp_path) -> Path:
    out = tmp_path / "run"
    shutil.copytree(base_run, out)
    return out


def together(*argvs: list[str]) -> list[tuple[int, Result]]:
    """Start every command at once; (pid, result) of each."""
    procs = [
        subprocess.Popen([*CLI, *a], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for a in argvs
    ]
    out = []
    for argv, p in zip(argvs, procs, strict=True):
        stdout, stderr = p.communicate(timeout=300)
        out.append((p.pid, Result(argv, p.returncode, stdout, stderr)))
    return out


def assert_tidy(out: Path) -> None:
    """No temporary, backup or pid file left behind; the checkpoint is complete."""
    leftovers = sorted(p.name for p in out.iterdir() if p.name.startswith(".") and p.name != ".portagpt.lock")
    assert leftovers == [], leftovers
    for name in ("model.safetensors", "portagpt.json", "config.json", "training_state.pt"):
        assert (out / "checkpoint" / name).is_file(), name


def assert_refused_by_the_other(result: Result, other_pid: int) -> None:
    """A refusal by the lock names the other process; a later start finds its finished run."""
    text = assert_clean_error(result)
    if "in use by another portagpt process" in text:
        assert f"pid {other_pid} " in text and f"kill {other_pid}" in text, text
    else:
        assert re.search(r"already (trained|holds an earlier run)", text), text


# ---- two writers ---------------------------------------------------------------------------


@pytest.mark.parametrize("attempt", range(RACES))
def test_two_resumes_of_one_run_leave_one_complete_checkpoint(run, attempt) -> None:
    (pid_a, a), (pid_b, b) = together(resume(run), resume(run))
    winners = [r for r in (a, b) if r.returncode == 0]
    assert len(winners) == 1, f"{a}\n{b}"
    loser, other = (b, pid_a) if a.returncode == 0 else (a, pid_b)
    assert_refused_by_the_other(loser, other)
    assert_tidy(run)
    side = read_sidecar(run / "checkpoint")
    assert side["epoch"] == 2 and side["step"] == 9
    state = torch.load(run / "checkpoint" / "training_state.pt", weights_only=True)
    assert state["epoch"] == 2 and state["optimizer"]["state"]
    assert json.loads((run / "run.json").read_text()) == side["run"]


@pytest.mark.parametrize("attempt", range(RACES - 1))
def test_two_fresh_runs_on_one_out_never_mix(tmp_path, text, attempt) -> None:
    out = tmp_path / "run"
    (pid_a, a), (pid_b, b) = together(fresh(out, text, "--seed", "1"), fresh(out, text, "--seed", "2"))
    winners = [(r, s) for r, s in ((a, 1), (b, 2)) if r.returncode == 0]
    assert len(winners) == 1, f"{a}\n{b}"
    seed = winners[0][1]
    loser, other = (b, pid_a) if seed == 1 else (a, pid_b)
    assert_refused_by_the_other(loser, other)
    assert_tidy(out)
    side = read_sidecar(out / "checkpoint")
    run_json = json.loads((out / "run.json").read_text())
    assert run_json == side["run"] and run_json["seed"] == seed


def test_a_held_run_folder_is_refused_naming_the_holder(run) -> None:
    hold = (
        "import sys, time\nfrom portagpt.core.run_folder import lock_run_folder\n"
        "lock_run_folder(sys.argv[1]); print('locked', flush=True); time.sleep(60)"
    )
    holder = subprocess.Popen([sys.executable, "-c", hold, str(run)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with unchanged(run / "checkpoint", run / "run.json", run / "metrics.jsonl"):
            result = run_cli(*resume(run))
        assert_clean_error(result, str(run), f"pid {holder.pid}", "--out NEW_DIR")
    finally:
        holder.kill()
        holder.wait()


# ---- --overwrite with the source inside the output ----------------------------------------


def test_overwrite_continuing_from_its_own_checkpoint_keeps_it_until_replaced(run, text) -> None:
    old = (run / "checkpoint" / "model.safetensors").read_bytes()
    argv = ["train", "--checkpoint", str(run), "--out", str(run), "--overwrite", "--data", str(text)]
    argv += ["--epochs", "1", *SHAPE, *TRAIN]
    with unchanged(run / "checkpoint"):  # a full disk: refused, the source untouched
        full = run_cli(*argv, prefix=ULIMIT)
    assert_clean_error(full, "model.safetensors", "needs about", "ulimit -f")
    assert_tidy(run)
    assert_ok(run_cli(*argv))  # and with room, the run replaces itself
    side = read_sidecar(run / "checkpoint")
    assert side["run"]["init"]["checkpoint"] == str(run) and side["epoch"] == 1
    assert (run / "checkpoint" / "model.safetensors").read_bytes() != old
    assert_tidy(run)


# ---- a crash between the two renames of a checkpoint swap --------------------------------


def test_every_reader_sees_the_last_checkpoint_after_a_crash_mid_swap(run, tmp_path) -> None:
    (run / "checkpoint").rename(run / ".checkpoint.old")  # the old one moved aside, no new one yet
    with unchanged(run):  # the run folder, and the checkpoint folder itself, read read-only
        assert_ok(run_cli("load", "--checkpoint", run))
        argv = ["--checkpoint", run / "checkpoint", "--prompt", "Every", "--max-new-tokens", "2"]
        assert_ok(run_cli("generate", *argv))
    assert_ok(run_cli("convert", run, "--to", "hf", "--out", tmp_path / "hf"))
    assert (tmp_path / "hf" / "model.safetensors").is_file()
    assert_ok(run_cli(*resume(run)))
    assert read_sidecar(run / "checkpoint")["epoch"] == 2
    assert_tidy(run)


# ---- refusals leave the folder as it was -------------------------------------------------


def test_refused_resume_leaves_the_run_folder_byte_identical(run) -> None:
    with unchanged(run):  # already trained 1 epoch; the new batch size would go into run.json
        result = run_cli(*resume(run, epochs=1), "--batch-size", "2")
    assert_clean_error(result, "--epochs", "already trained 1 epoch")


def test_training_state_without_optimizer_is_one_paragraph(run) -> None:
    path = run / "checkpoint" / "training_state.pt"
    state = torch.load(path, weights_only=True)
    del state["optimizer"]
    torch.save(state, path)
    with unchanged(run):
        result = run_cli(*resume(run))
    assert_clean_error(result, "training_state.pt", "'optimizer'")


# ---- disk full -----------------------------------------------------------------------------


def test_disk_full_during_a_checkpoint_save_keeps_the_old_checkpoint(run) -> None:
    with unchanged(run / "checkpoint", run / "run.json"):
        result = run_cli(*resume(run), prefix=ULIMIT)
    assert_clean_error(result, str(run / "checkpoint" / "model.safetensors"), "needs about", "ulimit -f")
    assert_tidy(run)
    assert read_sidecar(run / "checkpoint")["epoch"] == 1


@pytest.mark.parametrize("to,name", [("hf", "model.safetensors"), ("book", "model.pth")])
def test_disk_full_during_a_convert_leaves_nothing_half_written(run, tmp_path, to, name) -> None:
    out = tmp_path / "converted"
    target = out / name if to == "hf" else out / "model.pth"
    out.mkdir()
    with unchanged(run, out):
        result = run_cli("convert", run, "--to", to, "--out", out if to == "hf" else target, prefix=ULIMIT)
    assert_clean_error(result, str(target), "needs about", "ulimit -f")

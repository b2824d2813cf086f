"""A training run folder: one writer at a time, nothing of an earlier run lost.

``portagpt train --out RUN`` writes::

    run.json             the run's settings (written once the run has really started)
    metrics.jsonl, samples.txt, loss.png, loss.pdf
    checkpoint/          the last complete checkpoint (see core.checkpoint)
    .portagpt.lock       the run folder's lock (an empty file, kept)
    .portagpt.lock.pid   who holds it: pid, host, command (while held)

The lock is an exclusive OS file lock (``filelock``: ``flock`` on Unix,
``LockFileEx`` on Windows) held for the whole run, so the kernel releases it
when the process dies, however it dies. A second writer (two ``--resume`` of
one run, a scheduler relaunching a job that still runs, two fresh runs on one
``--out``) is refused at once with the holder's pid. Locks are counted per
process, so the command line and the :class:`~portagpt.core.train.Trainer`
inside it can both hold the folder.

``--overwrite`` deletes nothing up front: the new run replaces ``run.json``
and ``metrics.jsonl`` when it starts, the old samples and plots are removed
then (they describe the run being replaced), and the old checkpoint stays in
place until the new run's first checkpoint replaces it in one atomic step. A
source checkpoint inside the run folder is read whole before the run starts.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..errors import CheckpointError, RunFolderBusyError, UsageError
from .checkpoint import read_sidecar
from .checkpoint_format import atomic_write_json, live_folder

LOCK_FILE = ".portagpt.lock"
PID_FILE = ".portagpt.lock.pid"
RUN_FILE = "run.json"
CHECKPOINT_DIR = "checkpoint"
ARTIFACTS = ("loss.png", "loss.pdf", "metrics.jsonl", "samples.txt", RUN_FILE, CHECKPOINT_DIR)
REPLACED_LOGS = ("loss.png", "loss.pdf", "samples.txt")  # removed when --overwrite starts

_HELD: dict[Path, tuple[Any, int]] = {}  # resolved run folder -> (FileLock, hold count)


# ---- the lock ----------------------------------------------------------------------------


def _holder(out: Path) -> tuple[str, str]:
    """(pid, description) of who holds ``out``'s lock, from the pid file (it may lag a moment)."""
    for _ in range(20):
        try:
            info = json.loads((out / PID_FILE).read_text(encoding="utf-8"))
            pid = str(int(info["pid"]))
            return pid, (
                f"pid {pid} on {info.get('host', '?')}, since {info.get('since', '?')}: "
                f"{info.get('command', '?')}"
            )
        except (OSError, ValueError, KeyError, TypeError):
            time.sleep(0.05)
    return "PID", f"pid unknown: {PID_FILE} is missing"


def lock_run_folder(out: str | Path) -> Path:
    """Take the run folder's exclusive lock (creating the folder); refuse if another process has it.

    Returns the lock file. Reentrant within a process; release with
    :func:`release_run_folder` (or :func:`release_run_folders` at exit).
    """
    from filelock import FileLock, Timeout

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    key = out.resolve()
    if key in _HELD:
        lock, count = _HELD[key]
        _HELD[key] = (lock, count + 1)
        return out / LOCK_FILE
    lock = FileLock(str(out / LOCK_FILE))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        pid, who = _holder(out)
        raise RunFolderBusyError(
            f"The run folder {str(out)!r} is in use by another portagpt process ({who}); two "
            "writers would mix their checkpoints and logs. Wait for it to finish, stop it "
            f"(kill {pid}), or pass --out NEW_DIR. Its lock on {str(out / LOCK_FILE)!r} ends "
            "with that process, however it ends."
        ) from None
    _HELD[key] = (lock, 1)
    record = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "since": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(["portagpt", *sys.argv[1:]]) if sys.argv else "python",
    }
    try:
        atomic_write_json(out / PID_FILE, record)
    except BaseException:
        release_run_folder(out)
        raise
    return out / LOCK_FILE


def release_run_folder(out: str | Path) -> None:
    """Give back one hold of ``out``'s lock; the last one removes the pid file and unlocks."""
    key = Path(out).resolve()
    if key not in _HELD:
        return
    lock, count = _HELD.pop(key)
    if count > 1:
        _HELD[key] = (lock, count - 1)
        return
    try:
        (Path(out) / PID_FILE).unlink(missing_ok=True)  # still ours: we hold the lock
    finally:
        lock.release(force=True)


def release_run_folders() -> None:
    """Release every run folder this process holds (the end of a command)."""
    for key in list(_HELD):
        _HELD[key] = (_HELD[key][0], 1)
        release_run_folder(key)


@contextmanager
def run_folder_lock(out: str | Path) -> Iterator[Path]:
    """``with run_folder_lock(out):`` the folder is this process's until the block ends."""
    path = lock_run_folder(out)
    try:
        yield path
    finally:
        release_run_folder(out)


def holds_run_folder(out: str | Path) -> bool:
    return Path(out).resolve() in _HELD


# ---- what the folder holds ---------------------------------------------------------------


def earlier_run(out: Path) -> list[str]:
    """The artifacts of an earlier run in ``out`` (the checkpoint counts even as its backup)."""
    found = [name for name in ARTIFACTS if (out / name).exists()]
    if CHECKPOINT_DIR not in found and live_folder(out / CHECKPOINT_DIR) is not None:
        found.append(CHECKPOINT_DIR)
    return found


def check_new_run(out: Path, overwrite: bool) -> None:
    """Refuse to start a new run in a folder that holds one, unless ``overwrite``."""
    found = earlier_run(out)
    if found and not overwrite:
        raise UsageError(
            f"The run folder {str(out)!r} already holds an earlier run ({', '.join(found)}). "
            "Pass --resume to continue it, --overwrite to replace it, or --out NEW_DIR for a new "
            "run."
        )


def start_run_folder(out: Path, *, resume: bool, overwrite: bool) -> None:
    """Lock ``out`` and make it ready to write, checking again now that no one else can.

    A new run refuses a folder another run filled meanwhile; with ``overwrite``
    the old samples and plots go (the checkpoint stays until replaced).
    """
    lock_run_folder(out)
    if resume:
        return
    check_new_run(out, overwrite)
    for name in REPLACED_LOGS:
        (out / name).unlink(missing_ok=True)


def write_run_info(out: Path, info: dict[str, Any]) -> None:
    """``run.json``, replaced atomically."""
    atomic_write_json(out / RUN_FILE, info)


def run_family(out: str | Path | None) -> str | None:
    """The family of the run in ``out`` (its checkpoint's sidecar), or None when there is none."""
    if out is None:
        return None
    try:
        family = read_sidecar(Path(out) / CHECKPOINT_DIR).get("family")
    except CheckpointError:
        return None  # the resume itself reports what is wrong with the folder
    return family if isinstance(family, str) else None

"""The hostile-input harness: run the real ``portagpt`` CLI in a subprocess and hold it to the error contract.

Every case in ``tests/hostile/`` goes through :func:`run_cli` and then
:func:`assert_clean_error` (a refusal) or :func:`assert_ok` (an accepted input),
usually inside :func:`unchanged` so the case also proves that nothing in the
folders it names was written or deleted.

The contract, for a refusal: a non-zero exit; stderr is one paragraph that
starts ``portagpt: error:`` and names the file / key / flag at fault; no
``Traceback`` (the CLI shows one only with ``--debug``).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

CLI = [sys.executable, "-m", "portagpt"]


@dataclass
class Result:
    argv: list[str]
    returncode: int
    stdout: str
    stderr: str

    def __str__(self) -> str:  # shown by pytest when an assertion fails
        return f"$ portagpt {' '.join(self.argv)}\nexit {self.returncode}\n--- stdout\n{self.stdout}\n--- stderr\n{self.stderr}"


def run_cli(
    *argv: str | os.PathLike[str],
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 120,
    stdin: str | None = None,
    prefix: Sequence[str] = (),
) -> Result:
    """Run ``portagpt ARGV`` in a fresh interpreter; ``prefix`` wraps it (e.g. a shell with ``ulimit -f``)."""
    args = [str(a) for a in argv]
    full_env = {**os.environ, "PORTAGPT_DISABLE_PLUGIN_AUTOLOAD": os.environ.get("PORTAGPT_DISABLE_PLUGIN_AUTOLOAD", "")}
    full_env.pop("PORTAGPT_DEBUG", None)
    full_env.update(env or {})
    proc = subprocess.run(
        [*prefix, *CLI, *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
        input=stdin,
        check=False,
    )
    return Result(args, proc.returncode, proc.stdout, proc.stderr)


def error_paragraph(result: Result) -> str:
    """The one paragraph of a refusal, whitespace-normalised (lines of stderr before it, e.g. warnings, are ignored)."""
    err = result.stderr
    start = err.find("portagpt: error: ")
    assert start >= 0, f"no 'portagpt: error:' on stderr\n{result}"
    body = err[start:].strip()
    assert "\n\n" not in body, f"the error is more than one paragraph\n{result}"
    return " ".join(body.split())


def assert_clean_error(result: Result, *names: str, code: int | None = None) -> str:
    """A refusal by the contract; every string in ``names`` (a file, key, flag) appears in the paragraph."""
    assert result.returncode != 0, f"exit 0 on bad input\n{result}"
    if code is not None:
        assert result.returncode == code, f"exit {result.returncode}, expected {code}\n{result}"
    assert "Traceback" not in result.stderr + result.stdout, f"traceback without --debug\n{result}"
    text = error_paragraph(result)
    for name in names:
        assert name in text, f"{name!r} is not named in the error\n{result}"
    return text


def assert_ok(result: Result) -> None:
    assert result.returncode == 0, f"expected success\n{result}"
    assert "Traceback" not in result.stderr, str(result)


def snapshot(*roots: Path) -> dict[str, str]:
    """Every file under ``roots`` (recursively) with a digest of its bytes; missing roots are recorded as such."""
    state: dict[str, str] = {}
    for root in roots:
        root = Path(root)
        if not root.exists():
            state[str(root)] = "<absent>"
            continue
        paths = [root] if root.is_file() else sorted(p for p in root.rglob("*"))
        for p in paths:
            if p.is_file():
                state[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
            elif p.is_dir():
                state[str(p)] = "<dir>"
    return state


@contextmanager
def unchanged(*roots: Path) -> Iterator[None]:
    """Assert that nothing under ``roots`` was written, created or deleted inside the block."""
    before = snapshot(*roots)
    yield
    after = snapshot(*roots)
    added = sorted(set(after) - set(before))
    removed = sorted(set(before) - set(after))
    changed = sorted(k for k in before.keys() & after.keys() if before[k] != after[k])
    assert not (added or removed or changed), f"files touched: added={added} removed={removed} changed={changed}"

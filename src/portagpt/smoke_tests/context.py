"""What every conformance check gets, and how one check's outcome is recorded.

:class:`SmokeContext` holds a family's tiny ``smoke_config`` (and a longer
one for window checks), shared token ids and a scratch folder. A check
returns a one-line detail (pass), raises :class:`CheckFailed` (fail), raises
:class:`Skip` (does not apply), or raises anything else -- a failure too,
reported by :func:`run_check` with the exception and the line of the family's
code that raised it. The checks (``checks.py``, ``interop.py``) build on this
module; the runner (``runner.py``) sits above them.
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import torch

from ..adapters.family import Family
from ..core.cache import LayerSpec

SEED = 1234
SHORT_WINDOW = 6  # the window a smoke config is given when its own does not fit the test sequence
MIN_SEQ = 20  # test sequences are at least this long (when the context allows)


class Skip(Exception):
    """A check that does not apply to this family (the message says why)."""


class CheckFailed(Exception):
    """A check that ran and found the family non-conforming (the message says how)."""


@dataclass
class CheckResult:
    """The outcome of one check: ``status`` is PASS, FAIL or SKIP."""

    name: str
    passed: bool
    detail: str
    seconds: float
    skipped: bool = False

    @property
    def status(self) -> str:
        return "SKIP" if self.skipped else ("PASS" if self.passed else "FAIL")

    def line(self) -> str:
        return f"{self.status} {self.name:<26} {self.seconds:6.2f}s  {self.detail}"


@dataclass
class SmokeReport:
    """All check results for one family, and where the family came from."""

    family: str
    distribution: str
    version: str
    plugin: str
    results: list[CheckResult] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.results)

    @property
    def failures(self) -> list[CheckResult]:
        return [r for r in self.results if not r.passed]

    @property
    def seconds(self) -> float:
        return sum(r.seconds for r in self.results)

    def header(self) -> str:
        src = f"{self.distribution} {self.version}".strip() or "?"
        return f"family {self.family!r} (plugin {self.plugin!r}, distribution {src})"

    def format(self) -> str:
        lines = [self.header()]
        lines += [f"  {r.line()}" for r in self.results]
        n_fail, n_skip = len(self.failures), sum(r.skipped for r in self.results)
        n_pass = len(self.results) - n_fail - n_skip
        verdict = "conforms" if self.passed else "DOES NOT CONFORM"
        lines.append(
            f"  {verdict}: {n_pass} passed, {n_fail} failed, {n_skip} skipped in {self.seconds:.1f}s"
        )
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "family": self.family,
            "distribution": self.distribution,
            "version": self.version,
            "plugin": self.plugin,
            "passed": self.passed,
            "seconds": round(self.seconds, 3),
            "results": [
                {**dataclasses.asdict(r), "status": r.status, "seconds": round(r.seconds, 3)}
                for r in self.results
            ],
        }


# ---- the shared context -------------------------------------------------------------
def windows_of(specs: Sequence[LayerSpec]) -> list[int]:
    """The distinct sliding-window sizes among layer specs (empty: full attention only)."""
    return sorted({s.window for s in specs if s.window})


def _window_fields(cfg: Any) -> list[str]:
    """Int fields of a dataclass config whose name says they hold a window size."""
    if not dataclasses.is_dataclass(cfg):
        return []
    return [
        f.name
        for f in dataclasses.fields(cfg)
        if ("window" in f.name or "sliding" in f.name)
        and isinstance(getattr(cfg, f.name), int)
        and not isinstance(getattr(cfg, f.name), bool)
    ]


def long_config(family: Family, cfg: Any) -> tuple[Any, int, str]:
    """A config and sequence length for which every sliding window is shorter than the sequence.

    Returns ``(config, seq_len, note)``. When the smoke config's windows are too
    long for its context, int fields named like ``*window*`` / ``*sliding*`` are
    shrunk to :data:`SHORT_WINDOW` (when that changes the specs as intended).
    """
    ctx_len = int(cfg.context_length)
    wins = windows_of(family.cache_specs(cfg))
    if not wins:
        return cfg, min(ctx_len, MIN_SEQ), "full attention only"
    if max(wins) + 6 <= ctx_len:
        seq = min(ctx_len, max(MIN_SEQ, max(wins) + 8))
        return cfg, seq, f"windows {wins} < sequence {seq}"
    names = _window_fields(cfg)
    small = min(SHORT_WINDOW, max(2, ctx_len // 4))
    if names:
        try:
            shrunk = dataclasses.replace(cfg, **{n: small for n in names})
            new = windows_of(family.cache_specs(shrunk))
        except Exception:  # the config rejects the change: keep the original
            new = wins
        if new and max(new) + 6 <= ctx_len:
            seq = min(ctx_len, max(MIN_SEQ, max(new) + 8))
            return shrunk, seq, f"windows shrunk to {new} ({', '.join(names)}) < sequence {seq}"
    return cfg, ctx_len, f"windows {wins} do not fit in context {ctx_len}: not exercised"


class SmokeContext:
    """What the checks of one family share: configs, token ids, a scratch folder, references."""

    def __init__(self, family: Family, workdir: str | Path | None = None) -> None:
        self.family = family
        self.cfg = family.smoke_config
        self._own_dir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix=f"portagpt-smoke-{family.name}-"))
        self.workdir.mkdir(parents=True, exist_ok=True)

    def close(self) -> None:
        if self._own_dir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    @cached_property
    def long(self) -> tuple[Any, int, str]:
        """(config, seq_len, note): see :func:`long_config`."""
        return long_config(self.family, self.cfg)

    def ids(self, batch: int, length: int, seed: int = 0, cfg: Any = None) -> torch.Tensor:
        """Deterministic random token ids (B, T) inside the vocabulary."""
        vocab = int((cfg or self.cfg).vocab_size)
        gen = torch.Generator().manual_seed(SEED + seed)
        return torch.randint(0, vocab, (batch, length), generator=gen)

    def build(self, cfg: Any = None, *, perturb: bool = False, seed: int = 0) -> torch.nn.Module:
        """A CPU fp32 model of ``cfg`` (default: smoke config), initialised, in eval mode."""
        torch.manual_seed(SEED + seed)
        model = self.family.build_model(cfg if cfg is not None else self.cfg)
        model.init_weights()
        if perturb:
            from .reference import perturb_

            perturb_(model, SEED + seed)
            model.tie_weights()
        return model.eval()

    def folder(self, name: str) -> Path:
        path = self.workdir / name
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True)
        return path


# ---- running ------------------------------------------------------------------------
def _where(exc: BaseException) -> str:
    """``file:line`` of the innermost frame outside the smoke kit, for failure details."""
    frames = traceback.extract_tb(exc.__traceback__)
    for fr in reversed(frames):
        if "smoke_tests" not in fr.filename:
            return f" (at {Path(fr.filename).name}:{fr.lineno})"
    return ""


def run_check(name: str, fn: Callable[[SmokeContext], str], ctx: SmokeContext) -> CheckResult:
    t0 = time.perf_counter()
    try:
        detail = fn(ctx)
        passed, skipped = True, False
    except Skip as exc:
        detail, passed, skipped = f"skipped: {exc}", True, True
    except CheckFailed as exc:
        detail, passed, skipped = str(exc), False, False
    except Exception as exc:  # the family's code raised: a failure with its message
        detail = f"raised {type(exc).__name__}: {exc}{_where(exc)}"
        passed, skipped = False, False
    return CheckResult(name, passed, " ".join(str(detail).split()), time.perf_counter() - t0, skipped)

"""How many CPU threads small operations run on.

torch runs many CPU ops on all its threads (``torch.get_num_threads()``). For
an op of a few microseconds of work -- a decode step's attention over a short
context, its RoPE angles, every op of a tiny model -- handing work to a second
thread costs more than it saves, and on a busy machine it is far worse: the op
waits until the other thread is scheduled again. Measured on 2 shared CPU
cores (``bench/generate_speed.py``), a 270M-parameter decode step spent most of
its time in such waits.

:class:`Threads` sets the count for one block and restores it after;
:func:`one_thread_if_small` picks one thread for ops below ``SMALL_OP_ELEMENTS``
elements of work; :class:`ThreadChooser` picks the count of each decode step
by timing the candidates as generation runs (the best count depends on what
else the machine is doing). All do nothing while ``torch.compile`` traces (a
compiled graph runs its own kernels).
"""

from __future__ import annotations

import contextlib
import math
import statistics
import time
from collections import deque
from collections.abc import Callable

import torch
from torch import nn

SMALL_OP_ELEMENTS = 1 << 18  # ~1 MiB of fp32: microseconds of work on one core
HISTORY_STEPS = 4096  # steps a ThreadChooser remembers in ``history``


class Threads:
    """Run the block on ``n`` torch threads (None: leave the count), restoring it after."""

    __slots__ = ("before", "n")

    def __init__(self, n: int | None) -> None:
        self.n = n
        self.before = 0

    def __enter__(self) -> None:
        if self.n is not None:
            self.before = torch.get_num_threads()
            if self.before != self.n:
                torch.set_num_threads(self.n)

    def __exit__(self, *exc: object) -> None:
        if self.n is not None and self.before != self.n:
            torch.set_num_threads(self.before)


_LEAVE = contextlib.nullcontext()  # what torch.compile traces through (a Threads is opaque to it)


def one_thread_if_small(elements: int) -> contextlib.AbstractContextManager:
    """One thread for an op touching fewer than ``SMALL_OP_ELEMENTS`` elements, else unchanged."""
    if elements >= SMALL_OP_ELEMENTS or torch.compiler.is_compiling():
        return _LEAVE
    return Threads(1)


class ThreadChooser:
    """Threads for each CPU decode step, chosen by timing the candidates as the steps run.

    Which thread count decodes fastest depends on the model *and on what else
    runs on the machine*: on 2 cores with one other busy process, a 270M
    model's steps took twice as long on two threads as on one, while on an idle
    machine two threads were faster. So the chooser measures instead of
    guessing: the first steps run once on each candidate, and again (up to
    ``samples`` times) on those within ``explore_ratio`` of the fastest (a
    clearly slower count is not paid for twice); then every step runs on the
    one with the lowest estimate (median of its last ``window`` step times),
    and now and then one step probes the other so a change of load is
    noticed. The probe interval is set so that probing costs at most
    ``budget`` of the time (a probe on a choice twice as slow costs one step:
    it comes every ``1 / budget`` steps), between ``min_interval`` and
    ``max_interval`` steps. A caller that decodes many times keeps one chooser
    (``core/generate.py`` keeps it on the model), so later calls start from
    what the earlier ones measured.

    Use it as the context of each step (``with chooser: step()``); ``timer``
    can be injected (tests). Under ``torch.compile`` tracing it changes nothing.
    """

    def __init__(
        self,
        candidates: tuple[int, ...],
        *,
        timer: Callable[[], float] = time.perf_counter,
        samples: int = 2,
        explore_ratio: float = 1.5,
        window: int = 3,
        budget: float = 0.03,
        min_interval: int = 8,
        max_interval: int = 256,
    ) -> None:
        self.candidates = tuple(dict.fromkeys(candidates))  # unique, in order
        self.timer = timer
        self.samples = samples
        self.explore_ratio = explore_ratio
        self.budget = budget
        self.min_interval, self.max_interval = min_interval, max_interval
        self.times: dict[int, deque[float]] = {n: deque(maxlen=window) for n in self.candidates}
        self.steps_since_probe = 0
        self.history: list[int] = []  # the count each step ran on (for reports and tests)
        self._running: int | None = None
        self._before = 0
        self._start = 0.0

    def estimate(self, n: int) -> float:
        t = self.times[n]
        return statistics.median(t) if t else math.inf

    def best(self) -> int:
        return min(self.candidates, key=self.estimate)

    def probe_interval(self) -> int:
        """Steps between probes: the slowdown of the slowest other choice over ``budget``."""
        best = self.estimate(self.best())
        worst = max(self.estimate(n) for n in self.candidates)
        if not (best > 0 and math.isfinite(worst)):
            return self.min_interval
        steps = math.ceil((worst / best - 1) / self.budget)
        return max(self.min_interval, min(self.max_interval, steps))

    def next_threads(self) -> int:
        """The count the next step should run on."""
        unsampled = [n for n in self.candidates if not self.times[n]]
        if unsampled:  # exploring: one step on each candidate first, in order
            return unsampled[0]
        best = self.best()
        limit = self.estimate(best) * self.explore_ratio
        close = [
            n
            for n in self.candidates
            if len(self.times[n]) < self.samples and self.estimate(n) <= limit
        ]
        if close:  # a second look only at candidates close to the best: a clearly slower one
            return min(close, key=lambda n: len(self.times[n]))  # waits for the probes

        if len(self.candidates) > 1 and self.steps_since_probe >= self.probe_interval():
            self.steps_since_probe = 0
            others = [n for n in self.candidates if n != best]
            return min(others, key=lambda n: self.times[n][-1] if self.times[n] else -1.0)
        self.steps_since_probe += 1
        return best

    def preferred(self) -> int | None:
        """The count with the lowest estimate once every candidate has been timed, else None."""
        if not all(self.times[n] for n in self.candidates):
            return None
        return self.best()

    def record(self, n: int, seconds: float) -> None:
        self.times[n].append(seconds)
        if len(self.history) >= HISTORY_STEPS:  # a chooser kept for a session stays small
            del self.history[: HISTORY_STEPS // 2]
        self.history.append(n)

    def __enter__(self) -> None:
        if torch.compiler.is_compiling():
            return
        n = self.next_threads()
        self._before = torch.get_num_threads()
        if n != self._before:
            torch.set_num_threads(n)
        self._running = n
        self._start = self.timer()

    def __exit__(self, *exc: object) -> None:
        if self._running is None:
            return
        elapsed = self.timer() - self._start
        if self._running != self._before:
            torch.set_num_threads(self._before)
        if exc[0] is None:
            self.record(self._running, elapsed)
        self._running = None


def prefill_threads(steps: Threads | ThreadChooser) -> Threads:
    """The thread context of a prefill: the fixed count, or the one the chooser prefers now
    (torch's count until it has timed every candidate)."""
    if isinstance(steps, ThreadChooser):
        return Threads(steps.preferred())
    return steps  # the steps' own context: entered and left once per step, never nested


_CHOOSER = "_portagpt_thread_chooser"  # where a model keeps its ThreadChooser


def decode_threads(
    model: nn.Module, device: torch.device, fixed: int | None
) -> Threads | ThreadChooser:
    """The thread context of each one-token step: ``fixed`` when set (or off CPU, or torch on
    one thread); else a :class:`ThreadChooser` timing torch's count against one thread, kept
    on the model (not in its state) so later calls start from what earlier ones measured."""
    n = torch.get_num_threads()
    if fixed is not None or device.type != "cpu" or n < 2:
        return Threads(fixed)
    chooser = model.__dict__.get(_CHOOSER)
    if not isinstance(chooser, ThreadChooser) or chooser.candidates != (n, 1):
        chooser = ThreadChooser((n, 1))
        model.__dict__[_CHOOSER] = chooser
    return chooser

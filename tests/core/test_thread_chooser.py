"""ThreadChooser: explores, keeps the faster count, probes within its budget, follows load."""

from __future__ import annotations

import torch

from portagpt.core.threads import ThreadChooser


class FakeClock:
    """A timer whose steps take ``cost[n]`` seconds on ``n`` threads (set by the test)."""

    def __init__(self, cost: dict[int, float]) -> None:
        self.now = 0.0
        self.cost = cost

    def __call__(self) -> float:
        return self.now


def run(chooser: ThreadChooser, clock: FakeClock, steps: int) -> list[int]:
    start = len(chooser.history)
    for _ in range(steps):
        with chooser:
            clock.now += clock.cost[torch.get_num_threads()]
    return chooser.history[start:]


def test_chooser_explores_both_then_keeps_the_faster():
    clock = FakeClock({2: 2.0, 1: 1.0})
    chooser = ThreadChooser((2, 1), timer=clock)
    used = run(chooser, clock, 12)
    assert used[:4] == [2, 1, 2, 1]  # two samples each, alternating
    assert used[4:] == [1] * 8  # then the faster, no probe yet (interval 20 at 2x)


def test_chooser_restores_torch_thread_count_after_each_step():
    before = torch.get_num_threads()
    clock = FakeClock({2: 1.0, 1: 1.0, before: 1.0})
    chooser = ThreadChooser((2, 1), timer=clock)
    run(chooser, clock, 5)
    assert torch.get_num_threads() == before


def test_chooser_probe_cost_stays_within_budget():
    clock = FakeClock({2: 9.0, 1: 1.0})  # the other choice 9x slower: probes must be rare
    chooser = ThreadChooser((2, 1), timer=clock, budget=0.05, max_interval=1000)
    used = run(chooser, clock, 2000)
    total = sum(clock.cost[n] for n in used[4:])
    best = len(used[4:]) * 1.0
    assert total / best <= 1.05 + 1e-9
    assert used.count(2) > 2  # it still probes


def test_chooser_switches_when_the_machine_gets_busy_and_back():
    clock = FakeClock({2: 1.0, 1: 1.6})  # idle: two threads win
    chooser = ThreadChooser((2, 1), timer=clock)
    assert run(chooser, clock, 30)[-10:].count(2) >= 9
    clock.cost = {2: 3.2, 1: 1.7}  # a busy neighbour: two threads stall
    after = run(chooser, clock, 40)
    assert after[5:20] == [1] * 15  # within a few steps
    assert after[-20:].count(1) >= 18  # a probe of two threads every ~18 steps (5 % budget)
    clock.cost = {2: 1.0, 1: 1.6}  # idle again: probes notice
    back = run(chooser, clock, 200)
    assert back[-20:].count(2) >= 18


def test_chooser_with_one_candidate_never_probes():
    clock = FakeClock({3: 1.0})
    chooser = ThreadChooser((3, 3), timer=clock)
    assert run(chooser, clock, 50) == [3] * 50

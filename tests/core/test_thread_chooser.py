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
    assert used[:2] == [2, 1]  # one step on each
    assert used[2:] == [1] * 10  # then the faster; 2x slower is not sampled twice, no probe yet


def test_chooser_samples_close_candidates_twice():
    clock = FakeClock({2: 1.0, 1: 1.2})
    chooser = ThreadChooser((2, 1), timer=clock)
    used = run(chooser, clock, 8)
    assert used[:4] == [2, 1, 2, 1]
    assert used[4:] == [2] * 4


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
    assert used[:3] == [2, 1, 1]  # the 9x slower count is tried once, not twice
    total = sum(clock.cost[n] for n in used[2:])
    best = len(used[2:]) * 1.0
    assert total / best <= 1.05 + 1e-9
    assert used.count(2) > 2  # it still probes


def test_chooser_switches_when_the_machine_gets_busy_and_back():
    clock = FakeClock({2: 1.0, 1: 1.6})  # idle: two threads win
    chooser = ThreadChooser((2, 1), timer=clock)
    assert run(chooser, clock, 30)[-10:].count(2) >= 9
    clock.cost = {2: 3.2, 1: 1.7}  # a busy neighbour: two threads stall
    after = run(chooser, clock, 40)
    assert after[3:19] == [1] * 16  # within a few steps
    assert after[-20:].count(1) >= 19  # a probe of two threads every ~30 steps (3 % budget)
    clock.cost = {2: 1.0, 1: 1.6}  # idle again: probes notice
    back = run(chooser, clock, 200)
    assert back[-20:].count(2) >= 18


def test_chooser_with_one_candidate_never_probes():
    clock = FakeClock({3: 1.0})
    chooser = ThreadChooser((3, 3), timer=clock)
    assert run(chooser, clock, 50) == [3] * 50


def test_generate_keeps_one_chooser_on_a_model_across_calls():
    from dataclasses import replace

    from portagpt.core.generate import generate
    from portagpt.registry import get_family

    family = get_family("gpt2")
    cfg = replace(family.smoke_config, vocab_size=8192, emb_dim=512, n_heads=4, context_length=32)
    torch.manual_seed(0)
    model = family.build_model(cfg)  # ~19 MiB of weights: past the one-thread size rule
    model.init_weights()
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        first = generate(model, [1, 2, 3], max_new_tokens=4).new_ids
        chooser = model.__dict__["_portagpt_thread_chooser"]
        assert len(chooser.history) == 3  # the prefill step is not timed
        again = generate(model, [1, 2, 3], max_new_tokens=4).new_ids
        assert model.__dict__["_portagpt_thread_chooser"] is chooser
        assert len(chooser.history) == 6
        assert again == first
        assert "_portagpt_thread_chooser" not in model.state_dict()
    finally:
        torch.set_num_threads(before)


def test_prefill_runs_on_the_count_the_chooser_prefers_once_it_has_timed_both():
    from portagpt.core.threads import Threads, prefill_threads

    clock = FakeClock({2: 4.0, 1: 1.0})  # a busy machine: two threads 4x slower
    chooser = ThreadChooser((2, 1), timer=clock)
    assert chooser.preferred() is None
    assert prefill_threads(chooser).n is None  # before any timing: torch's own count
    run(chooser, clock, 1)
    assert chooser.preferred() is None  # one candidate timed is not a preference
    run(chooser, clock, 1)
    assert chooser.preferred() == 1
    assert prefill_threads(chooser).n == 1
    assert prefill_threads(Threads(3)).n == 3  # a fixed count is kept
    assert prefill_threads(Threads(None)).n is None

"""Generation under hostile settings: NaN logits, vanishing temperatures, huge lengths, thread counts."""

from __future__ import annotations

import os
import time

import pytest
import torch

from portagpt.core.generate import generate, next_token, stream
from portagpt.errors import NonFiniteError, UsageError
from portagpt.families.gpt2.config import GPT2Config
from portagpt.families.gpt2.model import GPT2Model

PROMPT = [3, 14, 15, 9]


@pytest.fixture(scope="module")
def model() -> GPT2Model:
    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=61, context_length=16, emb_dim=32, n_heads=4, n_layers=1)
    m = GPT2Model(cfg)
    m.init_weights()
    with torch.no_grad():
        for p in m.parameters():
            p.mul_(4)
    return m.eval()


def test_generating_past_the_first_buffer_matches_the_no_cache_path(model: GPT2Model) -> None:
    with_cache = generate(model, PROMPT, max_new_tokens=300, threads=1)
    assert len(with_cache.new_ids[0]) == 300  # the ids buffer grew past its first 256 slots
    assert with_cache.new_ids == generate(model, PROMPT, max_new_tokens=300, use_cache=False, threads=1).new_ids


def test_a_huge_max_new_tokens_allocates_nothing_up_front(model: GPT2Model) -> None:
    t0 = time.perf_counter()
    gen = stream(model, PROMPT, max_new_tokens=10**12, threads=1)
    first = [next(gen) for _ in range(3)]
    gen.close()
    assert len(first) == 3 and time.perf_counter() - t0 < 5


def test_non_finite_logits_are_an_error_naming_the_step(model: GPT2Model) -> None:
    broken = GPT2Model(model.config)
    broken.load_state_dict(model.state_dict())
    with torch.no_grad():
        next(p for n, p in broken.named_parameters() if "norm" in n).fill_(float("nan"))
    with pytest.raises(NonFiniteError, match="step 0"):
        generate(broken.eval(), PROMPT, max_new_tokens=3, threads=1)


@pytest.mark.parametrize("temperature", [1e-45, 1e-30, 5e-324])
def test_a_vanishing_temperature_picks_the_greedy_token_never_nan(temperature: float) -> None:
    logits = torch.tensor([[2.0, 9.5, -3.0, 9.0], [100.0, -100.0, 0.0, 99.0]])
    gen = torch.Generator().manual_seed(0)
    for _ in range(20):
        assert next_token(logits, temperature, generator=gen).tolist() == [1, 0]


@pytest.mark.parametrize("value", [float("inf"), float("nan"), -1.0])
def test_a_temperature_that_is_not_a_finite_non_negative_number_is_refused(model: GPT2Model, value: float) -> None:
    with pytest.raises(UsageError, match="temperature"):
        generate(model, PROMPT, max_new_tokens=2, temperature=value)


def test_more_threads_than_cores_is_refused(model: GPT2Model) -> None:
    with pytest.raises(UsageError, match="CPU cores"):
        generate(model, PROMPT, max_new_tokens=2, threads=(os.cpu_count() or 1) * 1000)

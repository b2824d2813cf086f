"""The generation harness: greedy/sampling rules, cache == no cache, batching, stops, streaming."""

from __future__ import annotations

import math
from collections.abc import Iterator

import pytest
import torch

from portagpt.core.cache import LayerSpec
from portagpt.core.generate import (
    GenerationResult,
    cpu_compiler_available,
    generate,
    min_p_filter,
    next_token,
    stream,
    top_k_filter,
    top_p_filter,
)
from portagpt.errors import UsageError
from portagpt.families.gpt2.config import GPT2Config
from portagpt.families.gpt2.model import GPT2Model

VOCAB, CONTEXT = 61, 24
PROMPTS = [[3, 14, 15, 9, 26, 5, 35, 8], [42, 17]]  # lengths 8 and 2: left padding by 6


def _model(windows: list[int | None], seed: int = 0) -> GPT2Model:
    torch.manual_seed(seed)
    cfg = GPT2Config(
        vocab_size=VOCAB,
        context_length=CONTEXT,
        emb_dim=32,
        n_heads=4,
        n_layers=len(windows),
        tie_word_embeddings=False,
    )
    model = GPT2Model(cfg)
    model.init_weights()
    with torch.no_grad():  # larger weights: peaked, varied next-token distributions
        for p in model.parameters():
            p.mul_(4)
    model.layer_specs = [LayerSpec(4, 8, w) for w in windows]
    return model


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    """Tiny models gain nothing from intra-op threads, and on a busy 2-core machine spinning
    OpenMP workers make them ~100x slower; run this module single-threaded."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


FULL = [None, None]
SLIDING = [5, None, 3]  # two sliding layers (windows 5 and 3) around a full one


@pytest.fixture(scope="module", params=[FULL, SLIDING], ids=["full", "sliding"])
def model(request: pytest.FixtureRequest) -> GPT2Model:
    return _model(request.param)


# ---- greedy and sampling rules -------------------------------------------------------
def test_top_k_one_and_tiny_temperature_sample_the_greedy_ids(model: GPT2Model) -> None:
    greedy = generate(model, PROMPTS[0], max_new_tokens=12).new_ids
    assert (
        generate(model, PROMPTS[0], max_new_tokens=12, temperature=1.5, top_k=1, seed=3).new_ids
        == greedy
    )
    assert (
        generate(model, PROMPTS[0], max_new_tokens=12, temperature=1e-4, seed=4).new_ids == greedy
    )
    assert generate(model, PROMPTS[0], max_new_tokens=12, temperature=1.0, seed=5).new_ids != greedy


def test_same_seed_gives_the_same_ids_and_other_seeds_differ(model: GPT2Model) -> None:
    def run(seed: int) -> list[int]:
        return generate(model, PROMPTS[0], max_new_tokens=16, temperature=1.0, seed=seed).new_ids[0]

    assert run(7) == run(7)
    assert len({tuple(run(s)) for s in range(4)}) > 1


def test_seed_none_draws_from_torch_global_rng(model: GPT2Model) -> None:
    torch.manual_seed(11)
    a = generate(model, PROMPTS[0], max_new_tokens=10, temperature=1.0).new_ids
    torch.manual_seed(11)
    b = generate(model, PROMPTS[0], max_new_tokens=10, temperature=1.0).new_ids
    assert a == b


# ---- cache == no cache ------------------------------------------------------------------
@pytest.mark.parametrize(
    "options",
    [
        {},
        {"temperature": 1.0, "seed": 1},
        {"temperature": 0.8, "top_k": 20, "top_p": 0.9, "min_p": 0.02, "seed": 2},
    ],
    ids=["greedy", "sampled", "filtered"],
)
def test_cache_gives_the_same_ids_as_recomputing_past_windows_and_context(
    model: GPT2Model, options: dict
) -> None:
    # 8 prompt + 30 new = 38 > context 24: crosses both sliding windows and the context crop
    kw = {"max_new_tokens": 30, **options}
    cached = generate(model, PROMPTS[0], **kw)
    recomputed = generate(model, PROMPTS[0], use_cache=False, **kw)
    assert len(cached.new_ids[0]) == 30
    assert cached.new_ids == recomputed.new_ids


def test_shorter_context_length_crops_the_context_the_same_with_and_without_cache(
    model: GPT2Model,
) -> None:
    full = generate(model, PROMPTS[0], max_new_tokens=20)
    cropped = generate(model, PROMPTS[0], max_new_tokens=20, context_length=10)
    assert (
        cropped.new_ids
        == generate(
            model, PROMPTS[0], max_new_tokens=20, context_length=10, use_cache=False
        ).new_ids
    )
    assert cropped.new_ids[0][:2] == full.new_ids[0][:2]  # 8 + 2 tokens fit in 10: identical so far
    assert cropped.new_ids != full.new_ids


def test_prompt_longer_than_the_context_is_cropped_to_its_last_tokens(model: GPT2Model) -> None:
    long_prompt = [(7 * i) % VOCAB for i in range(CONTEXT + 9)]
    out = generate(model, long_prompt, max_new_tokens=3)
    assert out.new_ids == generate(model, long_prompt[-CONTEXT:], max_new_tokens=3).new_ids
    assert out.new_ids == generate(model, long_prompt, max_new_tokens=3, use_cache=False).new_ids


# ---- batches ------------------------------------------------------------------------------
@pytest.mark.parametrize("use_cache", [True, False], ids=["cache", "no-cache"])
def test_left_padded_batch_gives_each_row_its_single_prompt_ids(
    model: GPT2Model, use_cache: bool
) -> None:
    batch = generate(model, PROMPTS, max_new_tokens=25, use_cache=use_cache)  # 8 + 25 > 24 too
    singles = [generate(model, p, max_new_tokens=25).new_ids[0] for p in PROMPTS]
    assert batch.new_ids == singles
    assert batch.prompt_ids == PROMPTS


def test_tensor_prompt_with_left_padding_mask_equals_list_prompts(model: GPT2Model) -> None:
    ids = torch.tensor([PROMPTS[0], [0] * 6 + PROMPTS[1]])
    mask = torch.tensor([[1] * 8, [0] * 6 + [1] * 2])
    out = generate(model, ids, attention_mask=mask, max_new_tokens=6)
    assert out.new_ids == generate(model, PROMPTS, max_new_tokens=6).new_ids
    assert out.prompt_ids == PROMPTS
    with pytest.raises(UsageError, match="left padding"):
        generate(model, ids, attention_mask=mask.flip(1), max_new_tokens=2)


# ---- stop tokens ------------------------------------------------------------------------------
def test_stop_tokens_end_each_row_on_its_own_and_are_not_returned(model: GPT2Model) -> None:
    free = generate(model, PROMPTS, max_new_tokens=20).new_ids
    stop = free[0][4]  # row 0 meets it at step <= 4
    cut0 = free[0].index(stop)
    cut1 = free[1].index(stop) if stop in free[1] else len(free[1])
    out = generate(model, PROMPTS, max_new_tokens=20, stop_token_ids=[stop], pad_token_id=0)
    assert out.new_ids == [free[0][:cut0], free[1][:cut1]]
    assert out.stopped == [True, cut1 < 20]
    assert stop not in out.new_ids[0] + out.new_ids[1]


def test_generation_ends_once_every_row_has_stopped(model: GPT2Model) -> None:
    free = generate(model, PROMPTS, max_new_tokens=20).new_ids
    stops = [free[0][2], free[1][1]]
    first_stop = [min(row.index(s) for s in stops if s in row) for row in free]
    steps = list(stream(model, PROMPTS, max_new_tokens=20, stop_token_ids=stops, pad_token_id=-1))
    assert len(steps) == max(first_stop) + 1 < 20
    assert steps[-1].tolist() == [-1, -1]  # finished rows emit the pad id


def test_finished_row_emits_pad_while_the_other_continues(model: GPT2Model) -> None:
    free = generate(model, PROMPTS, max_new_tokens=12).new_ids
    stop, at = next(
        (t, i) for i, t in enumerate(free[1]) if t not in free[0]
    )  # only row 1 meets it
    steps = torch.stack(
        list(stream(model, PROMPTS, max_new_tokens=12, stop_token_ids=[stop], pad_token_id=-1))
    )
    assert steps.shape == (12, 2)
    assert steps[:at, 1].tolist() == free[1][:at]
    assert steps[at:, 1].tolist() == [-1] * (12 - at)
    assert steps[:, 0].tolist() == free[0]


# ---- filters on hand-made logits ------------------------------------------------------------
# probabilities 0.5, 0.3, 0.15, 0.05 placed out of order in the vocabulary
PROBS = torch.tensor([[0.15, 0.5, 0.05, 0.3]])
LOGITS = PROBS.log()


def _kept(filtered: torch.Tensor) -> list[int]:
    return torch.isfinite(filtered[0]).nonzero().flatten().tolist()


@pytest.mark.parametrize(
    ("p", "kept"),
    [
        (0.01, [1]),
        (0.45, [1]),
        (0.7, [1, 3]),
        (0.85, [0, 1, 3]),
        (0.97, [0, 1, 2, 3]),
        (1.0, [0, 1, 2, 3]),
    ],
)
def test_top_p_keeps_the_smallest_set_reaching_p(p: float, kept: list[int]) -> None:
    assert _kept(top_p_filter(LOGITS, p)) == kept


@pytest.mark.parametrize(
    ("min_p", "kept"), [(0.0, [0, 1, 2, 3]), (0.2, [0, 1, 3]), (0.5, [1, 3]), (0.9, [1])]
)
def test_min_p_keeps_tokens_at_least_min_p_times_the_top_probability(
    min_p: float, kept: list[int]
) -> None:
    assert _kept(min_p_filter(LOGITS, min_p)) == kept


def test_top_k_keeps_the_k_largest_and_ties_with_the_kth() -> None:
    assert _kept(top_k_filter(LOGITS, 2)) == [1, 3]
    assert _kept(top_k_filter(LOGITS, 10)) == [0, 1, 2, 3]
    tied = torch.tensor([[1.0, 3.0, 2.0, 2.0]])
    assert _kept(top_k_filter(tied, 2)) == [1, 2, 3]


def test_filters_work_row_by_row() -> None:
    logits = torch.cat([LOGITS, LOGITS.flip(1)])
    assert torch.isfinite(top_p_filter(logits, 0.7)).tolist() == [
        [False, True, False, True],
        [True, False, True, False],
    ]


def test_sampling_follows_the_filtered_distribution() -> None:
    gen = torch.Generator().manual_seed(0)
    logits = LOGITS.expand(20000, -1)
    draws = next_token(logits, temperature=1.0, top_p=0.7, generator=gen)
    counts = torch.bincount(draws, minlength=4).float() / len(draws)
    assert counts[0] == 0 and counts[2] == 0  # filtered out
    assert math.isclose(counts[1].item(), 0.5 / 0.8, abs_tol=0.02)  # renormalised 0.625 / 0.375
    unfiltered = (
        torch.bincount(next_token(logits, temperature=1.0, generator=gen), minlength=4).float()
        / 20000
    )
    torch.testing.assert_close(unfiltered, PROBS[0], atol=0.015, rtol=0)


def test_temperature_flattens_and_sharpens_the_distribution() -> None:
    gen = torch.Generator().manual_seed(0)
    logits = LOGITS.expand(20000, -1)
    hot = (next_token(logits, temperature=3.0, generator=gen) == 1).float().mean().item()
    cold = (next_token(logits, temperature=0.3, generator=gen) == 1).float().mean().item()
    assert hot < 0.5 < cold


# ---- streaming, results, modes --------------------------------------------------------------
def test_streaming_yields_the_ids_of_the_plain_call(model: GPT2Model) -> None:
    options = {"max_new_tokens": 15, "temperature": 1.0, "seed": 9}
    plain = generate(model, PROMPTS[0], **options)
    streamed = list(stream(model, PROMPTS[0], **options))
    assert all(isinstance(t, int) for t in streamed)
    assert streamed == plain.new_ids[0]

    stop = plain.new_ids[0][6]
    seen: list[int] = []
    stopped = generate(model, PROMPTS[0], stop_token_ids=stop, callback=seen.append, **options)
    assert seen == stopped.new_ids[0] == plain.new_ids[0][: plain.new_ids[0].index(stop)]


def test_stream_returns_the_result_and_batches_yield_step_tensors(model: GPT2Model) -> None:
    def collect() -> GenerationResult:
        result = yield from stream(model, PROMPTS, max_new_tokens=7)
        return result

    gen = collect()
    steps = []
    try:
        while True:
            steps.append(next(gen))
    except StopIteration as done:
        result = done.value
    assert all(s.shape == (2,) and not s.is_inference() for s in steps)
    assert torch.stack(steps).T.tolist() == result.new_ids
    assert result.tokens_per_second == pytest.approx(14 / result.seconds)


def test_generation_restores_training_mode_and_leaves_grad_mode_alone(model: GPT2Model) -> None:
    model.train()
    gen = stream(model, PROMPTS[0], max_new_tokens=3)
    next(gen)
    assert torch.is_grad_enabled() and not torch.is_inference_mode_enabled()  # between yields
    list(gen)
    assert model.training
    model.eval()
    generate(model, PROMPTS[0], max_new_tokens=2)
    assert not model.training


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"max_new_tokens": 0}, "max_new_tokens"),
        ({"max_new_tokens": 3, "temperature": -0.1}, "temperature"),
        ({"max_new_tokens": 3, "top_k": 0}, "top_k"),
        ({"max_new_tokens": 3, "top_p": 0.0}, "top_p"),
        ({"max_new_tokens": 3, "top_p": 1.2}, "top_p"),
        ({"max_new_tokens": 3, "min_p": -1.0}, "min_p"),
        ({"max_new_tokens": 3, "context_length": CONTEXT + 1}, "context_length"),
        ({"max_new_tokens": 3, "threads": 0}, "threads"),
    ],
)
def test_nonsense_options_raise_usage_errors_naming_the_option(kwargs: dict, match: str) -> None:
    with pytest.raises(UsageError, match=match):
        generate(_model(FULL), PROMPTS[0], **kwargs)


def test_empty_or_out_of_vocabulary_prompts_are_refused() -> None:
    model = _model(FULL)
    with pytest.raises(UsageError, match="at least one token"):
        generate(model, [], max_new_tokens=2)
    with pytest.raises(UsageError, match="at least one token"):
        generate(model, [[1, 2], []], max_new_tokens=2)
    with pytest.raises(UsageError, match=r"\[0, 61\)"):
        generate(model, [1, VOCAB], max_new_tokens=2)


# ---- threads ------------------------------------------------------------------------------------
def test_steps_of_a_small_model_run_on_one_thread_and_the_setting_is_restored_between_steps(
    model: GPT2Model,
) -> None:
    seen: list[int] = []
    hook = model.register_forward_pre_hook(lambda *_: seen.append(torch.get_num_threads()))
    torch.set_num_threads(2)
    try:
        gen = stream(model, PROMPTS[0], max_new_tokens=4)
        next(gen)
        assert torch.get_num_threads() == 2  # between yields: the caller's setting
        list(gen)
        assert seen == [1] * 4 and torch.get_num_threads() == 2
        seen.clear()
        generate(model, PROMPTS[0], max_new_tokens=3, threads=2)
        assert seen == [2] * 3
    finally:
        hook.remove()
        torch.set_num_threads(1)


# ---- compiled decode step -------------------------------------------------------------------
def test_compile_without_the_cache_is_refused() -> None:
    with pytest.raises(UsageError, match="compile"):
        generate(_model(FULL), PROMPTS[0], max_new_tokens=2, compile=True, use_cache=False)


def test_compile_without_a_cpp_compiler_is_a_clear_error() -> None:
    import torch._inductor.config as inductor_config

    from portagpt.errors import CompileError

    with inductor_config.patch({"cpp.cxx": ("no-such-c++-compiler-for-portagpt",)}):
        with pytest.raises(CompileError, match="C\\+\\+ compiler"):
            generate(_model(FULL), PROMPTS[0], max_new_tokens=2, compile=True)




@pytest.mark.slow  # compiling takes ~30 s on 2 CPU cores
@pytest.mark.skipif(not cpu_compiler_available(), reason="torch.compile on CPU needs a C++ compiler")
def test_compiled_decode_gives_the_eager_and_uncached_ids_and_compiles_once() -> None:
    from torch._dynamo.utils import counters

    model = _model(SLIDING)  # two sliding rings that wrap, a padded batch, and the context crop
    eager = generate(model, PROMPTS, max_new_tokens=30)
    compiled = generate(model, PROMPTS, max_new_tokens=30, compile=True)
    assert compiled.new_ids == eager.new_ids
    assert compiled.new_ids == generate(model, PROMPTS, max_new_tokens=30, use_cache=False).new_ids
    graphs = counters["stats"]["unique_graphs"]
    again = generate(model, PROMPTS, max_new_tokens=30, compile=True)  # same shapes: reused
    assert counters["stats"]["unique_graphs"] == graphs
    assert again.new_ids == eager.new_ids
    sampled = {"max_new_tokens": 12, "temperature": 1.0, "seed": 3}
    assert (
        generate(model, PROMPTS, compile=True, **sampled).new_ids
        == generate(model, PROMPTS, **sampled).new_ids
    )

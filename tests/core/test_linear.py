"""The decode linear path: row-split GEMV (eager) and fused reduction (compiled) equal F.linear.

The test session runs one torch thread per process (tests/conftest.py), where
the split path is off; these tests switch to two threads and lower the size
floor so tiny weights take it, then compare against ``F.linear`` and, through
every built-in family, against transformers.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from portagpt.core import linear as lin
from portagpt.core.cache import make_cache
from portagpt.core.generate import generate
from portagpt.loaders import load
from portagpt.registry import builtin_families, get_family
from portagpt.smoke_tests.interop import hf_config_object
from portagpt.smoke_tests.reference import hf_greedy, hf_logits, write_hf_checkpoint


@pytest.fixture
def split_on(monkeypatch: pytest.MonkeyPatch):  # noqa: ANN201
    """Two torch threads, no size floor, the split always (no race), a count of split products."""
    monkeypatch.setattr(lin, "SPLIT_MIN_BYTES", 0)
    monkeypatch.setattr(lin, "SPLIT_CHOICE", "always")
    calls = {"n": 0}
    real = lin.split_gemv

    def counting(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        calls["n"] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(lin, "split_gemv", counting)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield calls
    torch.set_num_threads(before)


@pytest.mark.parametrize("out_features", [96, 100, 7])  # divisible, remainder, fewer than blocks
@pytest.mark.parametrize("rows", [1, 2, 4])
def test_split_gemv_equals_f_linear(out_features: int, rows: int) -> None:
    w = torch.randn(out_features, 48)
    x = torch.randn(rows, 48)
    got = lin.split_gemv(x, w, 8)
    assert got.shape == (rows, out_features)
    torch.testing.assert_close(got, F.linear(x, w), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape", [(1, 1, 64), (2, 1, 64), (1, 3, 64), (64,)])
def test_linear_takes_the_split_path_for_few_rows_and_matches(split_on, shape) -> None:  # noqa: ANN001
    layer = lin.Linear(64, 200)
    x = torch.randn(shape)
    with torch.inference_mode():
        got = layer(x)
    assert split_on["n"] == 1
    torch.testing.assert_close(got, F.linear(x, layer.weight, layer.bias), rtol=1e-5, atol=1e-5)


def test_linear_keeps_f_linear_for_many_rows_autograd_and_one_thread(split_on) -> None:  # noqa: ANN001
    layer = lin.Linear(64, 200)
    with torch.inference_mode():
        layer(torch.randn(1, 8, 64))  # prefill-sized: MKL's GEMM threads itself
    x = torch.randn(1, 1, 64, requires_grad=True)
    layer(x).sum().backward()  # training: plain F.linear, gradients as usual
    assert layer.weight.grad is not None and x.grad is not None
    torch.set_num_threads(1)
    with torch.inference_mode():
        layer(torch.randn(1, 1, 64))
    assert split_on["n"] == 0


def test_linear_is_an_nn_linear_with_the_same_state_dict() -> None:
    layer = lin.Linear(8, 4)
    assert isinstance(layer, torch.nn.Linear)
    assert set(layer.state_dict()) == {"weight", "bias"}


def test_compiled_linear_uses_the_fused_reduction_and_matches(split_on) -> None:  # noqa: ANN001
    pytest.importorskip("torch._inductor")
    layer = lin.Linear(64, 96)
    x = torch.randn(1, 1, 64)
    compiled = torch.compile(layer, dynamic=False)
    try:
        with torch.inference_mode():
            got = compiled(x)
    except Exception as exc:  # noqa: BLE001 - no C++ toolchain: nothing to check here
        pytest.skip(f"torch.compile unavailable: {type(exc).__name__}")
    assert split_on["n"] == 0  # the compiled graph writes the product as a reduction instead
    torch.testing.assert_close(got, F.linear(x, layer.weight, layer.bias), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("family", builtin_families())
def test_every_family_decodes_like_transformers_on_the_split_path(family: str, split_on, tmp_path) -> None:  # noqa: ANN001
    fam = get_family(family)
    hf = write_hf_checkpoint(hf_config_object(fam.config_to_hf(fam.smoke_config)), tmp_path, seed=5)
    model, _ = load(tmp_path, tokenizer=False)
    vocab = fam.smoke_config.vocab_size
    prompt = torch.randint(0, vocab, (1, 10))
    ours = generate(model, prompt, max_new_tokens=20, threads=2).new_ids[0]
    assert split_on["n"] > 0
    assert ours == hf_greedy(hf, prompt, 20)[0].tolist()
    # one decode step's logits against transformers' full forward over the same ids
    ids = torch.tensor([prompt[0].tolist() + ours])
    with torch.inference_mode():
        cache = make_cache(model.layer_specs, 1, ids.shape[1], torch.float32, torch.device("cpu"))
        model(ids[:, :-1], cache=cache)
        step = model(ids[:, -1:], cache=cache, logits_to_keep=1)[0, -1]
    assert (step - hf_logits(hf, ids)[0, -1]).abs().max().item() <= 1e-4


def test_linear_races_the_two_products_then_keeps_the_faster(monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setattr(lin, "SPLIT_MIN_BYTES", 0)
    monkeypatch.setattr(lin, "_RACES", {})
    clock = {"now": 0.0}  # a fake clock: each F.linear call takes 5 s, each split 1 s

    def fake_counter() -> float:
        return clock["now"]

    real_split, real_linear = lin.split_gemv, F.linear
    used: list[str] = []

    def split(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        used.append("split")
        clock["now"] += 1.0
        return real_split(*args, **kwargs)

    def plain(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        used.append("linear")
        clock["now"] += 5.0
        return real_linear(*args, **kwargs)

    monkeypatch.setattr(lin, "split_gemv", split)
    monkeypatch.setattr(lin.F, "linear", plain)
    monkeypatch.setattr(lin.time, "perf_counter", fake_counter)
    layer = lin.Linear(64, 200)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with torch.inference_mode():
            outs = [layer(torch.ones(1, 1, 64)) for _ in range(10)]
    finally:
        torch.set_num_threads(before)
    assert used[:6] == ["linear", "split"] * 3  # SPLIT_TRIALS each, alternating
    assert used[6:] == ["split"] * 4  # then the faster
    for out in outs:
        torch.testing.assert_close(out, outs[0], rtol=1e-5, atol=1e-5)

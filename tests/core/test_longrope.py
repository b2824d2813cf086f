"""LongRoPE past the original context: logits and cached greedy decoding against transformers.

A tiny transformers ``LlamaForCausalLM`` with ``rope_type: longrope`` is the
checkpoint (loaded through ``portagpt.load`` into the built-in llama family).
Past ``original_max_position_embeddings`` transformers switches every position
to the long factors, so keys cached before the switch are stale. transformers'
Phi-3 generation drops its cache at that moment and prefills again; the same
weights in a ``Phi3ForCausalLM`` (fused qkv / gate_up) are therefore the
reference for cached decoding, and transformers' uncached Llama decoding the
reference for what the ids must be.
"""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, Phi3Config, Phi3ForCausalLM

from portagpt.core.generate import cpu_compiler_available, generate, reprefill_points
from portagpt.loaders import load
from portagpt.smoke_tests.reference import hf_greedy, hf_logits, write_hf_checkpoint

ORIGINAL = 16  # original_max_position_embeddings: the crossing point
HEAD_DIM = 16
SIZES = dict(
    vocab_size=256,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=64,
    rms_norm_eps=1e-5,
)
ROPE = {
    "rope_type": "longrope",
    "rope_theta": 10000.0,
    "short_factor": [1.0 + 0.1 * i for i in range(HEAD_DIM // 2)],
    "long_factor": [1.0 + 1.5 * i for i in range(HEAD_DIM // 2)],
    "original_max_position_embeddings": ORIGINAL,
}
PROMPT, NEW = 10, 20  # prompt + new crosses the original context at the 7th new token


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """(transformers Llama, the same weights as a transformers Phi-3, our loaded model)."""
    folder = tmp_path_factory.mktemp("longrope")
    hf = write_hf_checkpoint(LlamaConfig(**SIZES, rope_parameters=dict(ROPE)), folder, scale=0.5)
    model, _ = load(folder, tokenizer=False)
    return hf, _as_phi3(hf), model


def _as_phi3(llama: torch.nn.Module) -> torch.nn.Module:
    """The Llama weights in a transformers Phi-3 (whose generate re-prefills at the crossing)."""
    cfg = Phi3Config(
        **SIZES,
        rope_parameters=dict(ROPE),
        original_max_position_embeddings=ORIGINAL,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        tie_word_embeddings=False,
    )
    phi3 = Phi3ForCausalLM(cfg).eval()
    src = llama.state_dict()
    dst: dict[str, torch.Tensor] = {}
    for name in phi3.state_dict():
        if name.endswith("qkv_proj.weight"):
            base = name.removesuffix("qkv_proj.weight")
            dst[name] = torch.cat([src[f"{base}{p}_proj.weight"] for p in "qkv"])
        elif name.endswith("gate_up_proj.weight"):
            base = name.removesuffix("gate_up_proj.weight")
            dst[name] = torch.cat([src[f"{base}{p}_proj.weight"] for p in ("gate", "up")])
        else:
            dst[name] = src[name]
    phi3.load_state_dict(dst)
    return phi3


def _ids(seed: int, shape: tuple[int, int]) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, SIZES["vocab_size"], shape, generator=gen)


def test_logits_match_transformers_before_and_past_the_original_context(checkpoint):
    hf, phi3, model = checkpoint
    for length in (ORIGINAL - 4, ORIGINAL, ORIGINAL + 1, 3 * ORIGINAL):
        ids = _ids(length, (2, length))
        with torch.no_grad():
            ours = model(ids)
        torch.testing.assert_close(ours, hf_logits(hf, ids), atol=1e-4, rtol=0)
        torch.testing.assert_close(ours, hf_logits(phi3, ids), atol=1e-4, rtol=0)


def test_model_declares_the_original_context_as_its_reprefill_point(checkpoint):
    _, _, model = checkpoint
    assert reprefill_points(model) == (ORIGINAL,)


def test_cached_greedy_decode_matches_transformers_across_the_crossing(checkpoint):
    hf, phi3, model = checkpoint
    prompt = _ids(7, (1, PROMPT))
    reference = hf_greedy(phi3, prompt, NEW, use_cache=True)[0].tolist()
    assert reference == hf_greedy(hf, prompt, NEW, use_cache=False)[0].tolist()
    assert generate(model, prompt, max_new_tokens=NEW).new_ids == [reference]
    assert generate(model, prompt, max_new_tokens=NEW, use_cache=False).new_ids == [reference]


def test_keys_cached_before_the_crossing_would_change_the_ids(checkpoint):
    """What the re-prefill prevents: transformers' Llama keeps its stale cache and diverges."""
    hf, phi3, _ = checkpoint
    prompt = _ids(7, (1, PROMPT))
    stale = hf_greedy(hf, prompt, NEW, use_cache=True)[0].tolist()
    assert stale != hf_greedy(phi3, prompt, NEW, use_cache=True)[0].tolist()


def test_left_padded_batch_crossing_matches_single_prompts(checkpoint):
    _, _, model = checkpoint
    prompts = [_ids(8, (1, PROMPT))[0].tolist(), _ids(9, (1, PROMPT - 3))[0].tolist()]
    batch = generate(model, prompts, max_new_tokens=NEW).new_ids
    uncached = generate(model, prompts, max_new_tokens=NEW, use_cache=False).new_ids
    assert batch == uncached
    assert batch[0] == generate(model, [prompts[0]], max_new_tokens=NEW).new_ids[0]


def test_prompt_longer_than_the_original_context_needs_no_reprefill(checkpoint):
    hf, phi3, model = checkpoint
    prompt = _ids(10, (1, ORIGINAL + 3))
    reference = hf_greedy(phi3, prompt, 8, use_cache=True)[0].tolist()
    assert generate(model, prompt, max_new_tokens=8).new_ids == [reference]




@pytest.mark.slow  # compiling takes ~30 s on 2 CPU cores
@pytest.mark.skipif(not cpu_compiler_available(), reason="torch.compile on CPU needs a C++ compiler")
def test_compiled_decode_reprefills_at_the_crossing_too(checkpoint):
    hf, phi3, model = checkpoint
    prompt = _ids(7, (1, PROMPT))
    reference = hf_greedy(phi3, prompt, NEW, use_cache=True)[0].tolist()
    assert generate(model, prompt, max_new_tokens=NEW, compile=True).new_ids == [reference]

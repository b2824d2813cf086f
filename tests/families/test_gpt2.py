"""GPT-2 family: parity with transformers' GPT2LMHeadModel, the offline tokenizer, real-size names.

Checkpoints are written by transformers itself (tiny, every tensor perturbed)
and loaded through ``portagpt.load``; decoding goes through the shared
generation harness, with and without the KV cache.
"""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM
from transformers import GPT2Config as HFGPT2Config

from portagpt.adapters import bundled_bpe
from portagpt.core.generate import generate
from portagpt.families.gpt2.plugin import FAMILY
from portagpt.loaders import load
from portagpt.smoke_tests.reference import hf_greedy, hf_logits, write_hf_checkpoint

NEW_TOKENS = 40
VARIANTS = {
    "tied": dict(tie_word_embeddings=True),
    "untied": dict(tie_word_embeddings=False),
    "n_inner": dict(n_inner=48, activation_function="gelu"),
}


@pytest.fixture(scope="module", params=list(VARIANTS))
def pair(request, tmp_path_factory):  # noqa: ANN001, ANN201
    cfg = HFGPT2Config(
        vocab_size=128, n_positions=96, n_embd=32, n_layer=2, n_head=4,
        bos_token_id=0, eos_token_id=0, **VARIANTS[request.param],
    )
    folder = tmp_path_factory.mktemp(f"gpt2-{request.param}")
    hf = write_hf_checkpoint(cfg, folder, seed=3)
    model, _ = load(folder)
    return hf, model


def test_logits_match_transformers_in_fp32(pair) -> None:  # noqa: ANN001
    hf, model = pair
    ids = torch.randint(0, 128, (2, 24))
    with torch.no_grad():
        diff = (model(ids) - hf_logits(hf, ids)).abs().max().item()
    assert diff <= 1e-4


@pytest.mark.parametrize("use_cache", [True, False], ids=["cache", "no-cache"])
def test_greedy_decoding_equals_transformers(pair, use_cache: bool) -> None:  # noqa: ANN001
    hf, model = pair
    prompt = torch.randint(0, 128, (1, 12))
    ours = generate(model, prompt, max_new_tokens=NEW_TOKENS, use_cache=use_cache).new_ids[0]
    assert ours == hf_greedy(hf, prompt, NEW_TOKENS)[0].tolist()


def test_left_padded_batch_matches_transformers_with_a_mask(pair) -> None:  # noqa: ANN001
    hf, model = pair
    ids = torch.randint(1, 128, (2, 16))
    mask = torch.ones_like(ids)
    mask[1, :5] = 0
    with torch.no_grad():
        ours = model(ids, attention_mask=mask)
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        ref = hf(input_ids=ids, attention_mask=mask, position_ids=pos).logits
    assert (ours[0] - ref[0]).abs().max() <= 1e-4
    assert (ours[1, 5:] - ref[1, 5:]).abs().max() <= 1e-4


def test_tokenizer_is_gpt2_bpe_offline() -> None:
    tok = bundled_bpe()
    assert tok.encode("Hello, I am") == [15496, 11, 314, 716]
    assert tok.decode(tok.encode("Every effort moves you")) == "Every effort moves you"
    assert tok.encode("<|endoftext|>") == [50256]
    assert tok.stop_token_ids == (50256,)


@pytest.mark.parametrize("preset", ["124M", "355M", "774M", "1558M"])
def test_real_size_checkpoint_names_and_shapes_map_onto_the_model(preset: str) -> None:
    cfg = FAMILY.preset(preset)
    hf_cfg = HFGPT2Config(**{k: v for k, v in FAMILY.config_to_hf(cfg).items() if k != "architectures"})
    with torch.device("meta"):
        hf = AutoModelForCausalLM.from_config(hf_cfg)
        ours = FAMILY.build_model(cfg)
    hf_state = {k: v for k, v in hf.state_dict().items() if k != "lm_head.weight"}  # tied
    native, plan = FAMILY.weight_map(cfg).to_native(hf_state)
    assert not plan.unmatched and not plan.incomplete
    expected = {k: v.shape for k, v in ours.state_dict().items() if k != "out_head.weight"}
    assert {k: v.shape for k, v in native.items()} == expected

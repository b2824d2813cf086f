"""Llama family: parity with transformers' LlamaForCausalLM, config spellings, presets, tokenizer.

Every checkpoint here is written by transformers itself (tiny, perturbed) and
loaded through ``portagpt.load``; transformers is the reference for logits and
greedy ids.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoConfig, AutoModelForCausalLM
from transformers import LlamaConfig as HFLlamaConfig

from portagpt.core.cache import make_cache
from portagpt.errors import TokenizerError
from portagpt.families.llama.config import LlamaConfig
from portagpt.families.llama.plugin import FAMILY
from portagpt.loaders import load
from portagpt.registry import build_registry
from portagpt.smoke_tests.reference import hf_greedy, hf_logits, write_hf_checkpoint

config_from_hf, config_to_hf = LlamaConfig.from_hf, LlamaConfig.to_hf

NEW_TOKENS = 40
LLAMA3_ROPE = {
    "rope_type": "llama3",
    "rope_theta": 500000.0,
    "factor": 4.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 32,
}
BASE = dict(
    vocab_size=256,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=128,
)
VARIANTS = {
    # Llama 2: multi-head attention, plain RoPE, untied head
    "llama2": dict(
        BASE, num_key_value_heads=4, rope_parameters={"rope_type": "default", "rope_theta": 10000.0}
    ),
    # Llama 3.2: GQA, llama3 frequency scaling, tied head
    "llama3-tied": dict(BASE, rope_parameters=LLAMA3_ROPE, tie_word_embeddings=True),
    # Llama 3.1-style untied head, plus the options: biases, head_dim != hidden / heads
    "llama3-untied-bias-headdim": dict(
        BASE, rope_parameters=LLAMA3_ROPE, attention_bias=True, mlp_bias=True, head_dim=12
    ),
}


# ---- helpers (the same few lines live in test_qwen3.py) ---------------------------------
@torch.no_grad()
def greedy(model, ids, n, *, use_cache, attention_mask=None):
    """Our greedy decoding: n new ids per row, with a KV cache or recomputing the whole prefix."""
    B, P = ids.shape
    if use_cache:
        cache = make_cache(model.layer_specs, B, P + n)
        logits = model(ids, cache=cache, attention_mask=attention_mask, logits_to_keep=1)
        new = []
        for _ in range(n):
            new.append(logits[:, -1].argmax(-1, keepdim=True))
            logits = model(new[-1], cache=cache)
        return torch.cat(new, dim=1)
    out, mask = ids, attention_mask
    for _ in range(n):
        nxt = model(out, attention_mask=mask, logits_to_keep=1)[:, -1].argmax(-1, keepdim=True)
        out = torch.cat([out, nxt], dim=1)
        if mask is not None:
            mask = torch.cat([mask, torch.ones_like(nxt)], dim=1)
    return out[:, P:]


def to_4x_spelling(hf: dict, key: str = "type") -> dict:
    """transformers 5's config.json rewritten the 4.x way: rope_theta + rope_scaling[key]."""
    d = dict(hf)
    rp = dict(d.pop("rope_parameters"))
    d["rope_theta"] = rp.pop("rope_theta")
    rtype = rp.pop("rope_type")
    d["rope_scaling"] = None if rtype == "default" else {key: rtype, **rp}
    return d


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    """Tiny models gain nothing from threads, and lose a lot when the cores are shared."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module", params=list(VARIANTS))
def checkpoint(request, tmp_path_factory):
    """(variant, transformers model, folder it saved)."""
    folder = tmp_path_factory.mktemp(request.param)
    hf = write_hf_checkpoint(HFLlamaConfig(**VARIANTS[request.param]), folder)
    return request.param, hf, folder


def ids_for(seed: int, shape=(2, 24)) -> torch.Tensor:
    return torch.randint(
        0, BASE["vocab_size"], shape, generator=torch.Generator().manual_seed(seed)
    )


# ---- parity with transformers ---------------------------------------------------------
def test_logits_match_transformers(checkpoint):
    name, hf, folder = checkpoint
    model, _ = load(folder, tokenizer=False)
    ids = ids_for(1)
    with torch.no_grad():
        ours = model(ids)
    torch.testing.assert_close(ours, hf_logits(hf, ids), atol=1e-4, rtol=0)


def test_greedy_with_and_without_cache_matches_transformers(checkpoint):
    name, hf, folder = checkpoint
    model, _ = load(folder, tokenizer=False)
    prompt = ids_for(2, (1, 12))
    ref = hf_greedy(hf, prompt, NEW_TOKENS)
    assert torch.equal(greedy(model, prompt, NEW_TOKENS, use_cache=True), ref)
    assert torch.equal(greedy(model, prompt, NEW_TOKENS, use_cache=False), ref)


def test_left_padded_batch_equals_single_runs(checkpoint):
    name, hf, folder = checkpoint
    model, _ = load(folder, tokenizer=False)
    long, short = ids_for(3, (1, 14)), ids_for(4, (1, 9))
    pad = long.shape[1] - short.shape[1]
    batch = torch.cat([long, torch.cat([torch.zeros(1, pad, dtype=torch.long), short], 1)])
    mask = torch.ones_like(batch)
    mask[1, :pad] = 0
    with torch.no_grad():
        both = model(batch, attention_mask=mask)
        torch.testing.assert_close(both[0], model(long)[0], atol=1e-5, rtol=0)
        torch.testing.assert_close(both[1, pad:], model(short)[0], atol=1e-5, rtol=0)
    singles = [greedy(model, p, NEW_TOKENS, use_cache=True)[0] for p in (long, short)]
    for use_cache in (True, False):
        got = greedy(model, batch, NEW_TOKENS, use_cache=use_cache, attention_mask=mask)
        assert torch.equal(got[0], singles[0]) and torch.equal(got[1], singles[1])


def test_4x_config_spellings_load_identically(checkpoint, tmp_path):
    name, hf, folder = checkpoint
    saved = json.loads((folder / "config.json").read_text())
    assert "rope_parameters" in saved  # transformers 5 writes the 5.x spelling
    model, _ = load(folder, tokenizer=False)
    ids = ids_for(5)
    for key in ("type", "rope_type"):
        old = tmp_path / key
        shutil.copytree(folder, old)
        (old / "config.json").write_text(json.dumps(to_4x_spelling(saved, key)))
        assert config_from_hf(json.loads((old / "config.json").read_text())) == config_from_hf(
            saved
        )
        model4, _ = load(old, tokenizer=False)
        with torch.no_grad():
            assert torch.equal(model4(ids), model(ids))


def test_weight_map_covers_the_saved_checkpoint_both_ways(checkpoint):
    name, hf, folder = checkpoint
    cfg = config_from_hf(json.loads((folder / "config.json").read_text()))
    hf_state = load_file(str(folder / "model.safetensors"))
    wmap = FAMILY.weight_map(cfg)
    native, plan = wmap.to_native(hf_state)
    assert not plan.unmatched and not plan.incomplete
    model = FAMILY.build_model(cfg)
    tied = {dst for dst, _ in FAMILY.tied_weights(cfg)}
    assert set(native) == set(model.state_dict()) - tied
    back, plan_back = wmap.to_hf(native)
    assert not plan_back.unmatched and set(back) == set(hf_state)
    assert all(torch.equal(back[k], hf_state[k]) for k in back)


# ---- config translation ---------------------------------------------------------------
def test_nested_text_config_reads_like_the_flat_one(checkpoint):
    name, hf, folder = checkpoint
    flat = json.loads((folder / "config.json").read_text())
    inner = {k: v for k, v in flat.items() if k != "tie_word_embeddings"}
    nested = {
        "model_type": "llava",
        "text_config": inner,
        "tie_word_embeddings": flat["tie_word_embeddings"],
    }
    assert config_from_hf(nested) == config_from_hf(flat)


@pytest.mark.parametrize("preset", list(FAMILY.presets) + ["smoke"])
def test_config_round_trips_through_config_json(preset):
    cfg = FAMILY.smoke_config if preset == "smoke" else FAMILY.preset(preset)
    hf = config_to_hf(cfg)
    assert config_from_hf(json.loads(json.dumps(hf))) == cfg
    assert config_from_hf(to_4x_spelling(hf)) == cfg
    # transformers reads it (5.x rope_parameters and 4.x rope_scaling agree) with the same recipe
    d = dict(hf)
    tcfg = AutoConfig.for_model(d.pop("model_type"), **d)
    assert tcfg.rope_parameters == cfg.rope().to_hf()
    assert tcfg.head_dim == cfg.head_dim and tcfg.num_key_value_heads == cfg.num_key_value_heads


def test_real_preset_values():
    l1 = FAMILY.preset("3.2-1B")
    assert (l1.hidden_size, l1.num_hidden_layers, l1.head_dim, l1.tie_word_embeddings) == (
        2048,
        16,
        64,
        True,
    )
    assert l1.rope().type == "llama3" and l1.rope().params["factor"] == 32.0
    l2 = FAMILY.preset("2-7B")
    assert (l2.vocab_size, l2.num_key_value_heads, l2.rope().type) == (32000, 32, "default")
    assert all(
        p.source.startswith("https://huggingface.co/meta-llama/")
        for k, p in FAMILY.presets.items()
        if k != "tiny"
    )


# ---- real sizes on the meta device ----------------------------------------------------
@pytest.mark.parametrize("preset", [k for k, p in FAMILY.presets.items() if p.source])
def test_real_size_checkpoint_names_and_shapes_map_onto_the_model(preset):
    cfg = FAMILY.preset(preset)
    d = config_to_hf(cfg)
    hf_cfg = AutoConfig.for_model(d.pop("model_type"), **d)
    with torch.device("meta"):
        hf = AutoModelForCausalLM.from_config(hf_cfg)
        ours = FAMILY.build_model(cfg)
    native, plan = FAMILY.weight_map(cfg).to_native(dict(hf.state_dict()))
    assert not plan.unmatched and not plan.incomplete
    tied = {dst for dst, _ in FAMILY.tied_weights(cfg)}
    want = {k: tuple(v.shape) for k, v in ours.state_dict().items() if k not in tied}
    got = {k: tuple(v.shape) for k, v in native.items() if k not in tied}
    assert got == want


# ---- family contract ------------------------------------------------------------------
def test_registry_finds_llama_by_name_and_model_type():
    reg = build_registry(autoload=False)
    assert reg.get("llama") is not None and reg.for_model_type("llama").name == "llama"
    assert FAMILY.problems() == []


def test_meta_built_model_initialises_and_trains_a_step():
    cfg = FAMILY.smoke_config
    with torch.device("meta"):
        model = FAMILY.build_model(cfg)
    model.to_empty(device="cpu")
    model.init_weights()
    assert not any(t.is_meta for t in (*model.parameters(), *model.buffers()))
    ids = ids_for(6, (2, 16))
    logits = model(ids[:, :-1])
    loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), ids[:, 1:].flatten())
    loss.backward()
    assert (
        abs(loss.item() - torch.log(torch.tensor(cfg.vocab_size)).item()) < 0.5
    )  # near-uniform start
    assert all(p.grad is not None for p in model.parameters())


def test_tiny_preset_is_a_few_million_params_with_gpt2_vocab():
    cfg = FAMILY.preset("tiny")
    with torch.device("meta"):
        model = FAMILY.build_model(cfg)
    n = sum(p.numel() for p in model.parameters())
    assert 1e6 < n < 10e6 and cfg.vocab_size >= 50257
    assert model.lm_head.weight is model.model.embed_tokens.weight


# ---- tokenizer ------------------------------------------------------------------------
def test_no_folder_gives_the_bundled_bpe_when_the_vocab_fits():
    tok = FAMILY.load_tokenizer(None, FAMILY.preset("tiny"))
    assert tok.vocab_size == 50257 and tok.decode(tok.encode("Hello, world")) == "Hello, world"
    with pytest.raises(TokenizerError, match="too small for the bundled BPE"):
        FAMILY.load_tokenizer(None, FAMILY.smoke_config)


def test_folder_tokenizer_json_is_used(tmp_path: Path):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel()
    tok.train_from_iterator(
        ["the quick brown fox jumps over the lazy dog"] * 20,
        trainers.BpeTrainer(vocab_size=300, special_tokens=["<unk>", "<s>", "</s>"]),
    )
    tok.save(str(tmp_path / "tokenizer.json"))
    (tmp_path / "tokenizer_config.json").write_text(
        json.dumps({"eos_token": "</s>", "bos_token": "<s>"})
    )
    loaded = FAMILY.load_tokenizer(tmp_path, LlamaConfig())
    assert loaded.eos_token_id == tok.token_to_id("</s>")
    assert loaded.encode("the lazy fox") == tok.encode("the lazy fox").ids
    with pytest.raises(TokenizerError, match="No tokenizer.json"):
        FAMILY.load_tokenizer(tmp_path / "missing", LlamaConfig())


def test_trained_checkpoint_without_tokenizer_json_gets_the_training_tokenizer(tmp_path: Path):
    """portagpt's trainer tokenises with load_tokenizer(None, cfg) and marks its folders."""
    from portagpt.loaders.pipeline import SIDECAR

    with pytest.raises(TokenizerError, match="No tokenizer.json"):
        FAMILY.load_tokenizer(tmp_path, FAMILY.preset("tiny"))  # a foreign folder: vocab unknown
    (tmp_path / SIDECAR).write_text("{}")
    tok = FAMILY.load_tokenizer(tmp_path, FAMILY.preset("tiny"))
    assert tok.vocab_size == 50257 and tok.eos_token_id == 50256

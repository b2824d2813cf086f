"""Olmo 3 against transformers: logits, greedy decoding, config spellings, real-size weight names.

Each variant is a tiny ``Olmo3ForCausalLM`` written by transformers with every
tensor perturbed, loaded through ``portagpt.load``. Prompts are three times
longer than the sliding window, so the sliding layers really slide.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM

import portagpt
from portagpt.adapters import FULL, SLIDING
from portagpt.core.cache import make_cache
from portagpt.core.rope import RopeConfig, inv_freq_and_scale
from portagpt.errors import TokenizerError
from portagpt.families.olmo3.config import Olmo3Config
from portagpt.families.olmo3.plugin import FAMILY
from portagpt.smoke_tests.reference import hf_greedy, hf_logits, write_hf_checkpoint

VOCAB, WINDOW, PROMPT, NEW = 320, 8, 24, 40

YARN = RopeConfig(
    500_000.0,
    "yarn",
    {"factor": 4.0, "original_max_position_embeddings": 256, "beta_fast": 32.0, "beta_slow": 1.0},
)
BASE = Olmo3Config(
    vocab_size=VOCAB,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=5,
    num_attention_heads=4,
    num_key_value_heads=4,
    max_position_embeddings=1024,
    sliding_window=WINDOW,
    layer_types=(SLIDING, SLIDING, SLIDING, FULL, SLIDING),  # = the 4.x default pattern
    rope_parameters={FULL: {"rope_theta": 500_000.0}, SLIDING: {"rope_theta": 500_000.0}},
    eos_token_id=None,
    pad_token_id=None,
)
VARIANTS = {
    "mha-default-rope": BASE,
    "gqa-yarn-on-full": replace(
        BASE, num_key_value_heads=2, rope_parameters={**BASE.rope_parameters, FULL: YARN.to_hf()}
    ),
}


# ---- helpers (the same ones sit in test_gemma3.py) ------------------------------
def hf_config_from(d: dict[str, Any]) -> Any:
    d = dict(d)
    return AutoConfig.for_model(d.pop("model_type"), **d)


@torch.no_grad()
def greedy(
    model: torch.nn.Module, ids: torch.Tensor, n: int, cache: bool, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """``n`` greedy tokens after (B, P) ``ids``, with a KV cache (prefill, then one token a step) or
    recomputing the whole sequence each step; ``mask`` marks real tokens of a left-padded batch."""
    B, P = ids.shape
    kv = make_cache(model.layer_specs, B, P + n) if cache else None
    seq, step_in, step_mask = ids, ids, mask
    for _ in range(n):
        if kv is not None:
            logits = model(step_in, cache=kv, attention_mask=step_mask, logits_to_keep=1)
            step_mask = None  # the cache remembers which keys are padding
        else:
            full = (
                None if mask is None else torch.cat([mask, mask.new_ones(B, seq.shape[1] - P)], 1)
            )
            logits = model(seq, attention_mask=full, logits_to_keep=1)
        step_in = logits[:, -1].argmax(-1, keepdim=True)  # (B, 1)
        seq = torch.cat([seq, step_in], 1)
    return seq[:, P:]


def to_4x_spelling(d: dict[str, Any]) -> dict[str, Any]:
    """Rewrite a transformers 5.x Olmo3 config.json the way transformers 4.x wrote it."""
    n = d["num_hidden_layers"]
    assert d["layer_types"] == [SLIDING if (i + 1) % 4 else FULL for i in range(n)]
    out = {k: v for k, v in d.items() if k not in ("rope_parameters", "layer_types")}
    full, sliding = dict(d["rope_parameters"][FULL]), d["rope_parameters"][SLIDING]
    assert sliding == {"rope_type": "default", "rope_theta": full["rope_theta"]}
    out["rope_theta"] = full.pop("rope_theta")
    out["rope_scaling"] = None if full["rope_type"] == "default" else full
    return out


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], tuple[Path, Any]]:
    """One transformers checkpoint (folder, reference model) per variant, written on first use."""
    made: dict[str, tuple[Path, Any]] = {}
    root = tmp_path_factory.mktemp("olmo3")

    def get(name: str) -> tuple[Path, Any]:
        if name not in made:
            folder = root / name
            hf_cfg = hf_config_from(FAMILY.config_to_hf(VARIANTS[name]))
            made[name] = folder, write_hf_checkpoint(hf_cfg, folder)
        return made[name]

    return get


def prompt(seed: int = 1, length: int = PROMPT) -> torch.Tensor:
    return torch.randint(0, VOCAB, (1, length), generator=torch.Generator().manual_seed(seed))


# ---- parity ---------------------------------------------------------------------
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_logits_match_transformers_past_the_sliding_window(checkpoints, variant: str) -> None:
    folder, ref = checkpoints(variant)
    model, _ = portagpt.load(folder, dtype="float32")
    assert model.config == VARIANTS[variant]
    ids = prompt()
    with torch.no_grad():
        ours = model(ids)
    assert (ours - hf_logits(ref, ids)).abs().max().item() < 1e-4


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_greedy_with_and_without_cache_matches_transformers(checkpoints, variant: str) -> None:
    folder, ref = checkpoints(variant)
    model, _ = portagpt.load(folder, dtype="float32")
    ids = prompt(2)
    cached, uncached = greedy(model, ids, NEW, cache=True), greedy(model, ids, NEW, cache=False)
    reference = hf_greedy(ref, ids, NEW)
    assert cached.tolist() == reference.tolist()
    assert uncached.tolist() == reference.tolist()


def test_yarn_scales_only_the_full_attention_layers(checkpoints) -> None:
    folder, ref = checkpoints("gqa-yarn-on-full")
    model, _ = portagpt.load(folder, dtype="float32")
    rope = ref.model.rotary_emb
    full, sliding = model.model.rotary_emb[FULL], model.model.rotary_emb[SLIDING]
    torch.testing.assert_close(full.inv_freq, rope.full_attention_inv_freq)
    torch.testing.assert_close(sliding.inv_freq, rope.sliding_attention_inv_freq)
    assert full.attention_scaling == rope.full_attention_attention_scaling > 1
    assert sliding.attention_scaling == 1.0
    assert not torch.equal(full.inv_freq, sliding.inv_freq)


def test_left_padded_batch_matches_two_single_runs(checkpoints) -> None:
    folder, _ = checkpoints("gqa-yarn-on-full")
    model, _ = portagpt.load(folder, dtype="float32")
    long, short = prompt(3, PROMPT), prompt(4, PROMPT - 7)
    batch = torch.cat([long, torch.cat([torch.zeros(1, 7, dtype=torch.long), short], 1)])
    mask = torch.ones_like(batch)
    mask[1, :7] = 0
    with torch.no_grad():
        both = model(batch, attention_mask=mask)
        one, two = model(long), model(short)
    torch.testing.assert_close(both[0], one[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(both[1, 7:], two[0], atol=1e-5, rtol=0)
    together = greedy(model, batch, NEW, cache=True, mask=mask)
    assert together[0].tolist() == greedy(model, long, NEW, cache=True)[0].tolist()
    assert together[1].tolist() == greedy(model, short, NEW, cache=True)[0].tolist()
    assert greedy(model, batch, 8, cache=False, mask=mask).tolist() == together[:, :8].tolist()


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_transformers_4x_config_spelling_loads_identically(
    checkpoints, variant: str, tmp_path: Path
) -> None:
    folder, _ = checkpoints(variant)
    new = json.loads((folder / "config.json").read_text())
    old = to_4x_spelling(new)
    # transformers itself reads the rewritten file as the same model ...
    assert hf_config_from(old).rope_parameters == hf_config_from(new).rope_parameters
    assert hf_config_from(old).layer_types == new["layer_types"]
    # ... and so do we.
    shutil.copy(folder / "model.safetensors", tmp_path / "model.safetensors")
    (tmp_path / "config.json").write_text(json.dumps(old))
    a, _ = portagpt.load(folder, dtype="float32")
    b, _ = portagpt.load(tmp_path, dtype="float32")
    assert b.config == a.config == VARIANTS[variant]
    ids = prompt()
    with torch.no_grad():
        assert torch.equal(a(ids), b(ids))


def test_yarn_truncate_flag_is_ignored_as_transformers_ignores_it() -> None:
    """transformers reads ``truncate`` from the top of the per-layer-type dict, so never sees it."""
    d = FAMILY.config_to_hf(VARIANTS["gqa-yarn-on-full"])
    d["rope_parameters"][FULL]["truncate"] = False
    ref = AutoModelForCausalLM.from_config(hf_config_from(d))
    ours = FAMILY.build_model(FAMILY.config_from_hf(d))
    expected = ref.model.rotary_emb.full_attention_inv_freq
    torch.testing.assert_close(ours.model.rotary_emb[FULL].inv_freq, expected)
    # the flag would matter if it were honoured
    untruncated = replace(YARN, params={**YARN.params, "truncate": False})
    assert not torch.allclose(inv_freq_and_scale(untruncated, 16)[0], expected)


# ---- real sizes, on the meta device ---------------------------------------------------
@pytest.mark.parametrize("name", ["7B", "32B"])
def test_real_size_preset_maps_every_checkpoint_tensor(name: str) -> None:
    cfg = FAMILY.preset(name)
    with torch.device("meta"):
        hf_model = AutoModelForCausalLM.from_config(hf_config_from(FAMILY.config_to_hf(cfg)))
        ours = FAMILY.build_model(cfg)
    tied = {dst for dst, _ in FAMILY.tied_weights(cfg)}
    hf_state = {n: t for n, t in hf_model.state_dict().items() if n not in tied}
    native, plan = FAMILY.weight_map(cfg).to_native(hf_state)
    assert not plan.unmatched and not plan.incomplete
    expected = {n: tuple(t.shape) for n, t in ours.state_dict().items() if n not in tied}
    assert {n: tuple(t.shape) for n, t in native.items()} == expected
    assert sum(t.numel() for t in ours.state_dict().values()) > (6e9 if name == "7B" else 30e9)


def test_presets_round_trip_through_config_json() -> None:
    for name, preset in FAMILY.presets.items():
        cfg = preset.config
        again = FAMILY.config_from_hf(json.loads(json.dumps(FAMILY.config_to_hf(cfg))))
        assert again == cfg, name
        assert preset.source.startswith("https://huggingface.co/allenai/") or name == "tiny"
    kinds = FAMILY.preset("7B").layer_types
    assert kinds.count(FULL) == 8 and kinds[3] == kinds[31] == FULL


# ---- contract pieces ---------------------------------------------------------------------------
def test_registry_serves_the_olmo3_model_type() -> None:
    assert portagpt.get_family("olmo3") is portagpt.family_for_model_type("olmo3")


def test_smoke_config_and_tiny_preset_build_run_and_use_sliding_caches() -> None:
    for cfg in (FAMILY.smoke_config, FAMILY.preset("tiny")):
        with torch.device("meta"):
            model = FAMILY.build_model(cfg)
        model.to_empty(device="cpu")
        model.init_weights()
        ids = torch.randint(0, cfg.vocab_size, (2, 12))
        with torch.no_grad():
            logits = model(ids, logits_to_keep=1)
        assert logits.shape == (2, 1, cfg.vocab_size) and torch.isfinite(logits).all()
        specs = FAMILY.cache_specs(cfg)
        assert [s.window for s in specs] == [
            cfg.sliding_window if t == SLIDING else None for t in cfg.layer_types
        ]
        assert model.lm_head.weight is not model.model.embed_tokens.weight
    tiny = FAMILY.preset("tiny")
    assert FAMILY.load_tokenizer(None, tiny).vocab_size <= tiny.vocab_size


def test_tokenizer_comes_from_the_checkpoint_folder(tmp_path: Path) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {"<|pad|>": 0, "<|endoftext|>": 1, "hi": 2, "there": 3}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<|pad|>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    with pytest.raises(TokenizerError):
        FAMILY.load_tokenizer(tmp_path, BASE)
    tok.save(str(tmp_path / "tokenizer.json"))
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"eos_token": "<|endoftext|>"}))
    loaded = FAMILY.load_tokenizer(tmp_path, BASE)
    assert loaded.encode("hi there") == [2, 3] and loaded.eos_token_id == 1

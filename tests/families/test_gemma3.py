"""Gemma 3 against transformers: logits, greedy decoding, config spellings, real-size weight names.

Each variant is a tiny ``Gemma3ForCausalLM`` written by transformers with every
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
from safetensors import safe_open
from transformers import AutoConfig, AutoModelForCausalLM

import portagpt
from portagpt.adapters import FULL, SLIDING
from portagpt.core.cache import make_cache
from portagpt.core.rope import RopeConfig
from portagpt.errors import TokenizerError
from portagpt.families.gemma3.config import Gemma3Config
from portagpt.families.gemma3.plugin import FAMILY
from portagpt.smoke_tests.reference import hf_greedy, hf_logits, write_hf_checkpoint

VOCAB, WINDOW, PROMPT, NEW = 320, 8, 24, 40

BASE = Gemma3Config(
    vocab_size=VOCAB,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=5,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=16,
    query_pre_attn_scalar=24,
    max_position_embeddings=128,
    sliding_window=WINDOW,
    layer_types=(SLIDING, SLIDING, FULL, SLIDING, SLIDING),  # = 4.x sliding_window_pattern 3
    rope_parameters={FULL: {"rope_theta": 1_000_000.0}, SLIDING: {"rope_theta": 10_000.0}},
    bos_token_id=None,
    eos_token_id=None,
    pad_token_id=None,
)
VARIANTS = {
    "gqa-tied": BASE,
    "linear-rope-on-global": replace(
        BASE,
        rope_parameters={
            FULL: RopeConfig(20_000.0, "linear", {"factor": 4.0}).to_hf(),
            SLIDING: {"rope_theta": 500.0},
        },
    ),
    "softcapping": replace(BASE, final_logit_softcapping=3.0, attn_logit_softcapping=2.0),
    "mqa-untied": replace(BASE, num_key_value_heads=1, tie_word_embeddings=False),
}


# ---- helpers (the same ones sit in test_olmo3.py) ------------------------------
def hf_config_from(d: dict[str, Any]) -> Any:
    d = dict(d)
    return AutoConfig.for_model(d.pop("model_type"), **d)


def text_config_of(cfg: Gemma3Config) -> dict[str, Any]:
    """``cfg`` as the ``text_config`` of a multimodal Gemma3 config.json."""
    skip = ("architectures", "model_type")
    return {k: v for k, v in FAMILY.config_to_hf(cfg).items() if k not in skip}


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


def to_4x_spelling(d: dict[str, Any], pattern: int) -> dict[str, Any]:
    """Rewrite a transformers 5.x Gemma3 config.json the way transformers 4.x wrote it."""
    assert d["layer_types"] == [
        SLIDING if (i + 1) % pattern else FULL for i in range(d["num_hidden_layers"])
    ]
    out = {k: v for k, v in d.items() if k not in ("rope_parameters", "layer_types")}
    full, local = dict(d["rope_parameters"][FULL]), d["rope_parameters"][SLIDING]
    assert local["rope_type"] == "default"
    out["rope_theta"] = full.pop("rope_theta")
    out["rope_local_base_freq"] = local["rope_theta"]
    out["rope_scaling"] = None if full["rope_type"] == "default" else full
    out["sliding_window_pattern"] = pattern
    return out


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], tuple[Path, Any]]:
    """One transformers checkpoint (folder, reference model) per variant, written on first use."""
    made: dict[str, tuple[Path, Any]] = {}
    root = tmp_path_factory.mktemp("gemma3")

    def get(name: str) -> tuple[Path, Any]:
        if name not in made:
            folder = root / name
            made[name] = (
                folder,
                write_hf_checkpoint(hf_config_from(FAMILY.config_to_hf(VARIANTS[name])), folder),
            )
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
    theirs = hf_logits(ref, ids)
    assert (ours - theirs).abs().max().item() < 1e-4
    if variant == "softcapping":
        assert ours.abs().max().item() <= 3.0


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_greedy_with_and_without_cache_matches_transformers(checkpoints, variant: str) -> None:
    folder, ref = checkpoints(variant)
    model, _ = portagpt.load(folder, dtype="float32")
    ids = prompt(2)
    cached, uncached = greedy(model, ids, NEW, cache=True), greedy(model, ids, NEW, cache=False)
    reference = hf_greedy(ref, ids, NEW)
    assert cached.tolist() == reference.tolist()
    assert uncached.tolist() == reference.tolist()


def test_left_padded_batch_matches_two_single_runs(checkpoints) -> None:
    folder, _ = checkpoints("gqa-tied")
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


def test_transformers_4x_config_spelling_loads_identically(checkpoints, tmp_path: Path) -> None:
    folder, _ = checkpoints("linear-rope-on-global")
    new = json.loads((folder / "config.json").read_text())
    old = to_4x_spelling(new, pattern=3)
    # transformers itself reads the rewritten file as the same model ...
    assert hf_config_from(old).rope_parameters == hf_config_from(new).rope_parameters
    assert hf_config_from(old).layer_types == new["layer_types"]
    # ... and so do we.
    shutil.copy(folder / "model.safetensors", tmp_path / "model.safetensors")
    (tmp_path / "config.json").write_text(json.dumps(old))
    a, _ = portagpt.load(folder, dtype="float32")
    b, _ = portagpt.load(tmp_path, dtype="float32")
    assert b.config == a.config == VARIANTS["linear-rope-on-global"]
    ids = prompt()
    with torch.no_grad():
        assert torch.equal(a(ids), b(ids))


def test_multimodal_checkpoint_loads_its_language_model(tmp_path: Path) -> None:
    """Gemma3ForConditionalGeneration: text_config nested, language_model.* names, vision dropped."""
    text = text_config_of(BASE)
    hf_cfg = AutoConfig.for_model(
        "gemma3",
        text_config=text,
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "image_size": 28,
            "patch_size": 14,
        },
        mm_tokens_per_image=4,
    )
    ref = write_hf_checkpoint(hf_cfg, tmp_path)
    with safe_open(str(tmp_path / "model.safetensors"), "pt") as f:
        names = list(f.keys())
    assert any(n.startswith("language_model.model.layers.0.") for n in names)
    assert any(n.startswith("vision_tower.") for n in names)
    model, _ = portagpt.load(tmp_path, dtype="float32")
    assert model.config == BASE
    ids = prompt()
    with torch.no_grad():
        ours = model(ids)
    assert (ours - hf_logits(ref, ids)).abs().max().item() < 1e-4


# ---- real sizes, on the meta device ---------------------------------------------------
def _check_names_and_shapes(hf_model: torch.nn.Module, cfg: Gemma3Config) -> None:
    tied = {dst for dst, _ in FAMILY.tied_weights(cfg)}
    # a tied head is written once on disk, under the embedding's name
    hf_state = {n: t for n, t in hf_model.state_dict().items() if n not in tied}
    native, plan = FAMILY.weight_map(cfg).to_native(hf_state)
    assert not plan.unmatched and not plan.incomplete
    with torch.device("meta"):
        ours = FAMILY.build_model(cfg)
    expected = {n: tuple(t.shape) for n, t in ours.state_dict().items() if n not in tied}
    assert {n: tuple(t.shape) for n, t in native.items()} == expected


@pytest.mark.parametrize("name", ["270M", "1B", "4B"])
def test_real_size_preset_maps_every_checkpoint_tensor(name: str) -> None:
    cfg = FAMILY.preset(name)
    with torch.device("meta"):
        hf_model = AutoModelForCausalLM.from_config(hf_config_from(FAMILY.config_to_hf(cfg)))
    _check_names_and_shapes(hf_model, cfg)
    if name == "4B":  # released as Gemma3ForConditionalGeneration: transformers 5 in-memory names
        text = text_config_of(cfg)
        with torch.device("meta"):
            mm = AutoModelForCausalLM.from_config(AutoConfig.for_model("gemma3", text_config=text))
        _check_names_and_shapes(mm, cfg)


def test_presets_round_trip_through_config_json() -> None:
    for name, preset in FAMILY.presets.items():
        cfg = preset.config
        again = FAMILY.config_from_hf(json.loads(json.dumps(FAMILY.config_to_hf(cfg))))
        assert again == cfg, name
        assert preset.source.startswith("https://huggingface.co/google/") or name == "tiny"
    kinds = FAMILY.preset("270M").layer_types
    assert kinds.count(FULL) == 3 and kinds[5] == kinds[11] == kinds[17] == FULL


# ---- contract pieces ---------------------------------------------------------------------------
def test_registry_serves_text_and_multimodal_model_types() -> None:
    assert portagpt.get_family("gemma3") is portagpt.family_for_model_type("gemma3_text")
    assert portagpt.family_for_model_type("gemma3").name == "gemma3"


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
        assert model.lm_head.weight is model.model.embed_tokens.weight
    tiny = FAMILY.preset("tiny")
    assert FAMILY.load_tokenizer(None, tiny).vocab_size <= tiny.vocab_size


def test_tokenizer_comes_from_the_checkpoint_folder(tmp_path: Path) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers

    tok = Tokenizer(
        models.WordLevel(
            {"<pad>": 0, "<eos>": 1, "<bos>": 2, "hi": 3, "there": 4}, unk_token="<pad>"
        )
    )
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    with pytest.raises(TokenizerError):
        FAMILY.load_tokenizer(tmp_path, BASE)
    tok.save(str(tmp_path / "tokenizer.json"))
    (tmp_path / "tokenizer_config.json").write_text(
        json.dumps({"eos_token": "<eos>", "chat_template": "{{ messages[0]['content'] }}"})
    )
    loaded = FAMILY.load_tokenizer(tmp_path, BASE)
    assert loaded.encode("hi there") == [3, 4] and loaded.eos_token_id == 1
    assert loaded.apply_chat_template([{"role": "user", "content": "hi"}]) == "hi"

"""Meta's original Llama folders (params.json, consolidated.NN.pth, tokenizer.model) against transformers.

The folders are built here from a tiny transformers Llama by the inverse of
the mapping portagpt reads (written independently below), split into
model-parallel shards the way Meta's training splits them.
"""

from __future__ import annotations

import base64
import json
from importlib import resources
from pathlib import Path

import pytest
import torch

import portagpt
from portagpt.cli import main
from portagpt.errors import CheckpointError, ConfigError
from portagpt.formats.meta import to_halves
from portagpt.loaders import convert, load_full
from portagpt.smoke_tests.reference import hf_logits, perturb_

DIM, HEADS, KV, LAYERS, FFN = 64, 4, 2, 2, 192  # FFN: Meta's width for dim 64, multiple_of 32
IDS = torch.tensor([[1, 7, 42, 99, 3, 250, 17, 8]])


def tiny_llama(vocab: int, seed: int = 0, **changes: object) -> torch.nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    kw: dict = dict(
        vocab_size=vocab, hidden_size=DIM, intermediate_size=FFN, num_hidden_layers=LAYERS,
        num_attention_heads=HEADS, num_key_value_heads=KV, max_position_embeddings=64,
        rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=False,
    )
    kw.update(changes)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(LlamaConfig(**kw)).eval()
    perturb_(model, seed=seed)
    return model


def _pairs(w: torch.Tensor, n: int) -> torch.Tensor:
    """transformers' rotate-half q/k rows -> Meta's interleaved pairs (inverse of HF's convert permute)."""
    d_out, d_in = w.shape
    return w.reshape(n, 2, d_out // n // 2, d_in).permute(0, 2, 1, 3).reshape(d_out, d_in)


def meta_state(hf: torch.nn.Module) -> dict[str, torch.Tensor]:
    sd, c = hf.state_dict(), hf.config
    out = {"tok_embeddings.weight": sd["model.embed_tokens.weight"], "norm.weight": sd["model.norm.weight"]}
    for i in range(c.num_hidden_layers):
        p = f"model.layers.{i}."
        out[f"layers.{i}.attention.wq.weight"] = _pairs(sd[p + "self_attn.q_proj.weight"], c.num_attention_heads)
        out[f"layers.{i}.attention.wk.weight"] = _pairs(sd[p + "self_attn.k_proj.weight"], c.num_key_value_heads)
        out[f"layers.{i}.attention.wv.weight"] = sd[p + "self_attn.v_proj.weight"]
        out[f"layers.{i}.attention.wo.weight"] = sd[p + "self_attn.o_proj.weight"]
        out[f"layers.{i}.feed_forward.w1.weight"] = sd[p + "mlp.gate_proj.weight"]
        out[f"layers.{i}.feed_forward.w2.weight"] = sd[p + "mlp.down_proj.weight"]
        out[f"layers.{i}.feed_forward.w3.weight"] = sd[p + "mlp.up_proj.weight"]
        out[f"layers.{i}.attention_norm.weight"] = sd[p + "input_layernorm.weight"]
        out[f"layers.{i}.ffn_norm.weight"] = sd[p + "post_attention_layernorm.weight"]
    out["output.weight"] = sd["lm_head.weight"]
    return {k: v.detach().clone().contiguous() for k, v in out.items()}


def split_axis(name: str, embed_dim: int) -> int | None:
    if name.endswith(("wq.weight", "wk.weight", "wv.weight", "w1.weight", "w3.weight")) or name == "output.weight":
        return 0
    if name.endswith(("wo.weight", "w2.weight")):
        return 1
    if name == "tok_embeddings.weight":
        return embed_dim
    return None  # norms: replicated


def write_meta(folder: Path, hf: torch.nn.Module, shards: int = 1, embed_dim: int = 1, **params: object) -> Path:
    """A Meta-format folder of ``hf``'s weights in ``shards`` model-parallel files."""
    folder.mkdir(parents=True, exist_ok=True)
    state = meta_state(hf)
    for r in range(shards):
        part = {}
        for name, t in state.items():
            axis = split_axis(name, embed_dim)
            part[name] = t if axis is None else t.chunk(shards, dim=axis)[r].clone()
        torch.save(part, folder / f"consolidated.{r:02d}.pth")
    p = {"dim": DIM, "n_layers": LAYERS, "n_heads": HEADS, "n_kv_heads": KV, "vocab_size": -1,
         "multiple_of": 32, "ffn_dim_multiplier": None, "norm_eps": 1e-5, "rope_theta": 10000.0}
    p.update(params)
    (folder / "params.json").write_text(json.dumps(p))
    return folder


# ---- tokenizers ---------------------------------------------------------------------------
def train_sentencepiece(path: Path, vocab: int = 300) -> None:
    import sentencepiece as spm

    text = resources.files("portagpt").joinpath("data/the-verdict.txt").read_text()
    corpus = path.with_suffix(".txt")
    corpus.write_text(text)
    spm.SentencePieceTrainer.train(
        input=str(corpus), model_prefix=str(path.with_suffix("")), vocab_size=vocab, model_type="bpe",
        bos_id=1, eos_id=2, unk_id=0, pad_id=-1, minloglevel=2,
    )
    path.with_suffix(".model").rename(path)


def write_ranks(path: Path) -> int:
    """A tiny tiktoken ranks file: the 256 bytes and a few merges; returns its size."""
    ranks = [bytes([i]) for i in range(256)] + [b"th", b"he", b"the", b" t", b" the", b"in", b"ing"]
    path.write_text("".join(f"{base64.b64encode(t).decode()} {i}\n" for i, t in enumerate(ranks)))
    return len(ranks)


# ---- the rotary permutation, checked against Meta's own arithmetic -------------------------
def test_meta_interleaved_rope_scores_equal_rotate_half_scores_after_the_permutation() -> None:
    torch.manual_seed(0)
    hd, T, d = 16, 5, 32
    wq, wk, x = torch.randn(hd, d), torch.randn(hd, d), torch.randn(T, d)
    freqs = 1.0 / 10000 ** (torch.arange(0, hd, 2).float() / hd)
    angles = torch.outer(torch.arange(T).float(), freqs)  # (T, hd/2)
    # Meta: consecutive pairs as complex numbers, multiplied by e^{i theta}
    def meta_rope(v: torch.Tensor) -> torch.Tensor:
        c = torch.view_as_complex(v.reshape(T, hd // 2, 2)) * torch.polar(torch.ones_like(angles), angles)
        return torch.view_as_real(c).reshape(T, hd)
    # transformers: halves, rotate_half
    def hf_rope(v: torch.Tensor) -> torch.Tensor:
        cos, sin = torch.cat([angles.cos()] * 2, -1), torch.cat([angles.sin()] * 2, -1)
        half = torch.cat([-v[:, hd // 2:], v[:, : hd // 2]], -1)
        return v * cos + half * sin
    meta_scores = meta_rope(x @ wq.T) @ meta_rope(x @ wk.T).T
    hf_scores = hf_rope(x @ to_halves(wq, 1).T) @ hf_rope(x @ to_halves(wk, 1).T).T
    torch.testing.assert_close(hf_scores, meta_scores, atol=1e-4, rtol=1e-5)


# ---- loading -----------------------------------------------------------------------------
@pytest.mark.parametrize(("shards", "embed_dim"), [(1, 1), (2, 1), (2, 0)], ids=["1-shard", "2-shards-llama2-embed", "2-shards-llama3-embed"])
def test_meta_folder_logits_match_transformers(tmp_path: Path, shards: int, embed_dim: int) -> None:
    hf = tiny_llama(300)
    folder = write_meta(tmp_path / "meta", hf, shards=shards, embed_dim=embed_dim, max_seq_len=64)
    loaded = load_full(folder)
    assert loaded.family.name == "llama" and loaded.extras["kind"] == "meta"
    assert loaded.config.intermediate_size == FFN and loaded.config.num_key_value_heads == KV
    diff = (loaded.model(IDS) - hf_logits(hf, IDS)).abs().max().item()
    assert diff <= 1e-4, diff


def test_scaled_rope_needs_its_factor_and_then_matches_transformers(tmp_path: Path) -> None:
    scaling = {"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 8192}
    hf = tiny_llama(300, rope_scaling=scaling, rope_theta=500000.0)
    folder = write_meta(tmp_path / "meta", hf, use_scaled_rope=True, rope_theta=500000.0)
    with pytest.raises(ConfigError, match=r"use_scaled_rope but not rope_scaling_factor.*--config FILE\.json"):
        load_full(folder)
    fixed = json.loads((folder / "params.json").read_text()) | {"rope_scaling_factor": 32}
    (tmp_path / "params32.json").write_text(json.dumps(fixed))
    loaded = load_full(folder, config=tmp_path / "params32.json")
    assert loaded.config.context_length == 131072
    torch.testing.assert_close(loaded.model(IDS), hf_logits(hf, IDS), atol=1e-4, rtol=0)


def test_shards_that_disagree_on_a_replicated_norm_are_refused(tmp_path: Path) -> None:
    folder = write_meta(tmp_path / "meta", tiny_llama(300), shards=2)
    part = torch.load(folder / "consolidated.01.pth")
    part["norm.weight"] = part["norm.weight"] + 1
    torch.save(part, folder / "consolidated.01.pth")
    with pytest.raises(CheckpointError, match=r"'norm\.weight' should be the same in every shard"):
        load_full(folder)


def test_params_json_that_contradicts_the_weights_names_the_keys(tmp_path: Path) -> None:
    folder = write_meta(tmp_path / "meta", tiny_llama(300), multiple_of=256)
    with pytest.raises(ConfigError, match=r"multiple_of 256 .* width of 256, but layers\.0\.feed_forward\.w1 has 192"):
        load_full(folder)


# ---- writing and round trips ----------------------------------------------------------------
def test_convert_to_meta_round_trips_bitwise_and_merges_shards(tmp_path: Path) -> None:
    hf = tiny_llama(300)
    one = write_meta(tmp_path / "one", hf, max_seq_len=64)
    two = write_meta(tmp_path / "two", hf, shards=2, max_seq_len=64)
    original = torch.load(one / "consolidated.00.pth")
    for src in (one, two):
        out = tmp_path / f"back-{src.name}"
        assert main(["convert", str(src), "--to", "meta", "--out", str(out)]) == 0
        back = torch.load(out / "consolidated.00.pth")
        assert set(back) == set(original)
        assert all(torch.equal(back[k], original[k]) for k in original)
        params = json.loads((out / "params.json").read_text())
        assert (params["dim"], params["n_kv_heads"], params["multiple_of"]) == (DIM, KV, 32)
    # and through transformers' layout: meta -> hf -> meta
    assert main(["convert", str(one), "--to", "hf", "--out", str(tmp_path / "hf")]) == 0
    assert main(["convert", str(tmp_path / "hf"), "--to", "meta", "--out", str(tmp_path / "again")]) == 0
    again = torch.load(tmp_path / "again" / "consolidated.00.pth")
    assert all(torch.equal(again[k], original[k]) for k in original)


def test_a_transformers_llama_written_as_meta_loads_back_to_the_same_logits(tmp_path: Path) -> None:
    from transformers import LlamaConfig

    from portagpt.smoke_tests.reference import write_hf_checkpoint

    cfg = LlamaConfig(vocab_size=300, hidden_size=DIM, intermediate_size=FFN, num_hidden_layers=LAYERS,
                      num_attention_heads=HEADS, num_key_value_heads=KV, max_position_embeddings=64,
                      tie_word_embeddings=True)
    hf = write_hf_checkpoint(cfg, tmp_path / "hf")
    convert(tmp_path / "hf", "meta", tmp_path / "meta")
    assert "output.weight" in torch.load(tmp_path / "meta" / "consolidated.00.pth")  # Meta's model needs it
    model, _ = portagpt.load(tmp_path / "meta")
    torch.testing.assert_close(model(IDS), hf_logits(hf, IDS), atol=1e-4, rtol=0)


# ---- tokenizers ------------------------------------------------------------------------
def test_llama2_sentencepiece_tokenizer_model_is_read_with_sentencepiece(tmp_path: Path) -> None:
    import sentencepiece as spm

    folder = write_meta(tmp_path / "meta", tiny_llama(300))
    train_sentencepiece(folder / "tokenizer.model")
    loaded = load_full(folder)
    tok = loaded.tokenizer
    sp = spm.SentencePieceProcessor(model_file=str(folder / "tokenizer.model"))
    text = "I had always thought Jack Gisburn rather a cheap genius"
    assert tok.encode(text) == [1, *sp.encode(text)]
    assert tok.decode(tok.encode(text)) == text
    assert tok.stop_token_ids == (2,) and loaded.config.bos_token_id == 1 and loaded.config.context_length == 4096


def test_llama3_tiktoken_tokenizer_model_has_metas_special_tokens(tmp_path: Path) -> None:
    folder = tmp_path / "meta"
    n = write_ranks(tmp_path / "ranks")
    hf = tiny_llama(n + 256)
    write_meta(folder, hf)
    (folder / "tokenizer.model").write_bytes((tmp_path / "ranks").read_bytes())
    loaded = load_full(folder)
    tok = loaded.tokenizer
    ids = tok.encode("the thing<|eot_id|>")
    assert ids[0] == n  # <|begin_of_text|>
    assert ids[-1] == n + 9  # <|eot_id|>
    assert 258 in ids  # b"the", one merged token
    assert tok.decode(ids[1:]) == "the thing<|eot_id|>"
    assert tok.stop_token_ids == (n + 1, n + 8, n + 9)
    assert tok.vocab_size == n + 256 and loaded.config.context_length == 8192
    torch.testing.assert_close(loaded.model(IDS), hf_logits(hf, IDS), atol=1e-4, rtol=0)


@pytest.mark.parametrize("kind", ["sentencepiece", "tiktoken"])
def test_converting_to_hf_writes_the_tokenizer_as_transformers_reads_it(tmp_path: Path, kind: str) -> None:
    from transformers import AutoTokenizer

    folder = tmp_path / "meta"
    if kind == "tiktoken":
        n = write_ranks(tmp_path / "ranks")
        write_meta(folder, tiny_llama(n + 256))
        (folder / "tokenizer.model").write_bytes((tmp_path / "ranks").read_bytes())
    else:
        write_meta(folder, tiny_llama(300))
        train_sentencepiece(folder / "tokenizer.model")
    meta_tok = load_full(folder).tokenizer
    convert(folder, "hf", tmp_path / "hf")
    ours = load_full(tmp_path / "hf").tokenizer
    theirs = AutoTokenizer.from_pretrained(tmp_path / "hf")
    for text in ("I had always thought the thing", "the inning, then he said"):
        assert ours.encode(text) == meta_tok.encode(text) == theirs.encode(text)
    # runs of whitespace: transformers' converted SentencePiece does not collapse them as
    # sentencepiece's normaliser does; the converted folder agrees with transformers
    assert ours.encode("  the\n inning") == theirs.encode("  the\n inning")

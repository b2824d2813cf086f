"""``portagpt train`` for every family: from scratch, from a checkpoint, resumed, exported, and refused.

Each family gets a ``micro`` preset for the test (its smoke config with GPT-2's
vocabulary, so the from-scratch tokenizer fits): a whole CLI run takes a
second or two. Continued pretraining starts from a transformers Llama saved
with a byte-level BPE trained here with ``tokenizers``.
"""

from __future__ import annotations

import dataclasses
import json
from importlib import resources
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import portagpt
from portagpt.adapters.family import Preset
from portagpt.cli import main
from portagpt.registry import get_family

FAMILIES = ("gpt2", "llama", "qwen3", "gemma3", "olmo3")
GPT2_VOCAB = 50257


@pytest.fixture(autouse=True)
def _micro_presets(monkeypatch):
    for name in FAMILIES:
        fam = get_family(name)
        micro = dataclasses.replace(fam.smoke_config, vocab_size=GPT2_VOCAB)
        monkeypatch.setitem(fam.presets, "micro", Preset(micro, "", "test size"))


@pytest.fixture(scope="module")
def text(tmp_path_factory) -> Path:
    verdict = resources.files("portagpt").joinpath("data", "the-verdict.txt").read_text("utf-8")
    path = tmp_path_factory.mktemp("data") / "text.txt"
    path.write_text(verdict[:3000], encoding="utf-8")  # ~700 GPT-2 tokens
    return path


def train(out: Path, text: Path, *extra: str) -> int:
    args = ["train", "--out", str(out), "--data", str(text), "--no-progress", "--batch-size", "2"]
    args += [
        "--context-length",
        "32",
        "--eval-freq",
        "3",
        "--eval-iter",
        "2",
        "--sample-tokens",
        "4",
    ]
    args += ["--lr", "5e-3", "--warmup", "2"]
    return main([*args, *extra])


def records(out: Path, kind: str) -> list[dict]:
    lines = (out / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["type"] == kind]


def assert_clean_failure(capsys, out: Path, *needles: str) -> None:
    err = " ".join(capsys.readouterr().err.split())
    assert err.startswith("portagpt: error: ") and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err
    assert not out.exists()


# ---- from scratch ------------------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_trains_from_scratch_and_reloads_with_its_tokenizer(tmp_path, text, family):
    out = tmp_path / family
    assert train(out, text, "--family", family, "--preset", "micro", "--epochs", "2") == 0
    evals = records(out, "eval")
    assert evals[-1]["train_loss"] < evals[0]["train_loss"] - 0.5, evals
    run = json.loads((out / "run.json").read_text())
    assert run["family"] == family and run["init"] == {"preset": "micro"}
    assert run["tokenizer"]["kind"] == "bundled GPT-2 BPE (tiktoken)"
    side = json.loads((out / "checkpoint" / "portagpt.json").read_text())
    assert side["run"]["tokenizer"] == run["tokenizer"]

    model, tok = portagpt.load(out)  # the run folder stands for its checkpoint
    from portagpt.adapters import bundled_bpe

    sample = "Every effort moves you"
    assert tok is not None and tok.encode(sample) == bundled_bpe().encode(sample)
    saved = load_file(str(out / "checkpoint" / "model.safetensors"))
    state = model.state_dict()
    for name, tensor in saved.items():
        torch.testing.assert_close(state[name], tensor, rtol=0, atol=0)


def test_bf16_autocast_run_learns_and_keeps_float32_weights(tmp_path, text) -> None:
    out = tmp_path / "bf16"
    extra = ("--family", "llama", "--preset", "micro", "--autocast", "bf16", "--epochs", "2")
    assert train(out, text, *extra) == 0
    evals = records(out, "eval")
    assert evals[-1]["train_loss"] < evals[0]["train_loss"]
    assert json.loads((out / "run.json").read_text())["dtype"] == "bfloat16"
    assert {t.dtype for t in load_file(str(out / "checkpoint" / "model.safetensors")).values()} == {
        torch.float32
    }


def test_compiled_run_saves_plain_parameter_names(tmp_path, text) -> None:
    out = tmp_path / "compiled"
    extra = ("--family", "llama", "--preset", "micro", "--compile", "eager", "--epochs", "1")
    assert train(out, text, *extra, "--sample-tokens", "0") == 0
    names = list(load_file(str(out / "checkpoint" / "model.safetensors")))
    assert names and not [n for n in names if "_orig_mod" in n or n.startswith("module.")]
    assert json.loads((out / "run.json").read_text())["compile"] == "eager"


# ---- resume and export for a non-GPT family ---------------------------------------------


def test_qwen3_two_epochs_equal_one_epoch_plus_resume_and_export_to_transformers(
    tmp_path, text
) -> None:
    full, split = tmp_path / "full", tmp_path / "split"
    base = ("--family", "qwen3", "--preset", "micro")
    assert train(full, text, *base, "--epochs", "2") == 0
    assert train(split, text, *base, "--epochs", "1") == 0
    resumed = ["train", "--family", "qwen3", "--out", str(split), "--resume", "--epochs", "2"]
    assert main([*resumed, "--no-progress"]) == 0

    a = [r["loss"] for r in records(full, "train")]
    b = [r["loss"] for r in records(split, "train")]
    assert len(a) == len(b) and a == pytest.approx(b, rel=1e-5)
    wa = load_file(str(full / "checkpoint" / "model.safetensors"))
    wb = load_file(str(split / "checkpoint" / "model.safetensors"))
    assert wa.keys() == wb.keys()
    for name in wa:
        torch.testing.assert_close(wa[name], wb[name], rtol=1e-5, atol=1e-6)

    # the trained run exports to a folder transformers loads, with identical logits
    from transformers import AutoModelForCausalLM

    hf_dir = tmp_path / "hf"
    assert main(["convert", str(split), "--to", "hf", "--out", str(hf_dir)]) == 0
    hf = AutoModelForCausalLM.from_pretrained(str(hf_dir), dtype=torch.float32).eval()
    ours, _ = portagpt.load(split)
    ids = torch.randint(0, GPT2_VOCAB, (2, 24), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(hf(ids).logits, ours(ids), rtol=1e-5, atol=1e-5)


# ---- continued pretraining from a checkpoint ------------------------------------------------


@pytest.fixture(scope="module")
def llama_checkpoint(tmp_path_factory, text) -> tuple[Path, torch.nn.Module]:
    """A transformers Llama (vocab = a byte-level BPE of 400 ids trained on the text) and its folder."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig

    from portagpt.smoke_tests.reference import write_hf_checkpoint

    folder = tmp_path_factory.mktemp("llama_ckpt")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<eos>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train([str(text)], trainer)
    cfg = LlamaConfig(
        vocab_size=tok.get_vocab_size(),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        eos_token_id=tok.token_to_id("<eos>"),
        tie_word_embeddings=False,
    )
    hf = write_hf_checkpoint(cfg, folder, seed=1)
    tok.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps({"eos_token": "<eos>"}))
    return folder, hf


def test_continued_pretraining_starts_from_the_checkpoint_with_its_tokenizer(
    tmp_path, text, llama_checkpoint
) -> None:
    folder, hf = llama_checkpoint
    out = tmp_path / "cont"
    # a vanishing learning rate: the saved weights must still be the checkpoint's
    args = ("--checkpoint", str(folder), "--family", "llama", "--epochs", "1", "--lr", "1e-12")
    assert train(out, text, *args) == 0
    run = json.loads((out / "run.json").read_text())
    assert run["init"]["checkpoint"] == str(folder) and run["preset"] is None
    assert run["tokenizer"]["kind"] == "tokenizer.json"
    assert set(run["tokenizer"]["files"]) >= {"tokenizer.json", "tokenizer_config.json"}
    for name in ("tokenizer.json", "tokenizer_config.json"):
        assert (out / "checkpoint" / name).read_bytes() == (folder / name).read_bytes()

    model, tok = portagpt.load(out / "checkpoint")
    source_tok = portagpt.load(folder)[1]
    sample = text.read_text()[:200]
    assert tok.encode(sample) == source_tok.encode(sample) and tok.eos_token_id == 0
    ids = torch.tensor([source_tok.encode(sample)[:40]])
    with torch.no_grad():
        torch.testing.assert_close(model(ids), hf(ids).logits, rtol=1e-4, atol=1e-4)

    # and it trains on: a real learning rate lowers the loss
    on = tmp_path / "on"
    assert train(on, text, "--checkpoint", str(folder), "--epochs", "2", "--lr", "1e-2") == 0
    evals = records(on, "eval")
    assert evals[-1]["train_loss"] < evals[0]["train_loss"]


# ---- refused before any step, nothing written -----------------------------------------------


def test_checkpoint_of_another_family_is_refused(tmp_path, capsys, text, llama_checkpoint) -> None:
    out = tmp_path / "run"
    assert train(out, text, "--checkpoint", str(llama_checkpoint[0]), "--family", "gpt2") == 2
    assert_clean_failure(capsys, out, "'llama'", "--family gpt2")


def test_portagpt_run_of_another_family_is_refused(tmp_path, capsys, text) -> None:
    first = tmp_path / "first"
    assert train(first, text, "--family", "olmo3", "--preset", "micro", "--epochs", "1") == 0
    capsys.readouterr()
    out = tmp_path / "run"
    assert train(out, text, "--checkpoint", str(first), "--family", "llama") == 2
    assert_clean_failure(capsys, out, "olmo3", "--family olmo3")


@pytest.mark.parametrize(
    "extra,needles",
    [
        (
            ("--family", "gpt2", "--preset", "3.2-1B"),
            ["'3.2-1B' belongs to llama", "--family llama"],
        ),
        (("--family", "llama", "--preset", "micro", "--context-length", "65"), ["65", "64"]),
        (("--family", "llama", "--preset", "micro", "--backend", "nccl"), ["nccl", "CUDA"]),
        (("--family", "llama", "--preset", "micro", "--backend", "carrier-pigeon"), ["gloo"]),
        (("--family", "llama", "--preset", "micro", "--fsdp"), ["torchrun"]),
    ],
)
def test_bad_start_fails_before_anything_is_written(tmp_path, capsys, text, extra, needles) -> None:
    if "nccl" in extra and torch.cuda.is_available():
        pytest.skip("needs a machine without CUDA")
    out = tmp_path / "run"
    assert train(out, text, *extra) == 2
    assert_clean_failure(capsys, out, *needles)


def test_training_context_longer_than_the_checkpoint_supports(
    tmp_path, capsys, text, llama_checkpoint
) -> None:
    out = tmp_path / "run"
    args = ["train", "--checkpoint", str(llama_checkpoint[0]), "--out", str(out)]
    assert main([*args, "--data", str(text), "--context-length", "128"]) == 2
    assert_clean_failure(capsys, out, "--context-length 128", "context length 64")


def test_checkpoint_and_preset_together_are_refused(tmp_path, capsys, text, llama_checkpoint):
    out = tmp_path / "run"
    assert train(out, text, "--checkpoint", str(llama_checkpoint[0]), "--preset", "tiny") == 2
    assert_clean_failure(capsys, out, "--preset tiny", "only one")


def test_repo_id_continues_pretraining_from_the_hub_cache(
    tmp_path, monkeypatch, text, llama_checkpoint
) -> None:
    """huggingface_hub's cache layout, built by hand: blobs, a snapshot of symlinks, refs/main."""
    import hashlib
    import os

    cache, commit = tmp_path / "hf-cache", "0123456789abcdef0123456789abcdef01234567"
    repo = cache / "models--org--tiny-llama"
    snap = repo / "snapshots" / commit
    for sub in (repo / "blobs", snap, repo / "refs"):
        sub.mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    for f in sorted(llama_checkpoint[0].iterdir()):
        data = f.read_bytes()
        blob = hashlib.sha256(data).hexdigest()
        (repo / "blobs" / blob).write_bytes(data)
        os.symlink(Path("..") / ".." / "blobs" / blob, snap / f.name)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    out = tmp_path / "from-hub"
    assert train(out, text, "--repo-id", "org/tiny-llama", "--epochs", "1", "--lr", "1e-12") == 0
    run = json.loads((out / "run.json").read_text())
    assert run["init"]["repo_id"] == "org/tiny-llama" and run["family"] == "llama"
    assert run["tokenizer"]["kind"] == "tokenizer.json"
    copied = (out / "checkpoint" / "tokenizer.json").read_bytes()
    assert copied == (llama_checkpoint[0] / "tokenizer.json").read_bytes()

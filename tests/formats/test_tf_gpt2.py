"""OpenAI's TensorFlow GPT-2 checkpoints: written here with tensorflow under OpenAI's variable names.

tensorflow is heavy, so it is never imported into the test process: the
checkpoint is written, and read through the real CLI, in subprocesses. The
weights come from a tiny transformers GPT-2, whose logits are the reference.
Skipped (with the reason shown) only where tensorflow is not installed.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import portagpt
from portagpt.smoke_tests.reference import hf_logits

pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    importlib.util.find_spec("tensorflow") is None,
    reason="tensorflow is not installed (pip install 'portagpt[tf]'): TF checkpoints cannot be written or read",
)]

SRC = Path(portagpt.__file__).resolve().parents[1]
THE_THING = [257, 32, 256, 260]  # "the" | "Ġ" "th" "ing" with the merges below
WRITER = r"""
import sys, numpy as np, tensorflow as tf
folder = sys.argv[1]
arrays = np.load(folder + "/vars.npz")
names = sorted(arrays.files)
tf.raw_ops.SaveV2(prefix=folder + "/model.ckpt", tensor_names=names, shape_and_slices=[""] * len(names),
                  tensors=[tf.constant(arrays[n]) for n in names])
open(folder + "/checkpoint", "w").write('model_checkpoint_path: "model.ckpt"\nall_model_checkpoint_paths: "model.ckpt"\n')
print("\n".join(f"{n} {list(s)}" for n, s in tf.train.list_variables(folder + "/model.ckpt")))
"""


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's printable stand-ins for the 256 bytes (as encoder.json spells tokens)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs), strict=True))


def write_bpe(folder: Path) -> int:
    """A tiny encoder.json + vocab.bpe in OpenAI's spelling; returns the vocabulary size."""
    b2u = bytes_to_unicode()
    vocab = {b2u[b]: i for i, b in enumerate(range(256))}
    merges = [("t", "h"), ("th", "e"), ("Ġ", "the"), ("i", "n"), ("in", "g")]
    for a, b in merges:
        vocab[a + b] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    (folder / "encoder.json").write_text(json.dumps(vocab))
    (folder / "vocab.bpe").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
    return len(vocab)


def openai_variables(hf: torch.nn.Module) -> dict[str, np.ndarray]:
    """The transformers GPT-2's weights under OpenAI's names and shapes (Conv1D kernels (1, in, out))."""
    sd = {k: v.detach().numpy() for k, v in hf.state_dict().items()}
    out = {"model/wte": sd["transformer.wte.weight"], "model/wpe": sd["transformer.wpe.weight"],
           "model/ln_f/g": sd["transformer.ln_f.weight"], "model/ln_f/b": sd["transformer.ln_f.bias"]}
    for i in range(hf.config.n_layer):
        p = f"transformer.h.{i}."
        for part in ("attn/c_attn", "attn/c_proj", "mlp/c_fc", "mlp/c_proj"):
            dotted = part.replace("/", ".")
            out[f"model/h{i}/{part}/w"] = sd[f"{p}{dotted}.weight"][None]
            out[f"model/h{i}/{part}/b"] = sd[f"{p}{dotted}.bias"]
        for ln in ("ln_1", "ln_2"):
            out[f"model/h{i}/{ln}/g"] = sd[f"{p}{ln}.weight"]
            out[f"model/h{i}/{ln}/b"] = sd[f"{p}{ln}.bias"]
    return out


def run(*args: str, block_tf: bool = False) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
    prelude = "import sys; sys.modules['tensorflow'] = None; " if block_tf else ""
    code = prelude + "from portagpt.cli import main; sys.exit(main(sys.argv[1:]))" if block_tf else None
    cmd = [sys.executable, "-c", code, *args] if code else [sys.executable, "-m", "portagpt", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)


@pytest.fixture(scope="module")
def tf_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, torch.nn.Module, str]:
    from transformers import GPT2Config, GPT2LMHeadModel

    from portagpt.smoke_tests.reference import perturb_

    folder = tmp_path_factory.mktemp("124M")
    vocab = write_bpe(folder)
    torch.manual_seed(0)
    hf = GPT2LMHeadModel(GPT2Config(vocab_size=vocab, n_positions=32, n_embd=32, n_layer=2, n_head=4)).eval()
    perturb_(hf)
    hf.tie_weights()
    np.savez(folder / "vars.npz", **openai_variables(hf))
    (folder / "hparams.json").write_text(json.dumps({"n_vocab": vocab, "n_ctx": 32, "n_embd": 32, "n_head": 4, "n_layer": 2}))
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run([sys.executable, "-c", WRITER, str(folder)], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (folder / "vars.npz").unlink()
    return folder, hf, proc.stdout


def test_the_written_checkpoint_has_openais_variable_names(tf_checkpoint) -> None:
    _, _, listing = tf_checkpoint
    names = dict(line.split(" ", 1) for line in listing.strip().splitlines())
    assert names["model/h0/attn/c_attn/w"] == "[1, 32, 96]" and names["model/wte"] == "[262, 32]"
    assert {"model/wpe", "model/ln_f/g", "model/h1/mlp/c_proj/b", "model/h1/ln_2/g"} <= set(names)


def test_load_reads_the_tf_checkpoint_and_its_bpe(tf_checkpoint) -> None:
    folder, _, _ = tf_checkpoint
    proc = run("load", str(folder), "--json", "--prompt", "the thing", "--max-new-tokens", "3")
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["ok"] and report["family"] == "gpt2" and report["kind"] == "tf"
    assert "hparams.json" in report["config_source"]
    assert report["sample"]["prompt_ids"] == THE_THING


def test_convert_to_hf_and_native_gives_transformers_logits(tf_checkpoint, tmp_path: Path) -> None:
    folder, hf, _ = tf_checkpoint
    for to in ("hf", "native"):
        proc = run("convert", str(folder), "--to", to, "--out", str(tmp_path / to))
        assert proc.returncode == 0, proc.stderr[-2000:]
    ids = torch.tensor([[1, 5, 200, 258, 7, 99]])
    from transformers import GPT2LMHeadModel

    back = GPT2LMHeadModel.from_pretrained(tmp_path / "hf").eval()
    assert all(torch.equal(back.state_dict()[k], v) for k, v in hf.state_dict().items() if not k.endswith("attn.bias"))
    model, tok = portagpt.load(tmp_path / "native")
    diff = (model(ids) - hf_logits(hf, ids)).abs().max().item()
    assert diff <= 1e-4, diff
    assert tok.encode("the thing") == THE_THING  # the converted folder carries the BPE as tokenizer.json


def test_the_bpe_from_encoder_json_and_vocab_bpe_matches_transformers(tf_checkpoint) -> None:
    from transformers import GPT2Tokenizer

    from portagpt.formats.tf import tokenizer
    from portagpt.loaders.sources import Located

    folder, _, _ = tf_checkpoint
    ours = tokenizer(Located("tf", folder, folder, []), None)
    merges = [tuple(line.split()) for line in (folder / "vocab.bpe").read_text().splitlines()[1:] if line]
    theirs = GPT2Tokenizer(vocab=json.loads((folder / "encoder.json").read_text()), merges=merges)
    for text in ("the thing", "  hello, the inning!\n", "<|endoftext|>the"):
        assert ours.encode(text) == theirs.encode(text)
    assert ours.encode("the thing") == THE_THING and ours.eos_token_id == 261


def test_without_tensorflow_the_error_names_the_extra(tf_checkpoint) -> None:
    folder, _, _ = tf_checkpoint
    proc = run("load", str(folder), block_tf=True)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "pip install 'portagpt[tf]'" in " ".join(proc.stderr.split())

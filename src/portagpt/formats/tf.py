"""OpenAI's TensorFlow GPT-2 checkpoints (``gpt_download.py``'s ``models/124M``), read.

The folder holds ``checkpoint``, ``hparams.json``, ``model.ckpt.{index,
data-*, meta}``, ``encoder.json`` and ``vocab.bpe``. Variables are read with
``tf.train.list_variables`` / ``tf.train.load_variable`` (the optional extra
``pip install portagpt[tf]``; tensorflow is imported only when such a
checkpoint is opened) and renamed to transformers' GPT-2 names, so the GPT-2
family's own weight map does the rest:

    model/wte, model/wpe                     -> transformer.wte / wpe
    model/h{i}/attn/c_attn/w  (1, d, 3d)     -> transformer.h.{i}.attn.c_attn.weight (d, 3d)
    model/h{i}/{attn,mlp}/{c_*}/{w,b}        -> ...{c_*}.weight / .bias
    model/h{i}/ln_{1,2}/{g,b}, model/ln_f/.. -> ...ln_*.weight / .bias

The convolution weights carry a leading axis of 1 that is dropped. A
variable with any other name is an error, never skipped. The head is tied
to ``wte`` (the checkpoints have no other). The tokenizer is GPT-2's byte-level
BPE from ``encoder.json`` + ``vocab.bpe``, through the ``tokenizers`` library.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch

from ..adapters.tokenizer import HFTokenizer
from ..errors import CheckpointError, ConfigError, PortagptError
from ..loaders.configs import ConfigChoice, config_from_hf, read_json
from ..loaders.foreign import ForeignFormat
from ..loaders.pipeline import FORMAT_KEY
from ..loaders.state_dict import StateDictSource

FAMILY = "gpt2"
HPARAMS = "hparams.json"
EOT = "<|endoftext|>"
INSTALL = "pip install 'portagpt[tf]'"
_BLOCK = re.compile(r"model/h(\d+)/(attn/c_attn|attn/c_proj|mlp/c_fc|mlp/c_proj|ln_1|ln_2)/([wbg])")
_LEAF = {"w": "weight", "b": "bias", "g": "weight"}


class MissingExtraError(PortagptError, ImportError):
    """An optional dependency (a pip extra) is not installed."""


def checkpoint_prefix(folder: Path) -> Path | None:
    """The checkpoint's path prefix: from the ``checkpoint`` file, else the one ``*.index``."""
    record = folder / "checkpoint"
    if record.is_file():
        text = record.read_text(errors="replace")
        m = re.search(r'^model_checkpoint_path:\s*"([^"]+)"', text, re.M)
        if m:
            prefix = Path(m[1]) if Path(m[1]).is_absolute() else folder / m[1]
            if prefix.with_name(prefix.name + ".index").is_file():
                return prefix
    indexes = sorted(folder.glob("*.index"))
    return indexes[0].with_suffix("") if len(indexes) == 1 else None


def detect(path: Path) -> bool:
    return path.is_dir() and (path / HPARAMS).is_file() and checkpoint_prefix(path) is not None


def files(path: Path) -> list[Path]:
    prefix = checkpoint_prefix(path)
    assert prefix is not None
    return sorted(path.glob(prefix.name + ".*"))


def tensorflow() -> Any:
    try:
        import tensorflow as tf
    except ImportError:
        raise MissingExtraError(
            "Reading OpenAI's TensorFlow GPT-2 checkpoints needs TensorFlow, which is not "
            f"installed. Install the extra: {INSTALL} (it pulls tensorflow-cpu), or convert the "
            "checkpoint on a machine that has it (portagpt convert DIR --to hf --out OUT)."
        ) from None
    return tf


def hf_name(var: str) -> str:
    """transformers' GPT-2 name of one of OpenAI's variables."""
    top = {"model/wte": "transformer.wte.weight", "model/wpe": "transformer.wpe.weight",
           "model/ln_f/g": "transformer.ln_f.weight", "model/ln_f/b": "transformer.ln_f.bias"}
    if var in top:
        return top[var]
    m = _BLOCK.fullmatch(var)
    if m is None:
        raise CheckpointError(
            f"TensorFlow variable {var!r} is not one of OpenAI's GPT-2 names (model/wte, "
            "model/wpe, model/hN/attn/c_attn/w, ..., model/ln_f/g); this is not a GPT-2 "
            "checkpoint from OpenAI."
        )
    return f"transformer.h.{m[1]}.{m[2].replace('/', '.')}.{_LEAF[m[3]]}"


def open_tf(loc: Any) -> StateDictSource:
    """Every variable read through TensorFlow, under transformers' names."""
    tf = tensorflow()
    prefix = str(checkpoint_prefix(loc.folder))
    try:
        variables = tf.train.list_variables(prefix)
    except Exception as exc:  # tensorflow raises its own error types (NotFoundError, DataLossError)
        raise CheckpointError(
            f"TensorFlow could not read the checkpoint {prefix!r} ({type(exc).__name__}: "
            f"{str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ''}). The files are "
            "truncated or corrupted; download them again."
        ) from None
    state: dict[str, torch.Tensor] = {}
    for var, _shape in variables:
        name = hf_name(var)
        t = torch.from_numpy(tf.train.load_variable(prefix, var).copy())
        if var.endswith("/w") and t.dim() == 3 and t.shape[0] == 1:  # Conv1D kernels: (1, in, out)
            t = t[0]
        state[name] = t
    return StateDictSource(state, metadata={FORMAT_KEY: "hf"}, private=True)


def choose(loc: Any, source: Any, family: Any, config: Any = None) -> ConfigChoice | None:
    from ..registry import get_family

    if config is not None:
        return None
    if family and (family if isinstance(family, str) else family.name) != FAMILY:
        raise ConfigError(f"{loc.where} is one of OpenAI's GPT-2 checkpoints; leave --family out.")
    path = loc.folder / HPARAMS
    hp = read_json(path, HPARAMS)
    keys = ("n_vocab", "n_ctx", "n_embd", "n_head", "n_layer")
    missing = [k for k in keys if not isinstance(hp.get(k), int) or isinstance(hp.get(k), bool)]
    if missing:
        raise ConfigError(
            f"{str(path)!r} lacks integer {', '.join(map(repr, missing))} (OpenAI's hparams.json "
            "keys)."
        )
    hf = {
        "model_type": "gpt2",
        "vocab_size": hp["n_vocab"],
        "n_positions": hp["n_ctx"],
        "n_embd": hp["n_embd"],
        "n_head": hp["n_head"],
        "n_layer": hp["n_layer"],
        "tie_word_embeddings": True,
    }
    fam = get_family(FAMILY)
    cfg = config_from_hf(fam, hf, repr(str(path)))
    return ConfigChoice(fam, cfg, f"{HPARAMS} (OpenAI's TensorFlow GPT-2)")


def tokenizer(loc: Any, cfg: Any) -> HFTokenizer | None:
    """GPT-2's byte-level BPE from encoder.json + vocab.bpe (None when either is missing)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    enc, bpe = loc.folder / "encoder.json", loc.folder / "vocab.bpe"
    if not (enc.is_file() and bpe.is_file()):
        return None
    try:
        tok = Tokenizer(models.BPE.from_file(str(enc), str(bpe)))
    except Exception as exc:  # tokenizers raises a bare Exception subclass
        raise CheckpointError(
            f"encoder.json / vocab.bpe in {str(loc.folder)!r} are not a BPE vocabulary: {exc}"
        ) from None
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    eot = json.loads(enc.read_text()).get(EOT)
    if eot is not None:
        tok.add_special_tokens([EOT])
    specials = {"eos_token": EOT} if eot is not None else {}
    return HFTokenizer(tok, eos_token_id=eot, special_tokens_map=specials)


def tokenizer_files(loc: Any, folder: Path) -> list[str]:
    """tokenizer.json + tokenizer_config.json of the BPE, for a converted folder."""
    tok = tokenizer(loc, None)
    if tok is None:
        return []
    tok.tokenizer.save(str(folder / "tokenizer.json"))
    config = {"eos_token": EOT, "bos_token": EOT} if tok.eos_token_id is not None else {}
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
    return ["tokenizer.json", "tokenizer_config.json"]


FORMAT = ForeignFormat(
    name="tf",
    description="OpenAI's TensorFlow GPT-2 (hparams.json, model.ckpt.*, encoder.json, vocab.bpe)",
    detect=detect,
    files=files,
    folder=lambda p: p,
    open=open_tf,
    choose=choose,
    tokenizer=tokenizer,
    tokenizer_files=tokenizer_files,
)

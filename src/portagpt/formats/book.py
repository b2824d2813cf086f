"""The book's files: chapter 5's ``model.pth`` and its config dict, read and written.

*Build a Large Language Model (From Scratch)* saves its ``GPTModel`` with
``torch.save(model.state_dict(), "model.pth")`` and describes it with a plain
dict, ``GPT_CONFIG_124M = {vocab_size, context_length, emb_dim, n_heads,
n_layers, drop_rate, qkv_bias}``. portagpt's GPT-2 family keeps the book's
module names, so the weights are a native checkpoint; what this module adds:

* the config dict as a config source: ``<stem>_config.json`` beside the
  ``.pth`` (found on its own), ``--config FILE.json``, or ``config={...}`` in
  Python. The book's model never ties its head (``out_head`` is its own
  ``nn.Linear``), so the config is untied; the head count comes from the dict,
  never from a preset.
* ``portagpt convert RUN --to book --out model.pth``: the state dict that
  ``GPTModel(cfg).load_state_dict(torch.load(path))`` accepts strictly (the
  book's names, an untied ``out_head.weight``, the ``att.mask`` causal buffers
  it registers) and the config dict beside it as ``model_config.json``.
  Both files appear atomically; nothing is overwritten.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ..core import checkpoint_format as fmt
from ..errors import ConfigError, UsageError
from ..loaders.configs import ConfigChoice, read_json
from ..loaders.export import conversion_report, tensor_bytes
from ..loaders.foreign import ForeignFormat
from ..loaders.pipeline import Prepared, Source, mapped_tensors
from ..loaders.state_dict import PTH_SUFFIXES, StateDictSource

FAMILY = "gpt2"
KEYS = ("vocab_size", "context_length", "emb_dim", "n_heads", "n_layers", "drop_rate", "qkv_bias")
BOOK_ACTIVATIONS = ("gelu_new", "gelu_pytorch_tanh")  # the book's GELU is the tanh approximation
BOOK_EPS = 1e-5
BLOCK_REST = (
    "ff.layers.0.weight",
    "ff.layers.0.bias",
    "ff.layers.2.weight",
    "ff.layers.2.bias",
    "norm1.scale",
    "norm1.shift",
    "norm2.scale",
    "norm2.shift",
)


def config_path(pth: Path) -> Path:
    """Where the book's config dict lives beside ``pth``: ``model.pth`` -> ``model_config.json``."""
    return pth.with_name(f"{pth.stem}_config.json")


def _pth_in(path: Path) -> Path | None:
    if path.is_file():
        return path if path.suffix in PTH_SUFFIXES else None
    if not path.is_dir():
        return None
    found = [
        p for p in sorted(path.iterdir()) if p.suffix in PTH_SUFFIXES and config_path(p).is_file()
    ]
    return found[0] if len(found) == 1 else None


def detect(path: Path) -> bool:
    """A ``.pth`` (or a folder with one) whose book config dict lies beside it."""
    pth = _pth_in(path)
    return pth is not None and config_path(pth).is_file()


def _check_value(key: str, value: Any, where: str) -> None:
    if key == "qkv_bias":
        ok, want = isinstance(value, bool), "true or false"
    elif key == "drop_rate":
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value < 1
        want = "a number in [0, 1)"
    else:
        ok = isinstance(value, int) and not isinstance(value, bool) and value > 0
        want = "a positive integer"
    if not ok:
        raise ConfigError(f"{where}: {key!r} must be {want}, found {value!r}. Fix the config dict.")


def config_from_book(data: Mapping[str, Any], where: str = "the book's config dict") -> Any:
    """The GPT-2 family config of the book's dict (every key checked, the head untied)."""
    from ..registry import get_family

    missing = [k for k in KEYS if k not in data]
    if missing:
        raise ConfigError(
            f"{where} lacks {', '.join(map(repr, missing))}; the book's dict has {', '.join(KEYS)}."
        )
    for key in KEYS:
        _check_value(key, data[key], where)
    fam = get_family(FAMILY)
    base = type(fam.smoke_config)
    try:
        return base(**{k: data[k] for k in KEYS}, tie_word_embeddings=False, activation="gelu_new")
    except (ConfigError, TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {exc}") from None


def read_config(data: Mapping[str, Any]) -> tuple[Any, Any] | None:
    """The book's dict (all of its keys present), as ``(family, config)``; else None."""
    from ..registry import get_family

    if not all(k in data for k in ("emb_dim", "n_heads", "n_layers")):
        return None
    return get_family(FAMILY), config_from_book(data)


def choose(loc: Any, source: Any, family: Any, config: Any = None) -> ConfigChoice | None:
    from ..registry import get_family

    if config is not None:  # --config / config=: the loaders read it (a book dict is recognised)
        return None
    if family and (family if isinstance(family, str) else family.name) != FAMILY:
        raise ConfigError(
            f"{loc.where} has the book's config dict beside it, which describes a GPT-2, but the "
            "family given is not gpt2. Leave --family out."
        )

    path = config_path(loc.files[0])
    cfg = config_from_book(read_json(path, path.name), repr(str(path)))
    return ConfigChoice(get_family(FAMILY), cfg, f"{path.name} (the book's config dict)")


def open_pth(loc: Any) -> StateDictSource:
    return StateDictSource.from_file(loc.files[0])


# ---- writing ---------------------------------------------------------------------------
def book_dict(cfg: Any) -> dict[str, Any]:
    """The book's config dict of a GPT-2 family config, refusing what the book cannot build."""
    problems = []
    if cfg.activation not in BOOK_ACTIVATIONS:
        problems.append(f"activation {cfg.activation!r} (the book's GELU is tanh-approximated)")
    if cfg.layer_norm_eps != BOOK_EPS:
        problems.append(f"layer_norm_eps {cfg.layer_norm_eps} (the book's LayerNorm uses 1e-5)")
    if cfg.mlp_dim != 4 * cfg.emb_dim:
        problems.append(f"an MLP width of {cfg.mlp_dim} (the book's is 4 * emb_dim)")
    if problems:
        raise UsageError(
            f"This GPT-2 cannot be written as the book's GPTModel: it has {'; '.join(problems)}. "
            "Convert it --to hf or --to native instead."
        )
    return {
        "vocab_size": cfg.vocab_size,
        "context_length": cfg.context_length,
        "emb_dim": cfg.emb_dim,
        "n_heads": cfg.n_heads,
        "n_layers": cfg.n_layers,
        "drop_rate": cfg.drop_rate,
        "qkv_bias": cfg.qkv_bias,
    }


def book_state(prep: Prepared, source: Source) -> dict[str, torch.Tensor]:
    """The book's state dict: native tensors, an untied head, the att.mask buffers, in its order."""
    cfg = prep.config
    native = dict(mapped_tensors(prep, source))
    if "out_head.weight" not in native:  # tied here; the book's head is its own copy
        native["out_head.weight"] = native["tok_emb.weight"].clone()
    dtype = native["tok_emb.weight"].dtype
    n = cfg.context_length
    mask = torch.triu(torch.ones(n, n), diagonal=1).to(dtype)
    out: dict[str, torch.Tensor] = {}
    for name in ("tok_emb.weight", "pos_emb.weight"):
        out[name] = native.pop(name)
    for i in range(cfg.n_layers):
        pre = f"trf_blocks.{i}."
        out[f"{pre}att.mask"] = mask.clone()  # a module's own buffers come before its children's
        for part in ("att.W_query", "att.W_key", "att.W_value", "att.out_proj"):
            for kind in ("weight", "bias"):
                if f"{pre}{part}.{kind}" in native:
                    out[f"{pre}{part}.{kind}"] = native.pop(f"{pre}{part}.{kind}")
        for rest in BLOCK_REST:
            out[pre + rest] = native.pop(pre + rest)
    for name in ("final_norm.scale", "final_norm.shift", "out_head.weight"):
        out[name] = native.pop(name)
    if native:  # the family grew a tensor the book does not have: never drop it quietly
        raise UsageError(
            "This model has tensors the book's GPTModel has no place for: "
            f"{', '.join(sorted(native)[:8])}. Convert it --to hf or --to native instead."
        )
    return out


def _atomic_bytes(dst: Path, write: Any, needed: int | None = None) -> Path:
    """``write(tmp)`` into a temporary beside ``dst`` (renamed by the caller); a full disk is
    one paragraph naming ``dst`` (checkpoint_format's rules)."""
    tmp = fmt.temp_name(dst)
    fmt.ignore_file_size_signal()
    try:
        write(tmp)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        hint = f"{str(dst)!r} was not written; free some space (or raise the limit) and convert again."
        raise fmt.disk_full(exc, dst, needed, hint) or exc from None
    return tmp


def _torch_save(obj: Any, path: Path) -> None:
    with open(path, "wb") as f:  # a file object: a write error keeps its errno
        torch.save(obj, f)


def write(prep: Prepared, source: Source, out: Path, loc: Any = None) -> dict[str, Any]:
    """``convert --to book --out model.pth``: the state dict and ``model_config.json`` beside it."""
    if prep.family.name != FAMILY:
        raise UsageError(
            "--to book writes the book's GPTModel, a GPT-2; this checkpoint is a "
            f"{prep.family.name} model. Use --to hf or --to native."
        )
    out = Path(out)
    if out.suffix not in PTH_SUFFIXES:
        raise UsageError(
            "--to book writes a PyTorch file: give --out a .pth name (e.g. model.pth), not "
            f"{str(out)!r}."
        )
    cfg_out = config_path(out)
    for dst in (out, cfg_out):
        if dst.exists():
            raise UsageError(f"{str(dst)!r} already exists; choose another --out or remove it.")
    book = book_dict(prep.config)
    state = book_state(prep, source)
    out.parent.mkdir(parents=True, exist_ok=True)
    needed = tensor_bytes(state)
    tmp_pth = _atomic_bytes(out, lambda p: _torch_save(state, p), needed)
    try:
        tmp_cfg = _atomic_bytes(cfg_out, lambda p: p.write_text(json.dumps(book, indent=2) + "\n"))
    except BaseException:
        tmp_pth.unlink(missing_ok=True)
        raise
    os.replace(tmp_cfg, cfg_out)
    os.replace(tmp_pth, out)
    files = [out.name, cfg_out.name]
    return conversion_report(out, "book", prep.family.name, files, state, [], config=book)


FORMAT = ForeignFormat(
    name="book",
    description="the book's chapter-5 GPTModel model.pth with its config dict as JSON",
    detect=detect,
    files=lambda p: [p if p.is_file() else _pth_in(p)],  # type: ignore[list-item]
    folder=lambda p: p.parent if p.is_file() else p,
    open=open_pth,
    choose=choose,
    read_config=read_config,
    write=write,
    suffix=".pth",
)

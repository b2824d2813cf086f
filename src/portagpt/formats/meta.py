"""Meta's original Llama releases: ``params.json`` + ``consolidated.NN.pth`` + ``tokenizer.model``.

Read (``portagpt load DIR``) and written (``portagpt convert RUN --to meta``).

Names: ``tok_embeddings``, ``layers.N.attention.wq/wk/wv/wo``,
``layers.N.feed_forward.w1/w2/w3`` (gate/down/up), ``attention_norm``,
``ffn_norm``, ``norm``, ``output``. They are mapped to transformers' Llama
names, and the Llama family's own weight map does the rest.

Rotary layout: Meta rotates interleaved pairs ``(x0, x1), (x2, x3) ...`` of
each head; transformers rotates halves ``(x0, x_{d/2}) ...``. ``wq``/``wk``
rows are permuted per head (:func:`to_halves` / :func:`to_pairs`) so both give
the same logits.

Model-parallel shards (one ``consolidated.NN.pth`` per GPU of Meta's
training) are merged per tensor along the axis it was split on: the
column-parallel ``wq``/``wk``/``wv``/``w1``/``w3``/``output`` along dim 0, the
row-parallel ``wo``/``w2`` along dim 1, the embedding along dim 1 (Llama 2's
``ParallelEmbedding``) or dim 0 (Llama 3's ``VocabParallelEmbedding``), told
apart by the shard's width against ``params.json``'s ``dim``; norms are
replicated, and shards that disagree on one are an error.

Config: ``params.json`` (``dim, n_layers, n_heads, n_kv_heads, vocab_size,
multiple_of, ffn_dim_multiplier, norm_eps, rope_theta, use_scaled_rope``) ->
the Llama family's config, the MLP width computed as Meta's code computes it
and checked against ``w1``; the vocabulary from ``tok_embeddings``. What the
files cannot confirm is not guessed: ``use_scaled_rope`` without
``rope_scaling_factor`` (8 for Llama 3.1, 32 for 3.2) is refused, naming the
key to add. The context length is ``max_seq_len`` when params.json has it,
else the release's (4096 for a SentencePiece tokenizer, 8192 for tiktoken,
131072 with scaled RoPE); it bounds the KV cache only, never the logits.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ..core.checkpoint_format import writing
from ..errors import CheckpointError, ConfigError, UsageError
from ..loaders.configs import ConfigChoice, config_from_hf, read_json
from ..loaders.export import atomic_folder, conversion_report, hf_tensors, tensor_bytes
from ..loaders.foreign import ForeignFormat
from ..loaders.pipeline import FORMAT_KEY, Prepared, Source
from ..loaders.state_dict import StateDictSource, torch_load
from . import meta_tokenizer

FAMILY = "llama"
PARAMS = "params.json"
SHARD = re.compile(r"consolidated\.(\d+)\.pth$")
COLUMN = ("attention.wq", "attention.wk", "attention.wv", "feed_forward.w1", "feed_forward.w3")
ROW = ("attention.wo", "feed_forward.w2")
REPLICATED = ("attention_norm", "ffn_norm")
LLAMA3_ROPE = {
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 8192,
}
LAYER = {
    "attention.wq": "self_attn.q_proj",
    "attention.wk": "self_attn.k_proj",
    "attention.wv": "self_attn.v_proj",
    "attention.wo": "self_attn.o_proj",
    "feed_forward.w1": "mlp.gate_proj",
    "feed_forward.w2": "mlp.down_proj",
    "feed_forward.w3": "mlp.up_proj",
    "attention_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
}
TOP = {"tok_embeddings": "model.embed_tokens", "norm": "model.norm", "output": "lm_head"}
DERIVED = ("rope.freqs",)  # RoPE frequencies some releases saved; recomputed from the config


def shards(folder: Path) -> list[Path]:
    found = {p: SHARD.search(p.name) for p in folder.iterdir()}
    numbered = {p: int(m[1]) for p, m in found.items() if m}
    return sorted(numbered, key=numbered.__getitem__)


def detect(path: Path) -> bool:
    return path.is_dir() and (path / PARAMS).is_file() and bool(shards(path))


# ---- the rotary permutation ----------------------------------------------------------
def to_halves(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Meta's interleaved-pair rows of q/k -> transformers' rotate-half rows (per head)."""
    rows, cols = w.shape
    return w.view(n_heads, rows // n_heads // 2, 2, cols).transpose(1, 2).reshape(rows, cols)


def to_pairs(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    """The inverse of :func:`to_halves`."""
    rows, cols = w.shape
    return w.view(n_heads, 2, rows // n_heads // 2, cols).transpose(1, 2).reshape(rows, cols)


# ---- params.json ---------------------------------------------------------------------
def read_params(folder: Path) -> dict[str, Any]:
    params = read_json(folder / PARAMS, PARAMS)
    for key in ("dim", "n_layers", "n_heads"):
        value = params.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ConfigError(
                f"{str(folder / PARAMS)!r}: {key!r} must be a positive integer, found {value!r}."
            )
    return params


def ffn_hidden(dim: int, multiple_of: int, ffn_dim_multiplier: float | None) -> int:
    """The SwiGLU width as Meta's ``FeedForward`` computes it."""
    hidden = int(2 * (4 * dim) / 3)
    if ffn_dim_multiplier is not None:
        hidden = int(ffn_dim_multiplier * hidden)
    return multiple_of * ((hidden + multiple_of - 1) // multiple_of)


def _context(params: Mapping[str, Any], folder: Path) -> tuple[int, str]:
    if isinstance(params.get("max_seq_len"), int):
        return params["max_seq_len"], "max_seq_len"
    if params.get("use_scaled_rope"):
        return 131072, "the scaled-RoPE releases' context"
    kind = meta_tokenizer.kind(folder)
    if kind == "tiktoken":
        return 8192, "the tiktoken releases' context"
    return 4096, "the SentencePiece releases' context"


def hf_config(params: Mapping[str, Any], source: Any, folder: Path) -> tuple[dict[str, Any], str]:
    """transformers' config.json dict for ``params`` and the merged tensors' shapes."""
    where = repr(str(folder / PARAMS))
    dim, n_heads = params["dim"], params["n_heads"]
    shapes = {n: tuple(t.shape) for n, t in source.tensors.items()}
    vocab = shapes["model.embed_tokens.weight"][0]
    said = params.get("vocab_size")
    if isinstance(said, int) and said > 0 and said != vocab:
        raise ConfigError(f"{where} says vocab_size {said}, but tok_embeddings has {vocab} rows.")
    hidden = ffn_hidden(dim, int(params.get("multiple_of", 256)), params.get("ffn_dim_multiplier"))
    w1 = shapes.get("model.layers.0.mlp.gate_proj.weight", (hidden,))[0]
    if w1 != hidden:
        raise ConfigError(
            f"{where}: multiple_of {params.get('multiple_of', 256)} and ffn_dim_multiplier "
            f"{params.get('ffn_dim_multiplier')} give an MLP width of {hidden}, but "
            f"layers.0.feed_forward.w1 has {w1} rows. Fix params.json to match the weights."
        )
    ctx, ctx_from = _context(params, folder)
    out: dict[str, Any] = {
        "model_type": "llama",
        "vocab_size": vocab,
        "hidden_size": dim,
        "intermediate_size": hidden,
        "num_hidden_layers": params["n_layers"],
        "num_attention_heads": n_heads,
        "num_key_value_heads": params.get("n_kv_heads") or n_heads,
        "max_position_embeddings": ctx,
        "rms_norm_eps": params.get("norm_eps", 1e-5),
        "rope_theta": params.get("rope_theta", 10000.0),
        "tie_word_embeddings": "lm_head.weight" not in shapes,
        **meta_tokenizer.special_ids(folder),
    }
    if params.get("use_scaled_rope"):
        factor = params.get("rope_scaling_factor")
        if not isinstance(factor, (int, float)) or isinstance(factor, bool) or factor <= 0:
            raise ConfigError(
                f"{where} sets use_scaled_rope but not rope_scaling_factor, which the weights "
                "cannot show (Meta's releases: 8 for Llama 3.1, 32 for Llama 3.2). Pass --config "
                'FILE.json with a copy of params.json that adds "rope_scaling_factor": 8 or 32.'
            )
        out["rope_scaling"] = {"rope_type": "llama3", "factor": float(factor), **LLAMA3_ROPE}
    return out, f"{PARAMS} (Meta's original format; context length from {ctx_from})"


def choose(loc: Any, source: Any, family: Any, config: Any = None) -> ConfigChoice:
    from ..registry import get_family

    fam = get_family(FAMILY)
    if family and (family if isinstance(family, str) else family.name) != FAMILY:
        raise ConfigError(
            f"{loc.where} is one of Meta's original Llama checkpoints; leave --family out."
        )
    params = read_params(loc.folder)
    label_from = PARAMS
    if config is not None:
        if not isinstance(config, (str, Path, Mapping)):
            return ConfigChoice(fam, config, "config object")
        if isinstance(config, Mapping):
            params = dict(config)
        else:
            params = read_json(Path(config), "--config")
        label_from = "the config dict" if isinstance(config, Mapping) else f"--config {config}"
        if "model_type" in params:  # a transformers config.json
            return ConfigChoice(fam, config_from_hf(fam, params, label_from), label_from)
    hf, label = hf_config(params, source, loc.folder)
    label = label.replace(PARAMS, label_from, 1)
    return ConfigChoice(fam, config_from_hf(fam, hf, label_from), label)


# ---- reading and merging -------------------------------------------------------------
def _axis(name: str, parts: list[torch.Tensor], dim: int) -> int | None:
    """The axis ``name`` was split on across model-parallel shards (None: replicated)."""
    short = name.rsplit(".", 1)[0]
    if short.endswith(COLUMN) or short == "output":
        return 0
    if short.endswith(ROW):
        return 1
    if short == "tok_embeddings":
        return 0 if parts[0].shape[1] == dim else 1
    return None


def merge(
    states: list[dict[str, torch.Tensor]], files: list[Path], dim: int
) -> dict[str, torch.Tensor]:
    """One state dict from model-parallel shards (see the module docstring)."""
    names = list(states[0])
    for f, s in zip(files[1:], states[1:], strict=True):
        if set(s) != set(names):
            odd = sorted(set(s) ^ set(names))[:4]
            raise CheckpointError(
                f"{str(f)!r} and {files[0].name} hold different tensors ({', '.join(odd)}): the "
                "shards are from different checkpoints. Download the folder again."
            )
    merged = {}
    for name in names:
        parts = [s[name] for s in states]
        axis = _axis(name, parts, dim) if len(parts) > 1 else None
        if axis is not None:
            merged[name] = torch.cat(parts, dim=axis)
        elif any(not torch.equal(p, parts[0]) for p in parts[1:]):
            raise CheckpointError(
                f"{name!r} should be the same in every shard (a replicated tensor) but differs "
                f"between {files[0].name} and the others: the shards are from different "
                "checkpoints."
            )
        else:
            merged[name] = parts[0]
    return merged


def hf_name(name: str) -> str | None:
    """transformers' name of a Meta tensor (None: a derived buffer to drop)."""
    if name in DERIVED:
        return None
    m = re.fullmatch(r"layers\.(\d+)\.(.+)\.weight", name)
    if m and m[2] in LAYER:
        return f"model.layers.{m[1]}.{LAYER[m[2]]}.weight"
    base = name.removesuffix(".weight")
    if base in TOP and name.endswith(".weight"):
        return f"{TOP[base]}.weight"
    raise CheckpointError(
        f"Meta checkpoint tensor {name!r} is not one of Meta's Llama names (tok_embeddings, "
        "layers.N.attention.wq/wk/wv/wo, feed_forward.w1/w2/w3, attention_norm, ffn_norm, norm, "
        "output)."
    )


def open_meta(loc: Any) -> StateDictSource:
    """The merged shards under transformers' names, q/k rows in rotate-half order."""
    params = read_params(loc.folder)
    files = list(loc.files)
    states = []
    for f in files:
        obj = torch_load(f)
        ok = isinstance(obj, Mapping) and all(isinstance(v, torch.Tensor) for v in obj.values())
        if not ok:
            raise CheckpointError(f"{str(f)!r} is not a Meta state dict (name -> tensor).")
        states.append(dict(obj))
    merged = merge(states, files, params["dim"])
    n_heads = params["n_heads"]
    n_kv = params.get("n_kv_heads") or n_heads
    out: dict[str, torch.Tensor] = {}
    for name, t in merged.items():
        hf = hf_name(name)
        if hf is None:
            continue
        if name.endswith("attention.wq.weight"):
            t = to_halves(t, n_heads)
        elif name.endswith("attention.wk.weight"):
            t = to_halves(t, n_kv)
        out[hf] = t
    return StateDictSource(out, metadata={FORMAT_KEY: "hf"}, private=False)


def tokenizer(loc: Any, cfg: Any) -> Any:
    return meta_tokenizer.load(loc.folder)


# ---- writing -------------------------------------------------------------------------
def params_of(cfg: Any, prefer: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """params.json for a Llama family config; refuses what Meta's format cannot express.

    ``prefer``: the source's own params.json (a Meta folder converted again), whose
    multiple_of / ffn_dim_multiplier are kept when they give the same width.
    """
    problems = [
        what
        for bad, what in (
            (cfg.attention_bias, "attention biases"),
            (cfg.mlp_bias, "MLP biases"),
            (cfg.hidden_act != "silu", f"activation {cfg.hidden_act!r}"),
            (cfg.head_dim * cfg.num_attention_heads != cfg.hidden_size, f"head_dim {cfg.head_dim}"),
        )
        if bad
    ]
    rope = cfg.rope()
    if rope.type not in ("default", "llama3"):
        problems.append(f"RoPE recipe {rope.type!r}")
    if problems:
        raise UsageError(
            f"Meta's params.json cannot express {', '.join(problems)}; use --to hf or --to native."
        )
    out: dict[str, Any] = {
        "dim": cfg.hidden_size,
        "n_layers": cfg.num_hidden_layers,
        "n_heads": cfg.num_attention_heads,
        "n_kv_heads": cfg.num_key_value_heads,
        "vocab_size": cfg.vocab_size,
        **_ffn_fields(cfg.hidden_size, cfg.intermediate_size, prefer),
        "norm_eps": cfg.rms_norm_eps,
        "rope_theta": rope.theta,
        "use_scaled_rope": rope.type == "llama3",
        "max_seq_len": cfg.max_position_embeddings,
    }
    if rope.type == "llama3":
        extra = {k: rope.params.get(k) for k in LLAMA3_ROPE}
        if extra != LLAMA3_ROPE:
            raise UsageError(
                f"Meta's scaled RoPE fixes {LLAMA3_ROPE}; this model has {extra}. Use --to hf."
            )
        out["rope_scaling_factor"] = rope.params["factor"]
    return out


def _ffn_fields(dim: int, hidden: int, prefer: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """multiple_of / ffn_dim_multiplier that reproduce ``hidden`` (``prefer``'s when they do)."""
    if prefer and isinstance(prefer.get("multiple_of"), int):
        mult = prefer.get("ffn_dim_multiplier")
        if ffn_hidden(dim, prefer["multiple_of"], mult) == hidden:
            return {"multiple_of": prefer["multiple_of"], "ffn_dim_multiplier": mult}
    for multiple in (256, 128, 64, 32, 16, 8, 4, 2, 1):
        if ffn_hidden(dim, multiple, None) == hidden:
            return {"multiple_of": multiple, "ffn_dim_multiplier": None}
    base = int(2 * (4 * dim) / 3)
    mult = (hidden + 0.5) / base
    if ffn_hidden(dim, 1, mult) == hidden:
        return {"multiple_of": 1, "ffn_dim_multiplier": mult}
    raise UsageError(
        f"No multiple_of/ffn_dim_multiplier gives an MLP width of {hidden} for dim {dim}."
    )


def meta_name(hf: str) -> str:
    for meta, ours in TOP.items():
        if hf == f"{ours}.weight":
            return f"{meta}.weight"
    m = re.fullmatch(r"model\.layers\.(\d+)\.(.+)\.weight", hf)
    back = {v: k for k, v in LAYER.items()}
    if m and m[2] in back:
        return f"layers.{m[1]}.{back[m[2]]}.weight"
    raise UsageError(f"Meta's format has no name for {hf!r}; use --to hf or --to native.")


def write(prep: Prepared, source: Source, out: Path, loc: Any = None) -> dict[str, Any]:
    """``convert --to meta --out DIR``: params.json, consolidated.00.pth, tokenizer.model."""
    if prep.family.name != FAMILY:
        raise UsageError(
            f"--to meta writes Meta's Llama format; this is a {prep.family.name} model. "
            "Use --to hf."
        )
    cfg = prep.config
    src = getattr(loc, "folder", None)
    prefer = read_params(Path(src)) if src is not None and detect(Path(src)) else None
    params = params_of(cfg, prefer)
    _, stream = hf_tensors(prep, source)
    state: dict[str, torch.Tensor] = {}
    for name, t in stream:
        if name.endswith("self_attn.q_proj.weight"):
            t = to_pairs(t, cfg.num_attention_heads)
        elif name.endswith("self_attn.k_proj.weight"):
            t = to_pairs(t, cfg.num_key_value_heads)
        state[meta_name(name)] = t.contiguous().clone()
    if "output.weight" not in state:  # tied here; Meta's model always has its own output
        state["output.weight"] = state["tok_embeddings.weight"].clone()
    copied = []
    needed = tensor_bytes(state)
    with atomic_folder(Path(out), needed) as tmp:
        with writing(tmp / "consolidated.00.pth") as path, open(path, "wb") as f:
            torch.save(state, f)  # a file object: a full disk keeps its errno
        (tmp / PARAMS).write_text(json.dumps(params, indent=2) + "\n")
        if src is not None and (Path(src) / "tokenizer.model").is_file():
            (tmp / "tokenizer.model").write_bytes((Path(src) / "tokenizer.model").read_bytes())
            copied.append("tokenizer.model")
    files = ["consolidated.00.pth", PARAMS, *copied]
    return conversion_report(out, "meta", prep.family.name, files, state, copied)


FORMAT = ForeignFormat(
    name="meta",
    description="Meta's original Llama folders (params.json, consolidated.NN.pth, tokenizer.model)",
    detect=detect,
    files=shards,
    folder=lambda p: p,
    open=open_meta,
    choose=choose,
    tokenizer=tokenizer,
    write=write,
    tokenizer_files=meta_tokenizer.hf_files,
)

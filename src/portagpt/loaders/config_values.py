"""Every config value checked, type and range, before anything is built.

A config.json that says ``"hidden_size": "64"``, ``"rope_theta": 0`` or a
negative YaRN ``factor`` must be refused naming the file and the key, not
surface later as a ``TypeError`` deep in a model or as NaN logits blamed on
the weights. Two generic passes, no family named:

* :func:`check_hf` walks a config.json dict (and its ``text_config`` and RoPE
  dicts) against :data:`KEYS`, a table of config.json keys -> the kind of
  value they hold (positive whole number, probability, boolean, ...). Keys it
  does not know are left to the family.
* :func:`check_config` walks the family's config object: every dataclass field
  against its annotated type (``int``, ``float | None``, ``tuple[int, ...]``,
  nested dataclasses), with the range of the same-named key in :data:`KEYS`.

:func:`check_against_names` then compares the layer and expert counts with
the tensor names of the checkpoint's headers, so a config that asks for
100000 layers is refused in milliseconds instead of being built first.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from ..errors import ConfigError, ConfigMismatchError

Check = Callable[[Any], bool]


def _int(v: Any) -> bool:
    return type(v) is int


def _num(v: Any) -> bool:
    return type(v) in (int, float) and math.isfinite(v)


# kind name -> (what the message says is expected, test)
KINDS: dict[str, tuple[str, Check]] = {
    "pos_int": ("a whole number >= 1", lambda v: _int(v) and v >= 1),
    "nonneg_int": ("a whole number >= 0", lambda v: _int(v) and v >= 0),
    "pos_float": ("a finite number > 0", lambda v: _num(v) and v > 0),
    "nonneg_float": ("a finite number >= 0", lambda v: _num(v) and v >= 0),
    "fraction": ("a number in (0, 1]", lambda v: _num(v) and 0 < v <= 1),
    "dropout": ("a probability in [0, 1)", lambda v: _num(v) and 0 <= v < 1),
    "bool": ("true or false", lambda v: type(v) is bool),
    "str": ("a string", lambda v: isinstance(v, str) and bool(v)),
    "token_ids": (
        "a token id >= 0 or a list of them",
        lambda v: (_int(v) and v >= 0)
        or (isinstance(v, (list, tuple)) and all(_int(i) and i >= 0 for i in v)),
    ),
    "any_token_id": ("a whole number", _int),
    "str_list": (
        "a list of strings",
        lambda v: isinstance(v, (list, tuple)) and all(isinstance(i, str) for i in v),
    ),
    "int_list": (
        "a list of whole numbers >= 0",
        lambda v: isinstance(v, (list, tuple)) and all(_int(i) and i >= 0 for i in v),
    ),
    "pos_float_list": (
        "a list of finite numbers > 0",
        lambda v: isinstance(v, (list, tuple)) and all(_num(i) and i > 0 for i in v),
    ),
}

# config.json key -> (kind, null allowed). Dataclass fields named like a key get its range.
KEYS: dict[str, tuple[str, bool]] = {
    **{
        k: ("pos_int", False)
        for k in (
            "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
            "num_attention_heads", "max_position_embeddings", "n_embd", "n_layer", "n_head",
            "n_positions", "n_ctx", "moe_intermediate_size", "num_experts_per_tok",
            "decoder_sparse_step", "sliding_window_pattern", "context_length", "emb_dim",
            "n_heads", "n_layers", "num_local_experts", "original_max_position_embeddings",
        )
    },
    **{
        k: ("pos_int", True)
        for k in ("head_dim", "num_key_value_heads", "n_inner", "sliding_window", "hidden_dim")
    },
    **{k: ("nonneg_int", False) for k in ("num_experts",)},
    **{k: ("token_ids", True) for k in ("bos_token_id", "eos_token_id")},
    "pad_token_id": ("any_token_id", True),  # old configs write -1 for "none"
    **{
        k: ("pos_float", False)
        for k in (
            "rope_theta", "rope_local_base_freq", "rms_norm_eps", "layer_norm_epsilon",
            "layer_norm_eps", "query_pre_attn_scalar", "factor", "low_freq_factor",
            "high_freq_factor", "beta_fast", "beta_slow", "attention_factor", "theta",
        )
    },
    **{k: ("pos_float", True) for k in ("attn_logit_softcapping", "final_logit_softcapping")},
    **{k: ("nonneg_float", False) for k in ("initializer_range", "mscale", "mscale_all_dim")},
    "partial_rotary_factor": ("fraction", False),
    **{
        k: ("dropout", False)
        for k in (
            "drop_rate", "resid_pdrop", "embd_pdrop", "attn_pdrop", "attention_dropout",
            "hidden_dropout", "summary_first_dropout",
        )
    },
    **{
        k: ("bool", False)
        for k in (
            "tie_word_embeddings", "attention_bias", "mlp_bias", "qkv_bias", "norm_topk_prob",
            "scale_attn_weights", "use_sliding_window",
        )
    },
    **{
        k: ("str", False)
        for k in (
            "model_type", "hidden_act", "activation_function", "hidden_activation", "activation",
            "rope_type", "type",
        )
    },
    "layer_types": ("str_list", True),
    "architectures": ("str_list", True),
    **{k: ("str", True) for k in ("dtype", "torch_dtype")},
    "use_cache": ("bool", False),
    "pretraining_tp": ("pos_int", False),
    "mlp_only_layers": ("int_list", False),
    **{k: ("pos_float_list", False) for k in ("long_factor", "short_factor")},
}
ROPE_DICTS = ("rope_scaling", "rope_parameters")
LAYER_KEYS = ("num_hidden_layers", "n_layer", "n_layers", "num_layers")
EXPERT_KEYS = ("num_experts", "num_local_experts", "n_routed_experts")
_INDEX = re.compile(r"(?:^|\.)(\d+)\.")


def _fail(where: str, key: str, value: Any, expected: str) -> ConfigError:
    if value is None:
        shown = "null"
    elif isinstance(value, (bool, int, float)):
        shown = repr(value)
    else:
        shown = f"{type(value).__name__} {value!r}"
    return ConfigError(
        f"{where}: the config value {key!r} is {shown}, but it must be {expected}. Fix {key!r} in "
        "the config (the weights were not looked at: this is a config error)."
    )


def check_value(where: str, key: str, value: Any) -> None:
    """One config.json value against :data:`KEYS` (unknown keys pass)."""
    leaf = key.rsplit(".", 1)[-1]
    if leaf not in KEYS:
        return
    kind, nullable = KEYS[leaf]
    if value is None:
        if not nullable:
            raise _fail(where, key, value, KINDS[kind][0])
        return
    expected, test = KINDS[kind]
    if not test(value):
        raise _fail(where, key, value, expected + (" (or null)" if nullable else ""))


def _rope_dict(where: str, key: str, value: Any) -> None:
    if value is None:
        return
    if not isinstance(value, Mapping):
        raise _fail(where, key, value, "a JSON object (or null)")
    nested = value and all(isinstance(v, Mapping) or v is None for v in value.values())
    if nested:  # one entry per layer type
        for sub, entry in value.items():
            _rope_dict(where, f"{key}.{sub}", entry)
        return
    for k, v in value.items():
        check_value(where, f"{key}.{k}", v)


def check_hf(hf: Mapping[str, Any], where: str) -> None:
    """Every known key of a config.json dict (and its ``text_config``) has a value of the right kind."""
    for prefix, d in (("", hf), ("text_config.", hf.get("text_config"))):
        if prefix and d is None:
            continue
        if not isinstance(d, Mapping):
            raise _fail(where, "text_config", d, "a JSON object")
        for key, value in d.items():
            if key in ROPE_DICTS:
                _rope_dict(where, prefix + key, value)
            elif key != "text_config":
                check_value(where, prefix + key, value)
        heads, kv = d.get("num_attention_heads"), d.get("num_key_value_heads")
        if _int(heads) and _int(kv) and heads >= 1 and kv >= 1 and heads % kv:
            raise ConfigError(
                f"{where}: num_attention_heads ({heads}) is not a multiple of num_key_value_heads "
                f"({kv}): each key/value head must serve a whole number of query heads. Fix the two "
                "keys in the config."
            )


# ---- the family's config object ---------------------------------------------------------
def _matches(value: Any, hint: Any) -> bool:
    """Whether ``value`` fits the annotation ``hint`` (unknown annotations pass)."""
    if hint is Any or hint is None:
        return True
    if hint is type(None):
        return value is None
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, h) for h in typing.get_args(hint))
    if hint is bool:
        return type(value) is bool
    if hint is int:
        return _int(value)
    if hint is float:
        return _num(value)
    if hint is str:
        return isinstance(value, str)
    if origin is tuple or hint is tuple:
        args = typing.get_args(hint)
        if not isinstance(value, (tuple, list)):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(_matches(v, args[0]) for v in value)
        return not args or (len(args) == len(value) and all(map(_matches, value, args)))
    if origin is not None and isinstance(origin, type) and issubclass(origin, Mapping):
        return isinstance(value, Mapping)
    if isinstance(hint, type):
        return isinstance(value, hint)
    return True


def check_config(cfg: Any, where: str, prefix: str = "") -> None:
    """Every field of a dataclass config against its annotated type and :data:`KEYS`' range."""
    if not dataclasses.is_dataclass(cfg) or isinstance(cfg, type):
        return
    try:
        hints = typing.get_type_hints(type(cfg))
    except Exception:  # noqa: BLE001 - unresolvable annotations: check ranges only
        hints = {}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        key = prefix + f.name
        hint = hints.get(f.name)
        if hint is not None and not _matches(value, hint):
            raise _fail(where, key, value, f"of type {getattr(hint, '__name__', None) or hint}")
        if f.name in ROPE_DICTS:
            _rope_dict(where, key, value)
        elif f.name == "params" and isinstance(value, Mapping):  # a RoPE recipe's parameters
            for k, v in value.items():
                check_value(where, f"{key}.{k}", v)
        elif dataclasses.is_dataclass(value):
            check_config(value, where, key + ".")
        else:
            check_value(where, key, value)


# ---- config against the checkpoint's names (headers only) --------------------------------
def _count(names: Iterable[str], level: int) -> int | None:
    """1 + the largest index at nesting ``level`` (0: layers, 1: experts) among ``names``."""
    top = None
    for n in names:
        found = _INDEX.findall(n)
        if len(found) > level and (level == 0 or "expert" in n):
            top = max(top or 0, int(found[level]))
    return None if top is None else top + 1


def _field(cfg: Any, keys: tuple[str, ...]) -> tuple[str, int] | None:
    for k in keys:
        v = getattr(cfg, k, None)
        if _int(v):
            return k, v
    return None


def check_against_names(
    cfg: Any, names: Iterable[str], where_config: str, where_weights: str
) -> None:
    """Refuse a config that asks for more layers (or experts) than the checkpoint's tensors hold.

    Only counts the checkpoint's own numbered names, so it runs in microseconds
    whatever the config says; fewer layers than the checkpoint has is left to
    the strict check (it costs nothing to build).
    """
    names = list(names)
    for keys, level, what in ((LAYER_KEYS, 0, "layers"), (EXPERT_KEYS, 1, "experts per layer")):
        field = _field(cfg, keys)
        have = _count(names, level)
        if field is None or have is None or field[1] <= have:
            continue
        key, want = field
        raise ConfigMismatchError(
            f"The checkpoint has {have} {what}, the config says {want}: {where_config} gives "
            f"{key}={want}, but {where_weights} holds tensors for {have} {what} (numbered "
            f"0..{have - 1}). The config does not belong to these weights; set the count in the "
            f"config ({'/'.join(keys[:2])} in config.json) to {have}, or use the config.json saved "
            "with the checkpoint."
        )

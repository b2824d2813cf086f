"""Rotary position embeddings: a registry of frequency recipes, the config spellings, the tables.

Recipes (``rope_type``) live in a registry that a plugin can extend with
:func:`register_rope`. Built in, computed as transformers computes them so
logits match to fp32 precision: ``default``, ``linear``, ``llama3``, ``yarn``,
``dynamic`` (NTK-aware, static at the model's maximum length) and
``longrope`` (alias ``su``: per-channel ``short_factor`` / ``long_factor``,
switching to the long set once a sequence passes
``original_max_position_embeddings``).

A recipe turns a :class:`RopeConfig` and the rotary width into
:class:`RopeFrequencies`: the inverse frequencies, the cos/sin scaling, and
optionally a second (long) set used once positions reach ``long_from``.
Keys computed with the short set are wrong for a longer sequence, so a
:class:`RotaryEmbedding` with a long set declares ``reprefill_at``; the
generation harness recomputes the cache the moment a sequence grows past it
(transformers does the same for LongRoPE models), so cached and uncached
decoding agree.

Config spellings: transformers 4.x writes ``rope_theta`` plus an optional
``rope_scaling`` dict (``type`` or ``rope_type``); 5.x writes
``rope_parameters``, either one dict or one dict per layer type
(``{"full_attention": {...}, "sliding_attention": {...}}``).
:func:`rope_params_from_hf` turns any of them into one flat :class:`RopeConfig`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError, PluginError
from .threads import one_thread_if_small


@dataclass(frozen=True)
class RopeConfig:
    """One RoPE recipe: base, type and the type's parameters (flat, transformers' key names)."""

    theta: float = 10000.0
    type: str = "default"
    params: Mapping[str, Any] = field(default_factory=dict)

    def to_hf(self) -> dict[str, Any]:
        """The 5.x ``rope_parameters`` dict for this recipe."""
        return {"rope_type": self.type, "rope_theta": self.theta, **dict(self.params)}


@dataclass(frozen=True)
class RopeFrequencies:
    """What a recipe computes for one rotary width ``dim``.

    ``inv_freq`` (dim // 2,) and ``attention_scaling`` (cos and sin are multiplied
    by it). A recipe with a second set for long sequences gives ``long_inv_freq``
    and ``long_from``: a forward pass whose largest position is ``>= long_from``
    uses the long set for every position (transformers' rule).
    """

    inv_freq: torch.Tensor
    attention_scaling: float = 1.0
    long_inv_freq: torch.Tensor | None = None
    long_from: int | None = None


FrequencyFn = Callable[[RopeConfig, int], RopeFrequencies]
ConfigDefaultsFn = Callable[[dict[str, Any], Mapping[str, Any]], None]


@dataclass(frozen=True)
class RopeRecipe:
    """A registered recipe: its name, frequency function, config defaults and aliases."""

    name: str
    frequencies: FrequencyFn
    config_defaults: ConfigDefaultsFn | None = None
    aliases: tuple[str, ...] = ()


_RECIPES: dict[str, RopeRecipe] = {}
_ALIASES: dict[str, str] = {}  # alias -> recipe name


def register_rope(
    name: str,
    frequencies: FrequencyFn,
    *,
    config_defaults: ConfigDefaultsFn | None = None,
    aliases: Iterable[str] = (),
    replace: bool = False,
) -> RopeRecipe:
    """Add a RoPE recipe, so configs with ``rope_type: name`` (or an alias) load.

    ``frequencies(rope, dim)`` gets the :class:`RopeConfig` (``theta``, ``type``
    and the flat ``params`` from config.json) and the rotary width ``dim``
    (``head_dim`` times ``partial_rotary_factor``) and returns
    :class:`RopeFrequencies`. It runs on CPU in fp32, when a model is built and
    again from ``reset_parameters()`` after meta loading; raise
    :class:`~portagpt.errors.ConfigError` for missing or bad parameters.

    ``config_defaults(params, hf)`` may fill ``params`` (the recipe's dict, to be
    kept in the RopeConfig and written back to config.json) from the top level
    of the config.json dict ``hf``, e.g. ``original_max_position_embeddings``.
    ``aliases`` are other spellings of the name (older configs); they read as
    ``name``. Registering a taken name or alias is a PluginError unless
    ``replace=True`` (the same function registered again, when its module is
    imported a second time, simply replaces itself). Call it at import time of
    the plugin module, e.g.::

        def my_freqs(rope: RopeConfig, dim: int) -> RopeFrequencies:
            exps = torch.arange(0, dim, 2).float() / dim
            return RopeFrequencies(1.0 / (rope.theta**exps * rope.params["factor"]))

        register_rope("my_scaled", my_freqs)
    """
    names = (name, *aliases)
    if not replace and not _same_function(_RECIPES.get(name), frequencies):
        taken = [n for n in names if n in _RECIPES or n in _ALIASES]
        if taken:
            raise PluginError(
                f"RoPE recipe name(s) {', '.join(map(repr, taken))} are already registered "
                f"(known: {', '.join(rope_types())}); pick another name, or pass replace=True to "
                "override a recipe on purpose."
            )
    recipe = RopeRecipe(name, frequencies, config_defaults, tuple(aliases))
    for n in names:  # a replaced name or alias now means this recipe only
        _ALIASES.pop(n, None)
        if n != name:
            _RECIPES.pop(n, None)
    _RECIPES[name] = recipe
    for alias in recipe.aliases:
        _ALIASES[alias] = name
    return recipe


def _same_function(recipe: RopeRecipe | None, fn: FrequencyFn) -> bool:
    """Whether ``fn`` is the registered function again (its module imported a second time)."""
    if recipe is None:
        return False
    old = recipe.frequencies
    key = (getattr(old, "__module__", None), getattr(old, "__qualname__", None))
    return key == (getattr(fn, "__module__", None), getattr(fn, "__qualname__", None))


def rope_types() -> tuple[str, ...]:
    """The registered recipe names (aliases not included)."""
    return tuple(_RECIPES)


def rope_recipe(name: str) -> RopeRecipe:
    """The recipe registered as ``name`` or an alias of it; ConfigError when unknown."""
    recipe = _RECIPES.get(_ALIASES.get(name, name))
    if recipe is None:
        raise ConfigError(
            f"Unsupported rope_type {name!r} in config.json. Supported: {', '.join(rope_types())}. "
            "A plugin can add a recipe with portagpt.core.rope.register_rope."
        )
    return recipe


def _is_nested(rp: Mapping[str, Any]) -> bool:
    return bool(rp) and all(isinstance(v, Mapping) or v is None for v in rp.values())


def _rope_entry(hf: Mapping[str, Any], layer_type: str | None) -> dict[str, Any]:
    """The one recipe dict of ``hf`` (5.x, per layer type, or 4.x), not yet normalised."""
    rp = hf.get("rope_parameters")
    if not (rp and _is_nested(rp)):
        return dict(rp) if rp else dict(hf.get("rope_scaling") or {})
    if layer_type is None:
        raise ConfigError(
            f"rope_parameters is given per layer type ({', '.join(rp)}) but no layer type "
            "was asked for; this is a bug in the family's config translation."
        )
    if rp.get(layer_type) is None:
        raise ConfigError(
            f"config.json rope_parameters has no entry for layer type {layer_type!r} "
            f"(it has {', '.join(k for k, v in rp.items() if v is not None)})."
        )
    return dict(rp[layer_type])


def rope_params_from_hf(
    hf: Mapping[str, Any],
    layer_type: str | None = None,
    default_theta: float = 10000.0,
    *,
    theta_key: str = "rope_theta",
) -> RopeConfig:
    """Read the RoPE recipe from a config.json dict in any spelling.

    ``layer_type`` selects a per-layer-type entry of a nested 5.x
    ``rope_parameters`` (falling back to the single dict when not nested).
    ``theta_key`` lets a family read its 4.x base from another key (for
    example a local-attention base). The type is resolved through the recipe
    registry (aliases read as their recipe), whose ``config_defaults`` fill
    what the recipe needs from the top level of ``hf``.
    """
    entry = _rope_entry(hf, layer_type)
    theta = entry.pop("rope_theta", None)
    if theta is None:
        theta = hf.get(theta_key, default_theta)
    rtype = entry.pop("rope_type", None) or entry.pop("type", None) or "default"
    entry.pop("type", None)
    recipe = rope_recipe(rtype)
    if recipe.config_defaults is not None:
        recipe.config_defaults(entry, hf)
    if "partial_rotary_factor" in hf:
        entry.setdefault("partial_rotary_factor", hf["partial_rotary_factor"])
    return RopeConfig(theta=float(theta), type=recipe.name, params=entry)


def rope_frequencies(rope: RopeConfig, head_dim: int) -> RopeFrequencies:
    """The recipe's tables for ``rope`` at this head size (partial rotary factor applied)."""
    dim = int(head_dim * dict(rope.params).get("partial_rotary_factor", 1.0))
    return rope_recipe(rope.type).frequencies(rope, dim)


def inv_freq_and_scale(rope: RopeConfig, head_dim: int) -> tuple[torch.Tensor, float]:
    """Inverse frequencies (rotary dim // 2,) and the cos/sin scaling (the short set, if two)."""
    f = rope_frequencies(rope, head_dim)
    return f.inv_freq, f.attention_scaling


# ---- the built-in recipes ---------------------------------------------------------------
def _exponents(dim: int) -> torch.Tensor:
    return torch.arange(0, dim, 2, dtype=torch.int64).float() / dim


def _param(rope: RopeConfig, key: str) -> Any:
    try:
        return rope.params[key]
    except KeyError:
        raise ConfigError(
            f"rope_type {rope.type!r} needs {key!r} in config.json's rope_parameters "
            f"(rope_scaling in 4.x spelling); it has {', '.join(rope.params) or 'no parameters'}."
        ) from None


def _default(rope: RopeConfig, dim: int) -> RopeFrequencies:
    return RopeFrequencies(1.0 / rope.theta ** _exponents(dim))


def _linear(rope: RopeConfig, dim: int) -> RopeFrequencies:
    return RopeFrequencies(1.0 / rope.theta ** _exponents(dim) / _param(rope, "factor"))


def _original_max(params: dict[str, Any], hf: Mapping[str, Any]) -> None:
    params.setdefault(
        "original_max_position_embeddings",
        hf.get("original_max_position_embeddings", hf.get("max_position_embeddings")),
    )


def _dynamic_defaults(params: dict[str, Any], hf: Mapping[str, Any]) -> None:
    params.setdefault("max_position_embeddings", hf.get("max_position_embeddings"))


def _llama3(rope: RopeConfig, dim: int) -> RopeFrequencies:
    inv_freq = 1.0 / rope.theta ** _exponents(dim)
    factor, low, high = (_param(rope, k) for k in ("factor", "low_freq_factor", "high_freq_factor"))
    old_ctx = _param(rope, "original_max_position_embeddings")
    low_wavelen, high_wavelen = old_ctx / low, old_ctx / high
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > low_wavelen, inv_freq / factor, inv_freq)
    smooth = (old_ctx / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = ~(wavelen < high_wavelen) * ~(wavelen > low_wavelen)
    return RopeFrequencies(torch.where(medium, smoothed, scaled))


def _yarn(rope: RopeConfig, dim: int) -> RopeFrequencies:
    p, base = rope.params, rope.theta
    factor = _param(rope, "factor")
    orig_max = _param(rope, "original_max_position_embeddings")

    def mscale(scale: float, m: float = 1.0) -> float:
        return 1.0 if scale <= 1 else 0.1 * m * math.log(scale) + 1.0

    attention_factor = p.get("attention_factor")
    if attention_factor is None:
        if p.get("mscale") and p.get("mscale_all_dim"):
            attention_factor = mscale(factor, p["mscale"]) / mscale(factor, p["mscale_all_dim"])
        else:
            attention_factor = mscale(factor)
    beta_fast = p.get("beta_fast") or 32
    beta_slow = p.get("beta_slow") or 1

    def correction_dim(rotations: float) -> float:
        return (dim * math.log(orig_max / (rotations * 2 * math.pi))) / (2 * math.log(base))

    low, high = correction_dim(beta_fast), correction_dim(beta_slow)
    if p.get("truncate", True):
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, dim - 1)
    if low == high:
        high += 0.001
    ramp = torch.clamp((torch.arange(dim // 2, dtype=torch.float32) - low) / (high - low), 0, 1)
    extrapolation = 1 - ramp
    pos_freqs = base ** (torch.arange(0, dim, 2).float() / dim)
    inv_freq = (1.0 / (factor * pos_freqs)) * (1 - extrapolation) + (1.0 / pos_freqs) * extrapolation
    return RopeFrequencies(inv_freq, float(attention_factor))


def _longrope_defaults(params: dict[str, Any], hf: Mapping[str, Any]) -> None:
    # A top-level original_max_position_embeddings (how Phi-3 writes it) wins, as in transformers.
    if hf.get("original_max_position_embeddings") is not None:
        params["original_max_position_embeddings"] = hf["original_max_position_embeddings"]
    _original_max(params, hf)
    if params.get("factor") is None and hf.get("max_position_embeddings"):
        # transformers' default: the context extension ratio (kept, so config.json says it)
        original = params["original_max_position_embeddings"]
        params["factor"] = hf["max_position_embeddings"] / original


def _longrope(rope: RopeConfig, dim: int) -> RopeFrequencies:
    p = rope.params
    orig = int(_param(rope, "original_max_position_embeddings"))
    factor = p.get("factor")
    attention_factor = p.get("attention_factor")
    if attention_factor is None:
        if factor is None:
            raise ConfigError(
                "rope_type 'longrope' needs 'factor' or 'attention_factor' in rope_parameters "
                "(or max_position_embeddings next to original_max_position_embeddings)."
            )
        attention_factor = (
            1.0 if factor <= 1.0 else math.sqrt(1 + math.log(factor) / math.log(orig))
        )
    tables = []
    for key in ("short_factor", "long_factor"):
        ext = _param(rope, key)
        if not isinstance(ext, (list, tuple)) or len(ext) != dim // 2:
            found = len(ext) if isinstance(ext, (list, tuple)) else type(ext).__name__
            raise ConfigError(
                f"config.json rope_parameters {key!r} (LongRoPE) must list {dim // 2} numbers, "
                f"one per rotary frequency (rotary width {dim} = head_dim x partial_rotary_factor), "
                f"found {found}. Give a list of {dim // 2} numbers, as the checkpoint was trained."
            )
        ext_t = torch.tensor([float(x) for x in ext], dtype=torch.float32)
        tables.append(1.0 / (ext_t * rope.theta ** _exponents(dim)))
    return RopeFrequencies(tables[0], float(attention_factor), tables[1], orig)


register_rope("default", _default)
register_rope("linear", _linear)
# dynamic NTK in its static form: transformers only rescales past max_position_embeddings
register_rope("dynamic", _default, config_defaults=_dynamic_defaults)
register_rope("llama3", _llama3, config_defaults=_original_max)
register_rope("yarn", _yarn, config_defaults=_original_max)
register_rope("longrope", _longrope, config_defaults=_longrope_defaults, aliases=("su",))


class RotaryEmbedding(nn.Module):
    """cos/sin tables for one recipe; ``forward(positions)`` gives (cos, sin) of shape (B, T, dim).

    ``reprefill_at`` is None, or (for a recipe with a long set) the sequence
    length past which keys computed earlier are stale: the generation harness
    rebuilds its cache when a sequence grows past it.
    """

    def __init__(self, rope: RopeConfig, head_dim: int) -> None:
        super().__init__()
        self.rope = rope
        self.head_dim = head_dim
        with torch.device("cpu"):  # tiny and exact; arithmetic on meta would import torch._dynamo (~2 s)
            f = rope_frequencies(rope, head_dim)
        self.attention_scaling = f.attention_scaling
        self.reprefill_at = f.long_from
        # Not persistent: recomputed from the config, never stored in checkpoints.
        device = torch.get_default_device()
        self.register_buffer("inv_freq", f.inv_freq.to(device), persistent=False)
        long = f.long_inv_freq.to(device) if f.long_inv_freq is not None else None
        self.register_buffer("long_inv_freq", long, persistent=False)

    def reset_parameters(self) -> None:
        """Recompute the frequencies (after building on the meta device)."""
        f = rope_frequencies(self.rope, self.head_dim)
        device = self.inv_freq.device if self.inv_freq.device.type != "meta" else "cpu"
        self.inv_freq = f.inv_freq.to(device)
        if f.long_inv_freq is not None:
            self.long_inv_freq = f.long_inv_freq.to(device)
        self.attention_scaling = f.attention_scaling
        self.reprefill_at = f.long_from

    def forward(self, positions: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        inv_freq = self.inv_freq
        if self.long_inv_freq is not None:
            # one set for the whole pass, picked by its largest position (no host sync)
            long = positions.max() >= self.reprefill_at
            inv_freq = torch.where(long, self.long_inv_freq, inv_freq)
        with one_thread_if_small(positions.numel() * inv_freq.numel()):  # core/threads.py
            freqs = positions[..., None].float() * inv_freq.float()  # (B, T, dim/2)
            emb = torch.cat((freqs, freqs), dim=-1)  # (B, T, dim)
            cos = emb.cos() * self.attention_scaling
            sin = emb.sin() * self.attention_scaling
            return cos.to(dtype), sin.to(dtype)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rope(
    q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotate q (B, H, T, hd) and k (B, Hkv, T, hd) by cos/sin (B, T, rot_dim), half-split layout.

    With a partial rotary factor only the first ``rot_dim`` channels rotate.
    """
    cos, sin = cos[:, None], sin[:, None]  # (B, 1, T, rot_dim)
    rot = cos.shape[-1]
    if rot == q.shape[-1]:
        return q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
    q_rot, q_pass = q[..., :rot], q[..., rot:]
    k_rot, k_pass = k[..., :rot], k[..., rot:]
    q_rot = q_rot * cos + rotate_half(q_rot) * sin
    k_rot = k_rot * cos + rotate_half(k_rot) * sin
    return torch.cat((q_rot, q_pass), -1), torch.cat((k_rot, k_pass), -1)

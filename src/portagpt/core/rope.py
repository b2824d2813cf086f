"""Rotary position embeddings: the frequency recipes and the config spellings.

Recipes (``rope_type``): ``default``, ``linear``, ``llama3``, ``yarn`` and
``dynamic`` (NTK-aware, static at the model's maximum length), computed as
transformers computes them so logits match to fp32 precision.

Config spellings: transformers 4.x writes ``rope_theta`` plus an optional
``rope_scaling`` dict (``type`` or ``rope_type``); 5.x writes
``rope_parameters``, either one dict or one dict per layer type
(``{"full_attention": {...}, "sliding_attention": {...}}``).
:func:`rope_params_from_hf` turns any of them into one flat dict.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError
from .threads import one_thread_if_small

ROPE_TYPES = ("default", "linear", "llama3", "yarn", "dynamic")
_NEEDS_ORIGINAL_MAX = ("llama3", "yarn")


@dataclass(frozen=True)
class RopeConfig:
    """One RoPE recipe: base, type and the type's parameters (flat, transformers' key names)."""

    theta: float = 10000.0
    type: str = "default"
    params: Mapping[str, Any] = field(default_factory=dict)

    def to_hf(self) -> dict[str, Any]:
        """The 5.x ``rope_parameters`` dict for this recipe."""
        return {"rope_type": self.type, "rope_theta": self.theta, **dict(self.params)}


def _is_nested(rp: Mapping[str, Any]) -> bool:
    return bool(rp) and all(isinstance(v, Mapping) or v is None for v in rp.values())


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
    example a local-attention base).
    """
    rp = hf.get("rope_parameters")
    if rp and _is_nested(rp):
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
        entry = dict(rp[layer_type])
    elif rp:
        entry = dict(rp)
    else:
        entry = dict(hf.get("rope_scaling") or {})
    theta = entry.pop("rope_theta", None)
    if theta is None:
        theta = hf.get(theta_key, default_theta)
    rtype = entry.pop("rope_type", None) or entry.pop("type", None) or "default"
    entry.pop("type", None)
    if rtype not in ROPE_TYPES:
        raise ConfigError(
            f"Unsupported rope_type {rtype!r} in config.json. Supported: {', '.join(ROPE_TYPES)}."
        )
    if rtype in _NEEDS_ORIGINAL_MAX:
        entry.setdefault(
            "original_max_position_embeddings",
            hf.get("original_max_position_embeddings", hf.get("max_position_embeddings")),
        )
    if rtype == "dynamic":
        entry.setdefault("max_position_embeddings", hf.get("max_position_embeddings"))
    if "partial_rotary_factor" in hf:
        entry.setdefault("partial_rotary_factor", hf["partial_rotary_factor"])
    return RopeConfig(theta=float(theta), type=rtype, params=entry)


def inv_freq_and_scale(rope: RopeConfig, head_dim: int) -> tuple[torch.Tensor, float]:
    """Inverse frequencies (head_dim // 2,) and the cos/sin attention scaling for ``rope``."""
    p = dict(rope.params)
    dim = int(head_dim * p.get("partial_rotary_factor", 1.0))
    base = rope.theta
    exps = torch.arange(0, dim, 2, dtype=torch.int64).float() / dim
    if rope.type == "default":
        return 1.0 / base**exps, 1.0
    if rope.type == "linear":
        return 1.0 / base**exps / p["factor"], 1.0
    if rope.type == "dynamic":
        # Static form: transformers only rescales past max_position_embeddings.
        return 1.0 / base**exps, 1.0
    if rope.type == "llama3":
        return _llama3(1.0 / base**exps, p), 1.0
    if rope.type == "yarn":
        return _yarn(base, dim, p)
    raise ConfigError(f"Unsupported rope_type {rope.type!r}. Supported: {', '.join(ROPE_TYPES)}.")


def _llama3(inv_freq: torch.Tensor, p: Mapping[str, Any]) -> torch.Tensor:
    factor, low, high = p["factor"], p["low_freq_factor"], p["high_freq_factor"]
    old_ctx = p["original_max_position_embeddings"]
    low_wavelen, high_wavelen = old_ctx / low, old_ctx / high
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > low_wavelen, inv_freq / factor, inv_freq)
    smooth = (old_ctx / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = ~(wavelen < high_wavelen) * ~(wavelen > low_wavelen)
    return torch.where(medium, smoothed, scaled)


def _yarn(base: float, dim: int, p: Mapping[str, Any]) -> tuple[torch.Tensor, float]:
    factor = p["factor"]
    orig_max = p["original_max_position_embeddings"]

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
    return inv_freq, float(attention_factor)


class RotaryEmbedding(nn.Module):
    """cos/sin tables for one recipe; ``forward(positions)`` gives (cos, sin) of shape (B, T, dim)."""

    def __init__(self, rope: RopeConfig, head_dim: int) -> None:
        super().__init__()
        self.rope = rope
        self.head_dim = head_dim
        with torch.device("cpu"):  # tiny and exact; arithmetic on meta would import torch._dynamo (~2 s)
            inv_freq, scale = inv_freq_and_scale(rope, head_dim)
        self.attention_scaling = scale
        # Not persistent: recomputed from the config, never stored in checkpoints.
        self.register_buffer("inv_freq", inv_freq.to(torch.get_default_device()), persistent=False)

    def reset_parameters(self) -> None:
        """Recompute the frequencies (after building on the meta device)."""
        inv_freq, scale = inv_freq_and_scale(self.rope, self.head_dim)
        self.inv_freq = inv_freq.to(self.inv_freq.device if self.inv_freq.device.type != "meta" else "cpu")
        self.attention_scaling = scale

    def forward(self, positions: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        with one_thread_if_small(positions.numel() * self.inv_freq.numel()):  # core/threads.py
            freqs = positions[..., None].float() * self.inv_freq.float()  # (B, T, dim/2)
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

"""The causal language model every family shares: embeddings -> blocks -> final norm -> head.

A family subclasses :class:`CausalLM` and sets ``layer`` to its block; the
block subclasses :class:`DecoderLayer` (pre-norm: ``x + attn(norm(x))``, then
``x + mlp(norm(x))``) and overrides only what differs: ``attention`` (a
subclass of :class:`Attention`, e.g. with a QK-norm), ``modules`` (the names
of its modules, norms included, in checkpoint order), ``make_norm`` or ``make_mlp``, or ``forward`` for another residual
order. Module names follow
Hugging Face checkpoints (``model.embed_tokens``,
``model.layers.{i}.self_attn.q_proj``, ``model.norm``, ``lm_head``), so the
weight map is identity renames (:meth:`CausalLM.weight_map`).

What the base owns, once for every family: the attention context (masks and
the KV cache, from ``layer_specs``), RoPE tables (one per recipe, passed to
every layer as ``(cos, sin)``), ``logits_to_keep``, the tied head, and
initialisation (``N(0, initializer_range)``; norms and RoPE buffers through
their ``reset_parameters``). ``__init__`` only creates shapes, so models build
on the meta device. The config is read duck-typed: a
:class:`portagpt.adapters.config.DecoderConfig` provides every name used here.
"""

from __future__ import annotations

import re
from typing import Any

import torch
from torch import nn

from ..adapters.weights import Rule, WeightMap, drop, identity
from .attention import attend
from .cache import AttentionContext, KVCache, LayerSpec, attention_context
from .layers import GatedMLP, RMSNorm, init_normal_
from .linear import Linear
from .meta import empty_init
from .rope import RotaryEmbedding, apply_rope

Rope = tuple[torch.Tensor, torch.Tensor] | None  # (cos, sin), each (B, T, rot_dim)
_INDEX = re.compile(r"(?<=\.)\d+(?=\.)")


class Attention(nn.Module):
    """q/k/v/o projections, grouped-query heads, RoPE and the cache context.

    Subclasses change :meth:`qkv` (e.g. a QK-norm or a fused projection) or
    ``scale`` (None: ``head_dim ** -0.5``).
    """

    def __init__(self, cfg: Any, layer_idx: int) -> None:
        super().__init__()
        d, hd, bias = cfg.hidden_size, cfg.head_dim, cfg.attention_bias
        self.n_heads, self.n_kv = cfg.num_attention_heads, cfg.num_key_value_heads
        self.head_dim = hd
        self.scale: float | None = None
        self.q_proj = Linear(d, self.n_heads * hd, bias=bias)
        self.k_proj = Linear(d, self.n_kv * hd, bias=bias)
        self.v_proj = Linear(d, self.n_kv * hd, bias=bias)
        self.o_proj = Linear(self.n_heads * hd, d, bias=bias)

    def heads(self, t: torch.Tensor, n: int) -> torch.Tensor:
        """(B, T, n * hd) -> (B, n, T, hd)."""
        B, T, _ = t.shape
        return t.view(B, T, n, self.head_dim).transpose(1, 2)

    def qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Queries (B, H, T, hd), keys and values (B, Hkv, T, hd), before RoPE."""
        return (
            self.heads(self.q_proj(x), self.n_heads),
            self.heads(self.k_proj(x), self.n_kv),
            self.heads(self.v_proj(x), self.n_kv),
        )

    def forward(self, x: torch.Tensor, ctx: AttentionContext, idx: int, rope: Rope) -> torch.Tensor:
        q, k, v = self.qkv(x)
        if rope is not None:
            qr, kr = apply_rope(q, k, *rope)  # fp32 tables rotate in fp32; cast back
            q, k = qr.to(q.dtype), kr.to(k.dtype)
        k, v, mask, causal = ctx.attend_kv(idx, k, v)
        return self.o_proj(attend(q, k, v, mask, causal, scale=self.scale))  # (B, T, d)


class DecoderLayer(nn.Module):
    """A pre-norm block: ``x + attn(norm(x))``, then ``x + mlp(norm(x))``."""

    attention: type[Attention] = Attention
    # The modules in checkpoint order (parameter order, which optimizer states follow): every
    # name but "self_attn" and "mlp" is a norm made by make_norm.
    modules: tuple[str, ...] = ("input_layernorm", "self_attn", "post_attention_layernorm", "mlp")

    def __init__(self, cfg: Any, layer_idx: int) -> None:
        super().__init__()
        for name in self.modules:
            if name == "self_attn":
                self.self_attn = self.attention(cfg, layer_idx)
            elif name == "mlp":
                self.mlp = self.make_mlp(cfg, layer_idx)
            else:
                setattr(self, name, self.make_norm(cfg, cfg.hidden_size))

    @classmethod
    def make_norm(cls, cfg: Any, dim: int) -> nn.Module:
        return RMSNorm(dim, cfg.rms_norm_eps)

    def make_mlp(self, cfg: Any, layer_idx: int) -> nn.Module:
        bias = getattr(cfg, "mlp_bias", False)
        return GatedMLP(cfg.hidden_size, cfg.intermediate_size, cfg.hidden_act, bias=bias)

    def forward(self, x: torch.Tensor, ctx: AttentionContext, idx: int, rope: Rope) -> torch.Tensor:
        x = x + self.self_attn(self.input_layernorm(x), ctx, idx, rope)
        return x + self.mlp(self.post_attention_layernorm(x))


class Decoder(nn.Module):
    """The checkpoint's ``model.`` prefix: ``embed_tokens``, ``layers``, ``norm``, ``rotary_emb``.

    ``rotary_emb`` holds one RoPE table per recipe (``cfg.rope_kind(i)``); its
    buffers are not persistent, so they never reach a checkpoint.
    """

    def __init__(self, cfg: Any, layer: type[DecoderLayer]) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(layer(cfg, i) for i in range(cfg.num_hidden_layers))
        self.norm = layer.make_norm(cfg, cfg.hidden_size)
        kinds = dict.fromkeys(cfg.rope_kind(i) for i in range(cfg.num_hidden_layers))
        self.rotary_emb = nn.ModuleDict(
            {k: RotaryEmbedding(cfg.rope(k), cfg.head_dim) for k in kinds}
        )


class CausalLM(nn.Module):
    """Embeddings -> ``layer`` blocks -> final norm -> head, behind portagpt's model contract.

    Class attributes a family may set: ``layer`` (its block), ``rope_dtype``
    (None: the activations' dtype; ``torch.float32`` keeps cos/sin in fp32),
    ``embed_name`` / ``head_name`` (the tied pair). Hooks: :meth:`build` (the
    modules), :meth:`embed`, :meth:`blocks`, :meth:`normalize` (the final norm), :meth:`logits`.
    """

    layer: type[DecoderLayer] = DecoderLayer
    rope_dtype: torch.dtype | None = None
    embed_name, head_name = "model.embed_tokens", "lm_head"

    def __init__(self, cfg: Any) -> None:
        super().__init__()
        self.config = cfg
        self.layer_specs = self.cache_specs(cfg)
        self.rope_kinds: list[str | None] = [None] * len(self.layer_specs)  # None: no RoPE
        self.build(cfg)
        self.tie_weights()

    def build(self, cfg: Any) -> None:
        """The modules, under the checkpoint's names (a family with other names overrides this)."""
        self.model = Decoder(cfg, self.layer)
        self.rope_kinds = [cfg.rope_kind(i) for i in range(cfg.num_hidden_layers)]
        self.lm_head = Linear(cfg.hidden_size, cfg.vocab_size, bias=False)

    # ---- the contract: class-level facts the Family record takes from here -------------
    @classmethod
    def cache_specs(cls, cfg: Any) -> list[LayerSpec]:
        return cfg.layer_specs()

    @classmethod
    def tied_weights(cls, cfg: Any) -> tuple[tuple[str, str], ...]:
        """(destination, source) native names re-tied after loading."""
        if not cfg.tie_word_embeddings:
            return ()
        return ((cls.head_name + ".weight", cls.embed_name + ".weight"),)

    @classmethod
    def weight_map(cls, cfg: Any) -> WeightMap:
        """Every native tensor under its own name (the head optional when tied); stale RoPE
        buffers of old conversions dropped."""
        with empty_init():  # shapes only; no initialiser run on meta (core/meta.py)
            names = cls(cfg).state_dict()
        head = cls.head_name + ".weight"
        patterns = dict.fromkeys(_INDEX.sub("{}", n) for n in names if n != head)
        rules: list[Rule] = identity(*patterns)
        rules += identity(head, optional=cfg.tie_word_embeddings)
        stale = ("model.rotary_emb.inv_freq", "model.layers.{}.self_attn.rotary_emb.inv_freq")
        rules += [drop(n) for n in stale]
        return WeightMap(rules)

    # ---- weights -------------------------------------------------------------------------
    def tie_weights(self) -> None:
        if self.config.tie_word_embeddings:
            self.get_submodule(self.head_name).weight = self.get_submodule(self.embed_name).weight

    def scaled_init(self) -> dict[str, float]:
        """Name suffix -> init std for parameters that differ from ``initializer_range``."""
        return {}

    def init_weights(self) -> None:
        """N(0, initializer_range) for projections and embeddings, zero biases, norms and RoPE
        tables reset, then the head re-tied."""
        init_normal_(self, self.config.initializer_range, self.scaled_init())
        self.tie_weights()

    # ---- forward -------------------------------------------------------------------------
    def embed(self, input_ids: torch.Tensor, ctx: AttentionContext) -> torch.Tensor:
        return self.model.embed_tokens(input_ids)  # (B, T, d)

    def blocks(self) -> nn.ModuleList:
        return self.model.layers

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.norm(x)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.lm_head(x)  # (B, T, vocab)

    def rope_tables(self, positions: torch.Tensor, dtype: torch.dtype) -> dict[str, Rope]:
        """(cos, sin) per RoPE recipe, for this step's positions."""
        rotary = getattr(getattr(self, "model", None), "rotary_emb", None)
        if rotary is None:
            return {}
        return {k: emb(positions, self.rope_dtype or dtype) for k, emb in rotary.items()}

    def forward(
        self,
        input_ids: torch.Tensor,
        *,
        cache: KVCache | None = None,
        attention_mask: torch.Tensor | None = None,
        logits_to_keep: int = 0,
    ) -> torch.Tensor:
        ctx = attention_context(self.layer_specs, input_ids, cache, attention_mask)
        x = self.embed(input_ids, ctx)  # (B, T, d)
        ropes = self.rope_tables(ctx.positions, x.dtype)
        for i, layer in enumerate(self.blocks()):
            x = layer(x, ctx, i, ropes.get(self.rope_kinds[i]))
        ctx.finish()
        if logits_to_keep:
            x = x[:, -logits_to_keep:]
        return self.logits(self.normalize(x))  # (B, T, vocab)

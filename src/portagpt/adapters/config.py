"""Family configs: dataclasses whose fields are config.json's keys, translated generically.

A family config subclasses :class:`HFConfig` (or :class:`DecoderConfig`, which
adds the fields every decoder shares) and writes only its exceptions:

* ``model_type`` / ``architecture`` (class attributes): what ``to_hf`` writes;
* ``hf_names``: fields stored under another config.json key
  (``{"emb_dim": "n_embd"}``);
* ``required``: keys a config.json must have (the others take the field's
  default, which is transformers' default for an absent key);
* ``prepare(d)``: derived fields, computed from the config.json dict before
  the generic read (for example a 4.x spelling only one family uses).

:meth:`HFConfig.from_hf` reads any transformers spelling: a nested
``text_config``, the 4.x/5.x renames in :data:`ALIASES`, lists as tuples, and
``null`` as None where the field can hold None (else as the field's default).
:meth:`HFConfig.to_hf` writes every field back under its config.json key.
Configs survive a dict round trip (``dataclasses.asdict`` -> JSON ->
``cls(**d)``): ``__post_init__`` turns lists back into tuples and normalises
what has several spellings.

RoPE is kept one way: ``rope_parameters`` in the transformers 5 spelling, one
dict (``{"rope_type", "rope_theta", ...}``) or one per layer type
(``{"full_attention": {...}, "sliding_attention": {...}}``); ``to_hf``
also writes the 4.x ``rope_theta`` / ``rope_scaling`` for a single recipe.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

from ..core.cache import LayerSpec
from ..core.checkpoint_format import config_to_dict, to_jsonable  # noqa: F401 (re-exported)
from ..core.rope import RopeConfig, rope_params_from_hf
from ..errors import ConfigError
from .tokenizer import BPE_EOT, BPE_VOCAB

FULL, SLIDING = "full_attention", "sliding_attention"
LAYER_TYPES = (FULL, SLIDING)
# Other spellings of one key (transformers 4.x vs 5.x, private vs public): other -> canonical.
ALIASES = {"num_local_experts": "num_experts", "_sliding_window_pattern": "sliding_window_pattern"}
# Keys a text config inherits from the outer (multimodal) config.json when it lacks them.
OUTER_KEYS = ("tie_word_embeddings", "eos_token_id", "bos_token_id", "pad_token_id")

C = TypeVar("C", bound="HFConfig")
D = TypeVar("D", bound="DecoderConfig")
TINY = dict(
    vocab_size=BPE_VOCAB,
    hidden_size=128,
    num_hidden_layers=4,
    num_attention_heads=4,
    max_position_embeddings=256,
    tie_word_embeddings=True,
    bos_token_id=BPE_EOT,
    eos_token_id=BPE_EOT,
)
SMOKE = dict(
    vocab_size=256,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=64,
    bos_token_id=1,
    eos_token_id=2,
)


def text_config(hf: Mapping[str, Any]) -> dict[str, Any]:
    """The language-model part of a config.json: ``text_config`` when nested, else the whole."""
    inner = hf.get("text_config")
    if not isinstance(inner, Mapping):
        return dict(hf)
    merged = dict(inner)
    for key in OUTER_KEYS:
        if key not in merged and key in hf:
            merged[key] = hf[key]
    return merged



@dataclass(frozen=True)
class HFConfig:
    """A config whose fields are config.json keys (see the module docstring)."""

    model_type: ClassVar[str] = ""
    architecture: ClassVar[str] = ""
    required: ClassVar[tuple[str, ...]] = ()
    hf_names: ClassVar[Mapping[str, str]] = {}

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            if isinstance(getattr(self, f.name), list):
                self._set(f.name, tuple(getattr(self, f.name)))

    def _set(self, name: str, value: Any) -> None:
        object.__setattr__(self, name, value)

    @classmethod
    def prepare(cls, d: dict[str, Any]) -> dict[str, Any]:
        """Derived fields, in config.json terms (a family's exceptions); the default adds none."""
        return d

    @classmethod
    def from_hf(cls: type[C], hf: Mapping[str, Any]) -> C:
        """The config from a config.json dict in any spelling; ConfigError when a key is missing."""
        d = text_config(hf)
        for other, key in ALIASES.items():
            if other in d and key not in d:
                d[key] = d[other]
        d = cls.prepare(d)
        kwargs: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            key = cls.hf_names.get(f.name, f.name)
            if f.name in cls.required and d.get(key) is None:
                raise ConfigError(
                    f"{cls.model_type or cls.__name__} config.json lacks the key {key!r}; "
                    "add it (transformers' save_pretrained writes every key)."
                )
            # null is kept where the field can hold None; elsewhere it means "the default"
            if f.init and key in d and (d[key] is not None or "None" in str(f.type)):
                kwargs[f.name] = d[key]
        return cls(**kwargs)

    def to_hf(self) -> dict[str, Any]:
        """A transformers config.json dict: every field under its config.json key."""
        out: dict[str, Any] = {"architectures": [self.architecture], "model_type": self.model_type}
        for f in dataclasses.fields(self):
            out[self.hf_names.get(f.name, f.name)] = to_jsonable(getattr(self, f.name))
        return out


def rope_parameters_of(d: Mapping[str, Any], theta: float) -> dict[str, Any]:
    """A config.json dict's RoPE in the 5.x spelling, one dict or one per layer type, each with
    every parameter filled in (top-level keys such as ``partial_rotary_factor`` included)."""
    rp = d.get("rope_parameters") or {}
    if rp and all(isinstance(v, Mapping) or v is None for v in rp.values()):
        default = RopeConfig(theta).to_hf()
        return {
            k: rope_params_from_hf(d, k, theta).to_hf() if v else default for k, v in rp.items()
        }
    return rope_params_from_hf(d, None, theta).to_hf()


@dataclass(frozen=True)
class DecoderConfig(HFConfig):
    """The fields every decoder shares, with transformers' defaults for absent keys.

    ``num_key_value_heads`` (None: multi-head attention) and ``head_dim``
    (None: ``hidden_size // num_attention_heads``) are resolved here, once.
    A layer is ``sliding_attention`` when ``layer_types`` says so, or, without
    ``layer_types``, when ``sliding_window`` is set (a window on every layer).
    """

    required = (
        "vocab_size",
        "hidden_size",
        "intermediate_size",
        "num_hidden_layers",
        "num_attention_heads",
    )
    default_theta: ClassVar[float] = 10000.0  # RoPE base when config.json names none

    vocab_size: int = 32000
    hidden_size: int = 4096
    intermediate_size: int = 11008
    num_hidden_layers: int = 32
    num_attention_heads: int = 32
    num_key_value_heads: int | None = None
    head_dim: int | None = None
    max_position_embeddings: int = 2048
    rms_norm_eps: float = 1e-6
    hidden_act: str = "silu"
    attention_bias: bool = False
    rope_parameters: Mapping[str, Any] | None = None
    sliding_window: int | None = None
    layer_types: tuple[str, ...] | None = None
    tie_word_embeddings: bool = False
    initializer_range: float = 0.02
    bos_token_id: int | None = None
    eos_token_id: int | tuple[int, ...] | None = None
    pad_token_id: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.num_key_value_heads is None:
            self._set("num_key_value_heads", self.num_attention_heads)
        if self.head_dim is None:
            if self.hidden_size % self.num_attention_heads:
                raise ConfigError(
                    f"{self.model_type} hidden_size ({self.hidden_size}) is not divisible by "
                    f"num_attention_heads ({self.num_attention_heads}) and no head_dim is given; "
                    "add head_dim."
                )
            self._set("head_dim", self.hidden_size // self.num_attention_heads)
        if self.layer_types is None:
            self._set("layer_types", self.default_layer_types())
        self._set("rope_parameters", self.normalized_rope())
        self.validate()

    def validate(self) -> None:
        name, heads, kv = self.model_type, self.num_attention_heads, self.num_key_value_heads
        assert kv is not None and self.head_dim is not None  # resolved above
        if heads % kv:
            raise ConfigError(
                f"{name} num_attention_heads ({heads}) must be a multiple of num_key_value_heads "
                f"({kv}) for grouped-query attention."
            )
        if self.head_dim % 2:
            raise ConfigError(f"{name} head_dim must be even for RoPE, got {self.head_dim}.")
        if self.sliding_window is not None and self.sliding_window < 1:
            raise ConfigError(
                f"{name} sliding_window must be a positive number of positions or null, got "
                f"{self.sliding_window!r}."
            )
        types = self.layer_types
        wrong = types is not None and {*types} - {*LAYER_TYPES}
        if types is not None and (len(types) != self.num_hidden_layers or wrong):
            raise ConfigError(
                f"{name} layer_types must list {self.num_hidden_layers} entries, each {FULL!r} or "
                f"{SLIDING!r}; got {list(types)!r}."
            )
        if types and SLIDING in types and not self.sliding_window:
            raise ConfigError(
                f"{name} layer_types has sliding layers but sliding_window is not set; set it."
            )

    def default_layer_types(self) -> tuple[str, ...] | None:
        """``layer_types`` when config.json gives none (None: decided by ``sliding_window``)."""
        return None

    def normalized_rope(self) -> dict[str, Any]:
        """``rope_parameters`` in the 5.x spelling, every recipe's parameters filled in."""
        d = {"rope_parameters": self.rope_parameters, "max_position_embeddings": 0}
        d["max_position_embeddings"] = self.max_position_embeddings
        return rope_parameters_of(d, self.default_theta)

    @classmethod
    def prepare(cls, d: dict[str, Any]) -> dict[str, Any]:
        """RoPE from any spelling (4.x ``rope_theta`` + ``rope_scaling``) as ``rope_parameters``."""
        d["rope_parameters"] = rope_parameters_of(d, cls.default_theta)
        return d

    @property
    def context_length(self) -> int:
        return self.max_position_embeddings

    def layer_type(self, i: int) -> str:
        if self.layer_types:
            return self.layer_types[i]
        return SLIDING if self.sliding_window is not None else FULL

    def rope_kind(self, i: int) -> str:
        """Which RoPE recipe layer ``i`` uses: its layer type, or ``"all"`` for a single one."""
        return self.layer_type(i) if self.rope_per_layer_type else "all"

    @property
    def rope_per_layer_type(self) -> bool:
        return all(isinstance(v, Mapping) for v in (self.rope_parameters or {}).values())

    def rope(self, kind: str | None = None) -> RopeConfig:
        """The RoPE recipe of one kind (see :meth:`rope_kind`); None: the full-attention one."""
        kind = kind or (FULL if self.rope_per_layer_type else "all")
        rp = self.rope_parameters or {}
        d = {"rope_parameters": rp, "max_position_embeddings": self.max_position_embeddings}
        layer_type = kind if self.rope_per_layer_type else None
        return rope_params_from_hf(d, layer_type, self.default_theta)

    def layer_specs(self) -> list[LayerSpec]:
        """One cache spec per layer: KV heads, head size, and the window of sliding layers."""
        assert self.num_key_value_heads is not None and self.head_dim is not None
        return [
            LayerSpec(
                self.num_key_value_heads,
                self.head_dim,
                self.sliding_window if self.layer_type(i) == SLIDING else None,
            )
            for i in range(self.num_hidden_layers)
        ]

    @classmethod
    def tiny(cls: type[D], **fields: Any) -> D:
        """portagpt's CPU-trainable size (a family's ``tiny`` preset): 4 layers, 128 wide, the
        bundled BPE's vocabulary and end-of-text id, so it trains from scratch offline."""
        return cls(**{**TINY, **fields})

    @classmethod
    def smoke(cls: type[D], **fields: Any) -> D:
        """The conformance kit's size (a family's ``smoke_config``): 2 layers, 32 wide, GQA 4/2."""
        return cls(**{**SMOKE, **fields})

    def to_hf(self) -> dict[str, Any]:
        """Every field, plus the 4.x ``rope_theta`` / ``rope_scaling`` of a single RoPE recipe."""
        out = super().to_hf()
        if not self.rope_per_layer_type:
            rope = self.rope()
            out["rope_theta"] = rope.theta
            if rope.type != "default":
                out["rope_scaling"] = {"rope_type": rope.type, **to_jsonable(rope.params)}
        return out



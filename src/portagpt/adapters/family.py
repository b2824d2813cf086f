"""The family contract: everything a model family supplies, in one typed record.

Shared code (the trainer, the generation harness, the loaders, the CLI) only
ever talks to a :class:`Family` and to the model it builds. A model built by a
family is an ``nn.Module`` with:

* ``config`` -- the family's config object, with at least ``vocab_size`` and
  ``context_length`` (the longest sequence the model supports);
* ``layer_specs`` -- one :class:`~portagpt.core.cache.LayerSpec` per attention
  layer (full, or a sliding window of N), from which KV caches are built;
* ``forward(input_ids, *, cache=None, attention_mask=None, logits_to_keep=0)``
  -- (B, T) ids to (B, T, vocab) logits (only the last ``logits_to_keep``
  positions when it is > 0);
* ``init_weights()`` -- fill every parameter and buffer with its initial value
  (``__init__`` only creates shapes, so models can be built on the meta device);
* ``tie_weights()`` -- re-tie shared tensors (a no-op for untied models).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from ..core.cache import LayerSpec
from ..core.checkpoint_format import config_to_dict
from .config import text_config
from .tokenizer import Tokenizer, load_tokenizer
from .weights import WeightMap

__all__ = ["Family", "Preset", "config_to_dict", "text_config"]


@dataclass(frozen=True)
class Preset:
    """A named configuration of real size (or a small CPU one), with where it comes from."""

    config: Any
    source: str = ""  # URL of the config.json it reproduces; "" for portagpt's own sizes
    description: str = ""


@dataclass(frozen=True)
class Family:
    """One model family behind the portagpt contract.

    Only ``name``, ``build_model``, ``presets`` and ``smoke_config`` are always
    needed: the rest defaults to what the config class and the model class
    declare (:class:`~portagpt.adapters.config.HFConfig` gives ``from_hf`` /
    ``to_hf`` / ``model_type`` / ``architecture``;
    :class:`~portagpt.core.decoder.CausalLM` gives ``cache_specs`` /
    ``weight_map`` / ``tied_weights``), and the tokenizer defaults to
    :func:`~portagpt.adapters.tokenizer.load_tokenizer` (tokenizer.json, or the
    host's scratch tokenizer).
    """

    name: str
    hf_model_types: tuple[str, ...] = ()
    config_from_hf: Callable[[Mapping[str, Any]], Any] | None = None
    config_to_hf: Callable[[Any], dict[str, Any]] | None = None
    build_model: Callable[[Any], nn.Module] | None = None
    weight_map: Callable[[Any], WeightMap] | None = None
    cache_specs: Callable[[Any], list[LayerSpec]] | None = None
    load_tokenizer: Callable[[Path | None, Any], Tokenizer] = load_tokenizer
    presets: Mapping[str, Preset] = field(default_factory=dict)
    smoke_config: Any = None
    default_repo_id: str | None = None
    # e.g. "Qwen3ForCausalLM", the parity reference; "" = the config's ``architecture``, None = none
    transformers_class: str | None = ""
    tied_weights: Callable[[Any], tuple[tuple[str, str], ...]] | None = None
    stop_token_ids: tuple[int, ...] = ()
    chat_template: str | None = None
    description: str = ""
    # Filled in by the registry: which distribution supplied the family.
    distribution: str = field(default="", compare=False)
    version: str = field(default="", compare=False)

    REQUIRED = (
        "name",
        "hf_model_types",
        "config_from_hf",
        "config_to_hf",
        "build_model",
        "weight_map",
        "cache_specs",
        "load_tokenizer",
        "presets",
        "smoke_config",
    )

    def __post_init__(self) -> None:
        config, model = type(self.smoke_config), self.build_model
        defaults = {
            "hf_model_types": (getattr(config, "model_type", ""),) if self.smoke_config else (),
            "config_from_hf": getattr(config, "from_hf", None),
            "config_to_hf": getattr(config, "to_hf", None),
            "transformers_class": getattr(config, "architecture", None) or None,
            "weight_map": getattr(model, "weight_map", None),
            "cache_specs": getattr(model, "cache_specs", None),
            "tied_weights": getattr(model, "tied_weights", None) or (lambda cfg: ()),
        }
        for key, value in defaults.items():
            given = getattr(self, key)
            unset = given == "" if key == "transformers_class" else given in (None, ())
            if unset:
                object.__setattr__(self, key, value)

    def problems(self) -> list[str]:
        """What is wrong with this record (empty when it is usable)."""
        out: list[str] = []
        if not isinstance(self.name, str) or not self.name.isidentifier():
            out.append(f"name {self.name!r} must be a non-empty identifier-like string")
        if not self.hf_model_types or not all(
            isinstance(t, str) and t for t in self.hf_model_types
        ):
            out.append("hf_model_types must be a non-empty tuple of strings")
        for fname in self.REQUIRED[2:8]:
            if not callable(getattr(self, fname, None)):
                out.append(f"{fname} must be callable, got {getattr(self, fname, None)!r}")
        if not isinstance(self.presets, Mapping):
            out.append("presets must be a mapping of name -> Preset")
        elif not all(isinstance(p, Preset) for p in self.presets.values()):
            out.append("every preset must be a portagpt.adapters.Preset")
        if self.smoke_config is None:
            out.append("smoke_config is required (a tiny config that runs in under a second on CPU)")
        for attr in ("vocab_size", "context_length"):
            if self.smoke_config is not None and not hasattr(self.smoke_config, attr):
                out.append(f"its configs must have a {attr!r} attribute (smoke_config has none)")
        return out

    def preset(self, name: str) -> Any:
        """The config of preset ``name``; raises UnknownPresetError listing the known ones."""
        from ..errors import UnknownPresetError

        if name in self.presets:
            return self.presets[name].config
        raise UnknownPresetError(
            f"Unknown preset {name!r} for family {self.name!r}. Known: {', '.join(self.presets)}."
        )

    def with_source(self, distribution: str, version: str) -> Family:
        return dataclasses.replace(self, distribution=distribution, version=version)

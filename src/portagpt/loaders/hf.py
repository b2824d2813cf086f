"""transformers objects <-> portagpt models.

* :func:`from_transformers` takes an in-memory ``PreTrainedModel``: its
  ``config`` picks the family and config, its ``state_dict()`` goes through the
  same strict check and mapping as a checkpoint on disk. Tensors are copied by
  default, so training one model never changes the other.
* :func:`to_transformers` goes back: it builds the transformers model from
  ``family.config_to_hf`` (the family's ``transformers_class``, else
  ``AutoModelForCausalLM``) without random initialisation, and loads the
  mapped weights; anything left unset (other than a tied head) is an error.
* :func:`load_with_transformers` is the ``--loader hf`` path:
  ``from_pretrained`` then :func:`from_transformers`.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..adapters.family import Family
from ..errors import CheckpointError, ConfigError
from .configs import config_from_hf, family_from_hf, family_of_config
from .pipeline import Loaded, load_tokenizer_for, main_dtype, materialise, parse_dtype, prepare
from .state_dict import StateDictSource


def _hf_config_dict(model: nn.Module) -> dict[str, Any]:
    config = getattr(model, "config", None)
    if config is None or not hasattr(config, "to_dict"):
        raise ConfigError(
            f"{type(model).__name__} has no transformers config (model.config.to_dict()); "
            "from_transformers takes a transformers PreTrainedModel."
        )
    return dict(config.to_dict())


def from_transformers_full(
    model: nn.Module,
    *,
    family: str | Family | None = None,
    dtype: str | torch.dtype | None = "float32",
    device: str | torch.device = "cpu",
    copy: bool = True,
) -> Loaded:
    """Convert an in-memory transformers model; returns the whole :class:`Loaded` record."""
    t0 = time.perf_counter()
    hf = _hf_config_dict(model)
    where = f"the in-memory {type(model).__name__}"
    fam = family_from_hf(hf, family, f"{where}'s config")
    cfg = config_from_hf(fam, hf, f"{where}'s config")
    source = StateDictSource(model.state_dict(), private=not copy)
    prep = prepare(source, fam, cfg, layout="hf")
    prep.report.raise_if_bad(f"{where} (family {fam.name})")
    out = materialise(prep, source, parse_dtype(dtype), device, where)
    source.close()
    name = getattr(model.config, "_name_or_path", "") or ""
    folder = Path(name) if name and Path(name).is_dir() else None
    return Loaded(
        model=out,
        tokenizer=load_tokenizer_for(fam, folder, cfg, "auto"),
        family=fam,
        config=cfg,
        source=where,
        loader="hf",
        layout="hf",
        report=prep.report,
        checkpoint_bytes=source.nbytes,
        load_seconds=time.perf_counter() - t0,
        extras={"config_source": f"{type(model).__name__}.config", "coverage": prep.coverage},
    )


def from_transformers(
    model: nn.Module,
    *,
    family: str | Family | None = None,
    dtype: str | torch.dtype | None = None,
    device: str | torch.device = "cpu",
    copy: bool = True,
) -> nn.Module:
    """A portagpt model with the weights of a transformers ``PreTrainedModel``.

    ``dtype=None`` keeps the model's dtype; ``copy=False`` lets tensors that
    need no transform share memory with ``model``.
    """
    return from_transformers_full(model, family=family, dtype=dtype, device=device, copy=copy).model


def _no_init() -> contextlib.AbstractContextManager[Any]:
    """transformers' context that skips random initialisation (its location moved in 5.x)."""
    for where in ("transformers.initialization", "transformers.modeling_utils"):
        try:
            module = __import__(where, fromlist=["no_init_weights"])
            return module.no_init_weights()
        except (ImportError, AttributeError):
            continue
    return contextlib.nullcontext()


def hf_config_object(family: Family, cfg: Any) -> Any:
    from transformers import AutoConfig

    d = dict(family.config_to_hf(cfg))
    model_type = d.pop("model_type", None) or family.hf_model_types[0]
    return AutoConfig.for_model(model_type, **d)


def _model_class(family: Family) -> Any:
    import transformers

    if family.transformers_class and hasattr(transformers, family.transformers_class):
        return getattr(transformers, family.transformers_class)
    return transformers.AutoModelForCausalLM


def to_transformers(model: nn.Module, family: str | Family | None = None) -> nn.Module:
    """The transformers model (``family.transformers_class``) with this portagpt model's weights."""
    from .export import hf_tensors

    fam = family_of_config(model.config, family)
    config = hf_config_object(fam, model.config)
    source = StateDictSource(model.state_dict(), private=False)
    prep = prepare(source, fam, model.config, layout="native")
    prep.report.raise_if_bad(f"the {type(model).__name__} to convert")
    _, stream = hf_tensors(prep, source)
    state = dict(stream)
    cls = _model_class(fam)
    with _no_init():
        hf = cls.from_config(config) if hasattr(cls, "from_config") else cls(config)
    if (dtype := main_dtype(state.values())) is not None:
        hf.to(dtype)
    missing, unexpected = hf.load_state_dict(state, strict=False)
    hf.tie_weights()
    now = hf.state_dict()
    loaded = {now[n].data_ptr() for n in state if n in now}
    unset = [n for n in missing if now[n].data_ptr() not in loaded]  # a tied head shares a loaded tensor
    if unset or unexpected:
        raise CheckpointError(
            f"Converting to {type(hf).__name__} left {len(unset)} tensor(s) unset ({', '.join(unset[:8])}) "
            f"and {len(unexpected)} unused ({', '.join(unexpected[:8])}); the {fam.name} weight map "
            "does not cover transformers' layout."
        )
    return hf.to(next(model.parameters()).device).eval()


def load_with_transformers(
    folder: Path,
    family: Family,
    dtype: torch.dtype | None,
    device: Any,
    config: Any = None,
    override: bool = False,
) -> nn.Module:
    """``from_pretrained(folder)``, then :func:`from_transformers` (the ``--loader hf`` path).

    ``config`` (the family's) stands in for a missing config.json, or replaces
    it with ``override`` (the loader changed it, e.g. untied a stored head).
    """
    cls = _model_class(family)
    kwargs: dict[str, Any] = {"dtype": dtype if dtype is not None else "auto"}
    if config is not None and (override or not (folder / "config.json").is_file()):
        kwargs["config"] = hf_config_object(family, config)
    try:
        hf = cls.from_pretrained(str(folder), **kwargs)
    except (OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(
            f"transformers could not load {str(folder)!r} ({type(exc).__name__}: "
            f"{str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ''}). Use --loader meta."
        ) from None
    return from_transformers(hf, family=family, dtype=dtype, device=device, copy=False)

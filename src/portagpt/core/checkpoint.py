"""Training checkpoints: one self-describing folder, written atomically.

A training checkpoint is a checkpoint folder in portagpt's format (see
:mod:`portagpt.core.checkpoint_format`: file names, sidecar, config dict,
atomic writes) plus what only a trainer needs::

    model.safetensors    weights under the model's own (native) names; a tied
                         tensor is stored once and re-tied on load
    portagpt.json        the sidecar, with the model class, the tied pairs and
                         the trainer's meta (step, epoch, tokens seen, the
                         training config, the run's settings)
    config.json          the HF-style config (family.config_to_hf), when available
    training_state.pt    optimizer, scheduler, RNG and data-order state, history;
                         plain tensors and containers only, read with
                         ``torch.load(weights_only=True)``
    tokenizer.json, ...  the files of the tokenizer the run trained with, when
                         it came from a checkpoint (``extra_files``)

:func:`save_checkpoint` builds the folder beside the target and swaps it in
only when every file is complete and flushed; readers go through
:func:`resolve_checkpoint`, which falls back to the previous checkpoint
(``.<name>.old``) when a crash fell between the swap's two renames. A crash at
any other moment leaves either the old checkpoint or the new one, never half;
a full disk leaves the old one and says how much space the new one needs.

Names are the unwrapped model's: ``torch.compile``'s ``_orig_mod.`` and DDP's
``module.`` prefixes never reach the file.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import CheckpointError, CheckpointNotFoundError, ConfigError, WeightMismatchError
from .checkpoint_format import (
    FORMAT_VERSION,
    HF_CONFIG_FILE,
    SIDECAR_FILE,
    STATE_FILE,
    TIED_KEY,
    WEIGHTS_FILE,
    atomic_folder,
    check_format_version,
    config_from_dict,
    config_to_dict,
    live_folder,
    sidecar,
    strip_wrapper_prefixes,
    tensor_bytes,
    to_jsonable,
    weights_metadata,
    writing,
)

__all__ = [
    "FORMAT_VERSION", "HF_CONFIG_FILE", "SIDECAR_FILE", "STATE_FILE", "WEIGHTS_FILE",
    "TRAINING_STATE_KEYS", "config_dict", "config_from_dict", "hf_config", "load_training_state",
    "load_weights", "read_sidecar", "resolve_checkpoint", "save_checkpoint", "unwrap_model",
    "weights_to_save",
]  # fmt: skip
TRAINING_STATE_KEYS = ("optimizer", "scheduler", "global_step", "epoch", "batch_in_epoch",
                       "tokens_seen", "rng", "history")  # fmt: skip
ExtraFile = str | Path | tuple[str, bytes]


# ---- model state -------------------------------------------------------------


def unwrap_model(model: nn.Module) -> nn.Module:
    """The plain module under ``torch.compile`` (``_orig_mod``) and DDP/FSDP (``module``) wrappers."""
    while True:
        inner = getattr(model, "_orig_mod", None)
        if isinstance(inner, nn.Module):
            model = inner
            continue
        wrapped = getattr(model, "module", None)
        if isinstance(wrapped, nn.Module) and type(model).__name__ in (
            "DistributedDataParallel",
            "DataParallel",
            "FullyShardedDataParallel",
        ):
            model = wrapped
            continue
        return model




def _storage_key(t: torch.Tensor) -> tuple[int, int, tuple[int, ...], torch.dtype]:
    return (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), t.dtype)


def weights_to_save(
    model: nn.Module,
    tied: Iterable[tuple[str, str]] = (),
    state: Mapping[str, torch.Tensor] | None = None,
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The state dict to write, with each shared tensor kept once.

    ``tied`` lists ``(alias, source)`` pairs (a family's ``tied_weights``): the
    alias is dropped and the source kept. Any other tensors that share memory are
    found by storage and deduplicated too (the alphabetically first name is kept).
    Returns the tensors and ``{dropped: kept}``. ``state`` replaces the model's
    own state dict (e.g. the full weights gathered from FSDP shards).
    """
    if state is None:
        state = unwrap_model(model).state_dict()
    state = {strip_wrapper_prefixes(k): v for k, v in state.items()}
    dropped: dict[str, str] = {}
    for alias, source in tied:
        if alias in state and source in state:
            dropped[alias] = source
            del state[alias]
    seen: dict[tuple, str] = {}
    for name in sorted(state):
        key = _storage_key(state[name])
        if key in seen:
            dropped[name] = seen[key]
        else:
            seen[key] = name
    for name in dropped:
        state.pop(name, None)
    out = {k: v.detach().to("cpu").contiguous() for k, v in state.items()}
    return out, dropped


def load_weights(folder: str | Path, model: nn.Module) -> None:
    """Fill ``model`` from ``folder/model.safetensors`` and re-tie shared weights.

    Every missing, unexpected or misshapen tensor is reported at once.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = resolve_checkpoint(folder)
    path = _require(folder, WEIGHTS_FILE)
    try:
        tensors = load_file(str(path))
        tied_meta = _safetensors_metadata(path)
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(
            f"{str(path)!r} is not a readable safetensors file ({exc}); it is truncated or "
            "corrupt. Resume from another checkpoint, or delete the folder and train afresh."
        ) from None
    target = unwrap_model(model)
    expected = {strip_wrapper_prefixes(k): v for k, v in target.state_dict().items()}
    tied = json.loads(tied_meta.get(TIED_KEY, "{}"))
    missing = sorted(set(expected) - set(tensors) - set(tied))
    unexpected = sorted(set(tensors) - set(expected))
    wrong = sorted(
        f"{k}: file {tuple(tensors[k].shape)}, model {tuple(expected[k].shape)}"
        for k in set(tensors) & set(expected)
        if tensors[k].shape != expected[k].shape
    )
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing {', '.join(missing[:8])}{' ...' if len(missing) > 8 else ''}")
        if unexpected:
            parts.append(
                f"unexpected {', '.join(unexpected[:8])}{' ...' if len(unexpected) > 8 else ''}"
            )
        if wrong:
            parts.append(f"wrong shape {'; '.join(wrong[:8])}")
        raise WeightMismatchError(
            f"{str(path)!r} does not fit the model ({type(target).__name__}): {'; '.join(parts)}. "
            "The checkpoint was saved from another configuration: resume with the same "
            "--family and --preset it was trained with (see its portagpt.json)."
        )
    target.load_state_dict(tensors, strict=False)
    _retie(target, tied)


def _retie(model: nn.Module, tied: Mapping[str, str]) -> None:
    """Tie again what was stored once: the model's own ``tie_weights()``, else copy the values."""
    if hasattr(model, "tie_weights"):
        model.tie_weights()
    state = model.state_dict()
    with torch.no_grad():
        for alias, source in tied.items():
            if alias in state and state[alias].data_ptr() != state[source].data_ptr():
                state[alias].copy_(state[source])


def _safetensors_metadata(path: Path) -> dict[str, str]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return dict(f.metadata() or {})


# ---- configs -----------------------------------------------------------------


def config_dict(config: Any) -> dict[str, Any] | None:
    """A JSON-able dict of a model config (:func:`~.checkpoint_format.config_to_dict`), or None."""
    return None if config is None else config_to_dict(config)


def hf_config(family: Any, config: Any) -> dict[str, Any] | None:
    """``family.config_to_hf(config)``, or None when the family cannot express it."""
    if family is None or config is None:
        return None
    try:
        return family.config_to_hf(config)
    except ConfigError:
        return None


# ---- writing -----------------------------------------------------------------


def save_checkpoint(
    folder: str | Path,
    model: nn.Module,
    *,
    family: Any = None,
    model_config: Any = None,
    meta: Mapping[str, Any] | None = None,
    training_state: Mapping[str, Any] | None = None,
    weights: Mapping[str, torch.Tensor] | None = None,
    extra_files: Iterable[ExtraFile] = (),
) -> Path:
    """Write a checkpoint folder atomically (see the module docstring); returns its path.

    ``family`` (a :class:`~portagpt.adapters.Family`, optional) names the family,
    supplies the tied-weight pairs and the HF config. ``meta`` (step, epoch,
    tokens seen, train config, ...) goes into the sidecar; ``training_state``
    (tensors, numbers, strings, lists, dicts) into ``training_state.pt``.
    ``weights`` replaces the model's state dict; ``extra_files`` (e.g. the
    tokenizer's files: paths, or ``(name, bytes)`` read beforehand) are written
    into the folder under their own names.
    """
    from safetensors.torch import save_file

    folder = Path(folder)
    if model_config is None:
        model_config = getattr(unwrap_model(model), "config", None)
    tied = (
        tuple(family.tied_weights(model_config))
        if family is not None and model_config is not None
        else ()
    )
    tensors, dropped = weights_to_save(model, tied, weights)
    hf = hf_config(family, model_config)
    target = unwrap_model(model)
    side = sidecar(
        getattr(family, "name", None),
        model_config,
        model_class=f"{type(target).__module__}.{type(target).__qualname__}",
        hf_config=hf,
        tied_weights=dropped,
        **(meta or {}),
    )
    metadata = {"format": "pt", **weights_metadata("native", getattr(family, "name", None))}
    needed = tensor_bytes(tensors) + tensor_bytes(training_state or {})
    hint = (
        f"The previous checkpoint in {str(folder)!r}, if there was one, is intact; free some "
        "space (or raise the limit), then continue it with --resume."
    )
    with atomic_folder(folder, replace=True, needed=needed, hint=hint) as tmp:
        metadata[TIED_KEY] = json.dumps(dropped)
        with writing(tmp / WEIGHTS_FILE) as path:
            save_file(tensors, str(path), metadata=metadata)
        _write_json(tmp / SIDECAR_FILE, side)
        if hf is not None:
            _write_json(tmp / HF_CONFIG_FILE, hf)
        if training_state is not None:
            with writing(tmp / STATE_FILE) as path, open(path, "wb") as f:
                torch.save(dict(training_state), f)  # to a file object: errors keep their errno
        _write_extras(tmp, extra_files)
    return folder


def _write_json(path: Path, data: Mapping[str, Any]) -> None:
    path.write_text(json.dumps(to_jsonable(data), indent=2) + "\n", encoding="utf-8")


def _write_extras(tmp: Path, extra_files: Iterable[ExtraFile]) -> None:
    own = (WEIGHTS_FILE, SIDECAR_FILE, HF_CONFIG_FILE, STATE_FILE)
    for extra in extra_files:
        if isinstance(extra, tuple):
            name, data = extra
            if name not in own:
                (tmp / name).write_bytes(data)
        elif Path(extra).name not in own:
            (tmp / Path(extra).name).write_bytes(Path(extra).read_bytes())


# ---- reading -----------------------------------------------------------------


def resolve_checkpoint(folder: str | Path) -> Path:
    """The last complete checkpoint at ``folder``: the folder, or its ``.old`` backup after a
    crash between the swap's two renames (read-only: nothing is moved)."""
    folder = Path(folder)
    live = live_folder(folder)
    if live is None:
        raise CheckpointNotFoundError(
            f"No checkpoint folder at {str(folder)!r}. Train without --resume first (it writes "
            "one at the end of every epoch), or pass the folder that holds model.safetensors and "
            "portagpt.json."
        )
    return live


def _require(folder: Path, name: str) -> Path:
    path = folder / name
    if not path.is_file():
        raise CheckpointError(
            f"The checkpoint folder {str(folder)!r} has no {name}; it is incomplete or not a "
            "portagpt training checkpoint. Resume from a complete checkpoint, or train afresh "
            "(without --resume)."
        )
    return path


def read_sidecar(folder: str | Path) -> dict[str, Any]:
    """The checkpoint's ``portagpt.json``."""
    folder = resolve_checkpoint(folder)
    path = _require(folder, SIDECAR_FILE)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(
            f"{str(path)!r} is not valid JSON ({exc}); the checkpoint is corrupt. Resume from "
            "another checkpoint, or train afresh."
        ) from None
    return check_format_version(data, path, required=True)


def load_training_state(
    folder: str | Path, map_location: str | torch.device = "cpu"
) -> dict[str, Any]:
    """``training_state.pt``, read with ``weights_only=True`` (no arbitrary pickles).

    Every key a resume needs (:data:`TRAINING_STATE_KEYS`) must be there.
    """
    folder = resolve_checkpoint(folder)
    path = _require(folder, STATE_FILE)
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # truncated zip, foreign pickle, ...: all mean "unusable"
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise CheckpointError(
            f"{str(path)!r} cannot be read ({type(exc).__name__}: {first}); it is truncated, "
            "corrupt, or not written by portagpt. Resume from another checkpoint, or train afresh."
        ) from None
    if not isinstance(state, dict):
        raise CheckpointError(
            f"{str(path)!r} holds a {type(state).__name__}, not portagpt's training state dict."
        )
    missing = [k for k in TRAINING_STATE_KEYS if k not in state]
    if missing:
        raise CheckpointError(
            f"{str(path)!r} has no {', '.join(repr(k) for k in missing)} entry (it holds "
            f"{', '.join(sorted(map(str, state))) or 'nothing'}), so the run cannot continue "
            "exactly where it stopped. Resume from a complete checkpoint, or start a new run from "
            f"its weights: portagpt train --checkpoint {str(folder)!r} --out NEW_DIR."
        )
    return state

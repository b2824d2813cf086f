"""Training checkpoints: one self-describing folder, written atomically.

Layout of a checkpoint folder::

    model.safetensors    weights under the model's own (native) names; a tied
                         tensor is stored once and re-tied on load
    portagpt.json        sidecar: format version, family, model config (dataclass
                         dict and, when the family can express it, the HF dict),
                         step, epoch, tokens seen, the training config
    config.json          the HF-style config (family.config_to_hf), when available
    training_state.pt    optimizer, scheduler, RNG and data-order state, history;
                         plain tensors and containers only, read with
                         ``torch.load(weights_only=True)``
    tokenizer.json, ...  the files of the tokenizer the run trained with, when
                         it came from a checkpoint (``extra_files``)

Writes go to a hidden temporary folder beside the target, which replaces the
target only once every file is complete and flushed; the previous checkpoint
is kept as ``.<name>.old`` for the instant between the two renames, and
:func:`resolve_checkpoint` restores it if a crash hits exactly then. A crash at
any other moment leaves either the old checkpoint or the new one, never half.

Names are the unwrapped model's: ``torch.compile``'s ``_orig_mod.`` and DDP's
``module.`` prefixes never reach the file.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import fields, is_dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import CheckpointError, CheckpointNotFoundError, ConfigError, WeightMismatchError

FORMAT_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
SIDECAR_FILE = "portagpt.json"
HF_CONFIG_FILE = "config.json"
STATE_FILE = "training_state.pt"
WRAPPER_PREFIXES = ("_orig_mod.", "module.")


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


def strip_wrapper_prefixes(name: str) -> str:
    """``_orig_mod.module.x`` -> ``x`` (names from a wrapped model's state_dict)."""
    changed = True
    while changed:
        changed = False
        for prefix in WRAPPER_PREFIXES:
            if name.startswith(prefix):
                name, changed = name[len(prefix) :], True
    return name


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
    tied = json.loads(tied_meta.get("portagpt_tied", "{}"))
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


def _jsonable(value: Any) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: _jsonable(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, torch.dtype):
        return str(value).removeprefix("torch.")
    return value


def config_dict(config: Any) -> dict[str, Any] | None:
    """A JSON-able dict of a model config (dataclass, ``to_dict()`` or plain object)."""
    if config is None:
        return None
    if is_dataclass(config) and not isinstance(config, type):
        return _jsonable(config)
    if hasattr(config, "to_dict"):
        return _jsonable(config.to_dict())
    return _jsonable(dict(vars(config)))


def config_from_dict(template: Any, data: Mapping[str, Any]) -> Any:
    """Rebuild a dataclass config like ``template`` from :func:`config_dict`'s output.

    JSON turns tuples into lists; fields whose template value is a tuple get a tuple back.
    """
    if not (is_dataclass(template) and not isinstance(template, type)):
        raise ConfigError(
            f"Cannot rebuild a {type(template).__name__} config from a dict (not a dataclass)."
        )
    names = {f.name for f in fields(template) if f.init}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(
            f"The checkpoint's config has fields {', '.join(unknown)} that {type(template).__name__} "
            "does not know; it was saved by another version of the family. Use a matching portagpt."
        )
    values = {}
    for k, v in data.items():
        if isinstance(v, list) and isinstance(getattr(template, k), tuple):
            v = tuple(tuple(x) if isinstance(x, list) else x for x in v)
        values[k] = v
    return replace(template, **values)


def hf_config(family: Any, config: Any) -> dict[str, Any] | None:
    """``family.config_to_hf(config)``, or None when the family cannot express it."""
    if family is None or config is None:
        return None
    try:
        return family.config_to_hf(config)
    except ConfigError:
        return None


# ---- writing -----------------------------------------------------------------


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # not supported on every platform
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_json(path: Path, data: Mapping[str, Any]) -> None:
    path.write_text(json.dumps(_jsonable(data), indent=2, sort_keys=False) + "\n", encoding="utf-8")


def save_checkpoint(
    folder: str | Path,
    model: nn.Module,
    *,
    family: Any = None,
    model_config: Any = None,
    meta: Mapping[str, Any] | None = None,
    training_state: Mapping[str, Any] | None = None,
    weights: Mapping[str, torch.Tensor] | None = None,
    extra_files: Iterable[str | Path] = (),
) -> Path:
    """Write a checkpoint folder atomically (see the module docstring); returns its path.

    ``family`` (a :class:`~portagpt.adapters.Family`, optional) names the family,
    supplies the tied-weight pairs and the HF config. ``meta`` (step, epoch,
    tokens seen, train config, ...) goes into the sidecar; ``training_state``
    (tensors, numbers, strings, lists, dicts) into ``training_state.pt``.
    ``weights`` replaces the model's state dict; ``extra_files`` (e.g. the
    tokenizer's files) are copied into the folder under their own names.
    """
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temps(folder)
    if model_config is None:
        model_config = getattr(unwrap_model(model), "config", None)
    tied = (
        tuple(family.tied_weights(model_config))
        if family is not None and model_config is not None
        else ()
    )
    tensors, dropped = weights_to_save(model, tied, weights)
    hf = hf_config(family, model_config)
    sidecar = {
        "format_version": FORMAT_VERSION,
        "family": getattr(family, "name", None),
        "model_class": f"{type(unwrap_model(model)).__module__}.{type(unwrap_model(model)).__qualname__}",
        "config": config_dict(model_config),
        "hf_config": hf,
        "tied_weights": dropped,
        **(meta or {}),
    }
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.tmp-", dir=folder.parent))
    try:
        save_file(
            tensors,
            str(tmp / WEIGHTS_FILE),
            metadata={"format": "pt", "portagpt_tied": json.dumps(dropped)},
        )
        _write_json(tmp / SIDECAR_FILE, sidecar)
        if hf is not None:
            _write_json(tmp / HF_CONFIG_FILE, hf)
        if training_state is not None:
            torch.save(dict(training_state), tmp / STATE_FILE)
        for extra in map(Path, extra_files):
            if extra.name not in (WEIGHTS_FILE, SIDECAR_FILE, HF_CONFIG_FILE, STATE_FILE):
                shutil.copyfile(extra, tmp / extra.name)
        for path in tmp.iterdir():
            _fsync_file(path)
        _fsync_dir(tmp)
        _swap_in(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


def _backup_path(folder: Path) -> Path:
    return folder.parent / f".{folder.name}.old"


def _swap_in(tmp: Path, folder: Path) -> None:
    """Replace ``folder`` by ``tmp``; the old one survives as ``.<name>.old`` until the new one is in."""
    backup = _backup_path(folder)
    if folder.exists():
        if backup.exists():
            shutil.rmtree(backup)
        os.replace(folder, backup)
    os.replace(tmp, folder)
    _fsync_dir(folder.parent)
    if backup.exists():
        shutil.rmtree(backup, ignore_errors=True)


def _remove_stale_temps(folder: Path) -> None:
    """Temporary folders a crashed save left behind (they never hold the live checkpoint)."""
    if not folder.parent.is_dir():
        return
    for stale in folder.parent.glob(f".{folder.name}.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)


# ---- reading -----------------------------------------------------------------


def resolve_checkpoint(folder: str | Path) -> Path:
    """The checkpoint folder, restored from its ``.old`` backup if a save crashed mid-swap."""
    folder = Path(folder)
    backup = _backup_path(folder)
    if not folder.exists() and backup.is_dir():
        os.replace(backup, folder)
    if not folder.is_dir():
        raise CheckpointNotFoundError(
            f"No checkpoint folder at {str(folder)!r}. Train without --resume first (it writes "
            "one at the end of every epoch), or pass the folder that holds model.safetensors and "
            "portagpt.json."
        )
    return folder


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
    if not isinstance(data, dict) or data.get("format_version") != FORMAT_VERSION:
        found = data.get("format_version") if isinstance(data, dict) else type(data).__name__
        raise CheckpointError(
            f"{str(path)!r} has format_version {found!r}; this portagpt reads version "
            f"{FORMAT_VERSION}. Use the portagpt version that wrote it, or train afresh."
        )
    return data


def load_training_state(
    folder: str | Path, map_location: str | torch.device = "cpu"
) -> dict[str, Any]:
    """``training_state.pt``, read with ``weights_only=True`` (no arbitrary pickles)."""
    folder = resolve_checkpoint(folder)
    path = _require(folder, STATE_FILE)
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # truncated zip, foreign pickle, ...: all mean "unusable"
        raise CheckpointError(
            f"{str(path)!r} cannot be read ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
            "it is truncated, corrupt, or not written by portagpt. Resume from another "
            "checkpoint, or train afresh."
        ) from None
    if not isinstance(state, dict):
        raise CheckpointError(
            f"{str(path)!r} holds a {type(state).__name__}, not portagpt's training state dict."
        )
    return state

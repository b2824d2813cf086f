"""Writing checkpoints: portagpt-native and Hugging Face folders, and converting between them.

Both layouts are a folder of safetensors (sharded with
``huggingface_hub.split_torch_state_dict_into_shards`` past ``max_shard_size``,
with a ``model.safetensors.index.json``) plus config files:

* ``native``: tensors under the model's own names, ``config.json``
  (``family.config_to_hf``; left out when the family cannot express the config
  in transformers' terms) and a ``portagpt.json`` sidecar with the family and
  the full config;
* ``hf``: tensors under transformers' names (through the family's weight map,
  inverted) and ``config.json``, loadable with ``from_pretrained``.

Every file carries ``format``/``portagpt_format``/``portagpt_family``/
``portagpt_format_version`` in its safetensors metadata, so a converted file
is never converted into the layout it already has. File names, the sidecar
and the config dict are :mod:`portagpt.core.checkpoint_format`'s. Output is
written to a temporary folder next to ``out`` and renamed into place at the
end (:func:`~portagpt.core.checkpoint_format.atomic_folder`), so an error, a
full disk included, leaves nothing half-written. Tokenizer files are copied along.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..adapters.family import Family
from ..adapters.weights import WeightMap
from ..core import checkpoint_format as fmt
from ..errors import ConfigError, UsageError
from .choice import check_source
from .configs import family_of_config
from .hub import TOKENIZER_FILES
from .pipeline import (
    FORMAT_KEY,
    Prepared,
    Source,
    _own,
    main_dtype,
    mapped_tensors,
    parse_dtype,
    prepare,
)
from .safetensors_index import INDEX_NAME
from .state_dict import StateDictSource

LAYOUTS = ("native", "hf")
DEFAULT_SHARD_SIZE = "5GB"


@contextmanager
def atomic_folder(out: Path, needed: int | None = None) -> Iterator[Path]:
    """A temporary folder beside the new folder ``out``, renamed to ``out`` only if the block succeeds."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UsageError(
            f"{str(out)!r} already exists and is not an empty folder; choose another --out or remove it."
        )
    hint = f"{str(out)!r} was not created; free some space (or raise the limit) and convert again."
    with fmt.atomic_folder(out, needed=needed, hint=hint) as tmp:
        yield tmp


def write_weights(
    folder: Path,
    metas: Mapping[str, torch.Tensor],
    tensors: Iterator[tuple[str, torch.Tensor]],
    metadata: dict[str, str],
    max_shard_size: int | str = DEFAULT_SHARD_SIZE,
) -> list[str]:
    """Write ``tensors`` (whose names and shapes ``metas`` announces) as one or more shards.

    Shards are planned from the meta tensors, then each file is written as soon
    as all of its tensors have arrived, so at most about a shard is in memory.
    """
    from huggingface_hub import split_torch_state_dict_into_shards
    from safetensors.torch import save_file

    split = split_torch_state_dict_into_shards(dict(metas), max_shard_size=max_shard_size)
    pending = {f: set(names) for f, names in split.filename_to_tensors.items()}
    buffers: dict[str, dict[str, torch.Tensor]] = {f: {} for f in pending}
    for name, t in tensors:
        f = split.tensor_to_filename[name]
        buffers[f][name] = t
        pending[f].discard(name)
        if not pending[f]:
            with fmt.writing(folder / f) as path:
                save_file(buffers.pop(f), str(path), metadata={"format": "pt", **metadata})
    if buffers:
        raise RuntimeError(f"tensors never produced for {', '.join(sorted(buffers))}")  # a bug, not input
    if split.is_sharded:
        index = {"metadata": dict(split.metadata), "weight_map": dict(sorted(split.tensor_to_filename.items()))}
        (folder / INDEX_NAME).write_text(json.dumps(index, indent=2) + "\n")
    return sorted(split.filename_to_tensors)


def copy_tokenizer_files(src: Path | None, dst: Path) -> list[str]:
    if src is None:
        return []
    copied = []
    for name in TOKENIZER_FILES:
        if (src / name).is_file():
            shutil.copyfile(src / name, dst / name)
            copied.append(name)
    return copied


def hf_plan(family: Family, cfg: Any, native_names: list[str]) -> tuple[WeightMap, Any]:
    """The inverted weight map's plan for these native names; every name must be covered."""
    wmap = family.weight_map(cfg)
    plan = wmap.plan_to_hf(native_names)
    if plan.unmatched or plan.incomplete:
        lost = sorted(plan.unmatched) + sorted(n for n, _ in plan.incomplete)
        raise ConfigError(
            f"The {family.name} weight map has no Hugging Face name for {len(lost)} tensor(s): "
            f"{', '.join(lost[:8])}. This model cannot be exported to transformers' layout; save it "
            "in the native layout instead."
        )
    return wmap, plan


def hf_tensors(
    prep: Prepared, source: Source, dtype: torch.dtype | None = None
) -> tuple[dict[str, torch.Tensor], Iterator[tuple[str, torch.Tensor]]]:
    """(meta tensors, lazy stream) of the Hugging Face tensors of a native-layout source."""
    native_metas = {n: prep.produced[n] for n in prep.expected if n in prep.produced}
    if dtype is not None:
        native_metas = {n: t.to(dtype) if t.is_floating_point() else t for n, t in native_metas.items()}
    wmap, plan = hf_plan(prep.family, prep.config, list(native_metas))
    metas = dict(wmap.run_to_hf(plan, native_metas.__getitem__))

    def stream() -> Iterator[tuple[str, torch.Tensor]]:
        with source:
            for step in plan.steps:
                inputs = [source.get(prep.source_names[n]) for n in step.native]
                for name, t in zip(step.hf, step.to_hf(inputs), strict=True):
                    yield name, _own(t, inputs, dtype, "cpu", source.private)

    return metas, stream()


def _write(
    out: Path,
    prep: Prepared,
    source: Source,
    to: str,
    *,
    dtype: torch.dtype | None = None,
    tokenizer_from: Path | None = None,
    max_shard_size: int | str = DEFAULT_SHARD_SIZE,
    sidecar_extra: Mapping[str, Any] | None = None,
    extra_files: Callable[[Path], list[str]] | None = None,
) -> dict[str, Any]:
    """Write ``prep``'s checkpoint in layout ``to`` into the new folder ``out``.

    ``extra_files(folder)`` writes more files (a foreign format's tokenizer) before the
    folder appears, and returns their names.
    """
    fam, cfg = prep.family, prep.config
    metadata = fmt.weights_metadata(to, fam.name)
    if to == "hf":
        hf_config = fam.config_to_hf(cfg)  # raises a ConfigError when transformers cannot express it
        metas, stream = hf_tensors(prep, source, dtype)
    else:
        try:
            hf_config = fam.config_to_hf(cfg)
        except ConfigError:
            hf_config = None  # the sidecar's config is then the only one
        metas = {n: prep.produced[n] for n in prep.expected if n in prep.produced}
        if dtype is not None:
            metas = {n: t.to(dtype) if t.is_floating_point() else t for n, t in metas.items()}
        stream = mapped_tensors(prep, source, dtype)
    needed = tensor_bytes(metas)
    with atomic_folder(out, needed) as tmp:
        files = write_weights(tmp, metas, stream, metadata, max_shard_size)
        if hf_config is not None:
            written = dict(hf_config)
            if (stored := main_dtype(metas.values())) is not None:  # as transformers records it
                written.setdefault("dtype", str(stored).removeprefix("torch."))
            text = json.dumps(written, indent=2, sort_keys=True) + "\n"
            (tmp / fmt.HF_CONFIG_FILE).write_text(text)
        if to == "native":
            sidecar = fmt.sidecar(fam.name, cfg, **dict(sidecar_extra or {}))
            (tmp / fmt.SIDECAR_FILE).write_text(json.dumps(sidecar, indent=2) + "\n")
        copied = copy_tokenizer_files(tokenizer_from, tmp)
        if extra_files is not None:
            copied += [n for n in extra_files(tmp) if n not in copied]
    return conversion_report(
        out, to, fam.name, files, metas, copied, config_json=hf_config is not None
    )


def tensor_bytes(tensors: Mapping[str, torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in tensors.values())


def conversion_report(
    out: Path,
    layout: str,
    family: str,
    files: list[str],
    tensors: Mapping[str, torch.Tensor],
    tokenizer_files: list[str],
    *,
    config_json: bool = False,
    **extra: Any,
) -> dict[str, Any]:
    """What a conversion returns (``convert --json`` prints it): the files it wrote, in which
    layout, how many tensors and bytes, and whether a transformers config.json is among them."""
    return {
        "out": str(out),
        "layout": layout,
        "family": family,
        "files": files,
        "tensors": len(tensors),
        "bytes": tensor_bytes(tensors),
        "tokenizer_files": tokenizer_files,
        "config_json": config_json,
        **extra,
    }


def _model_source(model: nn.Module, family: str | Family | None) -> tuple[Prepared, StateDictSource]:
    fam = family_of_config(model.config, family)
    source = StateDictSource(model.state_dict(), private=False)
    prep = prepare(source, fam, model.config, layout="native")
    prep.report.raise_if_bad(f"the {type(model).__name__} to export")
    return prep, source


def save_native(
    model: nn.Module,
    out: str | Path,
    *,
    family: str | Family | None = None,
    tokenizer_from: str | Path | None = None,
    max_shard_size: int | str = DEFAULT_SHARD_SIZE,
    sidecar_extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Write a portagpt model as a native checkpoint folder (loadable with ``portagpt.load``)."""
    prep, source = _model_source(model, family)
    src = Path(tokenizer_from) if tokenizer_from else None
    return _write(Path(out), prep, source, "native", tokenizer_from=src, max_shard_size=max_shard_size, sidecar_extra=sidecar_extra)


def save_hf(
    model: nn.Module,
    out: str | Path,
    *,
    family: str | Family | None = None,
    tokenizer_from: str | Path | None = None,
    max_shard_size: int | str = DEFAULT_SHARD_SIZE,
) -> dict[str, Any]:
    """Write a portagpt model as a transformers folder (config.json + safetensors)."""
    prep, source = _model_source(model, family)
    src = Path(tokenizer_from) if tokenizer_from else None
    return _write(Path(out), prep, source, "hf", tokenizer_from=src, max_shard_size=max_shard_size)


def convert(
    path: str | Path,
    to: str,
    out: str | Path,
    *,
    family: str | Family | None = None,
    preset: str | None = None,
    config: Any = None,
    dtype: str | torch.dtype | None = None,
    max_shard_size: int | str = DEFAULT_SHARD_SIZE,
) -> dict[str, Any]:
    """Convert the checkpoint at ``path`` to layout ``to`` (``native`` or ``hf``) in the new folder ``out``.

    ``to`` may also name a foreign format that writes (``loaders/foreign.py``),
    which then decides what ``out`` is (a folder, or a file).

    Safetensors already in layout ``to`` are refused (nothing to convert); a
    ``.pth`` may be converted to either layout (it becomes safetensors).
    """
    from .foreign import writable, writer
    from .sources import locate

    fmt = writer(to) if to not in LAYOUTS else None
    if to not in LAYOUTS and fmt is None:
        raise UsageError(f"Unknown layout {to!r}; use --to {', '.join((*LAYOUTS, *writable()))}.")
    loc = locate(path)
    source, choice, prep = check_source(loc, family=family, preset=preset, config=config)
    if fmt is not None and fmt.write is not None:  # a foreign format writes its own files
        if Path(out).resolve() == Path(loc.path).resolve():
            raise UsageError(f"--out {str(out)!r} is the checkpoint itself; choose a new name.")
        result = fmt.write(prep, source, Path(out), loc)
        if isinstance(source, StateDictSource):
            source.close()
        result.update(source_layout=prep.layout, config_source=choice.source, source=str(loc.path))
        return result
    if prep.layout == to and loc.kind == "safetensors":  # a .pth to safetensors is a real conversion
        why = (
            f"its safetensors metadata says {FORMAT_KEY}={to}"
            if source.combined_metadata().get(FORMAT_KEY) == to
            else "its tensor names are already that layout's"
        )
        raise UsageError(
            f"{loc.where} is already a {to} checkpoint ({why}); converting it --to {to} would only "
            f"copy it. Use --to {'hf' if to == 'native' else 'native'}, or load it as it is."
        )
    out = Path(out)
    if out.resolve() == Path(loc.folder).resolve():
        raise UsageError(f"--out {str(out)!r} is the checkpoint's own folder; choose a new folder.")
    if to == "hf" and prep.layout != "native":  # hf-named but not safetensors (.pth, a foreign format)
        native = StateDictSource(dict(mapped_tensors(prep, source)), private=True)
        if isinstance(source, StateDictSource):
            source.close()
        source, prep = native, prepare(native, prep.family, prep.config, layout="native")
    result = _write(
        out,
        prep,
        source,
        to,
        dtype=parse_dtype(dtype),
        tokenizer_from=loc.folder,
        max_shard_size=max_shard_size,
        sidecar_extra={"converted_from": str(loc.path)},
        extra_files=(
            (lambda folder: loc.format.tokenizer_files(loc, folder))
            if loc.format is not None and loc.format.tokenizer_files is not None
            else None
        ),
    )
    if isinstance(source, StateDictSource):
        source.close()
    result.update(source_layout=prep.layout, config_source=choice.source, source=str(loc.path))
    return result

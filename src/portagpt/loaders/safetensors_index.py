"""What a folder of safetensors holds, read from headers alone.

:class:`TensorIndex` maps every tensor name to its file, shape and dtype
without reading any tensor data. With a ``model.safetensors.index.json`` the
index is the source of truth: only the files it names are opened, and every
name it lists must be in the file it points to. Tensors are then read lazily,
one at a time, from memory-mapped files (``safe_open``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import CheckpointError, CheckpointNotFoundError

INDEX_NAME = "model.safetensors.index.json"
SINGLE_NAME = "model.safetensors"

_DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
    "F8_E4M3": getattr(torch, "float8_e4m3fn", torch.uint8),
    "F8_E5M2": getattr(torch, "float8_e5m2", torch.uint8),
}


@dataclass(frozen=True)
class TensorInfo:
    file: Path
    shape: tuple[int, ...]
    dtype: torch.dtype
    nbytes: int


def _read_header(path: Path) -> tuple[dict, dict]:
    """Parse one safetensors header; check it is consistent with the file size."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise CheckpointError(
                    f"{str(path)!r} is not a safetensors file: it is {size} bytes, shorter than the "
                    "8-byte header length. The file is truncated or empty; download or save it again."
                )
            n = int.from_bytes(head, "little")
            if n <= 0 or n > min(size - 8, 100 * 2**20):
                raise CheckpointError(
                    f"{str(path)!r} has a corrupted safetensors header: it claims a {n}-byte header in a "
                    f"{size}-byte file. Download or save the file again."
                )
            raw = f.read(n)
        header = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise CheckpointError(
            f"{str(path)!r} has a corrupted safetensors header (not valid JSON: {exc.msg}). "
            "Download or save the file again."
        ) from None
    meta = header.pop("__metadata__", None) or {}
    end = 0
    for name, info in header.items():
        try:
            start, stop = info["data_offsets"]
            info["dtype"], info["shape"]
        except (KeyError, TypeError, ValueError):
            raise CheckpointError(
                f"{str(path)!r}: the header entry for tensor {name!r} is malformed ({info!r})."
            ) from None
        end = max(end, stop)
    if 8 + n + end > size:
        raise CheckpointError(
            f"{str(path)!r} is truncated: its header describes {8 + n + end} bytes of data but the file "
            f"has {size}. Download or save it again (an interrupted copy leaves files like this)."
        )
    return header, meta


class TensorIndex:
    """Names -> (file, shape, dtype) for a set of safetensors files; lazy tensor reads."""

    def __init__(self, files: list[Path], names_from_index: dict[str, str] | None = None) -> None:
        self.files = files
        self.tensors: dict[str, TensorInfo] = {}
        self.metadata: dict[str, dict[str, str]] = {}
        for file in files:
            header, meta = _read_header(file)
            self.metadata[str(file)] = meta
            for name, info in header.items():
                if names_from_index is not None and names_from_index.get(name) != file.name:
                    continue  # the index is the source of truth
                dtype = _DTYPES.get(info["dtype"])
                if dtype is None:
                    raise CheckpointError(f"{str(file)!r}: tensor {name!r} has unsupported dtype {info['dtype']!r}.")
                start, stop = info["data_offsets"]
                self.tensors[name] = TensorInfo(file, tuple(info["shape"]), dtype, stop - start)
        if names_from_index is not None:
            lost = sorted(n for n in names_from_index if n not in self.tensors)
            if lost:
                shown = ", ".join(repr(n) for n in lost[:5]) + (f" and {len(lost) - 5} more" if len(lost) > 5 else "")
                raise CheckpointError(
                    f"{INDEX_NAME} lists {len(lost)} tensor(s) that are not in the shard it names: {shown}. "
                    "A shard is missing or from another checkpoint; download the checkpoint again."
                )
        self._stack: ExitStack | None = None
        self._handles: dict[Path, object] = {}

    @property
    def names(self) -> list[str]:
        return list(self.tensors)

    @property
    def nbytes(self) -> int:
        return sum(t.nbytes for t in self.tensors.values())

    def file_bytes(self) -> int:
        return sum(os.path.getsize(f) for f in self.files)

    def meta_tensor(self, name: str) -> torch.Tensor:
        info = self.tensors[name]
        return torch.empty(info.shape, dtype=info.dtype, device="meta")

    def combined_metadata(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for meta in self.metadata.values():
            out.update(meta)
        return out

    # ---- lazy reads -----------------------------------------------------------
    def __enter__(self) -> TensorIndex:
        from safetensors import safe_open

        self._stack = ExitStack()
        for file in self.files:
            self._handles[file] = self._stack.enter_context(safe_open(str(file), framework="pt", device="cpu"))
        return self

    def __exit__(self, *exc: object) -> None:
        if self._stack is not None:
            self._stack.close()
        self._handles.clear()

    def get(self, name: str) -> torch.Tensor:
        """Read one tensor (the index must be open: ``with index: ...``)."""
        info = self.tensors[name]
        return self._handles[info.file].get_tensor(name)  # type: ignore[attr-defined]

    def __iter__(self) -> Iterator[str]:
        return iter(self.tensors)


def index_for_folder(folder: Path) -> TensorIndex:
    """The TensorIndex of a checkpoint folder: index.json if present, else model.safetensors, else all *.safetensors."""
    idx = folder / INDEX_NAME
    if idx.is_file():
        try:
            data = json.loads(idx.read_text())
            weight_map = data["weight_map"]
            if not isinstance(weight_map, dict):
                raise TypeError
        except (json.JSONDecodeError, KeyError, TypeError):
            raise CheckpointError(
                f"{str(idx)!r} is malformed: expected JSON with a 'weight_map' object of "
                "tensor name -> shard file. Download or save the checkpoint again."
            ) from None
        shard_names = sorted(set(weight_map.values()))
        missing = [s for s in shard_names if not (folder / s).is_file()]
        if missing:
            raise CheckpointNotFoundError(
                f"{str(idx)!r} names shard(s) missing from the folder: {', '.join(missing)}. "
                "Download the missing shards (or the whole checkpoint) again."
            )
        return TensorIndex([folder / s for s in shard_names], weight_map)
    single = folder / SINGLE_NAME
    if single.is_file():
        return TensorIndex([single])
    files = sorted(folder.glob("*.safetensors"))
    if files:
        return TensorIndex(files)
    raise CheckpointNotFoundError(
        f"No safetensors weights in {str(folder)!r} (looked for {INDEX_NAME}, {SINGLE_NAME}, *.safetensors). "
        "Point at a checkpoint folder, a .safetensors file or a .pth state_dict."
    )

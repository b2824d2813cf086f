"""What a set of safetensors files holds, read from headers alone.

:class:`TensorIndex` maps every tensor name to its file, shape and dtype
without reading any tensor data; each header is checked against its file's
size, so a truncated file is reported before anything is read. With a
``model.safetensors.index.json`` the index is the source of truth: only the
files it names are opened, and every name it lists must be in the file it
points to (files it does not name are ignored).

Tensors are then read one at a time (``safe_open(...).get_tensor``). By default
they are read with ``pread`` into the process's own memory, so the loaded model
never depends on the file afterwards (a training run may overwrite it) and a
transposed or cast tensor costs one transient copy, not a second copy of the
file; ``backend="mmap"`` maps the files instead (zero-copy, file-backed).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointError, CheckpointNotFoundError

INDEX_NAME = "model.safetensors.index.json"
SINGLE_NAME = "model.safetensors"
MAX_HEADER = 100 * 2**20  # the safetensors format's own limit

DTYPES: dict[str, torch.dtype] = {
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
}
for _name, _attr in (("F8_E4M3", "float8_e4m3fn"), ("F8_E5M2", "float8_e5m2")):
    if hasattr(torch, _attr):
        DTYPES[_name] = getattr(torch, _attr)


@dataclass(frozen=True)
class TensorInfo:
    file: Path
    shape: tuple[int, ...]
    dtype: torch.dtype
    nbytes: int


class TensorTable:
    """What a tensor source answers from its ``tensors`` table alone, reading no data."""

    tensors: dict[str, TensorInfo]

    @property
    def names(self) -> list[str]:
        return list(self.tensors)

    @property
    def nbytes(self) -> int:
        return sum(t.nbytes for t in self.tensors.values())

    def meta_tensor(self, name: str) -> torch.Tensor:
        info = self.tensors[name]
        return torch.empty(info.shape, dtype=info.dtype, device="meta")


@dataclass(frozen=True)
class FileHeader:
    """One file's header: its tensors, metadata, and the sizes that must agree."""

    path: Path
    tensors: dict[str, dict[str, Any]]
    metadata: dict[str, str]
    header_bytes: int
    data_bytes: int  # what the header says follows it
    file_bytes: int


def check_metadata(path: Path, meta: Any) -> dict[str, str]:
    """The ``__metadata__`` of a header: a JSON object of strings (as the format requires)."""
    if meta is None:
        return {}
    if not isinstance(meta, dict):
        raise CheckpointError(
            f"{str(path)!r}: the safetensors '__metadata__' must be a JSON object of strings, found "
            f"{type(meta).__name__}. The header is corrupted; download or save the file again."
        )
    bad = [k for k, v in meta.items() if not isinstance(v, str)]
    if bad:
        raise CheckpointError(
            f"{str(path)!r}: the safetensors '__metadata__' value of {bad[0]!r} is "
            f"{type(meta[bad[0]]).__name__} {meta[bad[0]]!r}, but every metadata value must be a "
            "string. The header is corrupted or was written by a tool that breaks the format; save "
            "the file again."
        )
    return dict(meta)


def check_entry(path: Path, name: str, info: Any) -> tuple[int, int]:
    """One header entry's ``(start, stop)`` data offsets, after checking dtype, shape and size agree."""
    try:
        start, stop = info["data_offsets"]
        shape = list(info["shape"])
        dtype = info["dtype"]
        if not all(type(x) is int for x in (start, stop, *shape)) or not isinstance(dtype, str):
            raise TypeError
    except (KeyError, TypeError, ValueError):
        raise CheckpointError(
            f"{str(path)!r}: the header entry for tensor {name!r} is malformed ({info!r}): expected "
            "integer data_offsets [start, stop], an integer shape and a dtype name. Download or save "
            "the file again."
        ) from None
    if dtype not in DTYPES:
        raise CheckpointError(
            f"{str(path)!r}: tensor {name!r} has dtype {dtype!r}, which this torch cannot hold. "
            f"Supported: {', '.join(DTYPES)}."
        )
    if any(d < 0 for d in shape) or start < 0 or stop < start:
        raise CheckpointError(
            f"{str(path)!r}: tensor {name!r} has shape {tuple(shape)} and data offsets "
            f"[{start}, {stop}]; sizes and offsets must be non-negative and in order. The header is "
            "corrupted; download or save the file again."
        )
    numel = 1
    for d in shape:
        numel *= d
    want = numel * torch.empty((), dtype=DTYPES[dtype]).element_size()
    if stop - start != want:
        raise CheckpointError(
            f"{str(path)!r}: tensor {name!r} spans bytes {start}..{stop} ({stop - start} bytes) but a "
            f"{dtype} tensor of shape {tuple(shape)} needs {want} bytes; the header is corrupted. "
            "Download or save it again."
        )
    return start, stop


def read_header(path: Path) -> FileHeader:
    """Parse one safetensors header and check it against the file size (no tensor data is read)."""
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
            if n <= 0 or n > min(size - 8, MAX_HEADER):
                raise CheckpointError(
                    f"{str(path)!r} has a corrupted safetensors header: it claims a {n}-byte header in a "
                    f"{size}-byte file. Download or save the file again."
                )
            raw = f.read(n)
        if raw[:1] != b"{":  # the format's own rule; json.loads would accept leading spaces
            raise TypeError
        header = json.loads(raw)
        if not isinstance(header, dict):
            raise TypeError
    except (json.JSONDecodeError, UnicodeDecodeError, TypeError) as exc:
        why = f"not valid JSON: {exc.msg}" if isinstance(exc, json.JSONDecodeError) else "not a JSON object"
        raise CheckpointError(
            f"{str(path)!r} has a corrupted safetensors header ({why}). Download or save the file again."
        ) from None
    meta = check_metadata(path, header.pop("__metadata__", None))
    spans = sorted((check_entry(path, name, info), name) for name, info in header.items())
    end, prev = 0, None
    for (start, stop), name in spans:
        if start != end:
            why = (
                f"starts at byte {start} of the data, overlapping {prev!r} (which ends at byte {end})"
                if start < end
                else f"starts at byte {start} of the data, leaving {start - end} unaccounted bytes "
                f"before it (after byte {end})"
            )
            raise CheckpointError(
                f"{str(path)!r}: tensor {name!r} {why}; a safetensors file packs its tensors back "
                "to back from byte 0. The header is corrupted or crafted; download or save the file "
                "again."
            )
        end, prev = stop, name
    if 8 + n + end > size:
        raise CheckpointError(
            f"{str(path)!r} is truncated: its header describes {8 + n + end} bytes but the file has "
            f"{size}. Download or save it again (an interrupted copy leaves files like this)."
        )
    if 8 + n + end < size:
        raise CheckpointError(
            f"{str(path)!r} has {size - (8 + n + end)} bytes after the last tensor that its header "
            f"does not describe (header: {8 + n + end} bytes in all, file: {size}). The file is "
            "corrupted or was appended to; download or save it again."
        )
    return FileHeader(path, header, dict(meta), n, end, size)


class TensorIndex(TensorTable):
    """Names -> (file, shape, dtype) for a set of safetensors files; lazy tensor reads."""

    def __init__(
        self, files: list[Path], names_from_index: dict[str, str] | None = None, backend: str = "pread"
    ) -> None:
        self.files = files
        self.backend = backend
        self.private = backend == "pread"  # tensors from get() are ours to keep (not file-backed)
        self.headers: dict[Path, FileHeader] = {}
        self.tensors: dict[str, TensorInfo] = {}
        for file in files:
            head = read_header(file)
            self.headers[file] = head
            for name, info in head.tensors.items():
                if names_from_index is not None and names_from_index.get(name) != file.name:
                    continue  # the index is the source of truth
                if name in self.tensors:  # no index to say which copy counts
                    raise CheckpointError(
                        f"Tensor {name!r} is in both {str(self.tensors[name].file)!r} and "
                        f"{str(file)!r}, and no {INDEX_NAME} says which one counts. Remove the "
                        "stray file, or load the one file you mean."
                    )
                start, stop = info["data_offsets"]
                self.tensors[name] = TensorInfo(file, tuple(info["shape"]), DTYPES[info["dtype"]], stop - start)
        if names_from_index is not None:
            lost = sorted(n for n in names_from_index if n not in self.tensors)
            if lost:
                shown = ", ".join(repr(n) for n in lost[:5]) + (f" and {len(lost) - 5} more" if len(lost) > 5 else "")
                raise CheckpointError(
                    f"{INDEX_NAME} lists {len(lost)} tensor(s) that are not in the shard it names: {shown}. "
                    "A shard is missing or from another checkpoint; download the checkpoint again."
                )
        self._stack: ExitStack | None = None
        self._handles: dict[Path, Any] = {}

    def file_bytes(self) -> int:
        return sum(os.path.getsize(f) for f in self.files)

    def combined_metadata(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for head in self.headers.values():
            out.update(head.metadata)
        return out

    # ---- lazy reads -----------------------------------------------------------
    def __enter__(self) -> TensorIndex:
        from safetensors import safe_open

        self._stack = ExitStack()
        for file in self.files:
            try:
                try:
                    handle = safe_open(str(file), framework="pt", device="cpu", backend=self.backend)
                except TypeError:  # safetensors < 0.7 has no backend argument (always mmap)
                    handle = safe_open(str(file), framework="pt", device="cpu")
                    self.private = False
            except Exception as exc:  # SafetensorError and friends: the file changed under us
                self.__exit__()
                raise _unreadable(file, None, exc) from None
            self._handles[file] = self._stack.enter_context(handle)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._stack is not None:
            self._stack.close()
        self._handles.clear()

    def get(self, name: str) -> torch.Tensor:
        """Read one tensor (the index must be open: ``with index: ...``)."""
        info = self.tensors[name]
        try:
            return self._handles[info.file].get_tensor(name)
        except Exception as exc:  # SafetensorError, or an I/O error of the mapped file
            raise _unreadable(info.file, name, exc) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self.tensors)


def _unreadable(file: Path, name: str | None, exc: BaseException) -> CheckpointError:
    what = f"tensor {name!r} of " if name else ""
    detail = " ".join(str(exc).split())[:300] or type(exc).__name__
    return CheckpointError(
        f"Could not read {what}{str(file)!r} ({type(exc).__name__}: {detail}). The file is corrupted "
        "or changed while it was being read; check it with `portagpt load --verify` and download or "
        "save it again."
    )


def shard_paths(idx: Path, weight_map: dict[str, str]) -> list[Path]:
    """The shard files an index names, each refused unless it is a plain name inside the index's folder.

    Nothing is opened or even looked up before every name has passed: an index
    must not make portagpt read (or test for) files outside the checkpoint.
    """
    from pathlib import PurePosixPath, PureWindowsPath

    for shard in sorted(set(weight_map.values())):
        pure = PurePosixPath(shard)
        if (
            not shard
            or "\\" in shard
            or "\0" in shard
            or pure.is_absolute()
            or PureWindowsPath(shard).drive
            or any(part in ("..", ".") for part in pure.parts)
            or shard.startswith("~")
        ):
            raise CheckpointError(
                f"{str(idx)!r} names the shard {shard!r}, which is not a file inside the checkpoint "
                "folder (absolute paths, '..', '~' and backslashes are refused). An index.json may "
                "only name files next to it; fix the index or download the checkpoint again."
            )
    folder = idx.parent
    return [folder / s for s in sorted(set(weight_map.values()))]


def read_index_json(idx: Path) -> dict[str, str]:
    """The ``weight_map`` of a ``model.safetensors.index.json`` (tensor name -> shard file name)."""
    try:
        data = json.loads(idx.read_text())
        weight_map = data["weight_map"]
        if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
            raise TypeError
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError):
        raise CheckpointError(
            f"{str(idx)!r} is malformed: expected JSON with a 'weight_map' object of "
            "tensor name -> shard file. Download or save the checkpoint again."
        ) from None
    return weight_map


def indexed_shards(idx: Path) -> tuple[list[Path], dict[str, str]]:
    """The shard files an index names (each one present) and its weight map."""
    weight_map = read_index_json(idx)
    shards = shard_paths(idx, weight_map)
    missing = [s.name for s in shards if not s.is_file()]
    if missing:
        raise CheckpointNotFoundError(
            f"{str(idx)!r} names shard(s) missing from the folder: {', '.join(missing)}. "
            "Download the missing shards (or the whole checkpoint) again."
        )
    return shards, weight_map


def weight_files(folder: Path) -> tuple[list[Path], dict[str, str] | None]:
    """The safetensors files of a folder (and the index's weight map, when there is one)."""
    idx = folder / INDEX_NAME
    if idx.is_file():
        return indexed_shards(idx)
    single = folder / SINGLE_NAME
    if single.is_file():
        return [single], None
    return sorted(folder.glob("*.safetensors")), None


def index_for_folder(folder: Path, backend: str = "pread") -> TensorIndex:
    """The TensorIndex of a folder: index.json if present, else model.safetensors, else all *.safetensors."""
    files, weight_map = weight_files(folder)
    if not files:
        raise CheckpointNotFoundError(
            f"No safetensors weights in {str(folder)!r} (looked for {INDEX_NAME}, {SINGLE_NAME}, "
            "*.safetensors). Point at a checkpoint folder, a .safetensors or .pth file, or a hub id."
        )
    return TensorIndex(files, weight_map, backend=backend)

"""PyTorch state dicts (``.pth``/``.pt``/``.bin`` files and in-memory dicts) as tensor sources.

A tensor source is what the pipeline reads from; :class:`TensorIndex` (safetensors)
is one, :class:`StateDictSource` is the other. Both give names, shapes and
dtypes without touching tensor data, and ``get(name)`` inside ``with source:``.

A ``.pth`` is only ever opened with ``torch.load(weights_only=True, mmap=True)``:
``weights_only`` refuses any pickle that would build arbitrary Python objects
(a file that tries to run code is rejected, nothing is executed), and ``mmap``
means the names and shapes are known, and checked, before any weight is read.
Accepted layouts: a plain state dict; ``{"model_state_dict": ..., "optimizer_state_dict": ...}``
(also ``"state_dict"``, ``"model"``, ``"module"``); names wrapped by
``torch.compile`` (``_orig_mod.``) or DDP (``module.``) are unwrapped by the pipeline.

Tensors of a memory-mapped ``.pth`` are copied into the model as they are read
(``private = False``), so the model never depends on the file (a training run
that saves over it is safe); while loading, the file's pages and the copies
are both resident, so peak memory can reach twice the file. ``portagpt
convert`` to safetensors gives the one-copy path.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointError
from .safetensors_index import TensorInfo, TensorTable

PTH_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")
WRAPPER_KEYS = ("model_state_dict", "state_dict", "model", "module")


def _is_state(obj: Any) -> bool:
    return (
        isinstance(obj, Mapping)
        and len(obj) > 0
        and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())
    )


def unwrap(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    """The model state dict inside what ``torch.load`` returned."""
    if _is_state(obj):
        return dict(obj)
    if isinstance(obj, Mapping):
        for key in WRAPPER_KEYS:
            if _is_state(obj.get(key)):
                return dict(obj[key])
        keys = ", ".join(repr(k) for k in list(obj)[:8])
        odd = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)][:3]
        raise CheckpointError(
            f"{str(path)!r} holds a dict that is not a model state dict (keys: {keys or 'none'}"
            + (f"; non-tensor entries: {', '.join(map(repr, odd))}" if odd and len(odd) < len(obj) else "")
            + f"). Expected name -> tensor, or one of {', '.join(WRAPPER_KEYS)} holding one; save "
            "`model.state_dict()` (torch.save(model.state_dict(), path))."
        )
    raise CheckpointError(
        f"{str(path)!r} holds a {type(obj).__name__}, not a state dict. Save `model.state_dict()` "
        "rather than the model object (torch.save(model.state_dict(), path))."
    )


def torch_load(path: Path, mmap: bool = True) -> Any:
    """``torch.load(weights_only=True, mmap=mmap)`` with one-paragraph errors."""
    try:
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
        except RuntimeError as exc:
            if "mmap" not in str(exc) and "zipfile" not in str(exc):
                raise
            # files from torch < 1.6 (legacy format) cannot be memory-mapped
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"Refused to load {str(path)!r}: it contains Python objects other than tensors and plain "
            f"containers, which could run code when unpickled ({first[:200]}). portagpt only opens "
            "pickles with torch.load(weights_only=True); nothing in the file was executed. If you "
            "wrote the file yourself, re-save just the tensors: torch.save(model.state_dict(), path)."
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"{str(path)!r} is not a readable PyTorch checkpoint ({type(exc).__name__}: {msg[:200]}). "
            "The file is truncated or corrupted, or not a torch.save file; save or copy it again."
        ) from None


class StateDictSource(TensorTable):
    """A name -> tensor mapping behind the same interface as :class:`TensorIndex`.

    ``private`` says whether ``get`` returns tensors the model may keep as they
    are; when False (memory-mapped files, or another model's tensors) the
    pipeline copies every tensor it keeps.
    """

    def __init__(
        self,
        state: Mapping[str, torch.Tensor],
        *,
        path: Path | None = None,
        metadata: Mapping[str, str] | None = None,
        private: bool = False,
    ) -> None:
        self.state = dict(state)
        self.path = path
        self.files = [path] if path is not None else []
        self.private = private
        self.metadata = dict(metadata or {})
        self.tensors = {
            n: TensorInfo(path or Path(""), tuple(t.shape), t.dtype, t.numel() * t.element_size())
            for n, t in self.state.items()
        }

    @classmethod
    def from_file(cls, path: Path) -> StateDictSource:
        return cls(unwrap(torch_load(path), path), path=path)

    def file_bytes(self) -> int:
        return os.path.getsize(self.path) if self.path is not None else self.nbytes

    def combined_metadata(self) -> dict[str, str]:
        return dict(self.metadata)

    def same_tensor(self, a: str, b: str) -> bool:
        """Whether two names are one tensor (a tied pair torch.save kept shared); reads no data."""
        x, y = self.state.get(a), self.state.get(b)
        if x is None or y is None or x.device.type == "meta":
            return False
        return (
            x.untyped_storage().data_ptr() == y.untyped_storage().data_ptr()
            and x.storage_offset() == y.storage_offset()
            and x.shape == y.shape
            and x.stride() == y.stride()
        )

    def __enter__(self) -> StateDictSource:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def get(self, name: str) -> torch.Tensor:
        return self.state[name].detach()

    def close(self) -> None:
        """Drop the references (for a memory-mapped file: unmap it once the model holds copies)."""
        self.state.clear()

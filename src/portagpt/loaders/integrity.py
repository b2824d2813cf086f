"""File integrity: sizes against headers, and sha256 digests against what the HF cache knows.

Sizes are always checked: each safetensors header must describe exactly the
bytes its file holds (a truncated file fails before anything is read; extra
trailing bytes are reported). Digests are computed only on request
(``--verify``), and are honest about what they prove:

* a file inside a Hugging Face cache snapshot is a link to ``blobs/<name>``;
  for LFS files (weights) ``<name>`` is the sha256 of the content, for small
  git files (config.json) it is the git blob sha1. Both are recomputed and
  compared: ``verified``, or a mismatch error;
* anywhere else there is no reference to compare with: the digests are
  printed (``unverified``) so they can be compared by hand with a published
  list.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..errors import CheckpointError
from .safetensors_index import read_header

_SHA256 = re.compile(r"[0-9a-f]{64}")
_SHA1 = re.compile(r"[0-9a-f]{40}")
CHUNK = 8 * 2**20


@dataclass
class FileCheck:
    path: str
    bytes: int
    size_check: str  # "ok", "n extra bytes after the data", or "not a safetensors file"
    sha256: str | None = None
    reference: str | None = None  # what the digest was compared with
    verified: bool | None = None  # None: nothing to compare with

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _digest(path: Path, algo: str, git_blob: bool = False) -> str:
    h = hashlib.new(algo)
    if git_blob:
        h.update(f"blob {path.stat().st_size}\0".encode())
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def cache_reference(path: Path) -> tuple[str, str] | None:
    """(kind, digest) the HF cache's blob name gives for ``path``, if it is a cached snapshot file."""
    if not path.is_symlink():
        return None
    target = Path(os.path.realpath(path))
    if target.parent.name != "blobs":
        return None
    if _SHA256.fullmatch(target.name):
        return "sha256", target.name
    if _SHA1.fullmatch(target.name):
        return "git-sha1", target.name
    return None


def check_file(path: Path, verify: bool = False) -> FileCheck:
    """Size against header (safetensors), and with ``verify`` the digest against the cache's."""
    size = path.stat().st_size
    if path.suffix == ".safetensors":
        head = read_header(path)  # raises on truncation or a corrupt header
        extra = size - (8 + head.header_bytes + head.data_bytes)
        status = "ok" if extra == 0 else f"{extra} extra bytes after the data"
    else:
        status = "ok (no header to compare; the unpickler checked the archive)"
    check = FileCheck(str(path), size, status)
    if not verify:
        return check
    check.sha256 = _digest(path, "sha256")
    ref = cache_reference(path)
    if ref is None:
        return check
    kind, want = ref
    got = check.sha256 if kind == "sha256" else _digest(path, "sha1", git_blob=True)
    check.reference = f"{kind} from the Hugging Face cache blob name"
    check.verified = got == want
    if not check.verified:
        raise CheckpointError(
            f"{str(path)!r} is corrupted: its {kind} is {got}, but the Hugging Face cache recorded "
            f"{want} when it downloaded it. Delete the cached blob ({os.path.realpath(path)}) and "
            "download the model again."
        )
    return check


def check_files(paths: list[Path], verify: bool = False) -> list[FileCheck]:
    return [check_file(Path(p), verify) for p in paths]

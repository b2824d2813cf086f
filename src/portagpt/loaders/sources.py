"""What the user pointed at: a folder, a weights file, or a hub id, resolved to files on disk.

* a folder: its ``model.safetensors.index.json`` (the source of truth for a
  sharded checkpoint), else ``model.safetensors``, else its ``*.safetensors``,
  else its one PyTorch file (``*.pth``, ``*.pt``, ``pytorch_model.bin``); a
  ``portagpt train`` run folder stands for its ``checkpoint/`` (or, after a
  crash between the two renames of a checkpoint swap, for the previous one,
  ``.checkpoint.old``: every reader sees the last complete checkpoint);
* a ``.safetensors`` file, or a ``*.safetensors.index.json`` (config.json and
  tokenizer files are looked for next to it);
* a ``.pth``/``.pt``/``.bin``/``.ckpt`` file (a pickled state dict);
* a hub id: the snapshot folder huggingface_hub resolves it to (see ``hub.py``);
* first of all, a path that a foreign format claims (``foreign.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core.checkpoint_format import SIDECAR_FILE, live_folder
from ..errors import CheckpointError, CheckpointNotFoundError, UsageError
from .foreign import detect_format
from .safetensors_index import TensorIndex, indexed_shards, weight_files
from .state_dict import PTH_SUFFIXES, StateDictSource

PREFERRED_PTH = ("model.pth", "pytorch_model.bin", "model.pt")


@dataclass
class Located:
    """Weight files and the folder that holds config.json / tokenizer files."""

    kind: str  # "safetensors" or "state_dict"
    path: Path  # what was asked for (a folder or a file)
    folder: Path  # where config.json, portagpt.json and tokenizer files are looked for
    files: list[Path]
    weight_map: dict[str, str] | None = None
    repo_id: str | None = None
    format: Any = None  # a foreign.ForeignFormat that claimed the path (kind is then its name)

    def open(self, backend: str = "pread") -> TensorIndex | StateDictSource:
        """Headers (safetensors) or a memory-mapped unpickle (.pth): names, shapes, dtypes."""
        if self.format is not None and self.format.open is not None:
            return self.format.open(self)
        if self.kind == "safetensors":
            return TensorIndex(self.files, self.weight_map, backend=backend)
        return StateDictSource.from_file(self.files[0])

    @property
    def where(self) -> str:
        return repr(self.repo_id) if self.repo_id else repr(str(self.path))


def _missing(path: Path) -> CheckpointNotFoundError:
    from .hub import looks_like_repo_id

    hint = (
        f" If {str(path)!r} is a Hugging Face hub id, pass it with --repo-id (repo_id= in Python)."
        if looks_like_repo_id(str(path))
        else ""
    )
    return CheckpointNotFoundError(
        f"{str(path)!r} does not exist. Pass a checkpoint folder, a .safetensors or .pth file, or a "
        f"hub id with --repo-id.{hint}"
    )


def _folder(path: Path) -> Located:
    entries = sorted(p.name for p in path.iterdir())
    if not entries:
        raise CheckpointNotFoundError(
            f"{str(path)!r} is an empty folder: no config.json and no weights. Point at the folder "
            "that save_pretrained (or portagpt train/convert) wrote."
        )
    files, weight_map = weight_files(path)
    if files:
        return Located("safetensors", path, path, files, weight_map)
    live = live_folder(path / "checkpoint")  # a `portagpt train` run folder: its last checkpoint
    if live is not None and (live / SIDECAR_FILE).is_file():
        return _folder(live)
    pths = [path / n for n in entries if Path(n).suffix in PTH_SUFFIXES]
    if len(pths) > 1:
        pths = [p for p in pths if p.name in PREFERRED_PTH][:1] or pths
    if len(pths) == 1:
        return Located("state_dict", path, path, pths)
    if pths:
        raise CheckpointError(
            f"{str(path)!r} holds several PyTorch files ({', '.join(p.name for p in pths)}) and no "
            "safetensors; pass the one to load."
        )
    shown = ", ".join(entries[:8]) + (" ..." if len(entries) > 8 else "")
    raise CheckpointNotFoundError(
        f"No weights in {str(path)!r} (it holds {shown}): expected model.safetensors, a sharded "
        "model.safetensors.index.json with its shards, or a .pth/.bin state dict."
    )


def locate(path: str | Path) -> Located:
    """Resolve a local path to its weight files (nothing is read beyond directory listings)."""
    path = Path(path).expanduser()
    if not path.exists():
        backup = live_folder(path)  # a checkpoint caught between the two renames of its swap
        if backup is None:
            raise _missing(path)
        path = backup
    if (fmt := detect_format(path)) is not None:
        assert fmt.files is not None and fmt.folder is not None
        return Located(fmt.name, path, fmt.folder(path), fmt.files(path), format=fmt)
    if path.is_dir():
        return _folder(path)
    name = path.name
    if name.endswith(".index.json"):
        shards, weight_map = indexed_shards(path)
        return Located("safetensors", path, path.parent, shards, weight_map)
    if path.suffix == ".safetensors":
        return Located("safetensors", path, path.parent, [path])
    if path.suffix in PTH_SUFFIXES:
        return Located("state_dict", path, path.parent, [path])
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic.startswith(b"PK"):  # torch.save's zip container under another suffix
        return Located("state_dict", path, path.parent, [path])
    raise UsageError(
        f"{str(path)!r} is neither a folder nor a weights file portagpt knows (.safetensors, "
        f"{', '.join(PTH_SUFFIXES)}, *.safetensors.index.json)."
    )


def locate_repo(repo_id: str, revision: str | None = None) -> Located:
    from .hub import resolve

    folder = resolve(repo_id, revision)
    loc = _folder(folder)
    loc.repo_id = repo_id
    return loc

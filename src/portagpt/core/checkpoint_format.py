"""The checkpoint folder format: one owner for its file names, sidecar, config dict and writes.

Every portagpt checkpoint folder (a training checkpoint, ``convert``'s output,
``save_native``) holds::

    model.safetensors    (or shards + model.safetensors.index.json) the weights;
                         metadata keys FORMAT_KEY ("native"/"hf"), FAMILY_KEY,
                         FORMAT_VERSION_KEY and, for stored-once ties, TIED_KEY
    portagpt.json        the sidecar: format_version, family, config (the
                         dataclass as a dict, see config_to_dict) and whatever
                         the writer adds (a trainer: step, epoch, run, ...)
    config.json          transformers' config, when the family can express it

The trainer adds only ``training_state.pt`` (STATE_FILE).

Configs cross the sidecar as plain JSON: :func:`config_to_dict` turns a
dataclass (nested dataclasses included) into dicts, lists, strings and numbers;
:func:`config_from_dict` rebuilds the same dataclass from its annotations
(nested dataclasses, tuples, ``X | None``, torch dtypes), refusing keys the
class does not know. A config must survive ``config_from_dict(type(c),
config_to_dict(c)) == c``.

Writes are atomic. :func:`atomic_write_bytes` writes a temporary file in the
same folder, fsyncs it and ``os.replace``-s it over the target.
:func:`atomic_folder` builds a whole folder under a temporary name beside the
target and renames it into place only when every file is complete and
flushed; replacing an existing folder moves the old one to ``.<name>.old``
first, and :func:`live_folder` lets every reader fall back to that backup
should a crash fall between the two renames. Temporary names carry the
writer's host and pid, so :func:`remove_stale_temps` only ever removes the
leftovers of a process that is gone. A full disk (``ENOSPC``) or a file size
limit (``ulimit -f``: ``EFBIG``) becomes a :class:`~portagpt.errors.DiskFullError`
naming the file and the space needed, with nothing half-written left behind.
"""

from __future__ import annotations

import dataclasses
import errno
import glob
import json
import os
import secrets
import shutil
import signal
import socket
import types
import typing
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointError, ConfigError, DiskFullError

FORMAT_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
SIDECAR_FILE = "portagpt.json"
HF_CONFIG_FILE = "config.json"
STATE_FILE = "training_state.pt"
FORMAT_KEY = "portagpt_format"  # safetensors metadata: "native" or "hf"
FAMILY_KEY = "portagpt_family"
FORMAT_VERSION_KEY = "portagpt_format_version"
TIED_KEY = "portagpt_tied"  # safetensors metadata: {alias: stored name} of tied tensors
SPACE_ERRNOS = {errno.ENOSPC, errno.EFBIG, getattr(errno, "EDQUOT", errno.ENOSPC)}
_FILE_ATTR = "portagpt_file"  # set on an exception by writing(): the file it interrupted
_SPACE_TEXTS = ("os error 28", "os error 27", "No space left", "File too large", "Disk quota")


# ---- config <-> dict ---------------------------------------------------------------------


def to_jsonable(value: Any) -> Any:
    """Plain JSON values from dataclasses, mappings, tuples, paths and torch dtypes."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, torch.dtype):
        return str(value).removeprefix("torch.")
    return value


def config_to_dict(config: Any) -> dict[str, Any]:
    """A JSON-able dict of a model config (a dataclass, an object with ``to_dict()``, any object)."""
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        return to_jsonable(config)
    if hasattr(config, "to_dict"):
        return to_jsonable(config.to_dict())
    return to_jsonable(dict(vars(config)))


def _arms(hint: Any) -> tuple[Any, ...]:
    """The alternatives of a ``X | Y`` / ``Optional[X]`` hint, or the hint itself."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return typing.get_args(hint)
    return (hint,)


def _rebuild(hint: Any, value: Any, where: str) -> Any:
    """``value`` (from JSON) as the annotation ``hint`` wants it."""
    if hint is None or value is None:
        return value
    for arm in _arms(hint):
        if isinstance(arm, type) and dataclasses.is_dataclass(arm) and isinstance(value, Mapping):
            return config_from_dict(arm, value, where)
        if arm is torch.dtype and isinstance(value, str) and isinstance(
            getattr(torch, value, None), torch.dtype
        ):
            return getattr(torch, value)
        if typing.get_origin(arm) is tuple and isinstance(value, list):
            args = [a for a in typing.get_args(arm) if a is not Ellipsis]
            inner = args[0] if len(args) == 1 or typing.get_args(arm)[-1:] == (Ellipsis,) else None
            if inner is None and len(args) == len(value):
                return tuple(_rebuild(a, v, where) for a, v in zip(args, value, strict=True))
            return tuple(_rebuild(inner, v, where) for v in value)
    return value


def config_from_dict(cls: Any, data: Mapping[str, Any], where: str = "the config dict") -> Any:
    """Rebuild a dataclass config from :func:`config_to_dict`'s output (see the module docstring).

    ``cls`` is the config class, or an instance whose values fill fields missing
    from ``data``. Unknown keys are refused (the checkpoint came from another
    version of the family); ``where`` names the file in that error.
    """
    template = None if isinstance(cls, type) else cls
    cls = cls if isinstance(cls, type) else type(cls)
    if not dataclasses.is_dataclass(cls):
        raise ConfigError(
            f"Cannot rebuild a {cls.__name__} config from {where}: it is not a dataclass."
        )
    if not isinstance(data, Mapping):
        raise ConfigError(
            f"The config in {where} must be a JSON object of {cls.__name__} fields, found "
            f"{type(data).__name__}."
        )
    try:
        hints = typing.get_type_hints(cls)
    except Exception:  # annotations that do not resolve: values stay as JSON gave them
        hints = {}
    init = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - init)
    if unknown:
        raise ConfigError(
            f"The config in {where} has field(s) {', '.join(unknown)} that {cls.__name__} does "
            "not know; it was written by another version of this family. Use the matching "
            "version, or fix the file."
        )
    values = {k: _rebuild(hints.get(k), v, where) for k, v in data.items()}
    try:
        if template is not None:
            return dataclasses.replace(template, **values)
        return cls(**values)
    except (TypeError, ValueError) as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"The config in {where} does not fit {cls.__name__}: {exc}.") from None


def sidecar(family: str | None, config: Any, **extra: Any) -> dict[str, Any]:
    """The ``portagpt.json`` dict: format version, family, config, then the writer's own keys."""
    return {
        "format_version": FORMAT_VERSION,
        "family": family,
        "config": None if config is None else config_to_dict(config),
        **extra,
    }


def check_format_version(data: Any, path: Path, *, required: bool = False) -> dict[str, Any]:
    """``data`` (a parsed sidecar) if this portagpt reads its format version; else a CheckpointError.

    A sidecar without ``format_version`` is accepted unless ``required``.
    """
    if not isinstance(data, dict):
        raise CheckpointError(
            f"{str(path)!r} must hold a JSON object (portagpt's sidecar), found "
            f"{type(data).__name__}. Fix or remove the file."
        )
    found = data.get("format_version")
    if found == FORMAT_VERSION or (found is None and not required):
        return data
    raise CheckpointError(
        f"{str(path)!r} has format_version {found!r}; this portagpt reads version "
        f"{FORMAT_VERSION}. Use the portagpt version that wrote it, or train afresh."
    )


def weights_metadata(layout: str, family: str | None) -> dict[str, str]:
    """The safetensors metadata portagpt writes into every weights file."""
    meta = {FORMAT_KEY: layout, FORMAT_VERSION_KEY: str(FORMAT_VERSION)}
    if family:
        meta[FAMILY_KEY] = family
    return meta


# ---- atomic writes -----------------------------------------------------------------------


def _host() -> str:
    return socket.gethostname().replace("-", "_") or "host"


def temp_name(target: Path) -> Path:
    """A temporary sibling of ``target`` naming its writer: ``.<name>.tmp-<host>-<pid>-<rand>``."""
    return target.parent / f".{target.name}.tmp-{_host()}-{os.getpid()}-{secrets.token_hex(4)}"


def _pid_alive(pid: int) -> bool:
    if os.name == "nt":  # os.kill(pid, 0) would terminate it there: never judge, never remove
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):  # someone else's live process
        return True
    return True


def remove_stale_temps(target: Path) -> list[Path]:
    """Remove temporaries of ``target`` whose writer (this host, that pid) is gone; returns them."""
    removed: list[Path] = []
    if not target.parent.is_dir():
        return removed
    prefix = f".{target.name}.tmp-"
    for path in target.parent.glob(glob.escape(prefix) + "*"):
        parts = path.name[len(prefix) :].rsplit("-", 2)
        if len(parts) != 3 or parts[0] != _host() or not parts[1].isdigit():
            continue  # another machine's, or not named by this scheme: not ours to judge
        if int(parts[1]) == os.getpid() or _pid_alive(int(parts[1])):
            continue
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed.append(path)
    return removed


def fsync_dir(path: Path) -> None:
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


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def ignore_file_size_signal() -> None:
    """Make ``ulimit -f`` an ``EFBIG`` OSError instead of a SIGXFSZ kill (CPython's own default;
    set again in case an embedding host changed it). Only the main thread may set handlers."""
    sig = getattr(signal, "SIGXFSZ", None)
    if sig is None:
        return
    try:
        signal.signal(sig, signal.SIG_IGN)
    except ValueError:  # not the main thread
        pass


def _umask_mode(mode: int) -> int:
    umask = os.umask(0)
    os.umask(umask)
    return mode & ~umask


def atomic_write_bytes(path: str | Path, data: bytes, *, hint: str = "") -> None:
    """Write ``data`` to ``path`` all at once: temp file beside it, fsync, ``os.replace``."""
    path = Path(path)
    tmp = temp_name(path)
    ignore_file_size_signal()
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _umask_mode(0o666))
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        full = disk_full(exc, path, len(data), hint)
        if full is None:
            raise
        raise full from exc
    fsync_dir(path.parent)


def atomic_write_json(path: str | Path, data: Any, *, hint: str = "") -> None:
    text = json.dumps(to_jsonable(data), indent=2) + "\n"
    atomic_write_bytes(path, text.encode("utf-8"), hint=hint)


def _backup(target: Path) -> Path:
    return target.parent / f".{target.name}.old"


def live_folder(target: str | Path) -> Path | None:
    """The complete folder at ``target``, or its ``.old`` backup after a crash mid-swap; else None.

    Read-only: the next writer (holding the run folder's lock) tidies up.
    """
    target = Path(target)
    if target.is_dir():
        return target
    backup = _backup(target)
    return backup if backup.is_dir() else None


def _swap_in(tmp: Path, target: Path) -> None:
    """Replace ``target`` by ``tmp``; the old one stays as ``.<name>.old`` until the new is in."""
    backup = _backup(target)
    if target.exists():
        if backup.exists():
            shutil.rmtree(backup)
        os.replace(target, backup)
    os.replace(tmp, target)
    fsync_dir(target.parent)
    shutil.rmtree(backup, ignore_errors=True)


@contextmanager
def atomic_folder(
    target: str | Path, *, replace: bool = False, needed: int | None = None, hint: str = ""
) -> Iterator[Path]:
    """A temporary folder beside ``target`` that becomes ``target`` only if the block succeeds.

    ``replace``: an existing ``target`` is swapped out (see :func:`_swap_in`);
    otherwise ``target`` must be absent or empty. Every file is fsynced before
    the rename. On failure the temporary folder is removed; a full disk raises
    :class:`DiskFullError` (``needed``: the bytes the folder needs; ``hint``:
    the sentence on what to do next).
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(target)
    ignore_file_size_signal()
    tmp = temp_name(target)
    tmp.mkdir(mode=_umask_mode(0o777))
    try:
        yield tmp
        for path in tmp.iterdir():
            if path.is_file():
                os.chmod(path, _umask_mode(0o666))  # some writers create files 0600
                _fsync_file(path)
        fsync_dir(tmp)
        if replace:
            _swap_in(tmp, target)
        else:
            if target.is_dir() and not any(target.iterdir()):
                target.rmdir()
            os.replace(tmp, target)
            fsync_dir(target.parent)
    except BaseException as exc:
        failed = getattr(exc, _FILE_ATTR, None) or _newest_file(tmp)
        shutil.rmtree(tmp, ignore_errors=True)
        error = disk_full(exc, target / failed.name if failed else target, needed, hint)
        if error is not None:
            raise error from None
        raise


@contextmanager
def writing(path: Path) -> Iterator[Path]:
    """``with writing(tmp / name):`` marks the file being written, so a disk-full error names it
    (safetensors removes its partial file, and torch's error names none)."""
    try:
        yield path
    except BaseException as exc:
        if getattr(exc, _FILE_ATTR, None) is None:
            try:
                setattr(exc, _FILE_ATTR, Path(path))
            except (AttributeError, TypeError):  # an exception type without a __dict__
                pass
        raise


def _newest_file(folder: Path) -> Path | None:
    """The file written last in ``folder`` (the one a write error interrupted)."""
    try:
        files = [p for p in folder.iterdir() if p.is_file()]
    except OSError:
        return None
    return max(files, key=lambda p: p.stat().st_mtime_ns, default=None)


# ---- disk full ---------------------------------------------------------------------------


def is_disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` (or what it wraps: torch and safetensors re-raise) is ENOSPC/EFBIG/EDQUOT."""
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, DiskFullError):
            return False  # already explained
        if isinstance(e, OSError) and e.errno in SPACE_ERRNOS:
            return True
        if any(t in str(e) for t in _SPACE_TEXTS):
            return True
        e = e.__cause__ or e.__context__
    return False


def _size(n: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def _file_size_limit() -> int | None:
    try:
        import resource
    except ImportError:  # not on Windows
        return None
    soft, _ = resource.getrlimit(resource.RLIMIT_FSIZE)
    return None if soft == resource.RLIM_INFINITY else int(soft)


def disk_full(
    exc: BaseException, path: Path, needed: int | None, hint: str = ""
) -> DiskFullError | None:
    """A one-paragraph :class:`DiskFullError` for ``exc`` when it is a full disk; else None."""
    if not is_disk_full(exc):
        return None
    where = path.parent
    while not where.exists() and where != where.parent:
        where = where.parent
    try:
        free = f"{str(where)!r} has {_size(shutil.disk_usage(where).free)} free"
    except OSError:
        free = "the free space is unknown"
    limit = _file_size_limit()
    limit_text = (
        f", and this process may write files of at most {_size(limit)} (ulimit -f)"
        if limit is not None
        else ""
    )
    need = f"needs about {_size(needed)}" if needed else "needs more space than is left"
    return DiskFullError(
        f"Could not write {str(path)!r}: the disk is full or a file size limit was hit "
        f"({str(exc).strip() or type(exc).__name__}). It {need}; {free}{limit_text}. Nothing "
        f"half-written was kept. {hint or 'Free some space (or raise the limit) and run again.'}"
    )


def tensor_bytes(obj: Any) -> int:
    """Bytes of every tensor in a nest of dicts/lists (an estimate of what a save writes)."""
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, Mapping):
        return sum(tensor_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(tensor_bytes(v) for v in obj)
    return 0


# ---- tensor names -------------------------------------------------------------------------

WRAPPER_PREFIXES = ("_orig_mod.", "module.")  # torch.compile, DDP/DataParallel


def strip_wrapper_prefixes(name: str) -> str:
    """``_orig_mod.module.x`` -> ``x``: a wrapped model's tensor name, wrappers dropped wherever
    they sit (a compiled or wrapped submodule puts them inside the name)."""
    changed = True
    while changed:
        changed = False
        for prefix in WRAPPER_PREFIXES:
            if name.startswith(prefix):
                name, changed = name[len(prefix) :], True
            elif f".{prefix}" in name:
                name, changed = name.replace(f".{prefix}", ".", 1), True
    return name

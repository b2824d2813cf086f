"""Foreign checkpoint formats: the hook through which the loaders read files they do not own.

A :class:`ForeignFormat` is a record of plain functions; the loaders never know
which formats exist, only that they may ask, in order:

* ``detect(path)``: is this path (folder or file) one of yours? Asked before
  the loaders' own rules (safetensors, ``.pth``), so a folder of a foreign
  layout is never mistaken for a plain state dict.
* ``files(path)`` / ``folder(path)``: the weight files and the folder that
  holds the rest (tokenizer files).
* ``open(located)``: a tensor source (names, shapes, dtypes before data);
  its metadata's ``portagpt_format`` says the layout its names are in.
* ``choose(located, source, family, config)``: a ``ConfigChoice`` (family,
  config, where they came from), or None to let the loaders decide as for any
  file; ``config`` is what the user passed (``--config``/``config=``), if
  any. A format may refuse here (a missing config file, a field the weights
  cannot confirm), naming the flag or file to pass.
* ``tokenizer(located, config)``: the tokenizer the format ships, or None.
* ``read_config(mapping)``: ``(family, config)`` for a config dict in the
  format's own spelling (``--config FILE.json`` or ``config=`` in Python), or
  None when the dict is not the format's.
* ``write(prepared, source, out, located)``: ``portagpt convert --to NAME``.
* ``tokenizer_files(located, folder)``: when such a checkpoint is converted to
  ``hf``/``native``, write its tokenizer as files transformers reads (e.g.
  ``tokenizer.json``) into the new folder; returns the names written.

Formats are registered with :func:`register_format`; the ones that ship with
portagpt live in ``portagpt.formats`` and are imported on first use, exactly as
built-in families are discovered by the registry.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BUILTIN_PACKAGE = "portagpt.formats"


@dataclass(frozen=True)
class ForeignFormat:
    """A checkpoint format outside the safetensors/state-dict layouts (see the module docstring)."""

    name: str
    description: str
    detect: Callable[[Path], bool] | None = None
    files: Callable[[Path], list[Path]] | None = None
    folder: Callable[[Path], Path] | None = None
    open: Callable[[Any], Any] | None = None
    choose: Callable[[Any, Any, Any, Any], Any] | None = None
    tokenizer: Callable[[Any, Any], Any] | None = None
    read_config: Callable[[Mapping[str, Any]], tuple[Any, Any] | None] | None = None
    write: Callable[..., dict[str, Any]] | None = None
    # into a converted folder: tokenizer files transformers reads, made from the format's own
    tokenizer_files: Callable[[Any, Path], list[str]] | None = None
    suffix: str = ""  # what `convert --to NAME --out` writes: "" a folder, ".pth" a file


_FORMATS: dict[str, ForeignFormat] = {}
_LOADED = False


def register_format(fmt: ForeignFormat) -> None:
    """Add ``fmt``; a second format of the same name replaces nothing (the first one wins)."""
    _FORMATS.setdefault(fmt.name, fmt)


def known_formats() -> list[ForeignFormat]:
    """Every registered format (the built-in ones are imported on the first call)."""
    global _LOADED
    if not _LOADED:
        _LOADED = True
        importlib.import_module(BUILTIN_PACKAGE)
    return list(_FORMATS.values())


def detect_format(path: Path) -> ForeignFormat | None:
    """The first format that claims ``path``, or None."""
    for fmt in known_formats():
        if fmt.detect is not None and fmt.detect(path):
            return fmt
    return None


def writer(name: str) -> ForeignFormat | None:
    """The format that ``convert --to name`` writes, or None."""
    return next((f for f in known_formats() if f.name == name and f.write is not None), None)


def writable() -> list[str]:
    return [f.name for f in known_formats() if f.write is not None]


def config_from_foreign_dict(data: Mapping[str, Any]) -> tuple[Any, Any, str] | None:
    """``(family, config, format name)`` from the first format that reads this config dict."""
    for fmt in known_formats():
        if fmt.read_config is not None and (got := fmt.read_config(data)) is not None:
            return got[0], got[1], fmt.name
    return None

"""Every error portagpt raises on purpose.

Each subclasses both :class:`PortagptError` (so the CLI can catch them all and
print the message without a traceback) and the builtin it behaves like (so
callers can keep catching ``KeyError``, ``ValueError``, ``FileNotFoundError``).

A message names the thing that is wrong (file, tensor, key, flag), what was
expected, what was found, and the likely fix.
"""

from __future__ import annotations


class PortagptError(Exception):
    """Base class of every deliberate portagpt error."""

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return str(self.args[0]) if self.args else self.__class__.__name__


class UnknownFamilyError(PortagptError, KeyError):
    """A family name or config.json ``model_type`` no registered family serves."""


class UnknownPresetError(PortagptError, KeyError):
    """A preset name the family does not define."""


class PluginError(PortagptError, RuntimeError):
    """A family plugin misbehaved: its hook raised, or its family is malformed or clashes."""


class ConfigError(PortagptError, ValueError):
    """A config.json (or a config dict) is missing, malformed, or contradicts the weights."""


class CheckpointError(PortagptError, ValueError):
    """A checkpoint file or folder is missing, truncated, corrupt, or of the wrong layout."""


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """A checkpoint path that does not exist, or a hub id that cannot be resolved offline."""


class WeightMismatchError(CheckpointError):
    """Tensors missing, unexpected, or of the wrong shape/dtype compared with the model."""


class DataError(PortagptError, ValueError):
    """Training data missing, empty, or too short for one context window."""


class UsageError(PortagptError, ValueError):
    """Nonsensical arguments: a negative learning rate, a context longer than the model's, ..."""


class TokenizerError(PortagptError, ValueError):
    """A tokenizer that cannot be built from the files at hand."""


class CompileError(PortagptError, RuntimeError):
    """``torch.compile`` was asked for but cannot build the model on this machine."""


class RunFolderBusyError(PortagptError, RuntimeError):
    """Another live process holds the run folder's lock (one writer per run folder)."""


class DiskFullError(PortagptError, OSError):
    """A write failed for lack of space (ENOSPC) or a file size limit (EFBIG, ``ulimit -f``)."""


class ConfigMismatchError(ConfigError, WeightMismatchError):
    """A config that contradicts the checkpoint's tensors (seen from headers, before building)."""


class NonFiniteError(PortagptError, FloatingPointError):
    """NaN or infinity where numbers must be finite (logits during generation, a loss)."""

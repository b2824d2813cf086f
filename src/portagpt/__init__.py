"""portagpt: one chapter-5 training loop and one generation harness over many LLM families.

Public API::

    model, tokenizer = portagpt.load("path/to/checkpoint_dir")
    portagpt.list_families()
    portagpt.get_family("qwen3")
"""

from __future__ import annotations

from .errors import PortagptError
from .hookspecs import hookimpl
from .registry import family_for_model_type, get_family, get_registry, list_families

__version__ = "0.1.0"


def load(*args, **kwargs):  # noqa: ANN002, ANN003 - forwards to loaders.load
    """Load a model and its tokenizer; see :func:`portagpt.loaders.load`."""
    from .loaders import load as _load

    return _load(*args, **kwargs)


__all__ = [
    "PortagptError",
    "__version__",
    "family_for_model_type",
    "get_family",
    "get_registry",
    "hookimpl",
    "list_families",
    "load",
]

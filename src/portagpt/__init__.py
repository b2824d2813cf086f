"""portagpt: one chapter-5 training loop and one generation harness over many LLM families.

Public API::

    model, tokenizer = portagpt.load("path/to/checkpoint_dir")
    portagpt.list_families()
    portagpt.get_family("qwen3")
"""

from __future__ import annotations

from .errors import PortagptError
from .hookspecs import hookimpl

# The registry imports torch (through the Family contract); resolve these names on first use so
# that importing portagpt (e.g. its pytest plugin, or `portagpt --help`) stays light.
_LAZY = {"family_for_model_type", "get_family", "get_registry", "list_families"}


def __getattr__(name: str):  # noqa: ANN202 - module-level lazy attribute (PEP 562)
    if name in _LAZY:
        from . import registry

        return getattr(registry, name)
    raise AttributeError(f"module 'portagpt' has no attribute {name!r}")

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

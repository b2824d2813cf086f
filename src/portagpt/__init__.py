"""portagpt: one chapter-5 training loop and one generation harness over many LLM families.

Public API (the CLI's twin, see docs/python.md and :mod:`portagpt.api`)::

    run = portagpt.train(family="gpt2", preset="tiny", epochs=2)   # a Run: history, .plot()
    model, tokenizer = portagpt.load(run.checkpoint)
    portagpt.generate(model, tokenizer, "Every effort moves you", temperature=0.8, top_k=40)
    portagpt.compare(families="gpt2,qwen3,gemma3")                  # table + figure
    portagpt.validate(path), portagpt.inspect(path), portagpt.convert(path, to="hf", out=dir)
    portagpt.smoke("gpt2")                                         # the conformance kit
    session = portagpt.chat(model, tokenizer); session.say("Hi")      # template, KV cache kept
    portagpt.list_families(), portagpt.get_family("qwen3")
"""

from __future__ import annotations

from .api import chat, compare, convert, generate, inspect, load, smoke, train, validate
from .errors import PortagptError
from .hookspecs import hookimpl
from .results import (
    Comparison,
    Conversion,
    Generation,
    Inspection,
    Run,
    SmokeResults,
    Validation,
)

# The registry imports torch (through the Family contract); resolve these names on first use so
# that importing portagpt (e.g. its pytest plugin, or `portagpt --help`) stays light (the API
# functions import what they need when called).
_LAZY = {"family_for_model_type", "get_family", "get_registry", "list_families"}


def __getattr__(name: str):  # noqa: ANN202 - module-level lazy attribute (PEP 562)
    if name in _LAZY:
        from . import registry

        return getattr(registry, name)
    raise AttributeError(f"module 'portagpt' has no attribute {name!r}")


__version__ = "0.1.0"


__all__ = [
    "Comparison",
    "Conversion",
    "Generation",
    "Inspection",
    "PortagptError",
    "Run",
    "SmokeResults",
    "Validation",
    "__version__",
    "chat",
    "compare",
    "convert",
    "family_for_model_type",
    "generate",
    "get_family",
    "get_registry",
    "hookimpl",
    "inspect",
    "list_families",
    "load",
    "smoke",
    "train",
    "validate",
]

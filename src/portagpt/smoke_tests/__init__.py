"""The per-family conformance kit: one set of checks any registered family must pass.

Three ways to run it on a family's tiny ``smoke_config``:

* ``run_smoke("mistral")`` returns a :class:`SmokeReport` (one
  :class:`CheckResult` per check: name, passed, detail, seconds);
* ``portagpt smoke --family mistral`` prints a line per check and exits
  non-zero on any failure;
* in pytest, ``pytest --portagpt-family mistral`` collects one test per
  check, and ``class TestMine(FamilyConformance): family = "mistral"`` gives a
  plugin's own test suite every check as a test method.

Names resolve lazily so that importing this package (pytest does, for every
run, through the ``pytest11`` entry point) does not import torch.
"""

from __future__ import annotations

from typing import Any

# The check names, in the order they run (kept here so pytest can list them without torch).
CHECK_NAMES = (
    "meta_build",
    "forward_fp32",
    "forward_bf16",
    "finite_loss",
    "train_step_lowers_loss",
    "cache_matches_full_forward",
    "batch_matches_single",
    "config_roundtrip",
    "weight_map_roundtrip",
    "save_load_roundtrip",
    "greedy_generation",
    "transformers_parity",
)

_LAZY = {
    "CheckResult": "runner",
    "SmokeReport": "runner",
    "SmokeContext": "runner",
    "run_smoke": "runner",
    "CHECKS": "checks",
    "FamilyConformance": "conformance",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["CHECK_NAMES", *_LAZY]

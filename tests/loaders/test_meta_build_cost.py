"""Planning a load builds the model on meta without running initialisers (which would import
torch._dynamo: ~800 modules, ~2 s and ~75 MiB before a byte of the checkpoint is read)."""

from __future__ import annotations

import subprocess
import sys

import pytest

CODE = """
import sys
from portagpt.registry import get_family
from portagpt.loaders.pipeline import build_on_meta
fam = get_family({name!r})
cfg = fam.smoke_config
build_on_meta(fam, cfg)
fam.weight_map(cfg)
print("torch._dynamo" in sys.modules)
"""


@pytest.mark.parametrize("name", ["gpt2", "llama", "qwen3", "gemma3", "olmo3"])
def test_planning_a_load_does_not_import_the_compiler(name: str) -> None:
    out = subprocess.run(
        [sys.executable, "-c", CODE.format(name=name)], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip().splitlines()[-1] == "False", out.stdout + out.stderr

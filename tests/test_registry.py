"""The pluggy registry: built-ins registered like plugins, clashes named, shared code family-free."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from portagpt import hookimpl
from portagpt.errors import UnknownFamilyError
from portagpt.registry import build_registry, builtin_families, get_registry

SRC = Path(__file__).resolve().parents[1] / "src" / "portagpt"


def test_builtin_families_are_registered_through_the_hook() -> None:
    reg = build_registry(autoload=False)
    assert set(builtin_families()) <= set(reg.families)
    assert "gpt2" in reg.families
    fam = reg.get("gpt2")
    assert fam.distribution == "portagpt"
    assert reg.for_model_type("gpt2") is fam


def test_unknown_family_and_model_type_name_the_known_ones() -> None:
    reg = get_registry()
    with pytest.raises(UnknownFamilyError, match=r"Unknown family 'qwen4'\. Known: .*gpt2"):
        reg.get("qwen4")
    with pytest.raises(UnknownFamilyError, match="model_type 'mamba'.*gpt2.*plugin"):
        reg.for_model_type("mamba")


def test_a_second_plugin_claiming_a_name_loses_and_is_named_the_first_stays() -> None:
    from portagpt.families.gpt2.plugin import FAMILY

    reg = build_registry(autoload=False)
    clone = SimpleNamespace()

    @hookimpl
    def portagpt_register_families(register):  # noqa: ANN001
        register(FAMILY)

    clone.portagpt_register_families = portagpt_register_families
    reg.pm.register(clone, name="clone")
    reg.families.clear()
    reg.model_types.clear()
    reg.errors.clear()
    reg.collect({"clone": ("portagpt-clone", "1.0"), "portagpt.gpt2": ("portagpt", "dev")})
    (err,) = [e for e in reg.errors if "portagpt-clone" in e]
    assert "'gpt2'" in err and "first registration is kept" in err
    assert reg.get("gpt2").distribution == "portagpt"


def test_disable_autoload_env_var_skips_entry_points(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PORTAGPT_DISABLE_PLUGIN_AUTOLOAD", "1")
    import importlib.metadata as md

    calls = []
    real = md.entry_points
    monkeypatch.setattr(md, "entry_points", lambda **kw: calls.append(kw) or real(**kw))
    build_registry()
    assert not [c for c in calls if c.get("group") == "portagpt"]


def test_shared_code_never_names_a_family() -> None:
    pattern = re.compile(r"\b(gpt2|gpt-2|llama|qwen3?|gemma3?|olmo3?|mistral)\b", re.IGNORECASE)
    offenders = []
    for folder in ("core", "loaders", "adapters"):
        for path in (SRC / folder).rglob("*.py"):
            for no, line in enumerate(path.read_text().splitlines(), 1):
                if pattern.search(line):
                    offenders.append(f"{path.relative_to(SRC)}:{no}: {line.strip()}")
    assert not offenders, "family names in shared code:\n" + "\n".join(offenders)


def test_families_command_lists_families_as_json() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "portagpt", "families", "--json"], capture_output=True, text=True, check=False
    )
    import json

    data = json.loads(out.stdout.strip().splitlines()[-1])
    names = {f["name"]: f for f in data["families"]}
    assert names["gpt2"]["distribution"] == "portagpt"
    assert "124M" in names["gpt2"]["presets"]

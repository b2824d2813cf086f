"""Misbehaving family plugins are reported by plugin and distribution; the others keep working."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from portagpt.adapters import Family
from portagpt.cli import main
from portagpt.errors import PluginError, UnknownFamilyError
from portagpt.hookspecs import hookimpl
from portagpt.registry import build_registry
from portagpt.smoke_tests.plugins import load_plugin
from portagpt.smoke_tests.runner import resolve_family, run_smoke

FIXTURES = Path(__file__).parent / "fixtures"
DIST = "fixture-dist"


def fixture(name: str) -> tuple[object, str, str]:
    module, plugin_name, _ = load_plugin(str(FIXTURES / f"{name}.py"))
    return module, plugin_name, DIST


@pytest.fixture(scope="module")
def registry():
    return build_registry(
        autoload=False,
        extra_plugins=[fixture("raising_plugin"), fixture("incomplete_plugin"), fixture("broken_plugin")],
    )


def test_a_raising_hook_is_reported_with_its_plugin_distribution_and_exception(registry):
    (err,) = [e for e in registry.errors if "raising_plugin" in e]
    assert DIST in err
    assert "RuntimeError: could not read my presets file" in err


def test_a_family_missing_a_required_field_is_refused_and_reported(registry):
    (err,) = [e for e in registry.errors if "incomplete_plugin" in e]
    assert DIST in err and "'nosmoke'" in err and "smoke_config is required" in err
    assert "nosmoke" not in registry.families
    with pytest.raises(UnknownFamilyError, match="smoke_config is required"):
        resolve_family("nosmoke", registry)


def test_a_family_record_without_model_or_configs_is_reported_with_what_is_missing():
    class NoWeightMap:
        @hookimpl
        def portagpt_register_families(self, register):
            register(Family(name="half", hf_model_types=("half",)))

    reg = build_registry(autoload=False, extra_plugins=[(NoWeightMap(), "half_plugin", "half-dist")])
    (err,) = reg.errors
    assert "'half_plugin'" in err and "half-dist" in err
    assert "build_model must be callable" in err and "smoke_config is required" in err
    assert "gpt2" in reg.families


def test_other_families_keep_working_next_to_broken_plugins(registry):
    assert {"gpt2", "brokengpt"} <= set(registry.families)
    report = run_smoke("gpt2", registry=registry, checks=["forward_fp32", "weight_map_roundtrip"])
    assert report.passed, report.format()


def test_a_weight_map_that_misses_a_tensor_fails_the_kit_naming_plugin_distribution_and_tensor(registry):
    report = run_smoke(
        "brokengpt", registry=registry, checks=["forward_fp32", "weight_map_roundtrip", "save_load_roundtrip"]
    )
    assert not report.passed
    assert [r.name for r in report.failures] == ["weight_map_roundtrip", "save_load_roundtrip"]
    assert all("final_norm.shift" in r.detail for r in report.failures)
    text = report.format()
    assert "plugin 'broken_plugin'" in text and DIST in text and "DOES NOT CONFORM" in text


def test_smoke_cli_fails_on_the_broken_fixture_with_a_readable_report(capsys):
    path = str(FIXTURES / "broken_plugin.py")
    code = main(["smoke", "--plugin", path, "--family", "brokengpt", "--check", "config_roundtrip",
                 "--check", "weight_map_roundtrip"])
    out = capsys.readouterr().out
    assert code == 1
    assert f"distribution local:{path}" in out
    assert "PASS config_roundtrip" in out
    assert "FAIL weight_map_roundtrip" in out and "final_norm.shift" in out


def test_smoke_cli_json_lists_plugin_errors_and_fails_with_all(capsys):
    code = main(["smoke", "--plugin", str(FIXTURES / "raising_plugin.py"), "--all", "--check",
                 "config_roundtrip", "--json"])
    data = json.loads(capsys.readouterr().out)
    assert code == 1 and data["passed"] is False
    assert any("raising_plugin" in e and "RuntimeError" in e for e in data["plugin_errors"])
    assert all(r["passed"] for r in data["reports"])  # every registered family still conforms
    assert "gpt2" in {r["family"] for r in data["reports"]}


def test_a_plugin_spec_that_cannot_be_imported_is_a_plugin_error():
    with pytest.raises(PluginError, match="no_such_module_here"):
        load_plugin("no_such_module_here.plugin")
    with pytest.raises(PluginError, match="no file"):
        load_plugin("tests/fixtures/not_there.py")


def test_a_name_or_model_type_clash_keeps_the_built_in_and_reports_the_plugin_that_lost():
    import dataclasses

    from portagpt.families.gpt2.plugin import FAMILY as GPT2

    class Impostor:
        @hookimpl
        def portagpt_register_families(self, register):
            register(dataclasses.replace(GPT2))

    class SameModelType:
        @hookimpl
        def portagpt_register_families(self, register):
            register(dataclasses.replace(GPT2, name="gpt2_again"))

    reg = build_registry(
        autoload=False,
        extra_plugins=[(Impostor(), "impostor", "impostor-dist"), (SameModelType(), "again", "again-dist")],
    )
    assert reg.get("gpt2").distribution == "portagpt"
    assert reg.for_model_type("gpt2").distribution == "portagpt"
    assert reg.get("gpt2_again").distribution == "again-dist"  # reachable by --family
    (lost,) = [e for e in reg.errors if "impostor" in e]
    assert "'gpt2'" in lost and "kept" in lost
    (mt,) = [e for e in reg.errors if "again" in e]
    assert "model_type 'gpt2'" in mt and "--family gpt2_again" in mt
    assert not any("raised" in e for e in reg.errors), reg.errors
    assert "llama" in reg.families


def test_a_plugin_that_calls_sys_exit_is_reported_and_the_others_keep_working():
    class Quitter:
        @hookimpl
        def portagpt_register_families(self, register):
            raise SystemExit(3)

    reg = build_registry(autoload=False, extra_plugins=[(Quitter(), "quitter", "quitter-dist")])
    (err,) = [e for e in reg.errors if "quitter" in e]
    assert "sys.exit(3)" in err
    assert {"gpt2", "llama"} <= set(reg.families)

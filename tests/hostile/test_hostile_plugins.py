"""Misbehaving plugins, installed for real (a dist-info with entry points), cannot take the host down.

One fake distribution ships four plugins: one calls ``sys.exit`` when
imported, one in its registration hook, one registers a family under a
built-in's name, and one claims a built-in's ``model_type`` with a family
whose ``build_model`` calls ``sys.exit``. Every command still runs, the
built-in families survive the clash, each failure is reported naming the
plugin, and a plugin's crash during a command is one paragraph saying it is
a bug (exit 1), not a silent exit.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from corpus import good_checkpoint
from harness import assert_clean_error, assert_ok, run_cli, unchanged

PLUGINS = {
    "badplug_exit_import": "import sys\nsys.exit(0)\n",
    "badplug_exit_hook": (
        "from portagpt.hookspecs import hookimpl\n\n"
        "@hookimpl\ndef portagpt_register_families(register):\n    raise SystemExit(1)\n"
    ),
    "badplug_clash": (
        "import dataclasses\nfrom portagpt.hookspecs import hookimpl\n"
        "from portagpt.families.llama.plugin import FAMILY\n\n"
        "@hookimpl\ndef portagpt_register_families(register):\n"
        "    register(dataclasses.replace(FAMILY, name='gpt2', hf_model_types=('impostor',)))\n"
    ),
    "badplug_exiter": (
        "import dataclasses, sys\nfrom portagpt.hookspecs import hookimpl\n"
        "from portagpt.families.llama.plugin import FAMILY\n\n"
        "def build(cfg):\n    sys.exit(5)\n\n"
        "@hookimpl\ndef portagpt_register_families(register):\n"
        "    register(dataclasses.replace(FAMILY, name='exiter', build_model=build))\n"
    ),
}


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The environment of a Python that has the fake distribution installed."""
    site = tmp_path_factory.mktemp("site")
    for module, text in PLUGINS.items():
        (site / f"{module}.py").write_text(text)
    info = site / "portagpt_badplugs-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: portagpt-badplugs\nVersion: 1.0\n")
    eps = "".join(f"{m.removeprefix('badplug_')} = {m}\n" for m in PLUGINS)
    (info / "entry_points.txt").write_text("[portagpt]\n" + eps)
    path = os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH", "")) if p)
    return {"PYTHONPATH": path, "PORTAGPT_DISABLE_PLUGIN_AUTOLOAD": "0", "PORTAGPT_PLUGINS": ""}


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return good_checkpoint(tmp_path_factory.mktemp("corpus"))


def test_plugins_that_exit_or_clash_are_reported_and_built_ins_survive(installed: dict[str, str]) -> None:
    result = run_cli("families", "--json", env=installed)
    assert "Traceback" not in result.stderr, result
    data = json.loads(result.stdout.strip().splitlines()[-1])
    fams = {f["name"]: f["distribution"] for f in data["families"]}
    assert fams["gpt2"] == "portagpt" and fams["llama"] == "portagpt", fams
    assert fams.get("exiter") == "portagpt-badplugs"
    errors = " | ".join(data["errors"])
    for plugin, what in (("exit_import", "sys.exit(0)"), ("exit_hook", "sys.exit(1)"), ("clash", "'gpt2'")):
        assert f"'{plugin}'" in errors and what in errors, errors
    assert "'exiter'" in errors and "model_type 'llama'" in errors, errors
    assert result.returncode == 1  # plugin problems make `families` fail, after listing


def test_a_built_in_checkpoint_still_loads_next_to_broken_plugins(installed: dict[str, str], good: Path) -> None:
    with unchanged(good):
        result = run_cli("load", good, env=installed)
    assert_ok(result)
    assert "llama" in result.stdout


def test_a_plugin_that_exits_during_a_command_is_one_paragraph_about_a_bug(
    installed: dict[str, str], good: Path
) -> None:
    with unchanged(good):
        result = run_cli("load", good, "--family", "exiter", env=installed)
    text = assert_clean_error(result, "sys.exit(5)", "bug", "--debug", code=1)
    assert "portagpt load" in text

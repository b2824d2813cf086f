"""The conformance kit: passes on a conforming family, fails (with a reason) on broken ones.

The full kit runs on GPT-2 here; every family runs through ``portagpt smoke --all`` in CI.
Mutated GPT-2 families show each kind of check can fail.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch
import torch._dynamo  # noqa: F401 - pytester's inline runs: see the comment below

from portagpt.core.cache import LayerSpec
from portagpt.families.gpt2.config import GPT2Config
from portagpt.families.gpt2.model import GPT2Model
from portagpt.families.gpt2.plugin import FAMILY as GPT2
from portagpt.registry import build_registry
from portagpt.smoke_tests import CHECK_NAMES, CHECKS
from portagpt.smoke_tests.runner import long_config, run_smoke

# pytester's inline runs drop the modules first imported inside them from sys.modules, and
# torch._dynamo (imported lazily by torch.manual_seed) cannot be imported twice: it is imported
# above. The inline runs below also avoid the checks that import transformers.
pytest_plugins = ["pytester"]
REGISTRY = build_registry(autoload=False)


def test_check_names_listed_without_torch_match_the_checks():
    assert tuple(CHECKS) == CHECK_NAMES


def test_full_kit_passes_on_gpt2_with_one_timed_result_per_check():
    seen = []
    report = run_smoke("gpt2", registry=REGISTRY, on_result=seen.append)
    assert report.passed, report.format()
    assert [r.name for r in report.results] == list(CHECK_NAMES) == [r.name for r in seen]
    assert all(r.seconds >= 0 and r.detail for r in report.results)
    assert report.distribution == "portagpt" and report.plugin == "portagpt.gpt2"
    assert report.to_dict()["results"][0]["status"] == "PASS"


def test_smoke_cli_prints_a_line_per_check_and_exits_zero_when_all_pass(capsys):
    from portagpt.cli import main

    assert main(["smoke", "--family", "gpt2", "--check", "config_roundtrip,forward_fp32"]) == 0
    out = capsys.readouterr().out
    assert "family 'gpt2' (plugin 'portagpt.gpt2', distribution portagpt" in out
    assert "PASS config_roundtrip" in out and "PASS forward_fp32" in out
    assert main(["smoke", "--family", "gpt2", "--check", "no_such_check"]) == 2
    assert "Unknown check(s) 'no_such_check'" in capsys.readouterr().err


# ---- mutated families: each check can fail ------------------------------------------------
class _RealBuffer(GPT2Model):
    def __init__(self, cfg):
        super().__init__(cfg)
        self.register_buffer("table", torch.zeros(4, device="cpu"))  # ignores the meta device


class _IgnoresMask(GPT2Model):
    def forward(self, input_ids, *, cache=None, attention_mask=None, logits_to_keep=0):
        return super().forward(input_ids, cache=cache, attention_mask=None, logits_to_keep=logits_to_keep)


class _ForgetsCache(GPT2Model):
    def forward(self, input_ids, *, cache=None, attention_mask=None, logits_to_keep=0):
        if cache is not None:
            cache.length += input_ids.shape[1]
        return super().forward(input_ids, attention_mask=attention_mask, logits_to_keep=logits_to_keep)


def _mutant(**changes):
    return dataclasses.replace(GPT2, name="mutant", **changes)


@pytest.mark.parametrize(
    "changes, check, reason",
    [
        ({"build_model": _RealBuffer}, "meta_build", "table"),
        ({"build_model": _IgnoresMask}, "batch_matches_single", "padded"),
        ({"build_model": _ForgetsCache}, "cache_matches_full_forward", "KV cache differs"),
        ({"cache_specs": lambda cfg: [LayerSpec(cfg.n_heads, cfg.head_dim, 3)] * cfg.n_layers},
         "forward_fp32", "layer_specs"),
        ({"config_from_hf": lambda hf: dataclasses.replace(GPT2Config.from_hf(hf), layer_norm_eps=1e-3)},
         "config_roundtrip", "layer_norm_epsilon"),
        ({"build_model": lambda cfg: _Nan(cfg)}, "finite_loss", "cross-entropy at init is nan"),
    ],
    ids=["meta", "mask", "cache", "specs", "config", "nan"],
)
def test_a_broken_family_fails_the_matching_check_with_a_reason(changes, check, reason):
    report = run_smoke(_mutant(**changes), checks=[check], registry=REGISTRY)
    (result,) = report.results
    assert result.status == "FAIL" and reason in result.detail, result.line()


class _Nan(GPT2Model):
    def init_weights(self):
        super().init_weights()
        with torch.no_grad():
            self.final_norm.scale.fill_(float("nan"))


def test_a_check_that_raises_is_a_failure_naming_the_exception():
    def explode(cfg):
        raise ValueError("no such layer kind")

    report = run_smoke(_mutant(build_model=explode), checks=["forward_bf16"], registry=REGISTRY)
    assert "raised ValueError: no such layer kind" in report.results[0].detail


def test_parity_is_skipped_not_failed_without_a_transformers_class():
    report = run_smoke(_mutant(transformers_class=None), checks=["transformers_parity"], registry=REGISTRY)
    assert report.passed and report.results[0].status == "SKIP"


# ---- sliding windows -------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class _WindowCfg:
    vocab_size: int = 16
    context_length: int = 32
    sliding_window: int = 64


def test_windows_longer_than_the_context_are_shrunk_so_decoding_passes_them():
    fam = SimpleNamespace(cache_specs=lambda cfg: [LayerSpec(1, 4, cfg.sliding_window), LayerSpec(1, 4)])
    cfg, seq, note = long_config(fam, _WindowCfg())
    assert cfg.sliding_window < seq <= 32 and "shrunk" in note
    cfg, seq, note = long_config(fam, _WindowCfg(context_length=64, sliding_window=8))
    assert cfg.sliding_window == 8 and seq > 8


# ---- pytest integration ------------------------------------------------------------------------
def test_pytest_plugin_module_does_not_import_torch():
    code = "import sys, portagpt.smoke_tests.pytest_plugin; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_pytest_plugin_is_inert_without_the_option(pytester):
    pytester.makepyfile(test_one="def test_one():\n    pass\n")
    res = pytester.runpytest("-p", "no:cacheprovider")
    res.assert_outcomes(passed=1)
    assert "portagpt-smoke" not in res.stdout.str()


def test_portagpt_family_option_collects_one_item_per_check(pytester):
    res = pytester.runpytest("-p", "no:cacheprovider", "--portagpt-family", "gpt2", "--collect-only", "-q")
    for name in CHECK_NAMES:
        res.stdout.fnmatch_lines([f"portagpt-smoke[[]gpt2]::{name}"])
    res = pytester.runpytest(
        "-p", "no:cacheprovider", "--portagpt-family", "gpt2", "-k", "config_roundtrip or forward_fp32"
    )
    res.assert_outcomes(passed=2)


def test_portagpt_family_option_reports_failures_and_unknown_families(pytester):
    fixture = os.path.join(os.path.dirname(__file__), "fixtures", "broken_plugin.py")
    res = pytester.runpytest(
        "-p", "no:cacheprovider", "--portagpt-plugin", fixture, "--portagpt-family", "brokengpt",
        "-k", "weight_map_roundtrip",
    )
    res.assert_outcomes(failed=1)
    res.stdout.fnmatch_lines(["*plugin 'broken_plugin'*weight_map_roundtrip*final_norm.shift*"])
    res = pytester.runpytest("-p", "no:cacheprovider", "--portagpt-family", "nosuch")
    assert res.ret == pytest.ExitCode.USAGE_ERROR
    res.stderr.fnmatch_lines(["*Unknown family 'nosuch'*"])


def test_subclassing_family_conformance_gives_every_check_as_a_test(pytester):
    pytester.makepyfile(test_mine="""
        from portagpt.smoke_tests import FamilyConformance

        class TestMine(FamilyConformance):
            family = "gpt2"
    """)
    res = pytester.runpytest("-p", "no:cacheprovider", "--collect-only", "-q")
    res.stdout.fnmatch_lines([f"test_mine.py::TestMine::test_{n}" for n in CHECK_NAMES])
    res = pytester.runpytest("-p", "no:cacheprovider", "-k", "config_roundtrip or forward_fp32")
    res.assert_outcomes(passed=2)


# ---- --plugin FILE: the documented package layout ----------------------------------------
PACKAGE_FAMILY = '''
import dataclasses

from portagpt.families.gpt2.plugin import FAMILY as GPT2


def config_to_hf(cfg):
    return {**GPT2.config_to_hf(cfg), "model_type": "pkggpt"}


FAMILY = dataclasses.replace(
    GPT2, name="pkggpt", hf_model_types=("pkggpt",), config_to_hf=config_to_hf,
    transformers_class=None, default_repo_id=None, description="GPT-2 from a plugin package",
)
'''
PACKAGE_PLUGIN = '''
from portagpt import hookimpl

from .family import FAMILY  # a relative import, as in the documented layout


@hookimpl
def portagpt_register_families(register):
    register(FAMILY)
'''


def _plugin_package(root):
    pkg = root / "src" / "pkgfam"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "family.py").write_text(PACKAGE_FAMILY)
    (pkg / "plugin.py").write_text(PACKAGE_PLUGIN)
    return pkg / "plugin.py"


def _smoke(*argv):
    env = {**os.environ, "PORTAGPT_DISABLE_PLUGIN_AUTOLOAD": "1"}
    cmd = [sys.executable, "-m", "portagpt", "smoke", *map(str, argv), "--check", "meta_build"]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, check=False)


def test_smoke_plugin_file_inside_a_package_imports_with_its_relative_imports(tmp_path):
    res = _smoke("--plugin", _plugin_package(tmp_path), "--family", "pkggpt")
    assert res.returncode == 0, res.stderr
    assert "family 'pkggpt' (plugin 'plugin', distribution local:" in res.stdout
    assert "PASS meta_build" in res.stdout


def test_smoke_plugin_already_installed_is_checked_once_with_a_note(tmp_path):
    res = _smoke("--plugin", "portagpt.families.gpt2.plugin", "--family", "gpt2")
    assert res.returncode == 0, res.stderr
    assert "already installed (plugin 'portagpt.gpt2')" in res.stderr
    assert "already registered" not in res.stderr + res.stdout
    assert "plugin problem" not in res.stderr


def test_smoke_plugin_file_shadowed_by_another_copy_is_a_clean_error(tmp_path):
    first, second = _plugin_package(tmp_path / "a"), _plugin_package(tmp_path / "b")
    res = _smoke("--plugin", first, "--plugin", second, "--family", "pkggpt")
    assert res.returncode == 2
    assert res.stderr.startswith("portagpt: error: ") and "Traceback" not in res.stderr
    message = " ".join(res.stderr.split())
    assert "is the module 'pkgfam.plugin'" in message and "already imported from" in message

"""core.run: a training run planned (every rule checked, nothing written), then executed.

The value checks are tables (``CONFIG_RULES``, ``SETTING_RULES``): each rule
names a flag the ``train`` command really has, and refuses a bad value with it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import replace
from importlib import resources
from pathlib import Path

import pytest

from portagpt.adapters.family import Preset
from portagpt.cli import build_parser
from portagpt.core.run import TrainOptions, execute, plan_training
from portagpt.core.run_settings import SETTING_RULES
from portagpt.core.train import CONFIG_RULES, TrainConfig
from portagpt.errors import UsageError
from portagpt.families.gpt2.config import PRESETS


@pytest.fixture
def options(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> TrainOptions:
    cfg = replace(PRESETS["tiny"].config, context_length=32, emb_dim=16, n_heads=2, n_layers=1)
    monkeypatch.setitem(PRESETS, "micro", Preset(cfg, "", "test size"))
    verdict = resources.files("portagpt").joinpath("data", "the-verdict.txt").read_text("utf-8")
    text = tmp_path / "text.txt"
    text.write_text(verdict[:3000], encoding="utf-8")
    return TrainOptions(preset="micro", data=[str(text)], out=str(tmp_path / "run"), epochs=1,
                        batch_size=4, eval_freq=2, eval_iter=1, sample_tokens=3, progress=False)  # fmt: skip


def test_a_plan_decides_everything_and_writes_nothing(options: TrainOptions) -> None:
    plan = plan_training(options)
    assert not Path(options.out).exists()
    assert plan.family.name == "gpt2" and plan.settings["context_length"] == 32
    assert plan.settings["stride"] == 32 and plan.settings["lr"] == 1e-3  # defaults filled in
    assert plan.run_info["init"] == {"preset": "micro"} and plan.run_info["parallel"] == "single"
    assert len(plan.train_loader) > 0 and plan.train_config.epochs == 1

    run = execute(plan, log=None)
    assert (Path(options.out) / "run.json").is_file() and run.checkpoint.is_dir()
    assert run.history.evals and run.tokens_seen == run.history.evals[-1].tokens_seen


def test_a_refused_plan_leaves_no_run_folder(options: TrainOptions) -> None:
    with pytest.raises(UsageError, match="--context-length 64"):
        plan_training(dataclasses.replace(options, context_length=64))
    assert not Path(options.out).exists()


def _train_flags() -> set[str]:
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    return {s for a in sub.choices["train"]._actions for s in a.option_strings}


@pytest.mark.parametrize("key", list(CONFIG_RULES))
def test_each_trainer_rule_refuses_a_bad_value_naming_a_real_flag(key: str) -> None:
    rule = CONFIG_RULES[key]
    assert rule.flag in _train_flags()
    bad = dataclasses.replace(TrainConfig(), **{key: -1 if rule.optional else None})
    with pytest.raises(UsageError) as caught:
        bad.validate()
    assert str(caught.value).startswith(f"{rule.flag} must be {rule.need}, got ")


def test_every_trainer_field_with_a_flag_has_a_rule() -> None:
    unchecked = {"betas", "sample_prompt", "seed"}  # free values: any pair, any text, any int
    assert set(CONFIG_RULES) == {f.name for f in dataclasses.fields(TrainConfig)} - unchecked


@pytest.mark.parametrize("key", list(SETTING_RULES))
def test_each_data_setting_rule_names_a_real_flag(key: str) -> None:
    assert SETTING_RULES[key].flag in _train_flags()

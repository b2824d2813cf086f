"""The harness itself: a refusal that follows the contract passes, one that does not is caught."""

from __future__ import annotations

import pytest
from harness import Result, assert_clean_error, run_cli, unchanged


def test_missing_checkpoint_is_one_paragraph_naming_the_path(tmp_path):
    with unchanged(tmp_path):
        result = run_cli("load", "--checkpoint", tmp_path / "nowhere")
    assert_clean_error(result, "nowhere", "--repo-id")


def test_harness_catches_a_traceback():
    bad = Result(["x"], 1, "", "Traceback (most recent call last):\n  ...\nportagpt: error: boom")
    with pytest.raises(AssertionError, match="traceback"):
        assert_clean_error(bad)


def test_harness_catches_a_written_file(tmp_path):
    with pytest.raises(AssertionError, match="added"):
        with unchanged(tmp_path):
            (tmp_path / "new").write_text("x")

"""Hostile command lines: nonsense flag values are refused in one paragraph, `--debug` works anywhere,
and no message sends the user to a flag that does not exist.

Values are checked before anything is loaded where they can be (device,
threads, temperature, shard size), and against the model where they depend
on it (``--max-new-tokens`` is capped at the context). A temperature so small
it would overflow behaves as greedy decoding.
"""

from __future__ import annotations

import argparse
import ast
import json
import re
from pathlib import Path

import pytest
from corpus import good_checkpoint
from harness import assert_clean_error, assert_ok, run_cli, unchanged

SRC = Path(__file__).resolve().parents[2] / "src" / "portagpt"
# flags of other tools that portagpt's messages legitimately mention
FOREIGN_FLAGS = {
    "--portagpt-family": "the pytest plugin's option (smoke_tests/pytest_plugin.py)",
    "--portagpt-plugin": "the pytest plugin's option (smoke_tests/pytest_plugin.py)",
    "--collect-only": "pytest's own option",
    "--nproc-per-node": "torchrun's option",
    "--help": "every command has it",
}


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return good_checkpoint(tmp_path_factory.mktemp("corpus"))


def _cli_flags() -> set[str]:
    from portagpt.cli import build_parser

    flags: set[str] = set()
    parsers = [build_parser()]
    while parsers:
        p = parsers.pop()
        for action in p._actions:
            flags.update(s for s in action.option_strings if s.startswith("--"))
            if isinstance(action, argparse._SubParsersAction):
                parsers.extend(action.choices.values())
    return flags


def _flags_in_strings(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            found.update(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*[a-z0-9]", node.value))
    return found


def test_every_flag_a_message_names_exists() -> None:
    known = _cli_flags() | set(FOREIGN_FLAGS)
    missing = sorted(
        f"{path.relative_to(SRC)}: {flag}"
        for path in SRC.rglob("*.py")
        for flag in _flags_in_strings(path)
        if flag not in known
    )
    assert not missing, "messages name flags no command has:\n" + "\n".join(missing)


@pytest.mark.parametrize(
    ("flags", "names"),
    [
        (["--device", "banana"], ("--device", "'banana'")),
        (["--threads", "100000"], ("--threads", "100000")),
        (["--temperature", "nan"], ("--temperature",)),
        (["--temperature", "inf"], ("--temperature",)),
        (["--top-p", "nan"], ("--top-p",)),
        (["--dtype", "float3"], ("float3",)),
    ],
    ids=["device", "threads", "temperature nan", "temperature inf", "top-p nan", "dtype"],
)
def test_generate_refuses_nonsense_values_before_loading(tmp_path: Path, flags: list[str], names: tuple[str, ...]) -> None:
    with unchanged(tmp_path):
        result = run_cli("generate", "--checkpoint", tmp_path / "nowhere", "--prompt", "x", *flags)
    assert_clean_error(result, *names)


def test_max_new_tokens_past_the_context_is_refused_without_allocating(good: Path) -> None:
    with unchanged(good):
        result = run_cli("generate", "--checkpoint", good, "--prompt", "w1", "--max-new-tokens", "1000000000")
    assert_clean_error(result, "--max-new-tokens", "64")


def test_a_vanishing_temperature_decodes_greedily_not_nan(good: Path) -> None:
    args = ("generate", "--checkpoint", good, "--prompt", "w1 w2 w3", "--max-new-tokens", "6", "--json")
    with unchanged(good):
        greedy = run_cli(*args)
        tiny = run_cli(*args, "--temperature", "1e-45", "--seed", "1")
    assert_ok(greedy)
    assert_ok(tiny)
    ids = [json.loads(r.stdout.strip().splitlines()[-1])["new_ids"] for r in (greedy, tiny)]
    assert ids[0] == ids[1]


@pytest.mark.parametrize(
    "argv",
    [
        ["load", "x", "--max-new-tokens", "abc"],
        ["frobnicate"],
        ["load", "x", "--loader", "fast"],
        ["generate", "--prompt", "x"],
    ],
    ids=["not an int", "unknown command", "bad choice", "missing required"],
)
def test_argument_errors_are_one_paragraph(tmp_path: Path, argv: list[str]) -> None:
    result = run_cli(*argv, cwd=tmp_path)
    assert_clean_error(result, argv[-1] if argv[0] != "generate" else "--checkpoint", code=2)


def test_convert_refuses_a_shard_size_that_is_not_a_size(good: Path, tmp_path: Path) -> None:
    with unchanged(good, tmp_path):
        result = run_cli("convert", good, "--to", "native", "--out", tmp_path / "out", "--max-shard-size", "banana")
    assert_clean_error(result, "--max-shard-size", "'banana'")


@pytest.mark.parametrize("where", ["before", "after"])
def test_debug_works_before_or_after_the_command(tmp_path: Path, where: str) -> None:
    argv = ["load", tmp_path / "nowhere"]
    argv = ["--debug", *argv] if where == "before" else [*argv, "--debug"]
    result = run_cli(*argv)
    assert result.returncode != 0 and "Traceback" in result.stderr, result

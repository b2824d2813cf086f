"""``portagpt generate``: flag checks, output formats, and ids equal to transformers' greedy generate."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from portagpt.cli import main
from portagpt.cli.generate import TextStream

PROMPT = "Every effort moves you"


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    """Tiny models gain nothing from intra-op threads, and on a busy 2-core machine spinning
    OpenMP workers make them ~100x slower; run this module single-threaded."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, torch.nn.Module]:
    """A tiny transformers GPT-2 with GPT-2's vocabulary (the family's packaged tokenizer reads it)."""
    from transformers import GPT2Config

    from portagpt.smoke_tests.reference import write_hf_checkpoint

    folder = tmp_path_factory.mktemp("gpt2-tiny")
    cfg = GPT2Config(vocab_size=50257, n_positions=32, n_embd=32, n_layer=2, n_head=4)
    hf_model = write_hf_checkpoint(cfg, folder, scale=0.5)
    return folder, hf_model


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["generate", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def _json(capsys: pytest.CaptureFixture[str], folder: Path, *argv: str) -> dict:
    code, out, err = _run(capsys, "--checkpoint", str(folder), "--prompt", PROMPT, "--json", *argv)
    assert code == 0, err
    return json.loads(out.strip().splitlines()[-1])


def test_json_greedy_ids_match_transformers_generate_with_and_without_cache(
    capsys: pytest.CaptureFixture[str], checkpoint: tuple[Path, torch.nn.Module]
) -> None:
    from portagpt.adapters import bundled_bpe
    from portagpt.smoke_tests.reference import hf_greedy

    folder, hf_model = checkpoint
    # 4 prompt ids + 32 new (the CLI's cap: the context) > 32 positions: the context crop
    # applies too, as in transformers (which cannot go past n_positions), so compare the first 28
    result = _json(capsys, folder, "--max-new-tokens", "32")
    tok = bundled_bpe()
    assert result["family"] == "gpt2"
    assert result["prompt_ids"] == tok.encode(PROMPT)
    assert len(result["new_ids"]) == 32
    expected = hf_greedy(hf_model, torch.tensor([result["prompt_ids"]]), max_new_tokens=28)
    assert result["new_ids"][:28] == expected[0].tolist()
    assert result["text"] == tok.decode(result["new_ids"])
    assert result["tokens_per_second"] == pytest.approx(32 / result["seconds"])
    assert (
        _json(capsys, folder, "--max-new-tokens", "32", "--no-cache")["new_ids"]
        == result["new_ids"]
    )


@pytest.mark.slow  # compiling the decode step takes ~30 s on 2 CPU cores
def test_compile_flag_gives_the_transformers_greedy_ids(
    capsys: pytest.CaptureFixture[str], checkpoint: tuple[Path, torch.nn.Module]
) -> None:
    from portagpt.core.generate import cpu_compiler_available
    from portagpt.smoke_tests.reference import hf_greedy

    if not cpu_compiler_available():
        pytest.skip("torch.compile on CPU needs a C++ compiler")
    folder, hf_model = checkpoint
    result = _json(capsys, folder, "--max-new-tokens", "28", "--compile")
    expected = hf_greedy(hf_model, torch.tensor([result["prompt_ids"]]), max_new_tokens=28)
    assert result["new_ids"] == expected[0].tolist()


def test_plain_and_streamed_output_show_prompt_and_the_same_continuation(
    capsys: pytest.CaptureFixture[str], checkpoint: tuple[Path, torch.nn.Module]
) -> None:
    folder, _ = checkpoint
    args = ("--checkpoint", str(folder), "--prompt", PROMPT, "--max-new-tokens", "12")
    code, plain, err = _run(capsys, *args, "--temperature", "0.9", "--seed", "5")
    assert code == 0
    assert "12 new tokens" in err and "tokens/s" in err
    code, streamed, _ = _run(capsys, *args, "--temperature", "0.9", "--seed", "5", "--stream")
    assert code == 0
    assert plain == streamed
    assert plain.startswith(PROMPT) and len(plain) > len(PROMPT) + 1

    code, out, _ = _run(capsys, *args, "--temperature", "0.9", "--seed", "5", "--stream", "--json")
    lines = out.strip().splitlines()
    record = json.loads(lines[-1])
    assert "\n".join(lines[:-1]) == PROMPT + record["text"]
    assert PROMPT + record["text"] + "\n" == plain


def test_same_seed_same_text_other_seed_other_text(
    capsys: pytest.CaptureFixture[str], checkpoint: tuple[Path, torch.nn.Module]
) -> None:
    folder, _ = checkpoint
    opts = ("--max-new-tokens", "10", "--temperature", "1.0", "--top-k", "50", "--top-p", "0.95")
    a = _json(capsys, folder, *opts, "--seed", "1")["new_ids"]
    assert _json(capsys, folder, *opts, "--seed", "1")["new_ids"] == a
    others = [_json(capsys, folder, *opts, "--seed", str(s))["new_ids"] for s in (2, 3)]
    assert any(o != a for o in others)


@pytest.mark.parametrize(
    ("flags", "names"),
    [
        (["--temperature", "-1"], "--temperature"),
        (["--top-p", "0"], "--top-p"),
        (["--top-p", "1.5"], "--top-p"),
        (["--top-k", "0"], "--top-k"),
        (["--max-new-tokens", "0"], "--max-new-tokens"),
        (["--min-p", "2"], "--min-p"),
        (["--compile", "--no-cache"], "--compile"),
        (["--threads", "0"], "--threads"),
    ],
)
def test_bad_flags_exit_nonzero_with_one_paragraph_and_no_traceback(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, flags: list[str], names: str
) -> None:
    # checked before anything is loaded: the folder need not even exist
    code, out, err = _run(
        capsys, "--checkpoint", str(tmp_path / "nowhere"), "--prompt", "x", *flags
    )
    assert code == 2
    assert out == ""
    assert err.startswith("portagpt: error: ") and names in err
    assert "Traceback" not in err and "\n\n" not in err.strip()


def test_missing_checkpoint_is_reported_without_traceback(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, _, err = _run(capsys, "--checkpoint", str(tmp_path / "nowhere"), "--prompt", "x")
    assert code == 2
    assert "nowhere" in err and "Traceback" not in err


# ---- incremental text ------------------------------------------------------------------------
def _pieces(tok: object, prompt_ids: list[int], new_ids: list[int]) -> str:
    stream = TextStream(tok, prompt_ids)
    text = "".join(stream.push([i]) for i in new_ids)
    return text + stream.push([], final=True)


def test_text_stream_joins_characters_split_across_byte_tokens() -> None:
    from portagpt.adapters import bundled_bpe

    tok = bundled_bpe()
    ids = tok.encode("Every effort moves you 🙂 naïve 漢字 ok")
    assert len(ids) > len(
        "Every effort moves you 🙂 naïve 漢字 ok".split()
    )  # some chars span tokens
    assert _pieces(tok, ids[:3], ids[3:]) == tok.decode(ids[3:])


def test_text_stream_keeps_the_space_a_metaspace_decoder_drops_from_a_first_token() -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    from portagpt.adapters.tokenizer import HFTokenizer

    raw = Tokenizer(
        models.WordLevel({"▁Every": 0, "▁effort": 1, "▁moves": 2, "[UNK]": 3}, unk_token="[UNK]")
    )
    raw.pre_tokenizer = pre_tokenizers.Metaspace()
    raw.decoder = decoders.Metaspace()
    tok = HFTokenizer(raw)
    ids = tok.encode("Every effort moves")
    assert ids == [0, 1, 2]
    assert tok.decode([1, 2]) == "effort moves"  # the lone decode loses the space
    assert _pieces(tok, ids[:1], ids[1:]) == " effort moves"


def test_portagpt_training_checkpoint_generates_what_the_in_memory_model_does(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from dataclasses import replace

    from portagpt.adapters import bundled_bpe
    from portagpt.core.checkpoint import save_checkpoint
    from portagpt.core.generate import generate
    from portagpt.families.gpt2.model import GPT2Model
    from portagpt.families.gpt2.plugin import FAMILY

    # the chapter-5 training layout (no qkv bias): only the portagpt sidecar describes it
    cfg = replace(
        FAMILY.presets["tiny"].config, context_length=32, emb_dim=32, n_layers=2, qkv_bias=False
    )
    model = GPT2Model(cfg)
    model.init_weights()
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(3)
    save_checkpoint(tmp_path / "ckpt", model, family=FAMILY, model_config=cfg, meta={"step": 1})
    prompt_ids = bundled_bpe().encode(PROMPT)
    want = generate(model, prompt_ids, max_new_tokens=10, stop_token_ids=[50256])
    got = _json(capsys, tmp_path / "ckpt", "--max-new-tokens", "10")
    assert got["prompt_ids"] == prompt_ids
    assert got["new_ids"] == want.new_ids[0]

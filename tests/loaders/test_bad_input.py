"""Bad input: each case is one paragraph from the CLI, a non-zero exit, no traceback, nothing written."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from ckpts import write_gpt2

from portagpt.cli import main
from portagpt.errors import CheckpointError, ConfigError, UnknownFamilyError, WeightMismatchError
from portagpt.loaders import load_full


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def assert_one_paragraph(err: str) -> str:
    assert err.startswith("portagpt: error: "), err
    assert "Traceback" not in err
    assert "\n\n" not in err.strip()
    return " ".join(err.split())


def _truncate(folder: Path) -> None:
    f = folder / "model.safetensors"
    f.write_bytes(f.read_bytes()[:-100])


def _corrupt_header(folder: Path) -> None:
    f = folder / "model.safetensors"
    raw = bytearray(f.read_bytes())
    raw[8:20] = b"{not json!!!"
    f.write_bytes(bytes(raw))


def _huge_header(folder: Path) -> None:
    f = folder / "model.safetensors"
    raw = bytearray(f.read_bytes())
    raw[:8] = (2**40).to_bytes(8, "little")
    f.write_bytes(bytes(raw))


def _rewrite(folder: Path, edit: Callable[[dict[str, torch.Tensor]], None]) -> None:
    from safetensors.torch import load_file, save_file

    state = load_file(str(folder / "model.safetensors"))
    edit(state)
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})


def _config(folder: Path, **changes: object) -> None:
    cfg = json.loads((folder / "config.json").read_text())
    cfg.update(changes)
    (folder / "config.json").write_text(json.dumps(cfg))


CASES: dict[str, tuple[Callable[[Path], None], str]] = {
    "truncated safetensors": (_truncate, r"is truncated: its header describes \d+ bytes but the file has \d+"),
    "corrupted header": (_corrupt_header, r"corrupted safetensors header \(not valid JSON"),
    "impossible header length": (_huge_header, r"corrupted safetensors header: it claims a \d+-byte header"),
    "missing tensor": (
        lambda f: _rewrite(f, lambda s: s.pop("transformer.h.1.mlp.c_fc.weight")),
        r"1 missing tensor\(s\): trf_blocks\.1\.ff\.layers\.0\.weight",
    ),
    "extra tensor": (
        lambda f: _rewrite(f, lambda s: s.__setitem__("transformer.h.0.attn.extra", torch.zeros(3))),
        r"1 unexpected tensor\(s\): transformer\.h\.0\.attn\.extra",
    ),
    "wrong shape": (
        lambda f: _rewrite(f, lambda s: s.__setitem__("transformer.ln_f.weight", torch.zeros(31))),
        r"final_norm\.scale \(model expects \(32,\), checkpoint has \(31,\)\)",
    ),
    "config hidden size contradicts the weights": (
        lambda f: _config(f, n_embd=64),
        r"wrong shape.*a dimension of 32 in the checkpoint where the config gives 64",
    ),
    "config layer count contradicts the weights": (
        lambda f: _config(f, n_layer=4),
        r"The checkpoint has 2 layers, the config says 4",
    ),
    "config of another family": (
        lambda f: _config(f, model_type="llama"),
        r"config\.json': .*'hidden_size'",  # the llama family's own message, with the path
    ),
    "unknown model_type": (lambda f: _config(f, model_type="mamba"), r"No family serves config\.json model_type 'mamba'"),
    "missing config.json": (
        lambda f: (f / "config.json").unlink(),
        r"has no config\.json beside it .* Its tensor names are gpt2's: pass --family gpt2",
    ),
    "malformed config.json": (
        lambda f: (f / "config.json").write_text('{"model_type": "gpt2",'),
        r"config\.json' is not valid JSON \(.* at line 1",
    ),
    "config.json that is not an object": (
        lambda f: (f / "config.json").write_text("[1, 2]"),
        r"must hold a JSON object, found list",
    ),
    "index naming a missing shard": (
        lambda f: (f / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"x": "model-1-of-2.safetensors"}})),
        r"names shard\(s\) missing from the folder: model-1-of-2\.safetensors",
    ),
}


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("bad") / "ok"
    write_gpt2(folder)
    return folder


@pytest.mark.parametrize("case", sorted(CASES))
def test_broken_checkpoint_is_one_paragraph_and_exit_2(case: str, pristine: Path, copy_of, capsys) -> None:
    damage, pattern = CASES[case]
    folder = copy_of(pristine)
    damage(folder)
    rc, out, err = run_cli(capsys, "load", str(folder))
    assert rc == 2 and "ok" not in out.split()
    import re

    assert re.search(pattern, assert_one_paragraph(err)), err


def test_mismatch_is_reported_before_any_weight_is_read(pristine: Path, copy_of, monkeypatch) -> None:
    folder = copy_of(pristine)
    _config(folder, n_layer=4)
    from portagpt.loaders.safetensors_index import TensorIndex

    def never(*_a: object, **_k: object) -> None:
        raise AssertionError("a tensor was read")

    monkeypatch.setattr(TensorIndex, "get", never)
    monkeypatch.setattr(TensorIndex, "__enter__", never)
    with pytest.raises(WeightMismatchError, match="2 layers, the config says 4"):
        load_full(folder)


def test_every_problem_is_listed_at_once_sorted_and_capped(pristine: Path, copy_of) -> None:
    folder = copy_of(pristine)
    _rewrite(folder, lambda s: [s.pop(k) for k in sorted(s) if ".h." in k and k.endswith("bias")])
    with pytest.raises(WeightMismatchError) as info:
        load_full(folder)
    msg = str(info.value)
    assert "16 missing tensor(s)" in msg and "... and 8 more" in msg
    shown = msg.split("missing tensor(s): ")[1].split(" ...")[0].split(", ")
    assert shown == sorted(shown) and len(shown) == 8


def test_untied_checkpoint_without_lm_head_says_so(tmp_path: Path) -> None:
    folder = tmp_path / "untied"
    write_gpt2(folder, tie_word_embeddings=False)
    _rewrite(folder, lambda s: s.pop("lm_head.weight"))
    with pytest.raises(WeightMismatchError, match="out_head.weight is missing and tie_word_embeddings is false"):
        load_full(folder)


@pytest.mark.parametrize(
    "make, pattern",
    [
        (lambda p: p, r"does not exist"),
        (lambda p: (p.mkdir(), p)[1], r"is an empty folder"),
        (lambda p: (p.mkdir(), (p / "notes.txt").write_text("x"), p)[2], r"No weights in .* \(it holds notes\.txt\)"),
    ],
    ids=["no such path", "empty folder", "folder without weights"],
)
def test_paths_that_are_not_checkpoints(tmp_path: Path, capsys, make, pattern: str) -> None:
    import re

    path = make(tmp_path / "ckpt")
    rc, _, err = run_cli(capsys, "load", str(path))
    assert rc == 2 and re.search(pattern, assert_one_paragraph(err))


def test_path_that_looks_like_a_hub_id_suggests_repo_id(capsys) -> None:
    rc, _, err = run_cli(capsys, "load", "some-org/some-model")
    assert rc == 2 and "pass it with --repo-id" in assert_one_paragraph(err)


class _Payload:
    """Unpickling this calls os.system: the classic malicious-pickle payload."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # noqa: ANN204
        return (os.system, (f"touch {self.marker}",))


def test_a_pickle_that_would_run_code_is_refused_and_nothing_runs(tmp_path: Path, capsys) -> None:
    marker = tmp_path / "PWNED"
    with open(tmp_path / "model.pth", "wb") as f:
        torch.save({"tok_emb.weight": torch.zeros(2, 2), "evil": _Payload(marker)}, f)
    rc, _, err = run_cli(capsys, "load", str(tmp_path / "model.pth"), "--family", "gpt2")
    assert rc == 2 and not marker.exists()
    msg = assert_one_paragraph(err)
    assert "Refused to load" in msg and "nothing in the file was executed" in msg
    with pytest.raises(CheckpointError, match="weights_only"):
        load_full(tmp_path / "model.pth", family="gpt2")
    assert not marker.exists()
    # the control: the payload is real, unpickling without weights_only runs it
    torch.load(tmp_path / "model.pth", weights_only=False)
    assert marker.exists()


def test_truncated_pth_is_a_clear_error(tmp_path: Path) -> None:
    torch.save({"tok_emb.weight": torch.zeros(64, 64)}, tmp_path / "model.pth")
    raw = (tmp_path / "model.pth").read_bytes()
    (tmp_path / "model.pth").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint.*truncated or corrupted"):
        load_full(tmp_path / "model.pth", family="gpt2")


def test_pth_holding_a_model_object_asks_for_a_state_dict(tmp_path: Path) -> None:
    torch.save([torch.zeros(1)], tmp_path / "model.pth")
    with pytest.raises(CheckpointError, match="holds a list, not a state dict"):
        load_full(tmp_path / "model.pth", family="gpt2")


def test_family_flag_contradicting_config_json_names_the_right_family(pristine: Path) -> None:
    with pytest.raises(ConfigError, match="is a 'gpt2' config .* but --family llama serves"):
        load_full(pristine, family="llama")
    with pytest.raises(UnknownFamilyError, match="Unknown family 'gpt3'"):
        load_full(pristine, family="gpt3")

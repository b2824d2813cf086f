"""Broken and crafted checkpoints through `portagpt load` / `inspect` / `generate`: a clear refusal, nothing touched.

Each case damages a copy of one good checkpoint in one way: safetensors files
that parse but lie (overlapping or gapped offsets, trailing bytes, sizes that
do not match the dtype and shape, non-string metadata), index.json files that
point outside the folder, hub paths that try to leave the cache, weights with
NaN, and a tied head stored apart from the embedding (loaded untied, with a
note, never dropped).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from corpus import broken_copy, good_checkpoint, read_raw, rewrite, tensors_by_offset, write_raw
from harness import assert_clean_error, assert_ok, run_cli, unchanged


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return good_checkpoint(tmp_path_factory.mktemp("corpus"))


# ---- crafted safetensors ----------------------------------------------------------------
def _overlap(h: dict[str, Any], d: bytes) -> tuple[dict[str, Any], bytes]:
    first, second = tensors_by_offset(h)[:2]
    a, b = h[second]["data_offsets"]
    h[second]["data_offsets"] = [a - 4, b - 4]  # starts inside the first tensor
    return h, d


def _gap(h: dict[str, Any], d: bytes) -> tuple[dict[str, Any], bytes]:
    for k in tensors_by_offset(h):
        a, b = h[k]["data_offsets"]
        h[k]["data_offsets"] = [a + 16, b + 16]
    return h, b"\0" * 16 + d


def _trailing(h: dict[str, Any], d: bytes) -> tuple[dict[str, Any], bytes]:
    return h, d + b"appended by someone"


def _metadata_not_strings(h: dict[str, Any], d: bytes) -> tuple[dict[str, Any], bytes]:
    h["__metadata__"] = {"format": "pt", "step": 7}
    return h, d


def _past_the_end(h: dict[str, Any], d: bytes) -> tuple[dict[str, Any], bytes]:
    last = tensors_by_offset(h)[-1]
    a, b = h[last]["data_offsets"]
    h[last]["data_offsets"] = [a, b + 4096]
    h[last]["shape"] = [(b + 4096 - a) // 4]
    return h, d


def _shape_vs_bytes(h: dict[str, Any], d: bytes) -> tuple[dict[str, Any], bytes]:
    name = tensors_by_offset(h)[0]
    h[name]["shape"] = [h[name]["shape"][0] + 1, *h[name]["shape"][1:]]
    return h, d


def _dtype_vs_bytes(h: dict[str, Any], d: bytes) -> tuple[dict[str, Any], bytes]:
    name = tensors_by_offset(h)[0]
    h[name]["dtype"] = "F16"  # half the bytes the offsets span
    return h, d


def _string_shape(h: dict[str, Any], d: bytes) -> tuple[dict[str, Any], bytes]:
    name = tensors_by_offset(h)[0]
    h[name]["shape"] = ["64", "abc"]
    return h, d


def _unknown_dtype(h: dict[str, Any], d: bytes) -> tuple[dict[str, Any], bytes]:
    h[tensors_by_offset(h)[0]]["dtype"] = "Q4_K"
    return h, d


def _header_too_long(folder: Path) -> None:
    path = folder / "model.safetensors"
    blob = bytearray(path.read_bytes())
    blob[:8] = (10**12).to_bytes(8, "little")
    path.write_bytes(bytes(blob))


def _header_not_json(folder: Path) -> None:
    header, data = read_raw(folder / "model.safetensors")
    write_raw(folder / "model.safetensors", header, data, raw_header=b"{not json at all" + b" " * 40)


HEADER_CASES: dict[str, tuple[Callable[..., Any], str]] = {
    "overlapping offsets": (_overlap, "overlapping"),
    "gap before the data": (_gap, "unaccounted bytes"),
    "trailing bytes": (_trailing, "after the last tensor"),
    "non-string metadata": (_metadata_not_strings, "'step'"),
    "offsets past the end": (_past_the_end, "truncated"),
    "shape vs byte size": (_shape_vs_bytes, "needs"),
    "dtype vs byte size": (_dtype_vs_bytes, "F16"),
    "shape of strings": (_string_shape, "malformed"),
    "unknown dtype": (_unknown_dtype, "Q4_K"),
}


@pytest.mark.parametrize("case", sorted(HEADER_CASES))
def test_crafted_safetensors_header_is_refused_naming_file_and_tensor(
    good: Path, tmp_path: Path, case: str
) -> None:
    damage, why = HEADER_CASES[case]
    folder = broken_copy(good, tmp_path / "ckpt", lambda f: rewrite(f, damage))
    with unchanged(folder):
        result = run_cli("load", folder)
    assert_clean_error(result, "model.safetensors", why)


@pytest.mark.parametrize("damage", [_header_too_long, _header_not_json], ids=["header length", "not json"])
def test_unparseable_safetensors_is_refused_naming_the_file(good: Path, tmp_path: Path, damage) -> None:
    folder = broken_copy(good, tmp_path / "ckpt", damage)
    with unchanged(folder):
        result = run_cli("inspect", folder)
    assert_clean_error(result, "model.safetensors")


# ---- index.json paths -------------------------------------------------------------------
def _sharded(folder: Path, shard: str) -> None:
    header, _ = read_raw(folder / "model.safetensors")
    names = [k for k in header if k != "__metadata__"]
    index = {"metadata": {}, "weight_map": {n: shard for n in names}}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))


@pytest.mark.parametrize(
    "shard",
    ["../outside/model.safetensors", "/etc/passwd", "sub/../../outside/model.safetensors"],
    ids=["dotdot", "absolute", "nested dotdot"],
)
def test_index_json_naming_a_file_outside_the_folder_is_refused(good: Path, tmp_path: Path, shard: str) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "model.safetensors").write_bytes((good / "model.safetensors").read_bytes())
    folder = broken_copy(good, tmp_path / "ckpt", lambda f: _sharded(f, shard))
    with unchanged(tmp_path):
        result = run_cli("load", folder)
    assert_clean_error(result, "model.safetensors.index.json", repr(shard))


def test_hub_revision_or_repo_id_with_dotdot_never_leaves_the_cache(tmp_path: Path) -> None:
    env = {"HF_HUB_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1"}
    (tmp_path / "cache").mkdir()
    with unchanged(tmp_path):
        rev = run_cli("load", "--repo-id", "org/model", "--revision", "../../../etc", env=env)
        repo = run_cli("inspect", "--repo-id", "org/..", env=env)
    assert_clean_error(rev, "--revision", "'../../../etc'")
    assert_clean_error(repo, "'org/..'")


# ---- values: NaN, tied copies -------------------------------------------------------------
def _nan_weights(folder: Path) -> None:
    def fn(h: dict[str, Any], d: bytes) -> tuple[dict[str, Any], bytes]:
        name = "model.norm.weight"
        a, b = h[name]["data_offsets"]
        nan = b"\x00\x00\xc0\x7f" * ((b - a) // 4)
        return h, d[:a] + nan + d[b:]

    rewrite(folder, fn)


def test_nan_weights_fail_load_and_generate_names_the_step(good: Path, tmp_path: Path) -> None:
    folder = broken_copy(good, tmp_path / "ckpt", _nan_weights)
    with unchanged(folder):
        load = run_cli("load", folder)
        gen = run_cli("generate", "--checkpoint", folder, "--prompt", "w1 w2", "--max-new-tokens", "3")
    assert_clean_error(load, "non-finite")
    assert_clean_error(gen, "step 0", "non-finite")


def _untied_head(folder: Path) -> None:
    """A tied-config checkpoint that stores an lm_head different from the embedding."""
    import torch
    from safetensors.torch import load_file, save_file

    state = load_file(str(folder / "model.safetensors"))
    state["lm_head.weight"] = state["model.embed_tokens.weight"] + 0.5 * torch.randn_like(
        state["model.embed_tokens.weight"]
    )
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})


def test_a_stored_head_that_differs_from_the_tied_embedding_is_kept_by_untying(tmp_path: Path) -> None:
    good = good_checkpoint(tmp_path / "src", tied=True)
    folder = broken_copy(good, tmp_path / "ckpt", _untied_head)
    with unchanged(folder):
        result = run_cli("load", folder, "--json")
    assert_ok(result)
    report = json.loads(result.stdout.strip().splitlines()[-1])
    (note,) = report["notes"]
    assert "lm_head.weight" in note and "untied" in note and "tie_word_embeddings=False" in note
    assert report["checks"]["shapes"]["ignored"] == 0

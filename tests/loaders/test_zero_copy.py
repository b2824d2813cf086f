"""``loader="mmap"``: tensors used as stored are views of the mapped file; results are equal."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from ckpts import logits_of
from safetensors.torch import load_file, save_file

import portagpt
from portagpt.errors import PortagptError
from portagpt.loaders import load_full
from portagpt.loaders import pipeline as pipeline_mod

pytestmark = pytest.mark.skipif(
    not Path("/proc/self/maps").exists(), reason="needs /proc/self/maps"
)


def file_mappings(folder: Path) -> list[tuple[int, int]]:
    """Address ranges of this process mapped from the safetensors files under ``folder``."""
    names = {str(p.resolve()) for p in folder.glob("*.safetensors")}
    ranges = []
    with open("/proc/self/maps") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 6 and parts[5] in names:
                lo, hi = (int(x, 16) for x in parts[0].split("-"))
                ranges.append((lo, hi))
    return ranges


def inside(t: torch.Tensor, ranges: list[tuple[int, int]]) -> bool:
    start = t.data_ptr()
    end = start + t.numel() * t.element_size()
    return any(lo <= start and end <= hi for lo, hi in ranges)


@pytest.mark.parametrize("fixture", ["gpt2_ref", "gpt2_sharded"])
def test_mmap_loader_uses_untransformed_tensors_from_the_file_and_equals_meta(
    fixture, gpt2_ref, request
):
    folder = gpt2_ref.folder if fixture == "gpt2_ref" else request.getfixturevalue(fixture)
    copied = load_full(folder, loader="meta", tokenizer=False).model
    mapped = load_full(folder, loader="mmap", tokenizer=False).model
    assert torch.equal(logits_of(mapped, gpt2_ref.ids), logits_of(copied, gpt2_ref.ids))
    ranges = file_mappings(folder)
    assert ranges, "the mmap loader mapped no safetensors file"
    params = dict(mapped.named_parameters())
    # HF GPT-2 stores embeddings and norms as portagpt keeps them, its Conv1D matrices transposed
    for name in (
        "tok_emb.weight",
        "pos_emb.weight",
        "trf_blocks.0.norm1.scale",
        "final_norm.shift",
    ):
        assert inside(params[name], ranges), f"{name} was copied"
    for name in ("trf_blocks.0.att.W_query.weight", "trf_blocks.1.ff.layers.0.weight"):
        assert not inside(params[name], ranges), f"{name} (transposed) points into the file"
        assert params[name].is_contiguous()
    assert not any(inside(p, ranges) for p in copied.parameters())


def test_mmap_loader_copies_when_a_cast_is_asked(gpt2_ref):
    mapped = load_full(gpt2_ref.folder, loader="mmap", dtype="bfloat16", tokenizer=False).model
    ranges = file_mappings(gpt2_ref.folder)
    assert {p.dtype for p in mapped.parameters()} == {torch.bfloat16}
    assert not any(inside(p, ranges) for p in mapped.parameters())


def test_mmap_weights_train_without_touching_the_file(gpt2_ref, copy_of):
    folder = copy_of(gpt2_ref.folder)
    before = load_file(str(folder / "model.safetensors"))
    model, _ = portagpt.load(folder, loader="mmap")
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)  # copy-on-write: the process's pages change, the file does not
    after = load_file(str(folder / "model.safetensors"))
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_mmap_loader_runs_the_strict_check_before_reading_any_weight(
    gpt2_ref, copy_of, monkeypatch
):
    folder = copy_of(gpt2_ref.folder)
    state = load_file(str(folder / "model.safetensors"))
    state.pop(next(k for k in state if k.endswith("ln_f.weight")))
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    read: list[str] = []
    monkeypatch.setattr(pipeline_mod.MappedFiles, "get", lambda self, name: read.append(name))
    with pytest.raises(PortagptError, match="final_norm.scale"):
        load_full(folder, loader="mmap", tokenizer=False)
    assert read == []

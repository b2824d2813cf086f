"""Hub ids resolve through huggingface_hub's cache, offline; --verify checks digests against its blob names.

The cache is built by hand in huggingface_hub's documented layout:
``models--org--name/{blobs/<hash>, snapshots/<commit>/<file> -> ../../blobs/<hash>, refs/main}``,
where an LFS file's blob is named by its sha256 and a small git file's by its git blob sha1.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
import torch
from ckpts import logits_of

import portagpt
from portagpt.cli import main
from portagpt.errors import CheckpointError, CheckpointNotFoundError
from portagpt.loaders import hub

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def add_to_cache(cache: Path, repo_id: str, folder: Path) -> Path:
    """Put every file of ``folder`` into ``cache`` as huggingface_hub would have downloaded it."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snap = repo / "snapshots" / COMMIT
    (repo / "blobs").mkdir(parents=True)
    snap.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    for f in sorted(folder.iterdir()):
        data = f.read_bytes()
        lfs = f.suffix == ".safetensors"
        blob = hashlib.sha256(data).hexdigest() if lfs else git_blob_sha1(data)
        (repo / "blobs" / blob).write_bytes(data)
        os.symlink(Path("..") / ".." / "blobs" / blob, snap / f.name)
    return snap


@pytest.fixture()
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "hf-cache"
    root.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(root))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return root


def test_repo_id_loads_offline_from_the_cache(cache: Path, gpt2_ref) -> None:
    add_to_cache(cache, "org/tiny-gpt2", gpt2_ref.folder)
    model, tok = portagpt.load(repo_id="org/tiny-gpt2")
    assert torch.equal(logits_of(model, gpt2_ref.ids), logits_of(portagpt.load(gpt2_ref.folder)[0], gpt2_ref.ids))
    assert tok is not None and tok.encode("w5") == [5]


def test_sharded_repo_and_family_default_repo(cache: Path, gpt2_sharded, gpt2_ref) -> None:
    repo_id = portagpt.get_family("gpt2").default_repo_id
    snap = add_to_cache(cache, repo_id, gpt2_sharded)
    loaded = portagpt.loaders.load_full(family="gpt2")
    assert loaded.source == repo_id
    assert {Path(f).parent for f in loaded.extras["files"]} == {snap}
    assert torch.equal(logits_of(loaded.model, gpt2_ref.ids), logits_of(portagpt.load(gpt2_ref.folder)[0], gpt2_ref.ids))


def test_only_the_files_a_load_needs_are_requested(cache: Path, gpt2_ref, monkeypatch) -> None:
    add_to_cache(cache, "org/tiny-gpt2", gpt2_ref.folder)
    import huggingface_hub

    real = huggingface_hub.snapshot_download
    seen: dict = {}

    def spy(repo_id, **kwargs):  # noqa: ANN001, ANN003, ANN202
        seen.update(kwargs)
        return real(repo_id, **kwargs)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", spy)
    hub.resolve("org/tiny-gpt2")
    patterns = seen["allow_patterns"]
    assert "config.json" in patterns and "model.safetensors.index.json" in patterns
    assert any(p.endswith(".safetensors") for p in patterns) and "tokenizer.json" in patterns
    assert not any(p.endswith((".bin", ".pth", ".msgpack", ".h5")) for p in patterns)
    assert seen["local_files_only"] is True  # HF_HUB_OFFLINE=1: the network is never asked


def test_not_cached_and_offline_says_what_to_do(cache: Path) -> None:
    with pytest.raises(CheckpointNotFoundError, match=r"not in the Hugging Face cache .* HF_HUB_OFFLINE=1 forbids"):
        portagpt.load(repo_id="org/never-downloaded")


def test_network_failure_falls_back_to_the_cache(cache: Path, gpt2_ref, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    add_to_cache(cache, "org/tiny-gpt2", gpt2_ref.folder)
    import huggingface_hub

    real = huggingface_hub.snapshot_download

    def no_network(repo_id, **kwargs):  # noqa: ANN001, ANN003, ANN202
        if not kwargs.get("local_files_only"):
            raise OSError("Network is unreachable")
        return real(repo_id, **kwargs)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", no_network)
    model, _ = portagpt.load(repo_id="org/tiny-gpt2")
    assert model is not None
    with pytest.raises(CheckpointNotFoundError, match="could not be reached"):
        portagpt.load(repo_id="org/other")


def test_cli_verify_compares_digests_with_the_cache_blob_names(cache: Path, gpt2_ref, capsys) -> None:
    add_to_cache(cache, "org/tiny-gpt2", gpt2_ref.folder)
    assert main(["load", "--repo-id", "org/tiny-gpt2", "--verify", "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    files = {Path(f["path"]).name: f for f in result["checks"]["files"]}
    assert files["model.safetensors"]["verified"] is True
    assert files["model.safetensors"]["reference"].startswith("sha256")
    assert files["config.json"]["verified"] is True and files["config.json"]["reference"].startswith("git-sha1")


def test_verify_without_a_reference_only_prints_digests(gpt2_ref, capsys) -> None:
    assert main(["load", str(gpt2_ref.folder), "--verify", "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    f = next(f for f in result["checks"]["files"] if f["path"].endswith("model.safetensors"))
    assert f["verified"] is None and f["reference"] is None
    assert f["sha256"] == hashlib.sha256((gpt2_ref.folder / "model.safetensors").read_bytes()).hexdigest()


def test_verify_catches_a_corrupted_blob_of_the_right_size(cache: Path, gpt2_ref, capsys) -> None:
    snap = add_to_cache(cache, "org/tiny-gpt2", gpt2_ref.folder)
    blob = Path(os.path.realpath(snap / "model.safetensors"))
    raw = bytearray(blob.read_bytes())
    raw[-5] ^= 0xFF  # a flipped bit in the data: the size still matches the header
    blob.write_bytes(bytes(raw))
    assert main(["load", "--repo-id", "org/tiny-gpt2"]) == 0  # without --verify nothing notices
    capsys.readouterr()
    assert main(["load", "--repo-id", "org/tiny-gpt2", "--verify"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "is corrupted: its sha256 is" in err and "Traceback" not in err
    from portagpt.loaders.integrity import check_file

    with pytest.raises(CheckpointError, match="download the model again"):
        check_file(snap / "model.safetensors", verify=True)

"""Hub ids -> local folders, through huggingface_hub's own cache.

Only the files a load needs are fetched (config, safetensors weights and their
index, tokenizer files), with ``snapshot_download(allow_patterns=...)``. It
works offline from the cache: with ``HF_HUB_OFFLINE=1`` nothing is asked of the
network, and when the network fails huggingface_hub falls back to the cached
snapshot itself; we retry with ``local_files_only=True`` for errors it does
not catch. Without network and without a cached snapshot the error says what
to do.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from ..errors import CheckpointNotFoundError, UsageError

TOKENIZER_FILES = (  # what travels with the weights: tokenizer, chat template, generation defaults
    "tokenizer.json",
    "tokenizer_config.json",
    "tokenizer.model",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "chat_template.jinja",
    "chat_template.json",
    "generation_config.json",
)
ALLOW_PATTERNS = ["config.json", "model*.safetensors", "model.safetensors.index.json", *TOKENIZER_FILES]
REPO_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$|^[A-Za-z0-9][\w.\-]*$")
_TRUE = ("1", "true", "yes", "on")


def looks_like_repo_id(text: str) -> bool:
    return "/" in text and bool(REPO_ID.match(text))


def offline() -> bool:
    """HF_HUB_OFFLINE, read now (huggingface_hub reads it once, at import)."""
    from huggingface_hub import constants

    env = os.environ.get("HF_HUB_OFFLINE")
    return env.lower() in _TRUE if env is not None else bool(constants.HF_HUB_OFFLINE)


def cache_dir() -> str | None:
    """HF_HUB_CACHE (or HF_HOME/hub), read now; None: huggingface_hub's default."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    if os.environ.get("HF_HOME"):
        return str(Path(os.environ["HF_HOME"]) / "hub")
    return None


def check_revision(revision: str | None) -> None:
    """Refuse a revision that could name a path outside the cache's ``refs``/``snapshots`` folders."""
    if revision is None:
        return
    parts = revision.split("/")
    if (
        not revision.strip()
        or revision.startswith("/")
        or "\\" in revision
        or "\0" in revision
        or any(p in ("", ".", "..") for p in parts)
    ):
        raise UsageError(
            f"--revision {revision!r} is not a branch, tag or commit name ('..', '.', empty parts, "
            "leading '/' and backslashes are refused, so a revision never names a path outside the "
            "Hugging Face cache). Pass e.g. --revision main or a commit hash."
        )


def resolve(repo_id: str, revision: str | None = None, cache: str | Path | None = None) -> Path:
    """The local snapshot folder of ``repo_id`` holding the files a load needs."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HFValidationError,
        IncompleteSnapshotError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    if not REPO_ID.match(repo_id) or any(p in (".", "..") for p in repo_id.split("/")):
        raise UsageError(
            f"{repo_id!r} is not a hub id (expected 'org/name'). "
            "For a local checkpoint pass its path with --checkpoint."
        )
    check_revision(revision)
    where = str(cache) if cache is not None else cache_dir()
    what = repo_id + (f"@{revision}" if revision else "")

    def download(local_only: bool) -> Path:
        return Path(
            snapshot_download(
                repo_id,
                revision=revision,
                allow_patterns=ALLOW_PATTERNS,
                cache_dir=where,
                local_files_only=local_only,
            )
        )

    try:
        try:
            return download(offline())
        except (LocalEntryNotFoundError, RepositoryNotFoundError, GatedRepoError, RevisionNotFoundError):
            raise
        except OSError:
            if offline():
                raise
            return download(True)  # a network error huggingface_hub did not fall back on itself
    except IncompleteSnapshotError as exc:
        raise CheckpointNotFoundError(
            f"The cached snapshot of {what} is incomplete ({str(exc).splitlines()[0][:300]}). Download "
            "it again with network access, or pass a complete local folder with --checkpoint."
        ) from None
    except LocalEntryNotFoundError:
        cached = f"{what} is not in the Hugging Face cache ({where or 'the default cache'})"
        if offline():
            raise CheckpointNotFoundError(
                f"{cached}, and HF_HUB_OFFLINE=1 forbids downloading it. Run once with network "
                f"access (unset HF_HUB_OFFLINE; `hf download {repo_id}` also fills the cache), point "
                "HF_HUB_CACHE at a cache that has it, or pass a local folder with --checkpoint."
            ) from None
        raise CheckpointNotFoundError(
            f"{cached}, and the Hugging Face Hub could not be reached to download it. Check the "
            "network (or proxy) and retry, or pass a local folder with --checkpoint."
        ) from None
    except (RepositoryNotFoundError, GatedRepoError) as exc:
        raise CheckpointNotFoundError(
            f"The Hub has no accessible repository {repo_id!r} ({type(exc).__name__}). Check the "
            "spelling; for a gated or private model, accept its licence on the Hub and log in "
            "(`hf auth login` or HF_TOKEN)."
        ) from None
    except RevisionNotFoundError:
        raise CheckpointNotFoundError(
            f"{repo_id!r} has no revision {revision!r}. Use a branch, tag or commit that exists."
        ) from None
    except HFValidationError as exc:
        raise UsageError(f"{repo_id!r} is not a valid hub id: {exc}") from None

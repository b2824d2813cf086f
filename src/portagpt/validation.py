"""The validation stack behind ``portagpt load`` and ``portagpt.validate``.

In order: file integrity (each safetensors header against its file size;
sha256 digests with ``verify``, compared with the Hugging Face cache's record
where there is one), the strict name/shape/dtype check (before any weight is
read), a forward pass with finite logits, and a short greedy sample decoded
with the checkpoint's tokenizer. Telemetry: load seconds, peak RSS
(``ru_maxrss``) and the RSS growth, parameters, bytes.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

from .errors import CheckpointError, UsageError
from .results import Validation


def check_new_tokens(n: int, config: object) -> None:
    """Refuse ``--max-new-tokens`` past the model's context: the CLI's bound on one run's cost.

    (``generate()`` in Python goes on past the context, cropping the window each step.)
    """
    ctx = getattr(config, "context_length", None)
    if isinstance(ctx, int) and n > ctx:
        raise UsageError(
            f"--max-new-tokens {n} is more than the model's context of {ctx} tokens; ask for at "
            f"most {ctx} (e.g. --max-new-tokens {min(ctx, 50)})."
        )


def current_rss() -> int | None:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def peak_rss() -> int:
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def forward_check(model: Any, ids: list[int]) -> dict[str, Any]:
    """One forward pass; CheckpointError when any logit is NaN or infinite."""
    import torch

    device = next(model.parameters()).device
    with torch.no_grad():
        logits = model(torch.tensor([ids], device=device))
    finite = bool(torch.isfinite(logits).all())
    if not finite:
        bad = int((~torch.isfinite(logits)).sum())
        raise CheckpointError(
            f"The forward pass produced {bad} non-finite logit(s) (NaN or inf) out of "
            f"{logits.numel()}: the weights are corrupted or overflow this dtype. Try --dtype "
            "float32, or --verify the files."
        )
    return {"shape": list(logits.shape), "finite": finite, "max_abs": float(logits.abs().max())}


def prompt_ids(loaded: Any, prompt: str) -> tuple[list[int], str | None]:
    """Prompt ids for the sample, and a note when the tokenizer cannot serve this model."""
    vocab = int(loaded.config.vocab_size)
    tok = loaded.tokenizer
    if tok is None:
        return [i % vocab for i in range(1, 6)], "no tokenizer: sampled from ids 1..5"
    ids = tok.encode(prompt) or [0]
    if max(ids) >= vocab:
        return [i % vocab for i in range(1, 6)], (
            f"the tokenizer's ids reach {max(ids)} but the model has {vocab} embeddings: "
            "sampled from ids 1..5"
        )
    return ids, None


def sample(loaded: Any, ids: list[int], max_new_tokens: int) -> dict[str, Any]:
    """A short greedy continuation (decoded when the tokenizer covers every new id)."""
    from .core.generate import generate

    stops = loaded.tokenizer.stop_token_ids if loaded.tokenizer is not None else ()
    res = generate(loaded.model, ids, max_new_tokens=max_new_tokens, stop_token_ids=stops)
    new = res.new_ids[0]
    text = None
    if loaded.tokenizer is not None and all(i < loaded.tokenizer.vocab_size for i in new):
        text = loaded.tokenizer.decode(new)
    return {
        "prompt_ids": ids,
        "new_ids": new,
        "text": text,
        "stopped": res.stopped[0],
        "seconds": res.seconds,
    }


def checkpoint_source(path: str | os.PathLike | None, checkpoint: str | os.PathLike | None) -> str | None:
    """The checkpoint named as PATH or as ``--checkpoint PATH`` (the same one, if both)."""
    if path and checkpoint and str(path) != str(checkpoint):
        raise UsageError("Give the checkpoint once: as PATH or as --checkpoint PATH, not both.")
    source = path or checkpoint
    return None if source is None else str(source)


def validate(
    path: str | os.PathLike | None = None,
    *,
    checkpoint: str | os.PathLike | None = None,
    repo_id: str | None = None,
    revision: str | None = None,
    family: str | None = None,
    preset: str | None = None,
    config: Any = None,
    loader: str = "auto",
    dtype: str = "float32",
    device: str = "cpu",
    prompt: str = "The meaning of life is",
    max_new_tokens: int = 8,
    verify: bool = False,
) -> Validation:
    """Load a checkpoint through every check (``portagpt load``) and report them.

    File integrity (sizes against headers; sha256 with ``verify``), the strict
    name/shape/dtype check, a forward pass with finite logits, a short greedy
    sample, and telemetry. Raises the check's PortagptError when one fails.
    The loaded model and tokenizer ride along as ``.model`` / ``.tokenizer``.
    """
    from .core.generate import check_options
    from .loaders import locate_source
    from .loaders.integrity import check_files
    from .loaders.load import load_located

    check_options(max_new_tokens)
    rss0 = current_rss()
    t0 = time.perf_counter()
    path = checkpoint_source(path, checkpoint)
    loc = locate_source(path, repo_id=repo_id, revision=revision, family=family)
    resolve_s = time.perf_counter() - t0
    extra = [loc.folder / "config.json"] if (loc.folder / "config.json").is_file() else []
    files = check_files([*loc.files, *extra], verify=verify)
    loaded = load_located(
        loc, family=family, preset=preset, config=config, dtype=dtype, device=device, loader=loader
    )
    check_new_tokens(max_new_tokens, loaded.config)
    peak = peak_rss()
    rss1 = current_rss()
    ids, note = prompt_ids(loaded, prompt)
    fwd = forward_check(loaded.model, ids)
    smp = sample(loaded, ids, max_new_tokens)
    smp["prompt"] = prompt if note is None else None
    smp["note"] = note
    model = loaded.model
    dtypes = sorted({str(p.dtype).removeprefix("torch.") for p in model.parameters()})
    return Validation(
        ok=True,
        source=loaded.source,
        kind=loc.kind,
        family=loaded.family.name,
        loader=loaded.loader,
        layout=loaded.layout,
        config_source=loaded.extras.get("config_source"),
        notes=loaded.extras.get("notes", []),
        params=sum(p.numel() for p in model.parameters()),
        dtype=dtypes[0] if len(dtypes) == 1 else dtypes,
        device=str(next(model.parameters()).device),
        load_seconds=round(loaded.load_seconds, 4),
        resolve_seconds=round(resolve_s, 4),
        peak_rss_bytes=peak,
        rss_delta_bytes=(rss1 - rss0) if rss0 is not None and rss1 is not None else None,
        checkpoint_bytes=loaded.checkpoint_bytes,
        checks={
            "files": [f.to_dict() for f in files],
            "verify": bool(verify),
            "shapes": loaded.report.summary(),
            "forward": fwd,
        },
        sample=smp,
        model=model,
        tokenizer=loaded.tokenizer,
    )

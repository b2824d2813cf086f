"""The Python API: the CLI's twin, returning objects instead of printing.

Every ``portagpt`` command is a thin layer over one function here, with the
same name, the same arguments (``--max-new-tokens`` is ``max_new_tokens=``)
and the same defaults; the command prints what the function returns (its
``--json`` output is the object's ``to_dict()``), so the two cannot drift::

    import portagpt

    run = portagpt.train(family="gpt2", preset="tiny", epochs=2, out="runs/demo")
    run.plot()                                            # matplotlib Figure
    model, tok = portagpt.load(run.checkpoint)
    portagpt.generate(model, tok, "Every effort moves you", temperature=0.8, top_k=40, seed=1)

    portagpt.validate("runs/demo/checkpoint")            # `portagpt load`'s report
    portagpt.inspect("runs/demo/checkpoint")             # `portagpt inspect`
    portagpt.convert("runs/demo/checkpoint", to="hf", out="runs/demo-hf")
    portagpt.smoke("gpt2")                               # the conformance kit
    portagpt.compare(families="gpt2,qwen3", tokens=4096, out=None).figure

Errors are the same :class:`~portagpt.errors.PortagptError` subclasses, with
the same one-paragraph messages, as the CLI prints. docs/python.md is the guide.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .errors import UsageError
from .generation import TextStream, check_generate_options, generate
from .results import (
    Comparison,
    Conversion,
    Inspection,
    Run,
    SmokeResults,
)
from .validation import checkpoint_source, validate

__all__ = [
    "TextStream",
    "chat",
    "check_generate_options",
    "compare",
    "convert",
    "generate",
    "inspect",
    "load",
    "smoke",
    "train",
    "validate",
]

PathLike = str | os.PathLike


def load(source: Any = None, **kwargs: Any) -> tuple[Any, Any]:
    """``model, tokenizer = portagpt.load(path)``; see :func:`portagpt.loaders.load`."""
    from .loaders import load as _load

    return _load(source, **kwargs)


# ---- train -------------------------------------------------------------------------------


def train(
    *,
    family: str | None = None,
    preset: str | None = None,
    checkpoint: PathLike | None = None,
    repo_id: str | None = None,
    revision: str | None = None,
    data: PathLike | Sequence[PathLike] | None = None,
    out: PathLike | None = None,
    resume: bool = False,
    overwrite: bool = False,
    epochs: int | None = None,
    batch_size: int | None = None,
    context_length: int | None = None,
    stride: int | None = None,
    train_ratio: float | None = None,
    lr: float | None = None,
    weight_decay: float | None = None,
    decay: str | None = None,
    schedule: str | None = None,
    warmup: int | None = None,
    min_lr_ratio: float | None = None,
    grad_accum: int | None = None,
    clip: float | None = None,
    eval_freq: int | None = None,
    eval_iter: int | None = None,
    save_every: int | None = None,
    seed: int | None = None,
    prompt: str | None = None,
    sample_tokens: int | None = None,
    threads: int | None = None,
    device: str = "auto",
    dtype: str | None = None,
    compile: str | bool | None = None,
    activation_checkpointing: bool = False,
    backend: str | None = None,
    fsdp: bool = False,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> Run:
    """Pretrain with the chapter-5 loop; ``portagpt train`` with the same options and defaults.

    An option left as None takes the resumed run's value (``resume=True``),
    else the command's default (preset ``tiny``, 10 epochs, batch 1, lr 1e-3,
    warmup 9, clip 1.0, the bundled corpus, ``out`` = ``runs/<family>-<preset>``;
    ``portagpt train --help`` lists them all). Writes the run folder as the
    command does and returns a :class:`~portagpt.core.results.Run`: the history
    of losses and tokens seen, the checkpoint path, the trained model and
    tokenizer, and ``.plot()`` (a matplotlib Figure). ``progress=True`` shows a
    bar (a widget in Jupyter, a text bar in a terminal; one plain line per
    evaluation elsewhere) and the run's lines; ``progress=False`` is silent.
    ``log`` receives those lines instead of ``print``.
    """
    from .core.run import TrainOptions, run_training

    if isinstance(data, (str, os.PathLike)):
        data = [data]
    options = TrainOptions(
        family=family, preset=preset, checkpoint=_str(checkpoint), repo_id=repo_id,
        revision=revision, data=[str(p) for p in data] if data else None, out=_str(out),
        resume=resume, overwrite=overwrite, epochs=epochs, batch_size=batch_size,
        context_length=context_length, stride=stride, train_ratio=train_ratio, lr=lr,
        weight_decay=weight_decay, decay=decay, schedule=schedule, warmup=warmup,
        min_lr_ratio=min_lr_ratio, grad_accum=grad_accum, clip=clip, eval_freq=eval_freq,
        eval_iter=eval_iter, save_every=save_every, seed=seed, prompt=prompt,
        sample_tokens=sample_tokens, threads=threads, device=device, dtype=dtype,
        compile="inductor" if compile is True else (compile or None),
        activation_checkpointing=activation_checkpointing, backend=backend, fsdp=fsdp,
        progress=progress,
    )  # fmt: skip
    return run_training(options, log=log or (print if progress else None))


def _str(path: PathLike | None) -> str | None:
    return None if path is None else str(path)


# ---- compare -------------------------------------------------------------------------------

DEFAULT_FAMILIES = "gpt2,llama,qwen3,gemma3,olmo3"


def parse_families(spec: str | Sequence[str], preset: str) -> list[tuple[str, str]]:
    """``"gpt2,qwen3:tiny-moe"`` (or a list) -> ``[("gpt2", preset), ("qwen3", "tiny-moe")]``."""
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    out = []
    for item in (s.strip() for s in items):
        if not item:
            continue
        name, _, own = item.partition(":")
        out.append((name.strip(), own.strip() or preset))
    if not out:
        raise UsageError("--families is empty; name at least one, e.g. --families gpt2,llama.")
    if len(set(out)) != len(out):
        raise UsageError(f"--families names a family twice ({spec!r}); list each one once.")
    return out


def compare(
    families: str | Sequence[str] = DEFAULT_FAMILIES,
    *,
    preset: str = "tiny",
    tokens: int | None = None,
    out: PathLike | None = "runs/compare",
    data: PathLike | Sequence[PathLike] | None = None,
    context_length: int | None = None,
    batch_size: int | None = None,
    lr: float | None = None,
    weight_decay: float | None = None,
    warmup: int | None = None,
    clip: float | None = None,
    train_ratio: float | None = None,
    seed: int | None = None,
    eval_points: int | None = None,
    device: str = "cpu",
    dtype: str = "float32",
    threads: int = 0,
    overwrite: bool = False,
    isolate: bool = True,
    log: Callable[[str], None] | None = print,
) -> Comparison:
    """Train each family from scratch under identical conditions; ``portagpt compare``.

    Options left as None take :class:`~portagpt.core.compare.CompareSettings`'
    defaults (the command's). With ``out`` (default ``runs/compare``; None
    writes nothing) compare.md, compare.json and bpb.png/.pdf are written
    there. ``isolate`` trains each family in a fresh process (its own peak
    memory), as the command does. Returns a :class:`~portagpt.results.Comparison`
    (``.table`` in Markdown, ``.figure``, ``.results``).
    """
    from .core import compare as cmp
    from .core.run_settings import resolve_device

    pairs = parse_families(families, preset)
    dev = resolve_device(device)
    d = cmp.CompareSettings()
    if isinstance(data, (str, os.PathLike)):
        data = [data]
    pick = lambda value, default: default if value is None else value  # noqa: E731
    settings = cmp.CompareSettings(
        tokens=pick(tokens, d.tokens), context_length=pick(context_length, d.context_length),
        batch_size=pick(batch_size, d.batch_size), lr=pick(lr, d.lr),
        weight_decay=pick(weight_decay, d.weight_decay), warmup_steps=pick(warmup, d.warmup_steps),
        grad_clip=pick(clip, d.grad_clip) or None, train_ratio=pick(train_ratio, d.train_ratio),
        seed=pick(seed, d.seed), eval_points=pick(eval_points, d.eval_points),
        data=[str(p) for p in data] if data else None, device=str(dev), dtype=dtype,
    )  # fmt: skip
    folder = Path(out) if out is not None else None
    existing = [n for n in (cmp.JSON_FILE, cmp.MARKDOWN_FILE) if folder and (folder / n).exists()]
    if existing and not overwrite:
        raise UsageError(
            f"{str(folder)!r} already holds a comparison ({', '.join(existing)}); pass --overwrite "
            "to replace it, or --out NEW_DIR."
        )
    settings.validate()
    if data:
        from .core.data import read_corpus

        read_corpus(settings.data)  # missing or empty files fail here, before any training
    say = log or (lambda *_: None)
    say(
        f"Comparing {', '.join(f'{f}:{p}' for f, p in pairs)}: {settings.tokens:,} training "
        f"tokens each ({settings.steps} steps of {settings.batch_size} x "
        f"{settings.context_length}), {'one fresh process' if isolate else 'in turn'} per family."
    )
    results = cmp.compare(pairs, settings, isolate=isolate, threads=threads, log=say)
    paths = cmp.write_reports(results, settings, folder) if folder is not None else {}
    return Comparison(results=results, settings=settings, paths=paths)


# ---- convert, inspect, validate -----------------------------------------------------------




def check_shard_size(text: int | str) -> int:
    """``--max-shard-size`` in bytes (e.g. 5GB, 500MB, 20KB, or a plain byte count), > 0."""
    from huggingface_hub.serialization._base import parse_size_to_int

    try:
        size = int(text) if str(text).strip().isdigit() else parse_size_to_int(str(text).strip())
    except (ValueError, TypeError):
        size = 0
    if size <= 0:
        raise UsageError(
            f"--max-shard-size {text!r} is not a size: give a positive number of bytes or a number "
            "with a unit (KB, MB, GB, TB), e.g. --max-shard-size 5GB."
        )
    return size


def convert(
    path: PathLike | None = None,
    *,
    to: str,
    out: PathLike,
    checkpoint: PathLike | None = None,
    repo_id: str | None = None,
    revision: str | None = None,
    family: str | None = None,
    preset: str | None = None,
    config: Any = None,
    dtype: str = "auto",
    max_shard_size: int | str = "5GB",
) -> Conversion:
    """Rewrite a checkpoint in another layout in the new folder ``out``; ``portagpt convert``."""
    from .loaders import convert as _convert
    from .loaders import locate_source

    check_shard_size(max_shard_size)
    src = checkpoint_source(path, checkpoint)
    if src is None:
        if repo_id is None:
            raise UsageError("Nothing to convert: pass a checkpoint PATH or --repo-id ID.")
        src = str(locate_source(repo_id=repo_id, revision=revision).folder)
    result = _convert(
        src, to, out, family=family, preset=preset, config=config, dtype=dtype,
        max_shard_size=max_shard_size,
    )  # fmt: skip
    return Conversion(result)


def inspect(
    path: PathLike | None = None,
    *,
    checkpoint: PathLike | None = None,
    repo_id: str | None = None,
    revision: str | None = None,
    family: str | None = None,
    preset: str | None = None,
    config: Any = None,
) -> Inspection:
    """What a checkpoint holds, without reading a weight; ``portagpt inspect``."""
    from .loaders import locate_source
    from .loaders.describe import describe

    src = checkpoint_source(path, checkpoint)
    loc = locate_source(src, repo_id=repo_id, revision=revision, family=None if src else family)
    return Inspection(describe(loc=loc, family=family, preset=preset, config=config))




# ---- chat ----------------------------------------------------------------------------------


def check_max_context(max_context: int | None) -> None:
    """A chat's cache size: at least two positions (UsageError naming the flag)."""
    if max_context is not None and max_context < 2:
        raise UsageError(f"max_context (--max-context) must be >= 2, got {max_context}.")


def chat(
    model: Any,
    tokenizer: Any = None,
    *,
    system: str | None = None,
    max_new_tokens: int = 512,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    min_p: float | None = None,
    seed: int | None = None,
    threads: int | None = None,
    max_context: int | None = None,
    family: Any = None,
    dtype: str = "float32",
    device: str = "cpu",
) -> Any:
    """A multi-turn chat session over the checkpoint's chat template; ``portagpt chat``.

    ``model`` is a loaded model (with its ``tokenizer``) or a checkpoint path.
    Returns a :class:`portagpt.core.chat.Chat`: ``.say(text)`` answers a turn,
    ``.send(text)`` streams its pieces, ``.turns`` records per turn the tokens
    prefilled against the conversation's length (the KV cache is kept across
    turns), ``.reset()`` starts over. A tokenizer without a chat template is
    refused (TokenizerError).
    """
    from .core.chat import Chat, SamplingOptions
    from .errors import TokenizerError
    from .generation import _resolve_model

    check_generate_options(
        max_new_tokens, temperature, top_k, top_p, min_p, seed=seed, threads=threads
    )
    check_max_context(max_context)
    model, tokenizer, _ = _resolve_model(model, tokenizer, family, dtype, device)
    if tokenizer is None:
        raise TokenizerError("This checkpoint has no tokenizer, so there is nothing to chat with.")
    options = SamplingOptions(max_new_tokens, temperature, top_k, top_p, min_p, seed)
    return Chat(
        model, tokenizer, system=system, options=options, max_context=max_context, threads=threads
    )


# ---- smoke ---------------------------------------------------------------------------------


def smoke(
    family: str | Sequence[str] | None = None,
    *,
    all: bool = False,  # noqa: A002 - the CLI's --all
    check: str | Sequence[str] | None = None,
    plugin: str | Sequence[str] = (),
    on_family: Callable[[Any, str], None] | None = None,
    on_result: Callable[[Any], None] | None = None,
    on_report: Callable[[Any], None] | None = None,
    on_note: Callable[[str], None] | None = None,
) -> SmokeResults:
    """Run the conformance kit on families (names, ``"a,b"``, or ``all=True``); ``portagpt smoke``.

    ``check`` limits it to the named checks; ``plugin`` registers extra plugin
    modules (module, ``module:attr`` or a ``.py`` path) for this call only.
    Progress hooks (the command prints with them): ``on_family(family, plugin)``
    before a family's checks, ``on_result(check_result)`` as each check
    finishes, ``on_report(report)`` after the family; ``on_note(text)`` hears that
    a ``plugin`` is installed already (its families are then checked once, as installed).
    """
    from .registry import build_registry, get_registry
    from .smoke_tests import CHECK_NAMES
    from .smoke_tests.plugins import load_plugin_modules
    from .smoke_tests.runner import resolve_family, run_smoke

    families = _names(family)
    if bool(families) == bool(all):
        raise UsageError(
            "Say which families to check: --family NAME (repeatable) or --all, not both."
        )
    specs = [plugin] if isinstance(plugin, str) else list(plugin)
    extras = load_plugin_modules(specs)
    reg = build_registry(extra_plugins=extras) if extras else get_registry()
    for spec, (plugin_obj, name, _) in zip(specs, extras, strict=True):
        installed = reg.pm.get_name(plugin_obj)
        if installed is not None and installed != name and on_note is not None:
            on_note(
                f"note: --plugin {spec} is already installed (plugin {installed!r}); its families "
                "are checked as installed, once."
            )
    if all:
        families = sorted(reg.families)
    resolved = [resolve_family(name, reg) for name in families]  # unknown names fail first
    checks = _names(check) or None
    unknown = [c for c in checks or () if c not in CHECK_NAMES]
    if unknown:
        raise UsageError(
            f"Unknown check(s) {', '.join(map(repr, unknown))}. Known: {', '.join(CHECK_NAMES)} "
            "(portagpt smoke --list-checks)."
        )
    reports = []
    for name, (fam, plugin_name) in zip(families, resolved, strict=True):
        if on_family is not None:
            on_family(fam, plugin_name)
        reports.append(run_smoke(name, checks=checks, registry=reg, on_result=on_result))
        if on_report is not None:
            on_report(reports[-1])
    return SmokeResults(reports=reports, plugin_errors=list(reg.errors), all_families=all)


def _names(values: str | Sequence[str] | None) -> list[str]:
    """``"a,b"``, ``["a", "b,c"]`` -> unique names in order."""
    if values is None:
        return []
    out: list[str] = []
    for v in [values] if isinstance(values, str) else values:
        out += [n.strip() for n in v.split(",") if n.strip() and n.strip() not in out]
    return out

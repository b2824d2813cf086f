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
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from .errors import TokenizerError, UsageError
from .results import (
    Comparison,
    Conversion,
    Generation,
    Inspection,
    Run,
    SmokeResults,
    Validation,
)

__all__ = [
    "TextStream",
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


# ---- generate ------------------------------------------------------------------------------


class TextStream:
    """Turns ids into text deltas without re-decoding everything each time.

    Each delta is ``decode(context + pending)`` minus ``decode(context)``, where
    the context is the last few ids already shown; this keeps the leading space
    that word-piece decoders drop from a lone first token, and holds back ids
    that end inside a multi-byte character until it completes.
    """

    CONTEXT = 4

    def __init__(self, tokenizer: Any, prompt_ids: Sequence[int]) -> None:
        self.tokenizer = tokenizer
        self.context = list(prompt_ids[-self.CONTEXT :])
        self.base = tokenizer.decode(self.context)
        self.pending: list[int] = []

    def push(self, ids: Sequence[int], final: bool = False) -> str:
        self.pending.extend(int(i) for i in ids)
        if not self.pending:
            return ""
        full = self.tokenizer.decode(self.context + self.pending)
        if full.endswith("\ufffd") and not final:
            return ""  # a character split across tokens: wait for the rest
        if full.startswith(self.base):
            delta = full[len(self.base) :]
        else:
            delta = self.tokenizer.decode(self.pending)
        self.context = (self.context + self.pending)[-self.CONTEXT :]
        self.base = self.tokenizer.decode(self.context)
        self.pending = []
        return delta


def _default_device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def _family_of_model(model: Any) -> Any:
    """The registered family whose config class the model's config is (None: not one of ours)."""
    from .registry import get_registry

    cfg_type = type(getattr(model, "config", None))
    for fam in get_registry().families.values():
        if type(fam.smoke_config) is cfg_type:
            return fam
    return None


def _resolve_model(
    model: Any, tokenizer: Any, family: Any, dtype: str, device: str
) -> tuple[Any, Any, Any]:
    """(model, tokenizer, family): a checkpoint path is loaded, a module is taken as it is."""
    from .loaders import load_full
    from .registry import get_family

    if isinstance(model, (str, os.PathLike)):
        loaded = load_full(
            str(model), family=family, dtype=dtype, device=_default_device(device),
            tokenizer=tokenizer is None,
        )  # fmt: skip
        return loaded.model, tokenizer or loaded.tokenizer, loaded.family
    fam = get_family(family) if isinstance(family, str) else family or _family_of_model(model)
    return model, tokenizer, fam


def check_generate_options(
    max_new_tokens: int,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    min_p: float | None = None,
    *,
    use_cache: bool = True,
    compile: bool = False,
    seed: int | None = None,
    threads: int | None = None,
) -> None:
    """Every generation option checked before anything is loaded (UsageError naming the flag)."""
    from .core.generate import check_options

    check_options(max_new_tokens, temperature, top_k, top_p, min_p)
    if compile and not use_cache:
        raise UsageError(
            "--compile compiles the cached one-token decode step, and --no-cache has none; "
            "drop one of the two."
        )
    if seed is not None and not -(2**63) <= seed < 2**64:
        raise UsageError(f"--seed must be a whole number from 0 to 2**64 - 1, got {seed}.")
    cores = os.cpu_count() or 1
    if threads is not None and not 1 <= threads <= cores:
        raise UsageError(
            f"--threads must be from 1 to this machine's {cores} CPU cores, got {threads}; "
            "leave it out to let portagpt choose (one thread for small models on CPU, torch's "
            "default otherwise)."
        )


def generate(
    model: Any,
    tokenizer: Any = None,
    prompt: str | Sequence[str] = "",
    *,
    max_new_tokens: int = 50,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    min_p: float | None = None,
    seed: int | None = None,
    use_cache: bool = True,
    compile: bool = False,
    threads: int | None = None,
    stream: bool = False,
    details: bool = False,
    family: Any = None,
    dtype: str = "float32",
    device: str = "auto",
) -> Any:
    """Continue ``prompt`` (one string, or a list of them) with ``model``; ``portagpt generate``.

    ``model`` is a loaded model (with its ``tokenizer``) or a checkpoint path
    (loaded with ``family``, ``dtype``, ``device``, and its own tokenizer).
    ``temperature=0`` is greedy; otherwise ``top_k``, ``top_p``, ``min_p``
    filter and ``seed`` makes the sample repeatable. Returns the continuation
    (a ``str``, or a list for a list of prompts); with ``details=True`` a
    :class:`~portagpt.results.Generation` (ids, text, timings; a list for a
    list); with ``stream=True`` (one prompt) a generator of text pieces as
    they are decided, whose ``return`` value is the Generation. Generation
    stops at the tokenizer's (else the family's) stop tokens.
    """
    from .core.generate import stream as stream_ids

    check_generate_options(
        max_new_tokens, temperature, top_k, top_p, min_p,
        use_cache=use_cache, compile=compile, seed=seed, threads=threads,
    )  # fmt: skip
    many = not isinstance(prompt, str)
    if many and stream:
        raise UsageError("stream=True streams one prompt; pass a single string, or stream=False.")
    model, tok, fam = _resolve_model(model, tokenizer, family, dtype, device)
    if tok is None:
        raise TokenizerError(
            f"{str(model)[:60]!r} has no tokenizer, so the prompt cannot be encoded. Pass the "
            "tokenizer (model, tokenizer = portagpt.load(path)), or save it next to the weights "
            "(tokenizer.save_pretrained(dir) in transformers)."
        )
    prompts = list(prompt) if many else [prompt]
    rows = [tok.encode(p) for p in prompts]
    stops = tuple(tok.stop_token_ids) or tuple(getattr(fam, "stop_token_ids", ()))
    ids_stream = stream_ids(
        model, rows if many else rows[0], max_new_tokens=max_new_tokens,
        temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p, stop_token_ids=stops,
        seed=seed, use_cache=use_cache, pad_token_id=tok.pad_token_id, compile=compile,
        threads=threads,
    )  # fmt: skip
    name = getattr(fam, "name", None)
    if stream:
        return _text_pieces(ids_stream, tok, prompts[0], rows[0], name)
    result = _drain(ids_stream)
    gens = [
        Generation(
            family=name, prompt=p, prompt_ids=r, new_ids=new,
            text=TextStream(tok, r).push(new, final=True), seconds=result.seconds, stopped=stop,
        )  # fmt: skip
        for p, r, new, stop in zip(prompts, rows, result.new_ids, result.stopped, strict=True)
    ]
    if details:
        return gens if many else gens[0]
    texts = [g.text for g in gens]
    return texts if many else texts[0]


def _drain(gen: Iterator[Any]) -> Any:
    while True:
        try:
            next(gen)
        except StopIteration as done:
            return done.value


def _text_pieces(
    ids_stream: Any, tok: Any, prompt: str, prompt_ids: list[int], family: str | None
) -> Iterator[str]:
    """Text deltas as the ids arrive; returns the Generation."""
    text_stream = TextStream(tok, prompt_ids)
    shown: list[str] = []
    while True:
        try:
            token = next(ids_stream)
        except StopIteration as done:
            result = done.value
            break
        piece = text_stream.push([token])
        if piece:
            shown.append(piece)
            yield piece
    tail = text_stream.push([], final=True)
    if tail:
        shown.append(tail)
        yield tail
    return Generation(
        family=family, prompt=prompt, prompt_ids=prompt_ids, new_ids=result.new_ids[0],
        text="".join(shown), seconds=result.seconds, stopped=result.stopped[0],
    )  # fmt: skip


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
            f"{str(folder)!r} already holds a comparison ({', '.join(existing)}); pass --overwrite to "
            "replace it, or --out NEW_DIR."
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


def _source(path: PathLike | None, checkpoint: PathLike | None) -> str | None:
    if path and checkpoint and str(path) != str(checkpoint):
        raise UsageError("Give the checkpoint once: as PATH or as --checkpoint PATH, not both.")
    return _str(path or checkpoint)


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
    src = _source(path, checkpoint)
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

    src = _source(path, checkpoint)
    loc = locate_source(src, repo_id=repo_id, revision=revision, family=None if src else family)
    return Inspection(describe(loc=loc, family=family, preset=preset, config=config))


def validate(
    path: PathLike | None = None,
    *,
    checkpoint: PathLike | None = None,
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
    from .validation import run_checks

    return run_checks(
        _source(path, checkpoint), repo_id=repo_id, revision=revision, family=family,
        preset=preset, config=config, loader=loader, dtype=dtype, device=device, prompt=prompt,
        max_new_tokens=max_new_tokens, verify=verify,
    )  # fmt: skip


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
) -> SmokeResults:
    """Run the conformance kit on families (names, ``"a,b"``, or ``all=True``); ``portagpt smoke``.

    ``check`` limits it to the named checks; ``plugin`` registers extra plugin
    modules (module, ``module:attr`` or a ``.py`` path) for this call only.
    Progress hooks (the command prints with them): ``on_family(family, plugin)``
    before a family's checks, ``on_result(check_result)`` as each check
    finishes, ``on_report(report)`` after the family.
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
    extras = load_plugin_modules(_names(plugin))
    reg = build_registry(extra_plugins=extras) if extras else get_registry()
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

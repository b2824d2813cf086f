"""The loading pipeline: every way in produces the same model.

1. Locate the weights (``sources.py``, ``hub.py``) and open them without
   reading tensor data: safetensors headers, or a memory-mapped ``.pth``.
2. Decide the family and config (``configs.py``; ``choice.py`` picks them and
   runs the strict check of step 3); every config value is checked for type
   and range, and the layer/expert counts against the headers' names
   (``config_values.py``), before anything is built.
3. :func:`prepare`: build the model on the meta device, map the checkpoint's
   names and shapes through the family's weight map with meta tensors, and
   compare (``checks.py``): every missing, unexpected and mismatched tensor is
   reported at once, before any weight is read. A tied copy the checkpoint
   stores anyway is compared with its source; one that differs unties the
   model instead of being dropped (``ties.py``).
4. :func:`materialise`: read each tensor, map it, cast it, move it, and
   ``load_state_dict(strict=False, assign=True)`` into the meta model; tie
   explicitly, recompute non-persistent buffers, and verify nothing is left
   on the meta device. One tensor (or one fused group) is in flight at a time,
   so peak memory stays close to the size of the weights.

Loaders (``loader=``): ``meta`` (the default, steps 3-4 as above, every
tensor read into memory the model owns), ``mmap`` (the same, but a
safetensors tensor used as stored is not read at all: it stays a view of the
memory-mapped file, :class:`MappedFiles`, as transformers does; fastest and
smallest, but the model then needs the file to stay as it is: replacing it by
a rename is safe, rewriting it in place is not),
``safetensors`` (every file read whole with ``safetensors.torch.load_file``,
then step 4), ``state_dict`` (the classic path: a randomly initialised model,
the whole state dict read, ``load_state_dict`` copying into it) and ``hf``
(transformers' ``from_pretrained``, then :func:`~.hf.from_transformers`). All
four give the same weights; the strict check runs first for every one.
``load.py`` runs the steps in order (:func:`~.load.load_located`); names and
meta builds shared with family detection live in ``names.py``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..adapters.family import Family
from ..adapters.weights import IDENTITY, Rule, Step
from ..core.checkpoint_format import (  # noqa: F401  (re-exported)
    FAMILY_KEY,
    FORMAT_KEY,
    FORMAT_VERSION_KEY,
    TIED_KEY,
    check_format_version,
)
from ..core.memory import release_free_memory
from ..errors import CheckpointError, UsageError
from .checks import Report, compare
from .configs import SIDECAR, ConfigChoice, read_json
from .names import STRIP_PREFIXES, empty_init, name_patterns, strip_prefixes  # noqa: F401
from .safetensors_index import TensorIndex
from .sources import Located
from .state_dict import StateDictSource

LOADERS = ("auto", "meta", "mmap", "safetensors", "state_dict", "hf")

Source = TensorIndex | StateDictSource

DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float16": torch.float16,
    "fp16": torch.float16,
    "half": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
}


def parse_dtype(dtype: str | torch.dtype | None) -> torch.dtype | None:
    """``"auto"``/None -> None (keep the checkpoint's dtype); names -> torch dtypes."""
    if dtype is None or dtype == "auto":
        return None
    if isinstance(dtype, torch.dtype):
        return dtype
    try:
        return DTYPES[str(dtype).lower()]
    except KeyError:
        raise UsageError(
            f"Unknown dtype {dtype!r}. Use one of: auto, {', '.join(sorted(set(DTYPES)))}."
        ) from None


def parse_device(device: str | torch.device) -> torch.device:
    """A torch device that exists on this machine, or a UsageError naming ``--device``."""
    if isinstance(device, torch.device):
        dev = device
    else:
        try:
            dev = torch.device(str(device))
        except (RuntimeError, ValueError, TypeError):
            raise UsageError(
                f"--device {device!r} is not a device torch knows. Use cpu, cuda, cuda:N or mps."
            ) from None
    if dev.type == "meta":
        raise UsageError("--device meta holds no data; load onto cpu, cuda or mps.")
    if dev.type != "cpu":
        backend = getattr(torch, dev.type, None)
        available = getattr(backend, "is_available", lambda: False)
        count = getattr(backend, "device_count", lambda: 1)
        if not available() or (dev.index is not None and dev.index >= count()):
            raise UsageError(
                f"--device {str(device)!r}: no such {dev.type} device on this machine"
                + (f" ({count()} available)" if available() else "")
                + ". Use --device cpu, or a device that exists."
            )
    return dev


def main_dtype(tensors: Iterable[torch.Tensor]) -> torch.dtype | None:
    """The most common floating dtype among ``tensors`` (None when there is none)."""
    floats = Counter(t.dtype for t in tensors if t.is_floating_point())
    return floats.most_common(1)[0][0] if floats else None


# ---- plan: names and shapes only ----------------------------------------------------
@dataclass
class Prepared:
    """A model on the meta device and the steps that fill it, checked from shapes alone."""

    family: Family
    config: Any
    model: nn.Module
    layout: str  # "native" or "hf"
    steps: list[Step]
    source_names: dict[str, str]  # name without wrappers -> name in the checkpoint
    expected: dict[str, torch.Tensor]  # what the checkpoint must provide (meta tensors)
    tied: tuple[tuple[str, str], ...]
    report: Report
    produced: dict[str, torch.Tensor]  # what the checkpoint maps to (meta tensors, checkpoint dtypes)
    claimed: int  # checkpoint tensors the weight map (or the native names) account for
    total: int

    @property
    def coverage(self) -> float:
        return self.claimed / self.total if self.total else 0.0


def expected_state(model: nn.Module, family: Family, cfg: Any) -> tuple[dict[str, torch.Tensor], set[str]]:
    """The model's tensors that a checkpoint must provide, and the tied destinations (optional)."""
    state = dict(model.state_dict(keep_vars=True))
    tied = {dst for dst, _ in family.tied_weights(cfg)}
    for dst in tied:
        state.pop(dst, None)
    return state, tied


def stored_once(source: Source, sidecar: Mapping[str, Any] | None) -> dict[str, str]:
    """``{alias: stored name}`` of tensors a native checkpoint wrote once for several names.

    portagpt's training checkpoints record them in the safetensors metadata
    (``portagpt_tied``) and the sidecar (``tied_weights``).
    """
    import json

    out: dict[str, str] = {}
    if sidecar and isinstance(sidecar.get("tied_weights"), Mapping):
        out.update({str(k): str(v) for k, v in sidecar["tied_weights"].items()})
    raw = source.combined_metadata().get(TIED_KEY)
    if raw:
        try:
            data = json.loads(raw)
        except json.JSONDecodeError:
            data = None
        if isinstance(data, dict):
            out.update({str(k): str(v) for k, v in data.items()})
    return out


def detect_layout(canon: list[str], expected: Mapping[str, Any], family: Family, cfg: Any, meta: Mapping[str, str], sidecar: Any) -> str:
    """``native`` or ``hf``: portagpt's metadata or sidecar if any, else whichever names fit better.

    When both fit equally (families whose module names follow the checkpoint's),
    the folder is taken for a transformers one.
    """
    if meta.get(FORMAT_KEY) in ("native", "hf"):
        return meta[FORMAT_KEY]
    if sidecar is not None:
        return "native"
    if not canon:
        return "hf"
    native = name_patterns(expected)
    pats = name_patterns(canon)
    native_fit = len(pats & native) / len(pats)
    plan = family.weight_map(cfg).plan_to_native(canon)
    claimed = {n for s in plan.steps if s.native for n in s.hf}
    hf_fit = len(name_patterns(claimed)) / len(pats)
    return "native" if native_fit > hf_fit else "hf"  # a tie: names shaped like the checkpoint


def build_on_meta(family: Family, cfg: Any) -> nn.Module:
    """The family's model on the meta device; a config it cannot build is a ConfigError."""
    from ..errors import ConfigError, PortagptError

    try:
        with empty_init():
            return family.build_model(cfg)
    except PortagptError:
        raise
    except (RuntimeError, ValueError, TypeError, OverflowError, ZeroDivisionError) as exc:
        detail = " ".join(str(exc).split())[:300]
        raise ConfigError(
            f"The config cannot be built as a {family.name} model ({type(exc).__name__}: {detail}). "
            "A size in config.json is out of range or inconsistent; compare it with the "
            "checkpoint's own config.json."
        ) from None


def prepare(
    source: Source,
    family: Family,
    cfg: Any,
    *,
    layout: str | None = None,
    sidecar: Any = None,
) -> Prepared:
    """Build on meta, map the checkpoint's names and shapes, and compare (no tensor data read)."""
    model = build_on_meta(family, cfg)
    expected, tied = expected_state(model, family, cfg)
    tied_pairs = tuple(family.tied_weights(cfg))
    renames = strip_prefixes(source.names)
    orig = {c: o for o, c in renames.items()}
    canon = list(orig)

    def shape_of(name: str) -> torch.Tensor:
        return source.meta_tensor(orig[name])

    wmap = family.weight_map(cfg)
    layout = layout or detect_layout(canon, expected, family, cfg, source.combined_metadata(), sidecar)
    if layout == "native":
        extra = [c for c in canon if c not in expected and c not in tied]
        dropped = {n for s in wmap.plan_to_native(extra).steps if not s.native for n in s.hf}
        kept = [c for c in canon if c not in dropped]
        steps = [Step(Rule((c,), (c,), IDENTITY), (c,), (c,)) for c in kept]
        produced = {c: shape_of(c) for c in kept}
        for alias, stored in stored_once(source, sidecar).items():
            if alias in expected and alias not in produced and stored in orig:
                steps.append(Step(Rule((stored,), (alias,), IDENTITY), (stored,), (alias,)))
                produced[alias] = shape_of(stored)
        rep = compare(expected, produced, optional=tied, tied=tied_pairs)
        same = getattr(source, "same_tensor", None)
        if same is not None:  # a tied copy that is the very same tensor is not "ignored" data
            shared = {d for d, s in tied_pairs if d in orig and s in orig and same(orig[d], orig[s])}
            rep.ignored = [n for n in rep.ignored if n not in shared]
        claimed = len([c for c in canon if c in expected or c in tied or c in dropped])
    else:
        plan = wmap.plan_to_native(canon)
        produced = dict(wmap.run_to_native(plan, shape_of))
        optional = tied | {n for s in plan.steps if s.rule.optional for n in s.native}
        rep = compare(
            expected,
            produced,
            unmatched=plan.unmatched,
            incomplete=plan.incomplete,
            optional=optional,
            tied=tied_pairs,
        )
        steps = plan.steps
        claimed = len([n for s in plan.steps for n in s.hf])
    return Prepared(
        family, cfg, model, layout, steps, orig, expected, tied_pairs, rep, produced, claimed, len(canon)
    )


# ---- reading ---------------------------------------------------------------------------
def _shares(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.device == b.device and a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr()


def _own(t: torch.Tensor, inputs: list[torch.Tensor], dtype: torch.dtype | None, device: Any, private: bool) -> torch.Tensor:
    """A contiguous tensor that shares memory with nothing the model does not own.

    ``.to`` and ``.contiguous`` copy only when they must; a tensor that is still
    a view of the source is copied when the source is not ours to keep
    (memory-mapped file, another model) or when it is a part of a larger
    tensor (a split), so no parameter pins a bigger buffer.
    """
    if dtype is not None and t.is_floating_point():
        t = t.to(dtype)
    t = t.to(device)
    if not t.is_contiguous():
        t = t.contiguous()
    if any(_shares(t, s) for s in inputs):
        whole = t.untyped_storage().nbytes() == t.numel() * t.element_size()
        if not (private and whole):
            t = t.clone()
    return t


class MappedFiles:
    """Memory-mapped views of a :class:`TensorIndex`'s files, for tensors used as stored.

    ``get`` returns a tensor whose storage is the file's private mapping
    (``safe_open(..., backend="mmap")``): nothing is read until a page is
    touched, and a page read stays in the page cache, shared, rather than
    copied into memory the model owns. The mapping is copy-on-write
    (``MAP_PRIVATE``): writing a weight (training) copies that page and never
    the file; checkpoints are replaced by renaming a new file into place,
    which leaves a mapped file intact. Tensors that need a transform are read
    with ``pread`` instead, so the file pages behind a transposed copy are
    never mapped into the process.
    """

    def __init__(self, index: TensorIndex) -> None:
        self.index = index
        self._handles: dict[Path, Any] = {}

    @classmethod
    def open(cls, source: Source, device: Any) -> MappedFiles | None:
        """A mapper for ``source``, or None where zero-copy does not apply (not safetensors,
        not CPU, or a safetensors without the ``backend`` argument)."""
        if not isinstance(source, TensorIndex) or torch.device(device).type != "cpu":
            return None
        import inspect

        from safetensors import safe_open

        try:
            inspect.signature(safe_open).bind("f", framework="pt", device="cpu", backend="mmap")
        except (TypeError, ValueError):  # no backend argument (safetensors < 0.7)
            return None
        return cls(source)

    def usable(self, name: str, dtype: torch.dtype | None) -> bool:
        """Whether tensor ``name`` can be used as stored under ``dtype`` (None: as stored)."""
        stored = self.index.tensors[name].dtype
        return dtype is None or stored == dtype or not stored.is_floating_point

    def get(self, name: str) -> torch.Tensor:
        from safetensors import safe_open

        file = self.index.tensors[name].file
        if file not in self._handles:
            self._handles[file] = safe_open(str(file), framework="pt", device="cpu", backend="mmap")
        return self._handles[file].get_tensor(name)

    def close(self) -> None:
        self._handles.clear()  # open tensors keep their mapping alive


def mapped_tensors(
    prep: Prepared,
    source: Source,
    dtype: torch.dtype | None = None,
    device: Any = "cpu",
    zero_copy: bool = False,
) -> Iterator[tuple[str, torch.Tensor]]:
    """(native name, tensor) for every tensor the model expects, read and mapped one step at a time.

    ``zero_copy``: a tensor used exactly as stored (no transform, no cast, CPU)
    is a view of the memory-mapped file (:class:`MappedFiles`), not a copy.
    """
    mapped = MappedFiles.open(source, device) if zero_copy else None
    with source:
        private = source.private
        for step in prep.steps:
            if not any(n in prep.expected for n in step.native):
                continue  # a tied copy, or dropped
            names = [prep.source_names[n] for n in step.hf]
            if (
                mapped is not None
                and step.rule.transform is IDENTITY
                and len(names) == 1
                and mapped.usable(names[0], dtype)
            ):
                t = mapped.get(names[0])
                for name in step.native:
                    if name in prep.expected:
                        yield name, t
                continue
            inputs = [source.get(n) for n in names]
            outputs = step.to_native(inputs)
            for name, t in zip(step.native, outputs, strict=True):
                if name in prep.expected:
                    yield name, _own(t, inputs, dtype, device, private)
            copied = step.rule.transform is not IDENTITY or dtype is not None
            del inputs, outputs
            if copied:  # the transposed/cast buffer is freed: hand its pages back, or the holes
                release_free_memory()  # later mid-sized buffers leave stay resident (~8%)
    if mapped is not None:
        mapped.close()


def materialise_buffers(model: nn.Module) -> None:
    """Recompute non-persistent buffers left on meta (e.g. RoPE frequencies) via reset_parameters().

    Only modules without parameters of their own are reset, so no loaded weight
    is ever re-initialised; anything else left on meta is reported afterwards.
    """
    for module in model.modules():
        own = list(module.buffers(recurse=False))
        if any(b.is_meta for b in own) and hasattr(module, "reset_parameters"):
            if not list(module.parameters(recurse=False)):
                module.reset_parameters()


def assert_materialised(model: nn.Module, where: str) -> None:
    left = [n for n, t in (*model.named_parameters(), *model.named_buffers()) if t.is_meta]
    if left:
        raise CheckpointError(
            f"After loading {where}, {len(left)} tensor(s) are still unset (on the meta device): "
            f"{', '.join(left[:8])}. The family's weight map or tie_weights() does not cover them."
        )


def finish(model: nn.Module, prep: Prepared, dtype: torch.dtype | None, device: Any, where: str) -> nn.Module:
    """Tie, recompute buffers, check nothing is unset, cast, move, eval."""
    model.tie_weights()
    materialise_buffers(model)
    assert_materialised(model, where)
    if dtype is not None:
        model.to(dtype)
    model.to(device)
    return model.eval()


def materialise(
    prep: Prepared,
    source: Source,
    dtype: torch.dtype | None,
    device: Any = "cpu",
    where: str = "the checkpoint",
    zero_copy: bool = False,
) -> nn.Module:
    """Fill the meta model with the checkpoint's tensors (``assign=True``: no second copy;
    ``zero_copy``: tensors used as stored stay views of the mapped file)."""
    model = prep.model
    state = dict(mapped_tensors(prep, source, dtype, device, zero_copy))
    left, unexpected = _load_state(model, state, prep, assign=True)
    if left or unexpected:
        raise CheckpointError(
            f"Loading {where} left {len(left)} tensor(s) unset ({', '.join(left[:8])}) and "
            f"{len(unexpected)} unused ({', '.join(unexpected[:8])}): the family's weight map and "
            "model disagree. Report this to the family's author."
        )
    return finish(model, prep, dtype, device, where)


def _load_state(
    model: nn.Module, state: dict[str, torch.Tensor], prep: Prepared, assign: bool = False
) -> tuple[list[str], list[str]]:
    """``model.load_state_dict(state)``, emptying ``state``; returns the names left unset (but for
    tied copies, which are set when the model re-ties) and the names the model does not have."""
    missing, unexpected = model.load_state_dict(state, strict=False, assign=assign)
    state.clear()
    tied = {d for d, _ in prep.tied}
    return [m for m in missing if m not in tied], list(unexpected)


def materialise_eager(
    prep: Prepared, source: Source, dtype: torch.dtype | None, device: Any = "cpu", where: str = "the checkpoint"
) -> nn.Module:
    """The classic path: a randomly initialised model, and ``load_state_dict`` copying into it."""
    model = prep.family.build_model(prep.config)
    model.init_weights()
    state = dict(mapped_tensors(prep, source, None, "cpu"))
    if dtype is None and (own := main_dtype(state.values())) is not None:  # "auto": the checkpoint's
        model.to(own)
    left, unexpected = _load_state(model, state, prep)
    if left or unexpected:
        raise CheckpointError(
            f"Loading {where} left {len(left)} tensor(s) at their random initial values "
            f"({', '.join(left[:8])}); refusing to return a partly random model."
        )
    return finish(model, prep, dtype, device, where)


def read_whole(loc: Located) -> StateDictSource:
    """Every tensor of the checkpoint read into memory at once (for the eager loaders)."""
    if loc.format is not None:
        return loc.open()  # a foreign format's source is read whole already
    if loc.kind == "safetensors":
        from safetensors.torch import load_file

        def read(path: Path) -> dict[str, torch.Tensor]:
            try:  # pread: the tensors are the process's own memory, not views of the file
                return load_file(str(path), backend="pread")
            except TypeError:  # safetensors < 0.7
                return {k: v.clone() for k, v in load_file(str(path)).items()}

        state: dict[str, torch.Tensor] = {}
        for f in loc.files:
            part = read(f)
            if loc.weight_map is not None:
                part = {k: v for k, v in part.items() if loc.weight_map.get(k) == f.name}
            state.update(part)
        return StateDictSource(state, private=True)
    from .state_dict import torch_load, unwrap

    path = loc.files[0]
    return StateDictSource(unwrap(torch_load(path, mmap=False), path), path=path, private=True)


# ---- the record every loader returns --------------------------------------------------
@dataclass
class Loaded:
    """A loaded model with everything the CLI reports about how it got there."""

    model: nn.Module
    tokenizer: Any
    family: Family
    config: Any
    source: str
    loader: str
    layout: str  # "hf" or "native"
    report: Report
    checkpoint_bytes: int = 0
    load_seconds: float = 0.0
    extras: dict[str, Any] = field(default_factory=dict)


TOKENIZER_FILES = (
    "tokenizer.json", "tokenizer.model", "tokenizer_config.json", "vocab.json", "merges.txt"
)


def shipped_tokenizer(folder: Path | None) -> list[str]:
    """The tokenizer files a checkpoint folder ships (empty: it ships none)."""
    return [n for n in TOKENIZER_FILES if folder is not None and (Path(folder) / n).is_file()]


def load_tokenizer_for(fam: Family, folder: Path | None, cfg: Any, tokenizer: bool | str) -> Any:
    """The family's tokenizer for a folder; with ``"auto"``, None when the folder ships none.

    A folder that ships tokenizer files that do not load, or whose ids do not
    fit the model's vocabulary, is an error even with ``"auto"``: the files are
    there, so they are broken, not absent.
    """
    from ..errors import TokenizerError

    if tokenizer is False:
        return None
    try:
        tok = fam.load_tokenizer(folder, cfg)
    except TokenizerError:
        if tokenizer == "auto" and not shipped_tokenizer(folder):
            return None
        raise
    shipped = shipped_tokenizer(folder)
    vocab = getattr(cfg, "vocab_size", None)
    size = getattr(tok, "vocab_size", None)
    if shipped and isinstance(vocab, int) and isinstance(size, int) and size > vocab:
        raise TokenizerError(
            f"The tokenizer in {str(folder)!r} ({', '.join(shipped)}) has {size} ids, but the model "
            f"has {vocab} embeddings (vocab_size): its ids >= {vocab} would index past the "
            "embedding. The tokenizer files belong to another model; copy the checkpoint's own "
            "tokenizer files next to the weights."
        )
    return tok


def read_sidecar(folder: Path) -> dict[str, Any] | None:
    path = folder / SIDECAR
    return check_format_version(read_json(path, SIDECAR), path) if path.is_file() else None


def check_config_fits(loc: Located, source: Source, choice: ConfigChoice) -> None:
    """Layer/expert counts of a given config against the checkpoint's names, before building."""
    from .config_values import check_against_names

    if choice.source.startswith("preset"):  # fitted to the weights already
        return
    where = repr(str(loc.folder / "config.json")) if choice.source == "config.json" else choice.source
    check_against_names(choice.config, strip_prefixes(source.names).values(), where, loc.where)

"""The safe loading pipeline for checkpoint folders (and single safetensors files).

1. Read config.json (and portagpt.json, if portagpt wrote the folder) and pick
   the family: ``--family`` if given, else the sidecar's family, else the
   config's ``model_type`` through the registry.
2. Read only the safetensors headers (index.json names the shards).
3. Build the model on the meta device, map the checkpoint's names and shapes
   through the family's weight map using meta tensors, and compare: every
   missing, unexpected and mismatched tensor is reported at once, before any
   weight is read.
4. Read each tensor lazily from the memory-mapped files, map it, cast it to
   the requested dtype, ``load_state_dict(strict=False, assign=True)``, tie
   explicitly, recompute non-persistent buffers, and verify nothing is left on
   the meta device.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..adapters.family import Family
from ..errors import CheckpointError, CheckpointNotFoundError, ConfigError
from .checks import Report, compare
from .safetensors_index import TensorIndex, index_for_folder

SIDECAR = "portagpt.json"
FORMAT_KEY = "portagpt_format"  # safetensors metadata: "native" or "hf"
FAMILY_KEY = "portagpt_family"
STRIP_PREFIXES = ("_orig_mod.", "module.")

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
        from ..errors import UsageError

        raise UsageError(
            f"Unknown dtype {dtype!r}. Use one of: auto, {', '.join(sorted(set(DTYPES)))}."
        ) from None


def read_json(path: Path, what: str) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(
            f"No {what} at {str(path)!r}. A checkpoint folder needs config.json next to its weights "
            "(save_pretrained writes it); pass --family F to build the config from a preset instead."
        )
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"{str(path)!r} is not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno}). "
            "Fix or re-save the file."
        ) from None
    except UnicodeDecodeError:
        raise ConfigError(f"{str(path)!r} is not a text JSON file. Fix or re-save it.") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{str(path)!r} must hold a JSON object, found {type(data).__name__}.")
    return data


def family_for(hf_config: Mapping[str, Any], family: str | Family | None, sidecar: Mapping[str, Any] | None, where: Path) -> Family:
    """The family to use: explicit, else the sidecar's, else config.json's model_type."""
    from ..registry import get_family, get_registry

    if isinstance(family, Family):
        return family
    if family:
        fam = get_family(family)
        mt = hf_config.get("model_type")
        if mt and mt not in fam.hf_model_types:
            reg = get_registry()
            owner = reg.model_types.get(mt)
            raise ConfigError(
                f"{str(where)!r} is a {mt!r} checkpoint (config.json model_type), but --family {family} "
                f"serves {', '.join(fam.hf_model_types)}."
                + (f" Use --family {owner}, or leave --family out." if owner else " Leave --family out.")
            )
        return fam
    if sidecar and sidecar.get("family"):
        return get_family(sidecar["family"])
    mt = hf_config.get("model_type")
    if not mt:
        raise ConfigError(
            f"{str(where)!r} has no 'model_type' key, so the family cannot be detected; "
            "add it, or pass --family NAME."
        )
    return get_registry().for_model_type(mt)


def materialise_buffers(model: nn.Module) -> None:
    """Recompute non-persistent buffers left on meta (e.g. RoPE frequencies) via reset_parameters()."""
    for module in model.modules():
        own = list(module.buffers(recurse=False))
        if any(b.is_meta for b in own) and hasattr(module, "reset_parameters"):
            module.reset_parameters()


def assert_materialised(model: nn.Module, where: str) -> None:
    left = [n for n, t in (*model.named_parameters(), *model.named_buffers()) if t.is_meta]
    if left:
        raise CheckpointError(
            f"After loading {where}, {len(left)} tensor(s) are still unset (on the meta device): "
            f"{', '.join(left[:8])}. The family's weight map or tie_weights() does not cover them."
        )


def expected_state(model: nn.Module, family: Family, cfg: Any) -> tuple[dict[str, torch.Tensor], set[str]]:
    """The model's tensors that a checkpoint must provide, and the tied destinations (optional)."""
    state = dict(model.state_dict(keep_vars=True))
    tied = {dst for dst, _ in family.tied_weights(cfg)}
    for dst in tied:
        state.pop(dst, None)
    return state, tied


def strip_prefixes(names: list[str]) -> dict[str, str]:
    """Map checkpoint names to names without ``_orig_mod.``/``module.`` wrappers (torch.compile, DDP)."""
    out = {}
    for n in names:
        m = n
        changed = True
        while changed:
            changed = False
            for p in STRIP_PREFIXES:
                if m.startswith(p):
                    m, changed = m[len(p):], True
                elif f".{p}" in m:
                    m, changed = m.replace(f".{p}", ".", 1), True
        out[n] = m
    return out


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


def detect_layout(names: list[str], expected: Mapping[str, Any], meta: Mapping[str, str], sidecar: Any) -> str:
    if meta.get(FORMAT_KEY) in ("native", "hf"):
        return meta[FORMAT_KEY]
    if sidecar is not None:
        return "native"
    native_hits = sum(1 for n in names if n in expected)
    return "native" if names and native_hits >= 0.9 * len(names) else "hf"


def plan_tensors(
    index_names: list[str],
    shape_of: Any,
    family: Family,
    cfg: Any,
    model: nn.Module,
    layout: str,
) -> tuple[Any, Report, dict[str, str]]:
    """Map names (native or HF) and compare shapes; returns (plan or rename map, report, renames)."""
    expected, tied = expected_state(model, family, cfg)
    wmap = family.weight_map(cfg)
    optional_hf = {
        n for step in wmap.plan_to_native(index_names).steps if step.rule.optional for n in step.native
    }
    if layout == "native":
        renames = strip_prefixes(index_names)
        produced = {renames[n]: shape_of(n) for n in index_names}
        extra = [n for n in produced if n not in expected and n not in tied]
        dropped = {n for s in wmap.plan_to_native(extra).steps if not s.native for n in s.hf}
        for n in dropped:
            produced.pop(n)
        rep = compare(expected, produced, optional=tied, tied=family.tied_weights(cfg))
        return None, rep, {v: k for k, v in renames.items() if v not in dropped}
    plan = wmap.plan_to_native(index_names)
    produced = dict(wmap.run_to_native(plan, shape_of))
    rep = compare(
        expected,
        produced,
        unmatched=plan.unmatched,
        incomplete=plan.incomplete,
        optional=tied | optional_hf,
        tied=family.tied_weights(cfg),
    )
    return plan, rep, {}


def load_from_index(
    index: TensorIndex,
    family: Family,
    cfg: Any,
    *,
    layout: str | None = None,
    sidecar: Any = None,
    dtype: torch.dtype | None = torch.float32,
    device: str | torch.device = "cpu",
    where: str = "the checkpoint",
) -> tuple[nn.Module, str, Report]:
    """Build on meta, check every name and shape from headers, then read tensors lazily."""
    with torch.device("meta"):
        model = family.build_model(cfg)
    expected, tied = expected_state(model, family, cfg)
    names = index.names
    layout = layout or detect_layout(names, expected, index.combined_metadata(), sidecar)
    plan, rep, renames = plan_tensors(names, index.meta_tensor, family, cfg, model, layout)
    rep.raise_if_bad(f"{where} ({layout} layout, family {family.name})")
    state: dict[str, torch.Tensor] = {}

    def cast(t: torch.Tensor) -> torch.Tensor:
        if dtype is not None and t.is_floating_point():
            t = t.to(dtype)
        return t.contiguous()

    with index:
        if layout == "native":
            for native, src in renames.items():
                if native in expected:
                    state[native] = cast(index.get(src))
        else:
            wmap = family.weight_map(cfg)
            for name, t in wmap.run_to_native(plan, index.get):
                if name in expected:
                    state[name] = cast(t)
    model.load_state_dict(state, strict=False, assign=True)
    del state
    model.tie_weights()
    materialise_buffers(model)
    assert_materialised(model, where)
    if dtype is not None:
        model.to(dtype)
    model.to(device)
    model.eval()
    return model, layout, rep


def load_folder(
    folder: Path,
    *,
    family: str | Family | None = None,
    dtype: str | torch.dtype | None = "float32",
    device: str | torch.device = "cpu",
    tokenizer: bool | str = "auto",
) -> Loaded:
    """Load a checkpoint folder (HF ``save_pretrained`` output or a portagpt checkpoint)."""
    t0 = time.perf_counter()
    if not folder.exists():
        raise CheckpointNotFoundError(
            f"{str(folder)!r} does not exist. Pass a checkpoint folder, a .safetensors or .pth file, "
            "or a hub id with --repo-id."
        )
    if folder.is_dir() and not any(folder.iterdir()):
        raise CheckpointNotFoundError(
            f"{str(folder)!r} is an empty folder: no config.json and no weights. Point at the folder "
            "that save_pretrained (or portagpt train) wrote."
        )
    sidecar = read_json(folder / SIDECAR, SIDECAR) if (folder / SIDECAR).is_file() else None
    hf_config = read_json(folder / "config.json", "config.json")
    fam = family_for(hf_config, family, sidecar, folder / "config.json")
    try:
        cfg = fam.config_from_hf(hf_config)
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(
            f"{str(folder / 'config.json')!r} cannot be read as a {fam.name} config: "
            f"{type(exc).__name__}: {exc}. Check that it belongs to a {fam.name} checkpoint."
        ) from None
    index = index_for_folder(folder)
    model, layout, rep = load_from_index(
        index, fam, cfg, sidecar=sidecar, dtype=parse_dtype(dtype), device=device, where=repr(str(folder))
    )
    tok = load_tokenizer_for(fam, folder, cfg, tokenizer)
    return Loaded(
        model=model,
        tokenizer=tok,
        family=fam,
        config=cfg,
        source=str(folder),
        loader="meta",
        layout=layout,
        report=rep,
        checkpoint_bytes=index.file_bytes(),
        load_seconds=time.perf_counter() - t0,
    )


def load_tokenizer_for(fam: Family, folder: Path | None, cfg: Any, tokenizer: bool | str) -> Any:
    """The family's tokenizer for a folder; with ``"auto"``, None when the folder ships none."""
    from ..errors import TokenizerError

    if tokenizer is False:
        return None
    try:
        return fam.load_tokenizer(folder, cfg)
    except TokenizerError:
        if tokenizer == "auto":
            return None
        raise

"""The conformance checks at the family's borders: config.json, weight names, files, transformers.

* ``config_roundtrip``: ``config_from_hf(config_to_hf(cfg)) == cfg`` through JSON;
* ``weight_map_roundtrip``: HF names -> native -> HF names is the identity on
  real tensors, and covers every tensor of both models (transformers' model,
  built on the meta device, supplies the HF names when the family names a
  transformers class; else native -> HF -> native);
* ``save_load_roundtrip``: a model exported as an HF folder (weight map +
  ``config_to_hf`` + safetensors) and, when available, as a portagpt training
  checkpoint, loads back through :func:`portagpt.load` with identical logits;
* ``transformers_parity``: a tiny perturbed checkpoint written by transformers'
  ``save_pretrained`` loads through portagpt with the same logits and the same
  greedy ids.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from ..adapters.family import Family
from .context import CheckFailed, Skip, SmokeContext

PARITY_ATOL = 1e-4  # fp32 logits vs transformers
LOAD_ATOL = 1e-6  # fp32 logits after a save/load round trip (same weights, same code)


def _maxdiff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).abs().max()) if a.numel() else 0.0


def _names(items: Any, k: int = 5) -> str:
    items = sorted(items)
    more = f" ... and {len(items) - k} more" if len(items) > k else ""
    return ", ".join(items[:k]) + more


def has_transformers() -> bool:
    return importlib.util.find_spec("transformers") is not None


@contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence transformers' warnings and progress bars (tiny configs trip its sanity warnings)."""
    from transformers.utils import logging as tlog

    level, bars = tlog.get_verbosity(), tlog.is_progress_bar_enabled()
    tlog.set_verbosity_error()
    tlog.disable_progress_bar()
    try:
        yield
    finally:
        tlog.set_verbosity(level)
        if bars:
            tlog.enable_progress_bar()


def hf_config_object(hf: dict[str, Any]) -> Any:
    """A transformers config object from a config.json dict."""
    from transformers import AutoConfig

    d = json.loads(json.dumps(hf))
    return AutoConfig.for_model(d.pop("model_type"), **d)


def _reference_class(family: Family) -> None:
    if not family.transformers_class:
        raise Skip("the family names no transformers_class")
    if not has_transformers():
        raise Skip("transformers is not installed")


def _check_class(model: Any, family: Family) -> None:
    got = type(model).__name__
    if got != family.transformers_class:
        raise CheckFailed(
            f"config_to_hf's model_type makes transformers build {got}, but the family names "
            f"transformers_class={family.transformers_class!r}."
        )


def native_state(family: Family, cfg: Any, model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The model's state dict without tied destinations (what a checkpoint stores)."""
    tied = {dst for dst, _ in family.tied_weights(cfg)}
    return {n: t for n, t in model.state_dict().items() if n not in tied}


# ---- config --------------------------------------------------------------------------------
def _config_diff(a: Any, b: Any) -> str:
    if dataclasses.is_dataclass(a) and dataclasses.is_dataclass(b):
        diffs = [
            f"{f.name}: {getattr(a, f.name)!r} -> {getattr(b, f.name, '(absent)')!r}"
            for f in dataclasses.fields(a)
            if getattr(a, f.name) != getattr(b, f.name, object())
        ]
        return "; ".join(diffs[:6])
    return f"{a!r} -> {b!r}"


def _shapes(family: Family, cfg: Any) -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):
        model = family.build_model(cfg)
    return {n: tuple(t.shape) for n, t in model.state_dict().items()}


def check_config_roundtrip(ctx: SmokeContext) -> str:
    """config.json loses nothing: to_hf(from_hf(to_hf(cfg))) == to_hf(cfg), same specs and shapes."""
    fam = ctx.family
    long_cfg = ctx.long[0]
    notes = []
    for label, cfg in (("smoke config", ctx.cfg), ("long-sequence config", long_cfg)):
        hf = fam.config_to_hf(cfg)
        try:
            text = json.dumps(hf)
        except TypeError as exc:
            raise CheckFailed(f"config_to_hf({label}) is not JSON-serialisable: {exc}.") from None
        mt = hf.get("model_type")
        if mt not in fam.hf_model_types:
            raise CheckFailed(
                f"config_to_hf writes model_type {mt!r}, which is not among the family's "
                f"hf_model_types {fam.hf_model_types}; portagpt.load could not detect the family."
            )
        back = fam.config_from_hf(json.loads(text))
        again = json.loads(json.dumps(fam.config_to_hf(back)))
        hf = json.loads(text)
        lost = [f"{k}: {hf.get(k)!r} -> {again.get(k)!r}" for k in sorted(set(hf) | set(again)) if hf.get(k) != again.get(k)]
        if lost:
            raise CheckFailed(
                f"the {label} changes through config.json: {'; '.join(lost[:6])} "
                "(config_from_hf and config_to_hf are not inverse)."
            )
        if list(fam.cache_specs(back)) != list(fam.cache_specs(cfg)):
            raise CheckFailed(f"cache_specs changes after a config.json round trip of the {label}.")
        if _shapes(fam, back) != _shapes(fam, cfg):
            raise CheckFailed(f"the model's tensor shapes change after a config.json round trip of the {label}.")
        if back != cfg:
            notes.append(f"{label} object normalised ({_config_diff(cfg, back)})")
        _check_sidecar_roundtrip(cfg, label)
        if long_cfg is ctx.cfg:
            break
    note = f"; {'; '.join(notes)}" if notes else ""
    return f"config.json round trip loses nothing (model_type {mt!r}, {len(hf)} keys){note}"


def _check_sidecar_roundtrip(cfg: Any, label: str) -> None:
    """portagpt.json keeps the config as a dict: it must rebuild the same config (--resume needs it)."""
    from ..core.checkpoint_format import config_from_dict, config_to_dict
    from ..errors import ConfigError

    try:
        back = config_from_dict(type(cfg), json.loads(json.dumps(config_to_dict(cfg))))
    except (ConfigError, TypeError) as exc:
        raise CheckFailed(
            f"the {label} does not survive portagpt.json's dict round trip: {exc}"
        ) from None
    if back != cfg:
        raise CheckFailed(
            f"the {label} changes through portagpt.json's dict round trip ({_config_diff(cfg, back)}); "
            "annotate nested configs with their dataclass and sequences as tuple[...]."
        )


# ---- weight names ----------------------------------------------------------------------------
def _random_like(meta: dict[str, torch.Tensor], seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for n, t in sorted(meta.items()):
        if t.is_floating_point():
            out[n] = torch.randn(t.shape, generator=gen)
        else:
            out[n] = torch.randint(0, 7, t.shape, generator=gen)
    return out


def _coverage(produced: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], tied: set[str]) -> list[str]:
    problems = []
    missing = [n for n in expected if n not in produced]
    extra = [n for n in produced if n not in expected and n not in tied]
    wrong = [
        f"{n} {tuple(produced[n].shape)} vs model {tuple(expected[n].shape)}"
        for n in expected
        if n in produced and tuple(produced[n].shape) != tuple(expected[n].shape)
    ]
    if missing:
        problems.append(f"{len(missing)} model tensor(s) the map never produces: {_names(missing)}")
    if extra:
        problems.append(f"{len(extra)} produced name(s) the model does not have: {_names(extra)}")
    if wrong:
        problems.append(f"{len(wrong)} shape mismatch(es): {_names(wrong)}")
    return problems


def check_weight_map_roundtrip(ctx: SmokeContext) -> str:
    fam, cfg = ctx.family, ctx.cfg
    with torch.device("meta"):
        model = fam.build_model(cfg)
    tied = {dst for dst, _ in fam.tied_weights(cfg)}
    expected = native_state(fam, cfg, model)
    wmap = fam.weight_map(cfg)
    problems: list[str] = []
    export = wmap.plan_to_hf(expected)
    if export.unmatched:
        problems.append(f"{len(export.unmatched)} native tensor(s) no rule exports: {_names(export.unmatched)}")
    if fam.transformers_class and has_transformers():
        from transformers import AutoModelForCausalLM

        with quiet_transformers(), torch.device("meta"):
            ref = AutoModelForCausalLM.from_config(hf_config_object(fam.config_to_hf(cfg)))
        _check_class(ref, fam)
        src = _random_like(dict(ref.state_dict()))
        direction = f"{fam.transformers_class} names -> native -> HF names"
        plan = wmap.plan_to_native(src)
        if plan.unmatched:
            problems.append(f"{len(plan.unmatched)} HF tensor(s) no rule claims: {_names(plan.unmatched)}")
        if plan.incomplete:
            problems.append(f"incomplete groups: {_names(f'{n} needs {m}' for n, m in plan.incomplete)}")
        native = dict(wmap.run_to_native(plan, src.__getitem__))
        problems += _coverage(native, expected, tied)
        dropped = {n for s in plan.steps if not s.native for n in s.hf}
        want_back = {n: t for n, t in src.items() if n not in dropped and n not in plan.unmatched}
        back, _ = wmap.to_hf(native)
    else:
        src = _random_like(expected)
        direction = "native -> HF names -> native"
        hf, _ = wmap.to_hf(src)
        back, plan = wmap.to_native(hf)
        if plan.unmatched:
            problems.append(f"exported names no rule imports: {_names(plan.unmatched)}")
        problems += _coverage(back, expected, tied)
        want_back = src
    lost = [n for n in want_back if n not in back]
    changed = [n for n in want_back if n in back and not torch.equal(back[n], want_back[n])]
    if lost:
        problems.append(f"{len(lost)} tensor(s) lost on the way back: {_names(lost)}")
    if changed:
        problems.append(f"{len(changed)} tensor(s) changed on the way back: {_names(changed)}")
    if problems:
        raise CheckFailed(f"weight map of {fam.name!r} ({direction}): " + "; ".join(problems) + ".")
    return f"{direction}: identity on {len(want_back)} tensors, covers all {len(expected)} model tensors"


# ---- files -----------------------------------------------------------------------------------
def export_hf_folder(family: Family, cfg: Any, model: torch.nn.Module, folder: Path) -> int:
    """Write ``model`` as an HF folder: weights under HF names (safetensors) + config.json."""
    from safetensors.torch import save_file

    hf, plan = family.weight_map(cfg).to_hf(native_state(family, cfg, model))
    if plan.unmatched:
        raise CheckFailed(f"cannot export, no rule maps native tensor(s) {_names(plan.unmatched)}.")
    tensors = {n: t.detach().contiguous().clone() for n, t in hf.items()}
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    (folder / "config.json").write_text(json.dumps(family.config_to_hf(cfg), indent=2))
    return len(tensors)


def check_save_load_roundtrip(ctx: SmokeContext) -> str:
    fam, cfg = ctx.family, ctx.cfg
    model = ctx.build(perturb=True)
    ids = ctx.ids(2, min(int(cfg.context_length), 12), seed=9)
    with torch.no_grad():
        ref = model(ids)
    done = []
    folder = ctx.folder("hf-export")
    n = export_hf_folder(fam, cfg, model, folder)
    d = _reload_diff(folder, fam, ids, ref, "saving as an HF folder")
    done.append(f"HF folder ({n} tensors) |diff| {d:.1e}")
    if importlib.util.find_spec("portagpt.core.checkpoint") is not None:
        from ..core.checkpoint import save_checkpoint

        folder = ctx.workdir / "native-checkpoint"
        save_checkpoint(folder, model, family=fam, model_config=cfg)
        d = _reload_diff(folder, fam, ids, ref, "save_checkpoint")
        done.append(f"training checkpoint |diff| {d:.1e}")
    return "; ".join(done)


def _reload_diff(folder: Path, fam: Any, ids: torch.Tensor, ref: torch.Tensor, after: str) -> float:
    """The largest logit difference of ``folder`` loaded back by portagpt.load against ``ref``."""
    from ..loaders import load

    loaded, _ = load(folder, family=fam, tokenizer=False)
    with torch.no_grad():
        d = _maxdiff(loaded(ids), ref)
    if d > LOAD_ATOL:
        raise CheckFailed(f"logits after {after} and portagpt.load differ by {d:.2e}.")
    return d


# ---- transformers ------------------------------------------------------------------------------
def check_transformers_parity(ctx: SmokeContext) -> str:
    from ..core.generate import generate
    from ..loaders import load
    from .reference import hf_greedy, hf_logits, write_hf_checkpoint

    fam = ctx.family
    _reference_class(fam)
    cfg, S, note = ctx.long
    folder = ctx.folder("hf-reference")
    with quiet_transformers():
        ref = write_hf_checkpoint(hf_config_object(fam.config_to_hf(cfg)), folder, seed=11)
    _check_class(ref, fam)
    ours, _ = load(folder, family=fam, tokenizer=False)
    ids = ctx.ids(2, S, seed=10, cfg=cfg)
    with torch.no_grad():
        d = _maxdiff(ours(ids), hf_logits(ref, ids))
    if d > PARITY_ATOL:
        raise CheckFailed(
            f"logits differ from {fam.transformers_class} by {d:.2e} (limit {PARITY_ATOL}) on "
            f"{tuple(ids.shape)} ids ({note})."
        )
    P = min(6, S - 2)
    n = S - P
    prompt = ids[:1, :P]
    with quiet_transformers():
        theirs = hf_greedy(ref, prompt, n)[0].tolist()
    mine = generate(ours, prompt, max_new_tokens=n, temperature=0).new_ids[0]
    if mine != theirs:
        raise CheckFailed(f"greedy ids differ from {fam.transformers_class}: {mine} vs {theirs}.")
    return f"logits |diff| {d:.1e} on {tuple(ids.shape)}, {n} greedy ids equal ({note})"

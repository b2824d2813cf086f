"""Which family and which config a checkpoint is, decided before any weight is read.

The config comes from, in order: an explicit ``config`` (a config.json path, a
dict in config.json form, or a family config object); ``config.json`` next to
the weights; the ``"config"`` of a ``portagpt.json`` sidecar; else a preset of
the family, adjusted to the checkpoint (see :func:`fit_preset`).

The family comes from, in order: ``family=``/``--family``; the sidecar's
``"family"``; the safetensors metadata portagpt writes; config.json's
``model_type`` through the registry; else (no config at all) the one family
whose tensor names the checkpoint uses (:func:`detect_family`), for a
checkpoint whose sidecar names no family.

A bare ``.pth`` (or a folder that lost its config.json) has no config; it is
never guessed silently: without ``--family`` the error names the family the
tensor names suggest. With ``--family F --preset P`` the preset is the
starting point, with ``--family F`` alone every preset of F is tried. The
chosen preset is then adjusted, one config field at a time, while that reduces
the number of missing/unexpected/mismatched tensors: a boolean field is
flipped (e.g. bias on/off, tied head), an integer field whose value is a
mismatched dimension takes the checkpoint's value (e.g. the context length
from the position table, the layer count). What shapes cannot tell (the number
of attention heads) is never taken from a preset the search picked: when a
preset fits, the error names it and asks for ``--preset NAME`` (the user
confirms its head count) or ``--config FILE.json``. With ``--preset`` given,
the adjusted preset is used and the CLI prints the result. When no adjusted
preset matches exactly, the strict check's report says why and that a
config.json is needed. A config dict may also be a foreign format's own
spelling (``foreign.py``), e.g. a training script's config saved as JSON.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..adapters.family import Family
from ..core.checkpoint_format import FAMILY_KEY, SIDECAR_FILE, config_from_dict
from ..errors import ConfigError, UnknownFamilyError
from .checks import Report
from .config_values import check_config, check_hf
from .names import empty_init, name_patterns, strip_prefixes

SIDECAR = SIDECAR_FILE


@dataclass
class ConfigChoice:
    """The family and config a checkpoint is loaded with, and where they came from."""

    family: Family
    config: Any
    source: str  # "config.json", "portagpt.json", "--config PATH", "preset NAME", ...
    changes: list[str] = field(default_factory=list)  # fields adjusted from the preset
    notes: list[str] = field(default_factory=list)  # what the loader decided (e.g. untied a head)


def read_json(path: Path, what: str) -> dict[str, Any]:
    """A JSON object from ``path``, with one-paragraph errors."""
    if not path.is_file():
        raise ConfigError(
            f"No {what} at {str(path)!r}. A checkpoint folder needs config.json next to its weights "
            "(save_pretrained writes it); pass --family F (and --preset P) to build the config from "
            "a preset instead."
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


def family_from_hf(
    hf_config: Mapping[str, Any], family: str | Family | None, where: str
) -> Family:
    """``family`` if given (checked against model_type), else config.json's model_type."""
    from ..registry import get_family, get_registry

    if isinstance(family, Family):
        return family
    check_hf(hf_config, where)
    mt = hf_config.get("model_type")
    if family:
        fam = get_family(family)
        if mt and mt not in fam.hf_model_types:
            owner = get_registry().model_types.get(mt)
            raise ConfigError(
                f"{where} is a {mt!r} config (model_type), but --family {family} serves "
                f"{', '.join(fam.hf_model_types)}."
                + (f" Use --family {owner}, or leave --family out." if owner else " Leave --family out.")
            )
        return fam
    if not mt:
        raise ConfigError(
            f"{where} has no 'model_type' key, so the family cannot be detected; add it, or pass "
            "--family NAME."
        )
    return get_registry().for_model_type(str(mt))


def config_from_hf(fam: Family, hf_config: Mapping[str, Any], where: str) -> Any:
    """The family's config from a config.json dict, with a one-paragraph error when it does not fit.

    Every value is checked (type, range) before the family sees it, and the
    family's config object after (``config_values.py``).
    """
    check_hf(hf_config, where)
    try:
        cfg = fam.config_from_hf(hf_config)
    except ConfigError as exc:
        if where in str(exc):
            raise
        raise ConfigError(f"{where}: {exc}") from None
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ConfigError(
            f"{where} cannot be read as a {fam.name} config: {type(exc).__name__}: {exc}. Check that "
            f"it belongs to a {fam.name} checkpoint."
        ) from None
    check_config(cfg, where)
    return cfg


def config_from_sidecar(fam: Family, sidecar: Mapping[str, Any], where: str) -> Any:
    data = sidecar.get("config")
    if not isinstance(data, Mapping):
        raise ConfigError(
            f"{where} has no config.json and its {SIDECAR} has no 'config' object; the checkpoint "
            "cannot be rebuilt. Pass --config config.json, or --family with --preset."
        )
    cfg = config_from_dict(type(fam.smoke_config), data, f"{where}'s {SIDECAR}")
    check_config(cfg, f"{where}'s {SIDECAR}")
    return cfg


def detect_family(names: list[str], where: str) -> Family:
    """The one registered family whose native or Hugging Face names cover these names."""
    from ..registry import get_registry

    canon = list(strip_prefixes(names).values())
    pats = name_patterns(canon)
    scores: dict[str, float] = {}
    for fam in get_registry().families.values():
        try:
            with empty_init():
                model = fam.build_model(fam.smoke_config)
            native = name_patterns(model.state_dict())
            wmap = fam.weight_map(fam.smoke_config)
        except (Exception, SystemExit):  # a broken plugin must not stop detection for the others
            continue
        plan = wmap.plan_to_native(canon)
        dropped = name_patterns(n for s in plan.steps if not s.native for n in s.hf)
        native_hit = len([p for p in pats if p in native or p in dropped]) / len(pats)
        hf_hit = 1 - len(plan.unmatched) / len(canon)
        scores[fam.name] = max(native_hit, hf_hit)
    fits = sorted(n for n, s in scores.items() if s >= 0.95)
    if len(fits) == 1:
        return get_registry().get(fits[0])
    sample = ", ".join(sorted(canon)[:4])
    if not fits:
        raise UnknownFamilyError(
            f"{where} has no config.json and no registered family recognises its tensor names "
            f"(e.g. {sample}). Put the matching config.json next to it, or pass --config "
            "config.json, or --family NAME with --preset."
        )
    raise ConfigError(
        f"{where} has no config.json and its tensor names fit several families ({', '.join(fits)}). "
        "Pass --family NAME (with --preset, or --config config.json)."
    )


# ---- presets adjusted to the checkpoint ------------------------------------------
Evaluate = Callable[[Any], Report]


def score(rep: Report) -> int:
    return rep.problems + len(rep.ignored)


def _candidates(cfg: Any, rep: Report) -> list[tuple[str, Any]]:
    """Configs one field away from ``cfg`` that the report suggests."""
    if not dataclasses.is_dataclass(cfg):
        return []
    pairs = {(a, b) for _, e, f in rep.mismatched for a, b in zip(e, f, strict=False) if a != b}
    out: list[tuple[str, Any]] = []
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        news: list[Any] = []
        if isinstance(value, bool):
            news = [not value]
        elif isinstance(value, int):
            news = [b for a, b in pairs if a == value]
            have, want = rep.layers
            if have is not None and have != want and value == want:
                news.append(have)
        for new in dict.fromkeys(news):
            try:
                out.append((f"{f.name}={new!r}", dataclasses.replace(cfg, **{f.name: new})))
            except (ValueError, TypeError):  # the config rejects it (e.g. heads no longer divide)
                continue
    return out


def fit_preset(
    fam: Family, evaluate: Evaluate, preset: str | None = None, max_steps: int = 8
) -> tuple[str, Any, list[str], Report]:
    """The preset (adjusted field by field) that best fits the checkpoint; see the module docstring."""
    starts = [preset] if preset else list(fam.presets)
    if not starts:
        raise ConfigError(f"Family {fam.name!r} has no presets; pass --config config.json.")
    tried: list[tuple[int, int, str, Any, Report]] = []
    for i, name in enumerate(starts):
        cfg = fam.preset(name)
        rep = evaluate(cfg)
        tried.append((score(rep), i, name, cfg, rep))
    best_score, _, name, cfg, rep = min(tried, key=lambda t: (t[0], t[1]))
    changes: list[str] = []
    for _ in range(max_steps):
        if best_score == 0:
            break
        options = []
        for change, cand in _candidates(cfg, rep):
            try:
                r = evaluate(cand)
            except (ConfigError, ValueError, TypeError, RuntimeError):
                continue
            options.append((score(r), change, cand, r))
        if not options:
            break
        s, change, cand, r = min(options, key=lambda t: t[0])
        if s >= best_score:
            break
        best_score, cfg, rep = s, cand, r
        changes.append(change)
    return name, cfg, changes, rep


def no_config_error(loc: Any, source: Any) -> ConfigError:
    """No config anywhere and no --family: say which family the names suggest, and what to pass."""
    try:
        guess = detect_family(source.names, loc.where).name
    except (ConfigError, UnknownFamilyError):
        guess = None
    suggestion = (
        f"Its tensor names are {guess}'s: pass --family {guess} (with --preset P, or alone to fit "
        f"{guess}'s presets to the shapes), or --config config.json."
        if guess
        else "Pass --config config.json, or --family F with --preset P."
    )
    return ConfigError(
        f"{loc.where} has no config.json beside it (looked in {str(loc.folder)!r}) and no "
        f"{SIDECAR}, so its configuration is unknown. {suggestion}"
    )


# ---- the decision ------------------------------------------------------------------------
def _family_arg(family: str | Family | None, sidecar: Mapping[str, Any] | None, meta: Mapping[str, str]) -> str | Family | None:
    if family:
        return family
    if sidecar and isinstance(sidecar.get("family"), str):
        return sidecar["family"]
    return meta.get(FAMILY_KEY) or None


def family_of_config(config: Any, family: str | Family | None) -> Family:
    from ..registry import get_family, get_registry

    if isinstance(family, Family):
        return family
    if family:
        return get_family(family)
    for fam in get_registry().families.values():
        if type(fam.smoke_config) is type(config):
            return fam
    raise ConfigError(
        f"No registered family uses config type {type(config).__name__}; pass family=NAME."
    )


def unconfirmed_fields(cfg: Any) -> str:
    """The config's head counts, as ``name=value``: what tensor shapes can never confirm."""
    if not dataclasses.is_dataclass(cfg):
        return ""
    return ", ".join(
        f"{f.name}={getattr(cfg, f.name)!r}"
        for f in dataclasses.fields(cfg)
        if "head" in f.name and isinstance(getattr(cfg, f.name), int)
    )


def unconfirmed_error(loc: Any, fam: Family, name: str, cfg: Any, changes: list[str]) -> ConfigError:
    """A preset fits the shapes, but what shapes cannot show would be the preset's guess: refuse."""
    heads = unconfirmed_fields(cfg) or "the fields tensor shapes cannot show"
    adjusted = f", adjusted to the weights ({', '.join(changes)})" if changes else ""
    return ConfigError(
        f"{loc.where} has no config beside it. Its shapes fit {fam.name}'s preset {name!r}"
        f"{adjusted}, but the number of attention heads cannot be read from the weights, and taking "
        f"it from the preset ({heads}) would be a guess. If the preset's values are right, pass "
        f"--preset {name} (preset={name!r} in Python); otherwise pass --config FILE.json: the "
        "checkpoint's config.json, or the training script's config dict saved as JSON (e.g. the "
        "book's {vocab_size, context_length, emb_dim, n_heads, n_layers, drop_rate, qkv_bias})."
    )

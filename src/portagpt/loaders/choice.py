"""The family and config a checkpoint gets, and the strict check of the checkpoint against them.

:func:`choose` picks them (in the order the ``configs`` module docstring
gives: a foreign format's own rule, ``--config``, config.json, the
``portagpt.json`` sidecar, then a preset fitted to the weights);
:func:`check_source` opens a located checkpoint, chooses, plans the load on
the meta device (``pipeline.prepare``) and raises on any mismatch. It sits
above ``configs`` and ``pipeline`` (fitting a preset needs the planner) and
below the loaders that use it (``load``, ``export``).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..adapters.family import Family
from ..errors import ConfigError
from .config_values import check_config
from .configs import (
    SIDECAR,
    ConfigChoice,
    _family_arg,
    config_from_hf,
    config_from_sidecar,
    detect_family,
    family_from_hf,
    family_of_config,
    fit_preset,
    no_config_error,
    read_json,
    unconfirmed_error,
)
from .pipeline import Prepared, Source, check_config_fits, prepare, read_sidecar
from .sources import Located
from .ties import verify_ties


def _from_dict(data: Mapping[str, Any], fam_arg: Any, where: str, label: str) -> ConfigChoice:
    """A config dict: transformers' config.json (with model_type), or a foreign format's own."""
    from .foreign import config_from_foreign_dict

    if "model_type" not in data and (got := config_from_foreign_dict(data)) is not None:
        fam, cfg, name = got
        if fam_arg and (fam_arg.name if isinstance(fam_arg, Family) else fam_arg) != fam.name:
            raise ConfigError(
                f"{where} is a {name} config dict, which describes a {fam.name} model, but the "
                f"family given is {fam_arg if isinstance(fam_arg, str) else fam_arg.name!r}. Leave "
                "--family out, or pass the matching config."
            )
        check_config(cfg, where)
        return ConfigChoice(fam, cfg, f"{label} ({name} config dict)")
    fam = family_from_hf(data, fam_arg, where)
    return ConfigChoice(fam, config_from_hf(fam, data, where), label)


def choose(
    loc: Any,
    source: Any,
    *,
    family: str | Family | None = None,
    preset: str | None = None,
    config: Any = None,
    sidecar: Mapping[str, Any] | None = None,
) -> ConfigChoice:
    """The family and config for ``source`` (see the ``configs`` module docstring for the order)."""
    from ..registry import get_family

    where = loc.where
    fam_arg = _family_arg(family, sidecar, source.combined_metadata())
    fmt = getattr(loc, "format", None)
    if fmt is not None and fmt.choose is not None and preset is None:
        if (chosen := fmt.choose(loc, source, fam_arg, config)) is not None:
            return chosen
    if config is not None:
        if isinstance(config, (str, Path)):
            hf = read_json(Path(config), "config.json")
            return _from_dict(hf, fam_arg, repr(str(config)), f"--config {config}")
        if isinstance(config, Mapping):
            return _from_dict(config, fam_arg, "the config dict", "config dict")
        check_config(config, "the config object")
        return ConfigChoice(family_of_config(config, fam_arg), config, "config object")
    config_json = loc.folder / "config.json"
    if preset is None and config_json.is_file():
        hf = read_json(config_json, "config.json")
        fam = family_from_hf(hf, fam_arg, repr(str(config_json)))
        return ConfigChoice(fam, config_from_hf(fam, hf, repr(str(config_json))), "config.json")
    if preset is None and sidecar is not None:
        if not fam_arg:
            fam = detect_family(source.names, where)
        else:
            fam = fam_arg if isinstance(fam_arg, Family) else get_family(fam_arg)
        return ConfigChoice(fam, config_from_sidecar(fam, sidecar, where), SIDECAR)
    if not fam_arg:
        raise no_config_error(loc, source)
    fam = fam_arg if isinstance(fam_arg, Family) else get_family(fam_arg)
    name, cfg, changes, rep = fit_preset(fam, lambda c: prepare(source, fam, c, sidecar=sidecar).report, preset)
    label = f"preset {name}" + (f" adjusted to the weights ({', '.join(changes)})" if changes else "")
    if preset is None and rep.ok:
        raise unconfirmed_error(loc, fam, name, cfg, changes)
    return ConfigChoice(fam, cfg, label, changes)


def check_source(
    loc: Located,
    *,
    family: str | Family | None = None,
    preset: str | None = None,
    config: Any = None,
    backend: str = "pread",
) -> tuple[Source, ConfigChoice, Prepared]:
    """Open ``loc``, choose family and config, and run the strict check (raises on mismatch)."""
    source = loc.open(backend)
    sidecar = read_sidecar(loc.folder)
    choice = choose(loc, source, family=family, preset=preset, config=config, sidecar=sidecar)
    check_config_fits(loc, source, choice)
    prep = prepare(source, choice.family, choice.config, sidecar=sidecar)
    if prep.report.ok:
        prep, notes = verify_ties(
            prep, source, loc.where, lambda cfg: prepare(source, choice.family, cfg, sidecar=sidecar)
        )
        if notes:
            choice.config = prep.config
            choice.notes.extend(notes)
    if not prep.report.ok and choice.source.startswith("preset"):
        prep.report.hints.append(
            f"The config came from a preset ({choice.source}, the closest one) and does not fit "
            "these weights: no config.json was used; put the checkpoint's config.json next to it or "
            "pass --config config.json."
        )
    prep.report.raise_if_bad(f"{loc.where} ({prep.layout} layout, family {choice.family.name})")
    return source, choice, prep

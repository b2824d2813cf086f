"""What a checkpoint holds, without reading a single weight (``portagpt inspect``).

Safetensors files are read up to their headers; a ``.pth`` is memory-mapped,
so unpickling it reads names, shapes and dtypes but no tensor data. The
family and config are decided as a load would, and the weight map's coverage
is reported: the share of checkpoint tensors the map accounts for, and what
the model expects that the checkpoint lacks. The checks are those ``load``
runs before it reads a weight (headers, config values, config against the
tensor names, the strict name/shape check, the tokenizer files), so ``ok``
here means ``load`` gets as far as reading the weights. When a check fails
the tensor summary is still given, with the reason.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from ..adapters.family import config_to_dict
from ..errors import PortagptError
from .checks import dtype_name
from .pipeline import (
    FAMILY_KEY,
    FORMAT_KEY,
    FORMAT_VERSION_KEY,
    check_config_fits,
    load_tokenizer_for,
    prepare,
    read_sidecar,
    strip_prefixes,
)
from .sources import Located, locate


def describe(
    path: str | Path | None = None,
    *,
    loc: Located | None = None,
    family: str | None = None,
    preset: str | None = None,
    config: Any = None,
    show: int = 20,
) -> dict[str, Any]:
    """A JSON-able summary of the checkpoint at ``path`` (or an already located one)."""
    from .choice import choose

    loc = loc or locate(path)  # type: ignore[arg-type]
    source = loc.open()
    infos = source.tensors
    meta = source.combined_metadata()
    out: dict[str, Any] = {
        "path": loc.repo_id or str(loc.path),
        "kind": loc.kind,
        "files": [str(f) for f in loc.files],
        "file_bytes": source.file_bytes(),
        "tensors": len(infos),
        "tensor_bytes": sum(i.nbytes for i in infos.values()),
        "dtypes": dict(Counter(dtype_name(i.dtype) for i in infos.values())),
        "metadata": {k: v for k, v in meta.items() if k in (FORMAT_KEY, FAMILY_KEY, FORMAT_VERSION_KEY, "format")},
        "wrapped_names": sum(1 for o, c in strip_prefixes(list(infos)).items() if o != c),
    }
    try:  # the checks `portagpt load` runs before reading a weight, in the same order
        sidecar = read_sidecar(loc.folder)
        choice = choose(loc, source, family=family, preset=preset, config=config, sidecar=sidecar)
        out.update(family=choice.family.name, config_source=choice.source)
        check_config_fits(loc, source, choice)
        prep = prepare(source, choice.family, choice.config, sidecar=sidecar)
        tok = load_tokenizer_for(choice.family, loc.folder, choice.config, "auto")
    except PortagptError as exc:
        out.update(ok=False, error=str(exc))
        out.setdefault("family", None)
        return out
    rep = prep.report
    params = sum(t.numel() for t in prep.model.parameters())
    out.update(
        family=choice.family.name,
        config_source=choice.source,
        tokenizer=None if tok is None else type(tok).__name__,
        config=config_to_dict(choice.config),
        layout=prep.layout,
        parameters=params,
        coverage={
            "claimed": prep.claimed,
            "total": prep.total,
            "share": round(prep.coverage, 4),
            "unclaimed": rep.unexpected[:show],
            "missing": rep.missing[:show],
            "mismatched": [f"{n}: model {e}, checkpoint {f}" for n, e, f in rep.mismatched[:show]],
            "ignored": rep.ignored[:show],
        },
        checks=rep.summary(),
        ok=rep.ok,
        hints=rep.hints,
    )
    return out

"""The objects the Python API returns (:mod:`portagpt.api`), one per CLI report.

Each has ``to_dict()``: exactly the JSON object the matching command prints
with ``--json`` (``generate``, ``load``, ``inspect``, ``convert``, ``smoke``,
``compare``, ``train``), so the API and the CLI report the same numbers.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .core.results import Run

__all__ = [
    "Comparison",
    "Conversion",
    "Generation",
    "Inspection",
    "Run",
    "SmokeResults",
    "Validation",
]


@dataclass
class Generation:
    """One prompt's continuation: ids, text and timings (``portagpt generate --json``)."""

    family: str | None
    prompt: str
    prompt_ids: list[int]
    new_ids: list[int]
    text: str  # the continuation, without the prompt
    seconds: float
    stopped: bool  # ended on a stop token (False: reached max_new_tokens)

    @property
    def new_tokens(self) -> int:
        return len(self.new_ids)

    @property
    def tokens_per_second(self) -> float:
        return self.new_tokens / self.seconds if self.seconds > 0 else float("inf")

    def __str__(self) -> str:
        return self.prompt + self.text

    def to_dict(self) -> dict[str, Any]:
        return {
            "family": self.family,
            "prompt_ids": list(self.prompt_ids),
            "new_ids": list(self.new_ids),
            "text": self.text,
            "tokens_per_second": self.tokens_per_second,
            "new_tokens": self.new_tokens,
            "seconds": self.seconds,
            "stopped": self.stopped,
        }


@dataclass
class Validation:
    """The ``load`` command's report: every check on the way to a working model."""

    ok: bool
    source: str
    kind: str
    family: str
    loader: str
    layout: str
    config_source: str | None
    notes: list[str]  # what the loader decided that the files did not say
    params: int
    dtype: str | list[str]
    device: str
    load_seconds: float
    resolve_seconds: float
    peak_rss_bytes: int
    rss_delta_bytes: int | None
    checkpoint_bytes: int
    checks: dict[str, Any]  # files, verify, shapes, forward
    sample: dict[str, Any]  # prompt, prompt_ids, new_ids, text, stopped, seconds, note
    model: Any = field(default=None, repr=False, compare=False)
    tokenizer: Any = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if f.name not in ("model", "tokenizer")
        }


class _Report(Mapping[str, Any]):
    """A JSON report with attribute access: ``r.family`` and ``r["family"]`` alike."""

    def __init__(self, data: Mapping[str, Any]) -> None:
        self._data = dict(data)

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __iter__(self):  # noqa: ANN204 - Mapping protocol
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __getattr__(self, name: str) -> Any:
        try:
            return self.__dict__["_data"][name]
        except KeyError:
            raise AttributeError(f"{type(self).__name__} has no field {name!r}") from None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._data!r})"

    def to_dict(self) -> dict[str, Any]:
        return dict(self._data)


class Inspection(_Report):
    """What a checkpoint holds (``portagpt inspect --json``); ``ok``: it would load as is."""


class Conversion(_Report):
    """What ``convert`` wrote (``portagpt convert --json``): out, layout, family, files, ..."""


@dataclass
class SmokeResults:
    """The conformance kit's reports, one per family (``portagpt smoke --json``)."""

    reports: list[Any]  # smoke_tests.runner.SmokeReport
    plugin_errors: list[str] = field(default_factory=list)
    all_families: bool = False  # --all: a plugin that failed to register fails the run

    @property
    def passed(self) -> bool:
        plugin_failed = bool(self.plugin_errors) and self.all_families
        return all(r.passed for r in self.reports) and not plugin_failed

    def __bool__(self) -> bool:
        return self.passed

    def format(self) -> str:
        return "\n".join(r.format() for r in self.reports)

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "reports": [r.to_dict() for r in self.reports],
            "plugin_errors": list(self.plugin_errors),
        }


@dataclass
class Comparison:
    """A cross-family comparison: the table, each family's curve, and the figure."""

    results: list[Any]  # core.compare.FamilyResult
    settings: Any  # core.compare.CompareSettings
    paths: dict[str, Path] = field(default_factory=dict)  # json, markdown, png, pdf (with out)

    @property
    def table(self) -> str:
        """The comparison as Markdown (compare.md)."""
        from .core.compare import markdown_table

        return markdown_table(self.results, self.settings)

    @property
    def figure(self) -> Any:
        """Validation bits per byte against training bytes seen (a matplotlib Figure)."""
        from .core.compare import bpb_figure

        return bpb_figure(self.results)

    def rows(self) -> list[dict[str, Any]]:
        return [dataclasses.asdict(r) for r in self.results]

    def to_dict(self) -> dict[str, Any]:
        """compare.json: the settings and every family's numbers and curve."""
        return {
            "settings": dataclasses.asdict(self.settings),
            "results": self.rows(),
        }

    def _repr_markdown_(self) -> str:  # Jupyter renders the table
        return self.table

"""Tokenizers behind one small protocol: ``encode(str) -> list[int]``, ``decode(ids) -> str``.

Two real implementations, no hand-written BPE:

* :class:`TiktokenTokenizer` wraps a ``tiktoken.Encoding`` (the packaged BPE ranks ship
  inside the package, so it works offline);
* :class:`HFTokenizer` wraps ``tokenizers.Tokenizer`` read from a checkpoint's
  ``tokenizer.json``, with stop ids from config.json / generation_config.json
  and the chat template from tokenizer_config.json (rendered with jinja2).

The host owns the tokenizer of a model trained from scratch:
:func:`bundled_bpe` is the byte-level BPE that ships with portagpt (tiktoken's
``r50k_base``: 50,257 ids, ``<|endoftext|>`` = 50256), and
:func:`scratch_tokenizer` returns it when a config's vocabulary can hold its
ids (a clear :class:`TokenizerError` otherwise). :func:`load_tokenizer` is the
default ``Family.load_tokenizer``: a checkpoint's ``tokenizer.json``, or the
scratch tokenizer for ``folder=None`` and for folders portagpt's trainer wrote
without one.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import datetime
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from ..core.checkpoint_format import SIDECAR_FILE
from ..errors import TokenizerError

BPE_FILE = "data/r50k_base.tiktoken"
BPE_EOT = 50256  # <|endoftext|>
BPE_VOCAB = 50257
# The byte-level BPE's pre-tokenisation pattern (as tiktoken's r50k_base writes it).
BPE_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


@runtime_checkable
class Tokenizer(Protocol):
    """What the trainer, the generation harness and the CLI need of a tokenizer."""

    vocab_size: int
    eos_token_id: int | None
    pad_token_id: int | None
    stop_token_ids: tuple[int, ...]
    chat_template: str | None

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: Iterable[int]) -> str: ...


def _ids(value: Any) -> tuple[int, ...]:
    if value is None:
        return ()
    if isinstance(value, int):
        return (value,)
    return tuple(int(v) for v in value)


def stop_ids_from_configs(folder: Path) -> tuple[int, ...]:
    """eos ids from config.json then generation_config.json (single id or list), deduplicated."""
    found: list[int] = []
    for fname in ("generation_config.json", "config.json"):
        path = folder / fname
        if not path.is_file():
            continue
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        for key in ("eos_token_id",):
            for i in _ids(data.get(key)):
                if i not in found:
                    found.append(i)
        text = data.get("text_config")
        if isinstance(text, dict):
            for i in _ids(text.get("eos_token_id")):
                if i not in found:
                    found.append(i)
    return tuple(found)


class ChatTemplateMixin:
    chat_template: str | None
    special_tokens_map: dict[str, str]

    def apply_chat_template(
        self, messages: Sequence[dict[str, str]], add_generation_prompt: bool = True, **kwargs: Any
    ) -> str:
        """Render ``messages`` with the checkpoint's jinja2 chat template."""
        if not self.chat_template:
            raise TokenizerError(
                "This tokenizer has no chat template (tokenizer_config.json has no 'chat_template'); "
                "pass plain text prompts instead."
            )
        import jinja2
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        def raise_exception(message: str) -> None:
            raise TokenizerError(f"Chat template error: {message}")

        env = ImmutableSandboxedEnvironment(
            trim_blocks=True,
            lstrip_blocks=True,
            undefined=jinja2.Undefined,
            extensions=["jinja2.ext.loopcontrols"],  # {% break %} / {% continue %}, as transformers
        )
        env.globals["raise_exception"] = raise_exception
        env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
        env.filters["tojson"] = lambda x, **kw: json.dumps(x, **{"ensure_ascii": False, **kw})
        template = env.from_string(self.chat_template)
        return template.render(
            messages=list(messages),
            add_generation_prompt=add_generation_prompt,
            **self.special_tokens_map,
            **kwargs,
        )


class TiktokenTokenizer(ChatTemplateMixin):
    """A tiktoken encoding; special tokens such as ``<|endoftext|>`` are allowed in text."""

    def __init__(self, encoding: Any, eos_token_id: int | None, chat_template: str | None = None) -> None:
        self.encoding = encoding
        self.vocab_size = encoding.n_vocab
        self.eos_token_id = eos_token_id
        self.pad_token_id = eos_token_id
        self.stop_token_ids = _ids(eos_token_id)
        self.chat_template = chat_template
        self.special_tokens_map = {}

    def encode(self, text: str) -> list[int]:
        return self.encoding.encode(text, allowed_special="all")

    def decode(self, ids: Iterable[int]) -> str:
        return self.encoding.decode([int(i) for i in ids])


def _read_tokenizer_json(path: Path) -> Any:
    """``tokenizers.Tokenizer`` from ``path``, checked to hold a vocabulary and to encode text."""
    from tokenizers import Tokenizer as _Tok

    try:
        tok = _Tok.from_file(str(path))
    except Exception as exc:  # tokenizers raises a bare Exception subclass
        detail = " ".join(str(exc).split())[:300]
        raise TokenizerError(
            f"{str(path)!r} is not a valid tokenizer.json ({detail}). The file is damaged or from "
            "an incompatible tool; save the tokenizer again (tokenizer.save_pretrained(dir))."
        ) from None
    size = tok.get_vocab_size(with_added_tokens=True)
    try:
        probe = tok.encode("Hello, world! 123", add_special_tokens=False).ids
    except Exception as exc:  # noqa: BLE001 - a broken pipeline raises anything
        probe, size = [], -1
        detail = f" (encoding raised {type(exc).__name__})"
    else:
        detail = ""
    if size <= 0 or any(i < 0 or i >= size for i in probe):
        raise TokenizerError(
            f"{str(path)!r} loads but cannot tokenise text{detail}: it has {max(size, 0)} ids and "
            f"encodes a test sentence to {probe[:8]}. The file is damaged; save the tokenizer again."
        )
    return tok


class HFTokenizer(ChatTemplateMixin):
    """``tokenizers.Tokenizer`` from a checkpoint folder's tokenizer.json."""

    def __init__(
        self,
        tokenizer: Any,
        eos_token_id: int | None = None,
        stop_token_ids: Iterable[int] = (),
        pad_token_id: int | None = None,
        bos_token_id: int | None = None,
        add_bos: bool = False,
        chat_template: str | None = None,
        special_tokens_map: dict[str, str] | None = None,
    ) -> None:
        self.tokenizer = tokenizer
        self.vocab_size = tokenizer.get_vocab_size(with_added_tokens=True)
        self.eos_token_id = eos_token_id
        stops = list(stop_token_ids)
        if eos_token_id is not None and eos_token_id not in stops:
            stops.insert(0, eos_token_id)
        self.stop_token_ids = tuple(stops)
        self.pad_token_id = pad_token_id if pad_token_id is not None else eos_token_id
        self.bos_token_id = bos_token_id
        self.add_bos = add_bos
        self.chat_template = chat_template
        self.special_tokens_map = special_tokens_map or {}

    @classmethod
    def from_folder(cls, folder: str | Path) -> HFTokenizer:
        """Read tokenizer.json (+ tokenizer_config.json, config.json, generation_config.json)."""
        folder = Path(folder)
        tj = folder / "tokenizer.json"
        if not tj.is_file():
            raise TokenizerError(
                f"No tokenizer.json in {str(folder)!r}. Save the tokenizer next to the weights "
                "(tokenizer.save_pretrained(dir) in transformers)."
            )
        tok = _read_tokenizer_json(tj)
        cfg: dict[str, Any] = {}
        tc = folder / "tokenizer_config.json"
        if tc.is_file():
            try:
                cfg = json.loads(tc.read_text())
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise TokenizerError(
                    f"{str(tc)!r} is not valid JSON ({exc}). Fix the file or save the tokenizer again."
                ) from None
            if not isinstance(cfg, dict):
                raise TokenizerError(
                    f"{str(tc)!r} must hold a JSON object, found {type(cfg).__name__}. Fix the file "
                    "or save the tokenizer again."
                )

        def token_text(key: str) -> str | None:
            v = cfg.get(key)
            if isinstance(v, dict):
                v = v.get("content")
            return v if isinstance(v, str) else None

        specials = {k: t for k in ("bos_token", "eos_token", "pad_token", "unk_token") if (t := token_text(k))}
        unknown = [
            k
            for k in ("bos_token", "eos_token", "pad_token")
            if k in specials and tok.token_to_id(specials[k]) is None
        ]
        if unknown:
            k = unknown[0]
            raise TokenizerError(
                f"{str(tc)!r} names {k} {specials[k]!r}, which {str(tj)!r} does not contain: the two "
                "files are from different tokenizers (or one is damaged). Save the tokenizer again."
            )
        stop_ids = stop_ids_from_configs(folder)
        eos_text = specials.get("eos_token")
        eos_id = tok.token_to_id(eos_text) if eos_text else None
        if eos_id is None and stop_ids:
            eos_id = stop_ids[0]
        pad_text = specials.get("pad_token")
        pad_id = tok.token_to_id(pad_text) if pad_text else None
        bos_text = specials.get("bos_token")
        bos_id = tok.token_to_id(bos_text) if bos_text else None
        template = cfg.get("chat_template")
        if template is None and (folder / "chat_template.jinja").is_file():
            template = (folder / "chat_template.jinja").read_text()
        if isinstance(template, list):  # list of {"name", "template"}
            template = next((t["template"] for t in template if t.get("name") == "default"), None)
        return cls(
            tok,
            eos_token_id=eos_id,
            stop_token_ids=stop_ids,
            pad_token_id=pad_id,
            bos_token_id=bos_id,
            add_bos=bool(cfg.get("add_bos_token", False)) and bos_id is not None,
            chat_template=template,
            special_tokens_map=specials,
        )

    def encode(self, text: str) -> list[int]:
        ids = self.tokenizer.encode(text, add_special_tokens=True).ids
        if self.add_bos and (not ids or ids[0] != self.bos_token_id):
            ids = [self.bos_token_id, *ids]
        return list(ids)

    def decode(self, ids: Iterable[int]) -> str:
        return self.tokenizer.decode([int(i) for i in ids], skip_special_tokens=False)


@lru_cache(maxsize=1)
def _bundled_encoding() -> Any:
    import tiktoken
    from tiktoken.load import load_tiktoken_bpe

    with resources.as_file(resources.files("portagpt").joinpath(BPE_FILE)) as path:
        ranks = load_tiktoken_bpe(str(path))
    return tiktoken.Encoding(
        name="r50k_base",
        pat_str=BPE_PATTERN,
        mergeable_ranks=ranks,
        special_tokens={"<|endoftext|>": BPE_EOT},
    )


def bundled_bpe() -> TiktokenTokenizer:
    """The byte-level BPE bundled with portagpt (50,257 ids; offline, no download)."""
    return TiktokenTokenizer(_bundled_encoding(), eos_token_id=BPE_EOT)


def scratch_tokenizer(vocab_size: int | None) -> TiktokenTokenizer:
    """The tokenizer of a model trained from scratch: the bundled BPE, when its ids fit.

    Raises :class:`TokenizerError` when ``vocab_size`` is smaller than the
    bundled BPE's 50,257 ids (a model cannot embed ids it has no row for).
    """
    tok = bundled_bpe()
    if vocab_size is not None and vocab_size < tok.vocab_size:
        raise TokenizerError(
            f"This config has a vocabulary of {vocab_size} ids, too small for the bundled BPE "
            f"({tok.vocab_size} ids) that models trained from scratch use, and no checkpoint "
            "folder with a tokenizer.json was given. Pass the checkpoint folder, or use a preset "
            f"with vocab_size >= {tok.vocab_size} (e.g. 'tiny')."
        )
    return tok


def load_tokenizer(folder: Path | None, cfg: Any = None) -> Tokenizer:
    """A family's tokenizer: ``folder``'s tokenizer.json, else the scratch tokenizer.

    ``folder=None`` means a model trained from scratch (:func:`scratch_tokenizer`
    for ``cfg.vocab_size``). A folder without tokenizer.json gets the scratch
    tokenizer only when portagpt's trainer wrote it (it has the sidecar); any
    other such folder is an error, since a real checkpoint's vocabulary is its own.
    """
    if folder is not None:
        folder = Path(folder)
        if (folder / "tokenizer.json").is_file() or not (folder / SIDECAR_FILE).is_file():
            return HFTokenizer.from_folder(folder)
    return scratch_tokenizer(getattr(cfg, "vocab_size", None))


def load_tokenizer_or_bundled(folder: Path | None, cfg: Any = None) -> Tokenizer:
    """For families whose own vocabulary is the bundled BPE: tokenizer.json when the folder
    ships one, else the bundled BPE (any folder, e.g. a bare ``model.pth``)."""
    if folder is not None and (Path(folder) / "tokenizer.json").is_file():
        return HFTokenizer.from_folder(folder)
    return scratch_tokenizer(getattr(cfg, "vocab_size", None))

"""Tokenizers behind one small protocol: ``encode(str) -> list[int]``, ``decode(ids) -> str``.

Two real implementations, no hand-written BPE:

* :class:`TiktokenTokenizer` wraps a ``tiktoken.Encoding`` (the packaged BPE ranks ship
  inside the package, so it works offline);
* :class:`HFTokenizer` wraps ``tokenizers.Tokenizer`` read from a checkpoint's
  ``tokenizer.json``, with stop ids from config.json / generation_config.json
  and the chat template from tokenizer_config.json (rendered with jinja2).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from ..errors import TokenizerError


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

        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, undefined=jinja2.Undefined)
        env.globals["raise_exception"] = raise_exception
        env.filters["tojson"] = lambda x, **kw: json.dumps(x, ensure_ascii=False, **kw)
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
        unknown = [k for k in ("bos_token", "eos_token", "pad_token") if k in specials and tok.token_to_id(specials[k]) is None]
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

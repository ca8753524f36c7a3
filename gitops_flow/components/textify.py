"""Textify: any value a flow passes along (text, a message, a prompt, a list of messages, an object) as plain text."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import orjson
from langchain_core.documents import Document
from langchain_core.messages import BaseMessage
from langchain_core.prompt_values import PromptValue
from langchain_core.runnables import RunnableLambda

_FIELD = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
DOCUMENT_TEMPLATE = "[{source}] {text}"  # a retrieved document in a prompt: its content with where it comes from


def fields_of(item: Any) -> dict[str, str]:
    """The named parts of one item: ``text`` always; ``sender`` and ``sender_name`` for a message (LangFlow's
    names); an object's own keys with their text."""
    if isinstance(item, BaseMessage):
        human = item.type == "human"
        return {
            "text": item.text,
            "sender": "User" if human else "Machine",
            "sender_name": "User" if human else "AI",
        }
    if isinstance(item, PromptValue):
        return {"text": item.to_string()}
    if isinstance(item, Document):
        return {"text": item.page_content, "source": str(item.metadata.get("source", ""))}
    if isinstance(item, Mapping):
        found = {str(k): text_of(v) for k, v in item.items()}
        found.setdefault("text", orjson.dumps(item, default=str).decode())
        return found
    return {"text": text_of(item)}


def text_of(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, BaseMessage):
        return value.text
    if isinstance(value, PromptValue):
        return value.to_string()
    if isinstance(value, Document):
        return render(DOCUMENT_TEMPLATE, fields_of(value))
    return orjson.dumps(value, default=str).decode()


def message_text(value: Any) -> str | None:
    """The text of a string, a message (or a streamed message chunk) or a prompt; None for anything else."""
    if isinstance(value, str):
        return value
    if isinstance(value, BaseMessage):
        return value.text
    if isinstance(value, PromptValue):
        return value.to_string()
    return None


def render(template: str, fields: Mapping[str, str]) -> str:
    """``template`` with each ``{name}`` of ``fields`` replaced: plain substitution, never str.format (whose
    ``{x.attr}`` and ``{x[i]}`` reach into objects)."""
    return _FIELD.sub(lambda m: fields.get(m.group(1), m.group(0)), template)


def _default(item: Any) -> str:
    return DOCUMENT_TEMPLATE if isinstance(item, Document) else "{text}"


def textify(*, key: str | None = None, template: str | None = None, separator: str = "\n") -> RunnableLambda[Any, str]:
    """A runnable giving the text of its input; see the ``Text`` component."""

    def convert(value: Any) -> str:
        if key is not None:
            if not isinstance(value, Mapping) or key not in value:
                raise ValueError(f"expected an object with the key {key!r}")
            value = value[key]
        if not isinstance(value, list | tuple):
            return text_of(value) if template is None else render(template, fields_of(value))
        return separator.join(render(template or _default(item), fields_of(item)) for item in value)

    return RunnableLambda(convert, name="text")

"""What "the same answer" means between the lean path and LangChain's: equal values, where a message's id (a run's
uuid, new on every run) is compared by its form only; and the first place two answers differ, for a problem."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from langchain_core.messages import BaseMessage
from langchain_core.prompt_values import PromptValue

_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
MAX_SHOWN = 120  # characters of a differing value a problem quotes


def comparable(value: Any) -> Any:
    """``value`` as plain data: a message as its type and fields, its id's uuids replaced by ``<uuid>``."""
    if isinstance(value, BaseMessage):
        fields = value.model_dump()
        if isinstance(fields.get("id"), str):
            fields["id"] = _UUID.sub("<uuid>", fields["id"])
        return {"<message>": type(value).__name__, **{k: comparable(v) for k, v in fields.items()}}
    if isinstance(value, PromptValue):
        return {"<prompt>": type(value).__name__, **comparable(value.model_dump())}
    if isinstance(value, Mapping):
        return {"<mapping>": type(value).__name__, **{str(k): comparable(v) for k, v in value.items()}}
    if isinstance(value, list | tuple):
        return [comparable(v) for v in value]
    return value


def difference(expected: Any, got: Any, path: str = "$") -> str | None:
    """None when ``expected`` and ``got`` are the same answer; otherwise where they first differ and how."""
    return _first(comparable(expected), comparable(got), path)


def _first(a: Any, b: Any, path: str) -> str | None:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in dict.fromkeys([*a, *b]):
            if key not in a or key not in b:
                return f"{path}: {key!r} is {'missing' if key not in b else 'extra'}"
            found = _first(a[key], b[key], f"{path}.{key}" if not key.startswith("<") else path)
            if found:
                return found
        return None
    if isinstance(a, list) and isinstance(b, list):
        for index, (x, y) in enumerate(zip(a, b, strict=False)):
            found = _first(x, y, f"{path}[{index}]")
            if found:
                return found
        return None if len(a) == len(b) else f"{path}: {len(a)} items against {len(b)}"
    if type(a) is not type(b) or a != b:
        return f"{path}: {_show(a)} against {_show(b)}"
    return None


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= MAX_SHOWN else text[: MAX_SHOWN - 1] + "…"

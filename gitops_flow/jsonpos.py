"""Where each value of a JSON text starts: JSON path -> line, so problems point at a line of the file."""

from __future__ import annotations

import bisect
import json.decoder
import re
from collections.abc import Callable

from gitops_flow.problems import json_path

_scanstring: Callable[[str, int], tuple[str, int]] = json.decoder.scanstring  # type: ignore[attr-defined]
_WS = re.compile(r"[ \t\n\r]*")
_SCALAR = re.compile(r"-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][-+]?\d+)?|true|false|null")


class LineIndex:
    """Lines of every value in a JSON text already known to parse; built once, looked up per problem."""

    def __init__(self, text: str, *, max_depth: int = 64) -> None:
        self._newlines = [m.start() for m in re.finditer("\n", text)]
        self._text = text
        self._max_depth = max_depth
        self._lines: dict[str, int] = {}
        self.duplicates: list[str] = []  # paths of keys that appear twice in one object (JSON keeps the last)
        try:
            self._value(_WS.match(text, 0).end(), [])  # type: ignore[union-attr]
        except (ValueError, IndexError, RecursionError):
            pass  # a partial index is still useful; unknown paths fall back to their nearest known parent

    def line(self, path: str) -> int | None:
        """Line of ``path``, or of its nearest ancestor that has one."""
        while path:
            if path in self._lines:
                return self._lines[path]
            cut = max(path.rfind("."), path.rfind("["))
            if cut <= 0:
                break
            path = path[:cut]
        return self._lines.get("$")

    def _line_at(self, offset: int) -> int:
        return bisect.bisect_left(self._newlines, offset) + 1

    def _value(self, pos: int, parts: list[str | int]) -> int:
        self._lines[json_path(parts)] = self._line_at(pos)
        char = self._text[pos]
        if len(parts) > self._max_depth:
            raise ValueError("too deep to index")
        if char == "{":
            return self._object(pos + 1, parts)
        if char == "[":
            return self._array(pos + 1, parts)
        if char == '"':
            return _scanstring(self._text, pos + 1)[1]
        match = _SCALAR.match(self._text, pos)
        if match is None:
            raise ValueError(f"unexpected {char!r}")
        return match.end()

    def _skip(self, pos: int) -> int:
        return _WS.match(self._text, pos).end()  # type: ignore[union-attr]

    def _object(self, pos: int, parts: list[str | int]) -> int:
        pos = self._skip(pos)
        if self._text[pos] == "}":
            return pos + 1
        keys: set[str] = set()
        while True:
            key_start = pos
            key, pos = _scanstring(self._text, pos + 1)
            if key in keys:
                self.duplicates.append(json_path([*parts, key]))
            keys.add(key)
            pos = self._skip(self._skip(pos) + 1)  # past the colon
            end = self._value(pos, [*parts, key])
            # a problem about a key (unknown, misspelt) is best shown on the key's own line
            self._lines[json_path([*parts, key])] = self._line_at(key_start)
            pos = self._skip(end)
            if self._text[pos] == "}":
                return pos + 1
            pos = self._skip(pos + 1)

    def _array(self, pos: int, parts: list[str | int]) -> int:
        pos = self._skip(pos)
        if self._text[pos] == "]":
            return pos + 1
        index = 0
        while True:
            pos = self._skip(self._value(pos, [*parts, index]))
            if self._text[pos] == "]":
                return pos + 1
            pos = self._skip(pos + 1)
            index += 1

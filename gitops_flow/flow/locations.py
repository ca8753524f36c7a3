"""Where values of a JSON text start: JSON path -> line, so problems point at a line of the file.

Only the values asked about are located. One pass over the text per batch of paths walks down those paths and
skips every other value with the standard library's C scanner, so locating the problems of a large file costs about
one reading of it, however many values it holds (an 8 MiB LangFlow export has hundreds of thousands). A caller that
asks path by path gets a full index after a couple of passes, so no way of asking costs more than a few readings.
"""

from __future__ import annotations

import bisect
import json
import json.decoder
import re
from collections.abc import Callable, Iterable
from typing import Any

from gitops_flow.problems import json_path

_scanstring: Callable[[str, int], tuple[str, int]] = json.decoder.scanstring  # type: ignore[attr-defined]
# the C scanner behind json.loads: (value, end) of the JSON value at an offset; how the walk skips a value fast
_scan_value: Callable[[str, int], tuple[Any, int]] = json.JSONDecoder().scan_once  # type: ignore[attr-defined]
_WS = re.compile(r"[ \t\n\r]*")
_SCALAR = re.compile(r"-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][-+]?\d+)?|true|false|null")
_BROKEN = (ValueError, IndexError, RecursionError, StopIteration)  # StopIteration: the C scanner found no value
_TARGETED_PASSES = 2  # then a full walk: the cost of looking up lines stays linear however they are asked for


def loads(text: str, **options: Any) -> tuple[Any, bool]:
    """``json.loads(text, **options)``, and whether some object in it repeats a key (JSON keeps the last silently)."""
    repeated = False

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        nonlocal repeated
        found = dict(items)
        if len(found) != len(items):
            repeated = True
        return found

    return json.loads(text, object_pairs_hook=pairs, **options), repeated


class LineIndex:
    """Lines of values in a JSON text already known to parse, looked up in batches (``lines``).

    ``repeated`` says whether some object repeats a key (``loads`` tells); None when unknown, and then found out
    when ``duplicates`` is first read.
    """

    def __init__(self, text: str, *, max_depth: int = 64, repeated: bool | None = None) -> None:
        self._text = text
        self._max_depth = max_depth
        self._repeated = repeated
        self._newlines: list[int] | None = None
        self._lines: dict[str, int] = {}
        self._sought: set[str] = set()
        self._complete = False  # every value's line is known (the walk that lists repeated keys was made)
        self._passes = 0  # targeted passes made so far
        self._duplicates: list[str] = []

    @property
    def duplicates(self) -> list[str]:
        """Paths of keys that appear twice in one object (JSON keeps the last), in the order of the text."""
        if self._repeated is None:
            try:
                self._repeated = loads(self._text)[1]
            except _BROKEN:
                self._repeated = True  # let the walk below find what it can
        if self._repeated and not self._complete:
            self._index_all()
        return self._duplicates

    def line(self, path: str) -> int | None:
        """Line of ``path``, or of its nearest ancestor that has one."""
        return self.lines([path])[path]

    def lines(self, paths: Iterable[str]) -> dict[str, int | None]:
        """The line of each path (or of its nearest ancestor that has one), found in one pass over the text."""
        asked = list(paths)
        new = {p for p in asked if p not in self._sought}
        if new and not self._complete:
            self._sought |= new
            self._passes += 1
            if self._passes > _TARGETED_PASSES:
                self._index_all()  # a caller asking path by path: one full walk, then every look-up is free
            else:
                try:
                    self._seek(_prefixes(new))
                except _BROKEN:
                    pass  # a partial index is still useful; unknown paths fall back to their nearest known parent
        return {path: self._nearest(path) for path in asked}

    def _nearest(self, path: str) -> int | None:
        while path:
            if path in self._lines:
                return self._lines[path]
            cut = max(path.rfind("."), path.rfind("["))
            if cut <= 0:
                break
            path = path[:cut]
        return self._lines.get("$")

    def _line_at(self, offset: int) -> int:
        if self._newlines is None:
            self._newlines = [m.start() for m in re.finditer("\n", self._text)]
        return bisect.bisect_left(self._newlines, offset) + 1

    def _skip(self, pos: int) -> int:
        return _WS.match(self._text, pos).end()  # type: ignore[union-attr]

    # -- the targeted walk: down the paths asked about, over everything else -------------------------------------

    def _seek(self, wanted: set[str]) -> None:
        self._visit(self._skip(0), "$", 0, wanted)

    def _visit(self, pos: int, path: str, depth: int, wanted: set[str]) -> int:
        """Record the line of the value at ``pos`` (whose path is ``path``); walk into it along ``wanted``."""
        self._lines[path] = self._line_at(pos)
        char = self._text[pos]
        if depth > self._max_depth or char not in "{[":
            return _scan_value(self._text, pos)[1]
        pos = self._skip(pos + 1)
        if char == "{":
            if self._text[pos] == "}":
                return pos + 1
            while True:
                key_start = pos
                key, pos = _scanstring(self._text, pos + 1)
                pos = self._skip(self._skip(pos) + 1)  # past the colon
                child = path + ("." + key if key.isidentifier() else "[" + repr(key) + "]")
                if child in wanted:
                    pos = self._visit(pos, child, depth + 1, wanted)
                    # a problem about a key (unknown, misspelt) is best shown on the key's own line
                    self._lines[child] = self._line_at(key_start)
                else:
                    pos = _scan_value(self._text, pos)[1]
                pos = self._skip(pos)
                if self._text[pos] == "}":
                    return pos + 1
                pos = self._skip(pos + 1)
        if self._text[pos] == "]":
            return pos + 1
        index = 0
        while True:
            child = f"{path}[{index}]"
            if child in wanted:
                pos = self._visit(pos, child, depth + 1, wanted)
            else:
                pos = _scan_value(self._text, pos)[1]
            pos = self._skip(pos)
            if self._text[pos] == "]":
                return pos + 1
            pos = self._skip(pos + 1)
            index += 1

    # -- the full walk: every value, for the paths of repeated keys ----------------------------------------------

    def _index_all(self) -> None:
        self._complete = True
        try:
            self._value(self._skip(0), [])
        except _BROKEN:
            pass

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

    def _object(self, pos: int, parts: list[str | int]) -> int:
        pos = self._skip(pos)
        if self._text[pos] == "}":
            return pos + 1
        keys: set[str] = set()
        while True:
            key_start = pos
            key, pos = _scanstring(self._text, pos + 1)
            if key in keys:
                self._duplicates.append(json_path([*parts, key]))
            keys.add(key)
            pos = self._skip(self._skip(pos) + 1)  # past the colon
            end = self._value(pos, [*parts, key])
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


def _prefixes(paths: Iterable[str]) -> set[str]:
    """Every path and each of its ancestors' (``$.a[0].b`` -> ``$``, ``$.a``, ``$.a[0]``, ``$.a[0].b``): the values
    the walk must enter. A cut inside a quoted key gives a string that is no path; it costs nothing."""
    found = {"$"}
    for path in paths:
        found.add(path)
        found.update(path[:i] for i, char in enumerate(path) if char in ".[" and i > 0)
    return found

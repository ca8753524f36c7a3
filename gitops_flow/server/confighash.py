"""LangServe's config hashes: a config in the URL (``/c/{config_hash}/invoke``), LZ-string compressed, and merged under
the body's config as LangServe merges them.

LangServe's playground and clients put a config in the path, compressed with LZ-string's
``compressToEncodedURIComponent`` (a JavaScript library LangServe also ships in Python). Decompressing is a loop over
the input's bits that grows a dictionary of strings; a hash of a few kilobytes can expand to many megabytes, so the
output is bounded as it is made, never after.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

MAX_HASH_CHARS = 16 * 1024  # a config hash is part of a URL: the request head bounds it further
MAX_CONFIG_CHARS = 64 * 1024  # what a hash may decompress to
_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+-$"
_VALUES = {char: index for index, char in enumerate(_ALPHABET)}


class BadConfigHash(ValueError):
    """A config hash that does not decompress to a JSON object within the bounds."""


def decode(config_hash: str) -> dict[str, Any]:
    """The config a hash holds; ``{}`` for an empty hash. Raises BadConfigHash saying what is wrong."""
    if not config_hash:
        return {}
    if len(config_hash) > MAX_HASH_CHARS:
        raise BadConfigHash(f"the config hash is longer than {MAX_HASH_CHARS:,} characters")
    text = decompress(config_hash.replace(" ", "+"), limit=MAX_CONFIG_CHARS)
    if text is None:
        raise BadConfigHash("the config hash is not LZ-string's compressToEncodedURIComponent of a config")
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        raise BadConfigHash("the config hash does not hold JSON") from None
    if not isinstance(value, dict):
        raise BadConfigHash("the config hash holds JSON that is not an object")
    return value


def merge(first: dict[str, Any], second: dict[str, Any]) -> dict[str, Any]:
    """``second`` over ``first`` as LangChain's ``merge_configs`` does it: tags joined, metadata and configurable
    merged key by key, anything else replaced."""
    merged = dict(first)
    for key, value in second.items():
        before = merged.get(key)
        if key == "tags" and isinstance(before, list) and isinstance(value, list):
            merged[key] = sorted({*map(str, before), *map(str, value)})
        elif key in ("metadata", "configurable") and isinstance(before, dict) and isinstance(value, dict):
            merged[key] = {**before, **value}
        else:
            merged[key] = value
    return merged


def decompress(text: str, *, limit: int) -> str | None:
    """LZ-string's ``decompressFromEncodedURIComponent``; None for input that is not such a string. Raises
    BadConfigHash once the output would pass ``limit`` characters."""
    values = [_VALUES.get(char, -1) for char in text]
    if any(value < 0 for value in values):
        return None
    return _decompress(len(values), 32, lambda index: values[index] if index < len(values) else 0, limit)


class _Bits:
    """The input read a bit at a time, lowest first within each 6-bit character (LZ-string's order)."""

    def __init__(self, length: int, reset: int, value_at: Callable[[int], int]) -> None:
        self.length = length
        self.reset = reset
        self.value_at = value_at
        self.value = value_at(0)
        self.position = reset
        self.index = 1

    def read(self, count: int) -> int:
        bits, power = 0, 1
        for _ in range(count):
            bit = self.value & self.position
            self.position >>= 1
            if self.position == 0:
                self.position = self.reset
                self.value = self.value_at(self.index)
                self.index += 1
            if bit:
                bits |= power
            power <<= 1
        return bits


def _decompress(length: int, reset: int, value_at: Callable[[int], int], limit: int) -> str | None:
    if length == 0:
        return None
    bits = _Bits(length, reset, value_at)
    dictionary: dict[int, str] = {0: "", 1: "", 2: ""}
    enlarge_in, size, width = 4, 4, 3
    first = bits.read(2)
    if first == 2:
        return ""
    if first not in (0, 1):
        return None
    word = chr(bits.read(8 if first == 0 else 16))
    dictionary[3] = word
    out, total = [word], 1
    while True:
        if bits.index > length:
            return None  # ran past the input without the end marker
        code = bits.read(width)
        if code in (0, 1):
            dictionary[size] = chr(bits.read(8 if code == 0 else 16))
            code, size, enlarge_in = size, size + 1, enlarge_in - 1
        elif code == 2:
            return "".join(out)
        if enlarge_in == 0:
            enlarge_in, width = 2**width, width + 1
        if code in dictionary and code > 2:
            entry = dictionary[code]
        elif code == size:
            entry = word + word[0]
        else:
            return None
        total += len(entry)
        if total > limit:
            raise BadConfigHash(f"the config hash holds more than {limit:,} characters")
        out.append(entry)
        dictionary[size] = word + entry[0]
        size += 1
        enlarge_in -= 1
        word = entry
        if enlarge_in == 0:
            enlarge_in, width = 2**width, width + 1

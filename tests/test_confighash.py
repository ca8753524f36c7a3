"""LangServe's config hashes decoded as its LZ-string encodes them, and bounded while they are decompressed."""

from __future__ import annotations

import json
import random

import pytest
from langserve.lzstring import LZString

from gitops_flow.server.confighash import MAX_CONFIG_CHARS, BadConfigHash, decode, decompress, merge


def test_every_string_lzstring_compresses_comes_back() -> None:
    rng = random.Random(15)
    alphabet = 'ab{}":,é漢 \n\t0123456789configurable'
    for _ in range(500):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 400)))
        assert decompress(LZString.compressToEncodedURIComponent(text), limit=10**6) == text


def test_a_config_comes_back_and_merges_under_the_body() -> None:
    hashed = decode(LZString.compressToEncodedURIComponent(json.dumps({"tags": ["test"], "metadata": {"a": 1}})))
    assert hashed == {"tags": ["test"], "metadata": {"a": 1}}
    merged = merge(hashed, {"tags": ["another-one"], "metadata": {"b": 2}, "run_name": "x"})
    assert merged == {"tags": ["another-one", "test"], "metadata": {"a": 1, "b": 2}, "run_name": "x"}


def test_a_hash_that_expands_past_the_bound_is_refused_while_decompressing() -> None:
    bomb = LZString.compressToEncodedURIComponent(json.dumps({"tags": ["a" * (MAX_CONFIG_CHARS * 4)]}))
    assert len(bomb) < 2_000  # a few hundred characters in the URL ...
    with pytest.raises(BadConfigHash, match="more than"):
        decode(bomb)  # ... never a quarter of a megabyte in memory


@pytest.mark.parametrize(
    "config_hash", ["1234", "not a hash!", "%%%", LZString.compressToEncodedURIComponent("[1, 2]")], ids=str
)
def test_what_is_no_config_is_refused(config_hash: str) -> None:
    with pytest.raises(BadConfigHash):
        decode(config_hash)


def test_random_text_never_crashes_the_decoder() -> None:
    rng = random.Random(7)
    letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+-$"
    for _ in range(2_000):
        text = "".join(rng.choice(letters) for _ in range(rng.randint(1, 60)))
        try:
            decode(text)
        except BadConfigHash:
            pass

"""open_store: the state URL picks the backend and the file."""

from __future__ import annotations

from pathlib import Path

import pytest

from gitops_flow.exceptions import ConfigError
from gitops_flow.stores import DEFAULT_STATE, MemoryStore, SqliteStore, open_store

DATA = Path("/srv/data")


@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("sqlite:///state.db", Path("state.db")),
        ("sqlite:///var/state.db", Path("var/state.db")),
        ("sqlite:////var/lib/gitops-flow/state.db", Path("/var/lib/gitops-flow/state.db")),
        ("sqlite://", DATA / "state.db"),
        ("sqlite:///", DATA / "state.db"),
        ("SQLite:///state.db", Path("state.db")),
        (DEFAULT_STATE, DATA / "state.db"),
    ],
    ids=["relative", "relative-folder", "absolute", "default", "empty-path", "scheme-case", "DEFAULT_STATE"],
)
def test_sqlite_urls(url: str, path: Path) -> None:
    store = open_store(url, data_dir=DATA)
    assert isinstance(store, SqliteStore)
    assert store.path == path


def test_memory_url() -> None:
    assert isinstance(open_store("memory://", data_dir=DATA), MemoryStore)


def test_the_store_comes_back_unopened(tmp_path: Path) -> None:
    open_store("sqlite://", data_dir=tmp_path / "data")
    assert not (tmp_path / "data").exists()


def test_the_clock_is_passed_on() -> None:
    store = open_store("memory://", data_dir=DATA, clock=lambda: 42.0)
    assert isinstance(store, MemoryStore)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis://localhost:6379/0", "the Redis store arrives with the scale-out release; use sqlite:///PATH"),
        ("rediss://cache:6380", "the Redis store arrives with the scale-out release"),
        ("postgres://db/state", "unknown scheme; use one of memory://, sqlite://, redis://"),
        ("state.db", "unknown scheme; use one of memory://, sqlite://, redis://"),
        ("", "unknown scheme"),
        ("sqlite://host/state.db", "names a host"),
        ("sqlite:///state.db?timeout=5", "has options"),
    ],
    ids=["redis", "rediss", "bogus-scheme", "no-scheme", "empty", "sqlite-host", "sqlite-options"],
)
def test_bad_urls(url: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("?", r"\?")):
        open_store(url, data_dir=DATA)


def test_stores_say_what_they_are(tmp_path: Path) -> None:
    assert repr(open_store("sqlite:///state.db", data_dir=DATA)) == "SqliteStore('state.db')"
    assert repr(open_store("memory://", data_dir=DATA)) == "MemoryStore(pins=0, sessions=0, versions=0)"

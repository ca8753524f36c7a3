"""open_store: the state URL picks the backend and the file."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from gitops_flow.exceptions import ConfigError
from gitops_flow.stores import DEFAULT_STATE, MemoryStore, SqliteStore, open_store
from gitops_flow.stores.redis import DEFAULT_PREFIX, RedisStore

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
        ("postgres://db/state", "unknown scheme; use one of memory://, sqlite://, redis://, rediss://"),
        ("state.db", "unknown scheme; use one of memory://, sqlite://, redis://"),
        ("", "unknown scheme"),
        ("sqlite://host/state.db", "names a host"),
        ("sqlite:///state.db?timeout=5", "has options"),
    ],
    ids=["bogus-scheme", "no-scheme", "empty", "sqlite-host", "sqlite-options"],
)
def test_bad_urls(url: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("?", r"\?")):
        open_store(url, data_dir=DATA)


def test_stores_say_what_they_are(tmp_path: Path) -> None:
    assert repr(open_store("sqlite:///state.db", data_dir=DATA)) == "SqliteStore('state.db')"
    assert repr(open_store("memory://", data_dir=DATA)) == "MemoryStore(pins=0, sessions=0, versions=0)"


@pytest.mark.parametrize(
    ("url", "shown", "prefix"),
    [
        ("redis://localhost:6379/0", "redis://localhost:6379/0", DEFAULT_PREFIX),
        ("redis://cache", "redis://cache", DEFAULT_PREFIX),
        ("redis://", "redis://", DEFAULT_PREFIX),
        ("rediss://cache.example:6380/2", "rediss://cache.example:6380/2", DEFAULT_PREFIX),
        ("Redis://cache:6379/", "redis://cache:6379/", DEFAULT_PREFIX),
        ("redis://cache:6379/0?prefix=team-a:", "redis://cache:6379/0", "team-a:"),
        ("redis://:s3cret@cache:6379/1", "redis://:***@cache:6379/1", DEFAULT_PREFIX),
        ("redis://app:s3cret@[::1]:6379/0?prefix=x%3Ay:", "redis://app:***@[::1]:6379/0", "x:y:"),
    ],
    ids=["plain", "defaults", "all-defaults", "tls", "scheme-case", "prefix", "password", "user-ipv6-quoted-prefix"],
)
def test_redis_urls(url: str, shown: str, prefix: str) -> None:
    store = open_store(url, data_dir=DATA)
    assert isinstance(store, RedisStore)
    assert store.url == shown
    assert store.prefix == prefix
    assert repr(store) == f"RedisStore({shown!r}, prefix={prefix!r})"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis://cache:port/0", "has a bad port"),
        ("redis://cache:99999/0", "has a bad port"),
        ("redis://cache:6379/zero", "names database 'zero'; a database is a number"),
        ("redis://cache:6379/0/1", "names database '0/1'"),
        ("redis://cache:6379/0?db=1", r"unknown options \['db'\]; the only one is \?prefix="),
        ("redis://cache:6379/0?prefix=", "needs exactly one non-empty"),
        ("redis://cache:6379/0?prefix=a:&prefix=b:", "needs exactly one non-empty"),
        ("redis://cache:6379/0#main", "has a fragment"),
    ],
    ids=["port-word", "port-range", "db-word", "db-path", "unknown-option", "empty-prefix", "two-prefixes", "fragment"],
)
def test_bad_redis_urls(url: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        open_store(url, data_dir=DATA)


@pytest.mark.parametrize(
    "url",
    ["redis://app:s3cret@cache:port/0", "redis://:s3cret@cache:6379/x", "reddis://app:s3cret@cache:6379/0"],
    ids=["bad-port", "bad-db", "mistyped-scheme"],
)
def test_errors_about_a_url_hide_its_password(url: str) -> None:
    with pytest.raises(ConfigError) as caught:
        open_store(url, data_dir=DATA)
    assert "s3cret" not in str(caught.value)
    assert "***@cache" in str(caught.value)


def test_without_the_redis_package_the_error_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "gitops_flow.stores.redis")
    for name in [name for name in sys.modules if name == "redis" or name.startswith("redis.")]:
        monkeypatch.setitem(sys.modules, name, None)  # what an absent package looks like to an import
    with pytest.raises(ConfigError, match=r"pip install 'gitops-flow\[redis\]'"):
        open_store("redis://cache:6379/0", data_dir=DATA)

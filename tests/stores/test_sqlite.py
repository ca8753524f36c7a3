"""SqliteStore beyond the contract: restarts, several processes on one file, and files it cannot use."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, closing
from pathlib import Path

import pytest

from gitops_flow.exceptions import StoreError
from gitops_flow.stores.sqlite import _MIGRATIONS, SCHEMA_VERSION, SqliteStore
from tests.statefile import corrupt_table, pages, query

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@asynccontextmanager
async def opened(path: Path) -> AsyncIterator[SqliteStore]:
    store = SqliteStore(path)
    await store.open()
    try:
        yield store
    finally:
        await store.close()


async def test_state_survives_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    async with opened(path) as store:
        await store.claim_pin("pin:s1", "aaa", ttl=3600)
        await store.append_turns("s1", [("human", "hi"), ("ai", "hello")], ttl=3600, keep=10)
        await store.put_version("aaa", {"sha": "aaa", "status": "ready"})
        await store.add_event({"kind": "deployed", "sha": "aaa"})
    async with opened(path) as store:
        assert await store.claim_pin("pin:s1", "bbb", ttl=3600) == "aaa"
        assert await store.load_turns("s1", 10) == [("human", "hi"), ("ai", "hello")]
        assert await store.versions() == [{"sha": "aaa", "status": "ready"}]
        assert await store.events(10) == [(1, {"kind": "deployed", "sha": "aaa"})]


async def test_the_folder_is_created(tmp_path: Path) -> None:
    async with opened(tmp_path / "a" / "b" / "state.db") as store:
        await store.ping()
    assert (tmp_path / "a" / "b" / "state.db").is_file()


async def test_two_stores_on_one_file_agree_on_pins(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    async with opened(path) as one, opened(path) as two:
        claims = [(one if n % 2 else two).claim_pin("pin:s1", f"sha{n}", ttl=60) for n in range(40)]
        results = await asyncio.gather(*claims)
        assert len(set(results)) == 1
        await one.set_pin("pin:s2", "ccc", ttl=60)
        assert await two.claim_pin("pin:s2", "ddd", ttl=60) == "ccc"
        assert await two.pinned_versions() == {results[0], "ccc"}


async def test_the_file_is_in_wal_mode_with_a_schema_version(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    async with opened(path):
        with closing(sqlite3.connect(path)) as db:
            assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
            assert db.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)


async def test_a_file_that_is_not_a_database_is_refused_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    garbage = b"this is not a database, it is a shopping list\n" * 100
    path.write_bytes(garbage)
    with pytest.raises(StoreError, match=f"the state file {path} cannot be opened: file is not a database"):
        await SqliteStore(path).open()
    assert path.read_bytes() == garbage


async def test_a_path_under_a_regular_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    path = tmp_path / "file" / "state.db"
    with pytest.raises(StoreError, match=f"the state file {path} cannot be opened") as caught:
        await SqliteStore(path).open()
    assert caught.value.retryable


async def test_a_file_from_a_newer_release_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    with closing(sqlite3.connect(path)) as db:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(StoreError, match="newer than this gitops-flow knows"):
        await SqliteStore(path).open()


async def test_errors_while_serving_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    async with opened(path) as store:
        with closing(sqlite3.connect(path)) as db:
            db.execute("DROP TABLE events")
        with pytest.raises(StoreError, match=f"the state file {path} cannot be written: no such table: events"):
            await store.add_event({"kind": "deployed"})
        with pytest.raises(StoreError, match=f"the state file {path} cannot be read: no such table: events"):
            await store.events(1)


async def test_close_twice_is_fine_and_use_after_close_is_a_bug(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "state.db")
    await store.open()
    await store.close()
    await store.close()
    with pytest.raises(AssertionError, match="open"):
        await store.ping()


async def test_a_file_of_the_first_schema_is_migrated_keeping_its_events(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    with closing(sqlite3.connect(path)) as db:
        for statement in _MIGRATIONS[0]:
            db.execute(statement)
        db.execute("INSERT INTO events (record) VALUES (?)", ('{"kind": "deployed"}',))
        db.execute("PRAGMA user_version = 1")
        db.commit()
    store = SqliteStore(path)
    await store.open()
    try:
        assert await store.events(10) == [(1, {"kind": "deployed"})]
        assert await store.add_event({"kind": "failed"}, once="failed:aaa") is True
        assert await store.add_event({"kind": "failed"}, once="failed:aaa") is False
        assert await store.claim_delivery("d-1", ttl=60) is True
    finally:
        await store.close()
    with closing(sqlite3.connect(path)) as db:
        assert db.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)


async def test_a_file_of_the_second_schema_keeps_its_conversations_and_gives_them_an_expiry(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    with closing(sqlite3.connect(path)) as db:
        for statement in (*_MIGRATIONS[0], *_MIGRATIONS[1]):
            db.execute(statement)
        db.executemany("INSERT INTO turns (session, role, text) VALUES (?, ?, ?)", [("s1", "human", "hi")] * 3)
        db.execute("PRAGMA user_version = 2")
        db.commit()
    now = [1e9]  # long before the migration ran: the conversation is live
    store = SqliteStore(path, clock=lambda: now[0])
    await store.open()
    try:
        assert await store.load_turns("s1", 10) == [("human", "hi")] * 3
        (expires,) = query(path, "SELECT expires FROM conversations WHERE session = 's1'")[0]
        now[0] = expires  # it expires like any other conversation, 30 days after the migration
        assert await store.load_turns("s1", 10) == []
    finally:
        await store.close()


async def test_a_file_of_the_fourth_schema_counts_its_conversations_against_the_quota(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    with closing(sqlite3.connect(path)) as db:
        for statement in (statement for steps in _MIGRATIONS[:4] for statement in steps):
            db.execute(statement)
        for session in ("s1", "s2"):
            db.executemany(
                "INSERT INTO turns (session, role, text) VALUES (?, ?, ?)", [(session, "human", "é" * 50)] * 3
            )
            db.execute("INSERT INTO conversations (session, expires) VALUES (?, 1e12)", (session,))
        db.execute("PRAGMA user_version = 4")
        db.commit()
    async with opened(path):
        assert query(path, "SELECT session, bytes FROM conversations ORDER BY session") == [("s1", 300), ("s2", 300)]
        assert query(path, "SELECT sessions, bytes FROM conversation_totals") == [(2, 600)]


async def test_expired_conversations_give_their_space_back_so_the_file_stops_growing(tmp_path: Path) -> None:
    """The reproduction behind the idle TTL: every conversation stayed for good. Rounds of new conversations, each
    round's expiring before the next: the file grows by the first round, then reuses what the expired ones took."""
    path = tmp_path / "state.db"
    now = [0.0]
    question = "x" * 20_000
    async with opened(path) as store:
        store._clock = lambda: now[0]  # type: ignore[attr-defined]  # the test's clock, after open (migrations)
        sizes = []
        for round_ in range(5):
            for n in range(40):
                await store.append_turns(f"r{round_}s{n}", [("human", question), ("ai", "ok")], ttl=10, keep=10)
            sizes.append(pages(path))
            now[0] += 60  # this round's conversations expire
        assert query(path, "SELECT count(DISTINCT session) FROM turns") == [(40,)]  # only the last round's left
        assert query(path, "SELECT count(*) FROM conversations") == [(40,)]
    one_round = sizes[0]
    assert max(sizes) < 2 * one_round, sizes  # without the sweep: five rounds' worth
    assert sizes[-1] - sizes[1] < one_round // 4, sizes


async def test_ping_fails_on_a_damaged_pins_table_that_session_requests_use(tmp_path: Path) -> None:
    """The reproduction: /readyz said `store ok` on a damaged file while every session request failed, because the
    readiness check read only the schema. The probe now writes where session requests write."""
    path = tmp_path / "state.db"
    async with opened(path) as store:
        for n in range(200):
            await store.claim_pin(f"chat:s{n}", "aaa", ttl=3600)
    corrupt_table(path, "pins")
    async with opened(path) as store:  # the file opens: its header and schema are intact
        assert query(path, "SELECT count(*) FROM sqlite_master")  # what the old check read
        with pytest.raises(StoreError, match="malformed"):
            await store.claim_pin("chat:new", "bbb", ttl=60)
        with pytest.raises(StoreError, match="malformed"):
            await store.ping()


async def test_processes_sharing_a_file_hear_each_others_wake_ups(tmp_path: Path) -> None:
    """Workers of one server share the file: what one publishes, every other listener reads from the table."""
    one, two = SqliteStore(tmp_path / "state.db"), SqliteStore(tmp_path / "state.db")
    await one.open()
    await two.open()
    await one.publish("before")  # published before the other listens: not heard
    heard = two.listen()
    for message in ("a", "b", "c"):
        await one.publish(message)

    async def first_three() -> list[str]:
        return [await anext(heard) for _ in range(3)]

    assert await asyncio.wait_for(first_three(), timeout=5) == ["a", "b", "c"]
    await one.close()
    await two.close()


def _write_a_lot(path: str, worker: int, rounds: int) -> None:
    """One process's share of the concurrent writes below (a module function: spawned processes import it)."""

    async def run() -> None:
        store = SqliteStore(Path(path))
        await store.open()
        for n in range(rounds):
            await store.claim_pin(f"p{worker}-{n % 7}", "sha", 60)
            await store.add_event({"worker": worker, "n": n})
            await store.add_samples(n, {"canary": {"requests": 1}}, 60)
            await store.append_turns(f"s{n % 5}", [("human", "hi")], ttl=60, keep=10)
            await store.put_version(f"{worker}-{n % 3}", {"sha": f"{worker}-{n % 3}", "n": n})
            await store.lease("fetch:g", f"g:{worker}", 10)
            await store.publish(f"{worker} {n}")
        await store.close()

    asyncio.run(run())


def test_several_processes_write_at_once_without_a_locked_database(tmp_path: Path) -> None:
    """The workers of `serve --workers N` write one file at once: WAL, BEGIN IMMEDIATE and a busy timeout make each
    writer wait its turn, so none fails with "database is locked" (a StoreError would end the process non-zero)."""
    import multiprocessing

    path, processes, rounds = tmp_path / "state.db", 4, 150
    context = multiprocessing.get_context("spawn")
    started = [context.Process(target=_write_a_lot, args=(str(path), w, rounds)) for w in range(processes)]
    for process in started:
        process.start()
    for process in started:
        process.join(120)
    assert [p.exitcode for p in started] == [0] * processes

    async def totals() -> tuple[int, dict[str, int]]:
        store = SqliteStore(path)
        await store.open()
        try:
            return len(await store.events(10_000)), await store.sum_samples("canary", 0)
        finally:
            await store.close()

    events, samples = asyncio.run(totals())
    assert events == processes * rounds
    assert samples == {"requests": processes * rounds}

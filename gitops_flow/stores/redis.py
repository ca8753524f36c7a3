"""RedisStore: the state kept in one Redis server, shared by every replica, which wake each other through pub/sub.

Every key starts with the store's prefix (``gitops-flow:`` unless the URL says ``?prefix=``). Expiry is judged by
the store's clock, whose times are kept as values or sorted-set scores and compared inside Lua scripts; real Redis
TTLs (the item's own TTL plus a day) are only a backstop, so that keys nobody comes back for disappear.

    pin:sha               hash     session key -> the sha it is pinned to
    pin:expires           zset     session key, scored by the time its pin expires
    pin:count             hash     sha -> how many pins name it (what pinned_versions reads)
    turns:<session>       list     one JSON [role, text] per turn, oldest first, at most ``keep`` of them
    conversations         zset     session, scored by the time its conversation expires
    conversations:bytes   hash     session -> the UTF-8 bytes of its turns' text (the quota's count)
    conversations:total   string   the sum of conversations:bytes
    version:record        hash     sha -> JSON record
    version:order         list     shas in the order they were first saved
    events                list     JSON events, newest first, trimmed to max_events
    events:seq            string   the number of the last event added
    once:events           zset     once key -> number of the event it added; forgotten when that event is trimmed
    delivery:<id>         string   the time the delivery's claim expires
    samples:<slot>:<key>  hash     field -> count, for one key in one time slot
    samples:slots:<key>   zset     the slots of a key, scored by their number (so a sum reads only its window)
    samples:expires:<key> hash     slot -> the time it expires
    abort:record          hash     key -> JSON record of its abort
    probe:<random>        string   ping()'s probe, deleted at once (a 60 s TTL if the delete is lost)
    wake                  channel  publish() and listen()
    lease:<name>          string   the holder of a lease (leader.py), expiring with it
    runs                  zset     run id, scored by the time it stops taking feedback
    runs:record           hash     run id -> JSON record (its flow, version, ref, user)
    scores:<flow>         hash     slot (who and which arm) -> JSON feedback score
    scores:<flow>:at      zset     slot, scored by the time its score expires
    scores:<flow>:keyof   hash     slot -> its feedback key
    scores:<flow>:keys    hash     feedback key -> how many live scores it has

The writes that must be atomic (claim_pin, append_turns, add_event with ``once``, claim_delivery, add_samples,
put_version, remember_runs, add_scores) are
Lua scripts (stores/redis_scripts.py), which Redis runs one at a time. Some scripts name keys they derive from a
prefix, which a standalone Redis (with or without replicas) allows and Redis Cluster does not.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit, urlunsplit

import orjson
from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from gitops_flow.exceptions import ConfigError, StoreError
from gitops_flow.security.redaction import redact_query
from gitops_flow.stores import redis_scripts as lua
from gitops_flow.stores.base import (
    ABORT_PREFIX,
    CONVERSATION_BYTES_KEY,
    CONVERSATION_TOTAL_KEY,
    CONVERSATIONS_KEY,
    DEFAULT_QUOTA,
    DELIVERY_PREFIX,
    EVENTS_KEY,
    LEASE_PREFIX,
    MAX_EVENTS,
    ONCE_PREFIX,
    PIN_PREFIX,
    PROBE_PREFIX,
    RUNS_KEY,
    SAMPLES_PREFIX,
    SCORES_PREFIX,
    SWEEP_CONVERSATIONS,
    TURNS_PREFIX,
    VERSION_PREFIX,
    WAKE_CHANNEL,
    ConversationQuota,
    Record,
    ScoreBounds,
    Turn,
    drain,
)
from gitops_flow.stores.events import DeployEvent

log = logging.getLogger("gitops_flow.stores")

_Arg = str | int | bytes  # what a script's ARGV takes

DEFAULT_PREFIX = "gitops-flow:"
CONNECT_TIMEOUT = 3.0  # seconds to open a connection: a dead Redis fails fast instead of hanging a request
TIMEOUT = 5.0  # seconds to wait for an answer
_HEALTH_CHECK = 30  # seconds a pooled connection may sit idle before it is pinged before use
_BACKSTOP = 86_400.0  # seconds a key outlives its own TTL before Redis drops it
_PIN_SWEEP = 16  # expired pins each pin write removes, so the pin hash stays small without a sweeper
_SWEEP_BATCH = 1_000  # expired pins pinned_versions removes per script run, so no run blocks Redis for long
_LISTEN_WAIT = 1.0  # seconds the wake-up reader waits for a message before checking on its connection
_RECONNECT_FIRST, _RECONNECT_MAX = 0.1, 5.0  # seconds between attempts to listen again after losing Redis

_PINS = PIN_PREFIX + "sha"
_PIN_EXPIRES = PIN_PREFIX + "expires"
_PIN_COUNT = PIN_PREFIX + "count"
_VERSION_RECORD = VERSION_PREFIX + "record"
_VERSION_ORDER = VERSION_PREFIX + "order"
_EVENTS_SEQ = EVENTS_KEY + ":seq"
_EVENTS_ONCE = ONCE_PREFIX + "events"
_SLOTS = SAMPLES_PREFIX + "slots:"  # neither these nor _EXPIRES are ever a slot's key: those go on with a number
_EXPIRES = SAMPLES_PREFIX + "expires:"
_SAMPLE_SWEEP = 4  # expired slots each write of a key removes (a write opens at most one new slot)
_ABORTS = ABORT_PREFIX + "record"
_RUN_RECORDS = RUNS_KEY + ":record"
_READ_BATCH = 1_000  # scores read per command


class RedisStore:
    """A StateStore in one Redis server (``redis://`` or ``rediss://`` for TLS), for several replicas.

    One connection pool per store, plus one connection subscribed to the wake-up channel from ``open()`` to
    ``close()``. No command is retried by the client: a write whose answer was lost may have happened, so the
    StoreError goes to the caller, who knows whether trying again is safe. Every Redis or socket error becomes a
    StoreError naming the server, never its password.
    """

    def __init__(
        self,
        url: str,
        *,
        prefix: str = DEFAULT_PREFIX,
        clock: Callable[[], float] = time.time,
        max_events: int = MAX_EVENTS,
        connect_timeout: float = CONNECT_TIMEOUT,
        timeout: float = TIMEOUT,
        client_name: str = "gitops-flow",
    ) -> None:
        parts = urlsplit(url)
        self._password = unquote(parts.password or "")
        self.url = _without_password(url)
        self.prefix = prefix
        self._clock = clock
        self._max_events = max_events
        self._timeout = timeout
        try:
            self._redis = Redis.from_url(
                url,
                socket_connect_timeout=connect_timeout,
                socket_timeout=timeout,
                health_check_interval=_HEALTH_CHECK,
                retry=Retry(NoBackoff(), 0),
                client_name=client_name,
            )
        except ValueError as exc:
            raise ConfigError(self._redact(f"state URL {self.url!r} is not a Redis URL: {exc}")) from None
        load = self._redis.register_script  # run by EVALSHA; loaded into Redis whenever it is missing there
        self._claim_pin, self._set_pin, self._drop_pin = load(lua.CLAIM_PIN), load(lua.SET_PIN), load(lua.DROP_PIN)
        self._pinned, self._put_version = load(lua.PINNED), load(lua.PUT_VERSION)
        self._add_event, self._claim_delivery = load(lua.ADD_EVENT), load(lua.CLAIM_DELIVERY)
        self._add_samples, self._sum_samples = load(lua.ADD_SAMPLES), load(lua.SUM_SAMPLES)
        self._append_turns, self._events_page = load(lua.APPEND_TURNS), load(lua.EVENTS_PAGE)
        self._lease, self._release = load(lua.LEASE), load(lua.RELEASE)
        self._remember_runs, self._answered = load(lua.REMEMBER_RUNS), load(lua.ANSWERED_MANY)
        self._add_scores = load(lua.ADD_SCORES)
        self._listeners: set[asyncio.Queue[str | None]] = set()
        self._reader: asyncio.Task[None] | None = None
        self._closed = False

    @classmethod
    def from_url(cls, url: str, *, clock: Callable[[], float] = time.time) -> RedisStore:
        """The store a state URL names: ``redis[s]://[[USER]:PASSWORD@]HOST[:PORT][/DB][?prefix=PREFIX]``.

        Host, port and database default to localhost, 6379 and 0. Raises ConfigError naming what is wrong.
        """
        shown = _without_password(url)
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in ("redis", "rediss"):
            raise ConfigError(f"state URL {shown!r} is not redis:// or rediss://")
        try:
            parts.port  # noqa: B018 -- urlsplit checks the port only when asked for it
        except ValueError:
            raise ConfigError(f"state URL {shown!r} has a bad port; write redis://HOST:PORT/DB") from None
        if parts.path not in ("", "/") and not parts.path[1:].isdigit():
            raise ConfigError(f"state URL {shown!r} names database {parts.path[1:]!r}; a database is a number")
        if parts.fragment:
            raise ConfigError(f"state URL {shown!r} has a fragment (#...); drop it")
        options = parse_qs(parts.query, keep_blank_values=True)
        unknown = sorted(set(options) - {"prefix"})
        if unknown:
            raise ConfigError(f"state URL {shown!r} has unknown options {unknown}; the only one is ?prefix=")
        prefixes = options.get("prefix", [DEFAULT_PREFIX])
        if len(prefixes) != 1 or not prefixes[0]:
            raise ConfigError(f"state URL {shown!r} needs exactly one non-empty ?prefix=")
        plain = f"{scheme}://{parts.netloc}{parts.path}"
        return cls(plain, prefix=prefixes[0], clock=clock)

    def __repr__(self) -> str:
        return f"RedisStore({self.url!r}, prefix={self.prefix!r})"

    async def open(self) -> None:
        """Ping the server and subscribe to the wake-up channel; StoreError with the reason when that fails."""
        assert self._reader is None, "the store is already open"
        with self._errors("be reached"):
            try:
                await self._redis.ping()
                pubsub = await self._subscribe()
            except BaseException:
                await self._redis.aclose()
                raise
        self._reader = asyncio.create_task(self._relay(pubsub), name=f"wake-ups from {self.url}")

    async def close(self) -> None:
        self._closed = True
        if self._reader is not None:
            self._reader.cancel()
            with suppress(asyncio.CancelledError):
                await self._reader
        for queue in self._listeners:
            queue.put_nowait(None)
        self._listeners.clear()
        with self._errors("close its connections"):
            await self._redis.aclose()

    async def ping(self) -> None:
        key, token = self._key(PROBE_PREFIX + secrets.token_hex(8)), secrets.token_hex(8)
        with self._errors("write and read a probe"):
            async with self._redis.pipeline(transaction=True) as transaction:
                transaction.set(key, token, px=60_000)
                transaction.get(key)
                transaction.delete(key)
                _, read, _ = await transaction.execute()
        if read is None or _text(read) != token:
            raise StoreError(f"Redis at {self.url} gave back something else than the probe written to it")

    async def claim_pin(self, key: str, sha: str, ttl: float) -> str:
        now = self._clock()
        args: list[_Arg] = [key, sha, _number(now), _number(now + ttl), _backstop_ms(ttl), _PIN_SWEEP]
        with self._errors("claim a session pin"):
            pinned = await self._claim_pin(keys=self._pin_keys(), args=args)
        return _text(pinned)

    async def set_pin(self, key: str, sha: str, ttl: float) -> None:
        now = self._clock()
        args: list[_Arg] = [key, sha, _number(now), _number(now + ttl), _backstop_ms(ttl), _PIN_SWEEP]
        with self._errors("set a session pin"):
            await self._set_pin(keys=self._pin_keys(), args=args)

    async def drop_pin(self, key: str) -> None:
        with self._errors("drop a session pin"):
            await self._drop_pin(keys=self._pin_keys(), args=[key])

    async def pinned_versions(self) -> set[str]:
        with self._errors("list pinned versions"):
            while True:  # each run sweeps a batch of expired pins; the last one finds none left and answers
                shas = await self._pinned(keys=self._pin_keys(), args=[_number(self._clock()), _SWEEP_BATCH])
                if shas is not None:
                    return {_text(sha) for sha in shas}

    async def load_turns(self, session_id: str, limit: int) -> list[Turn]:
        if limit < 1:
            return []
        with self._errors("load a conversation"):
            async with self._redis.pipeline(transaction=True) as transaction:
                transaction.zscore(self._key(CONVERSATIONS_KEY), session_id)
                transaction.lrange(self._key(TURNS_PREFIX + session_id), -limit, -1)
                expires, rows = await transaction.execute()
        if expires is not None and float(expires) <= self._clock():
            return []
        return [(role, text) for role, text in map(orjson.loads, rows)]

    async def append_turns(
        self, session_id: str, turns: Sequence[Turn], *, ttl: float, keep: int, quota: ConversationQuota = DEFAULT_QUOTA
    ) -> None:
        assert keep >= 1, "a conversation keeps at least its last turn"
        if not turns:
            return
        now = self._clock()
        keys = [self._key(TURNS_PREFIX + session_id), self._key(CONVERSATIONS_KEY)]
        keys += [self._key(CONVERSATION_BYTES_KEY), self._key(CONVERSATION_TOTAL_KEY)]
        args: list[_Arg] = [_number(now), _number(now + ttl), _backstop_ms(ttl), keep, SWEEP_CONVERSATIONS]
        args += [self._key(TURNS_PREFIX), session_id, quota.max_sessions, quota.max_bytes]
        args += [orjson.dumps([role, text]) for role, text in turns]
        with self._errors("save a conversation"):
            await self._append_turns(keys=keys, args=args)

    async def put_version(self, sha: str, record: Record) -> None:
        keys = [self._key(_VERSION_RECORD), self._key(_VERSION_ORDER)]
        with self._errors("save a version"):
            await self._put_version(keys=keys, args=[sha, orjson.dumps(record)])

    async def versions(self) -> list[Record]:
        with self._errors("read versions"):
            async with self._redis.pipeline(transaction=True) as transaction:
                transaction.lrange(self._key(_VERSION_ORDER), 0, -1)
                transaction.hgetall(self._key(_VERSION_RECORD))
                order, records = await transaction.execute()
        return [orjson.loads(records[sha]) for sha in order]

    async def add_event(self, event: DeployEvent, *, once: str | None = None) -> bool:
        keys = [self._key(EVENTS_KEY), self._key(_EVENTS_SEQ), self._key(_EVENTS_ONCE)]
        args: list[_Arg] = [orjson.dumps(event), self._max_events, "0" if once is None else "1", once or ""]
        with self._errors("add an event"):
            return bool(await self._add_event(keys=keys, args=args))

    async def events(self, limit: int, *, before: int | None = None) -> list[tuple[int, DeployEvent]]:
        if limit < 1:
            return []
        keys = [self._key(EVENTS_KEY), self._key(_EVENTS_SEQ)]
        with self._errors("read events"):
            newest, rows = await self._events_page(keys=keys, args=[limit, "" if before is None else before])
        skip = 0 if before is None else max(int(newest) - before + 1, 0)
        return [(int(newest) - skip - i, orjson.loads(row)) for i, row in enumerate(rows)]

    async def claim_delivery(self, delivery_id: str, ttl: float) -> bool:
        now = self._clock()
        args: list[_Arg] = [_number(now), _number(now + ttl), _backstop_ms(ttl)]
        with self._errors("claim a webhook delivery"):
            return bool(await self._claim_delivery(keys=[self._key(DELIVERY_PREFIX + delivery_id)], args=args))

    async def add_samples(self, slot: int, counts: Mapping[str, Mapping[str, int]], ttl: float) -> None:
        now = self._clock()
        prefix = self._key(SAMPLES_PREFIX)
        args: list[_Arg] = [_number(now), slot, _number(now + ttl), _backstop_ms(ttl), prefix, _SAMPLE_SWEEP]
        for key, fields in counts.items():
            if fields:
                args += [key, len(fields)]
                for field, count in fields.items():
                    args += [field, int(count)]  # redis-py refuses a bool, which is an int here
        if len(args) > 6:
            with self._errors("add samples"):
                await self._add_samples(args=args)

    async def sum_samples(self, key: str, since: int) -> dict[str, int]:
        args: list[_Arg] = [_number(self._clock()), since, self._key(SAMPLES_PREFIX), key]
        with self._errors("sum samples"):
            flat = await self._sum_samples(keys=[self._key(_SLOTS + key), self._key(_EXPIRES + key)], args=args)
        return {_text(flat[n]): int(flat[n + 1]) for n in range(0, len(flat), 2)}

    async def abort(self, key: str, record: Record) -> bool:
        with self._errors("record an abort"):
            return bool(await self._redis.hsetnx(self._key(_ABORTS), key, orjson.dumps(record)))

    async def aborts(self) -> dict[str, Record]:
        with self._errors("read aborts"):
            rows = await self._redis.hgetall(self._key(_ABORTS))
        return {_text(key): orjson.loads(record) for key, record in rows.items()}

    async def drop_abort(self, key: str) -> None:
        with self._errors("drop an abort"):
            await self._redis.hdel(self._key(_ABORTS), key)

    async def publish(self, message: str) -> None:
        with self._errors("publish a wake-up"):
            await self._redis.publish(self._key(WAKE_CHANNEL), message)

    async def lease(self, name: str, holder: str, ttl: float) -> bool:
        # a lease is judged by Redis's clock (PX), not the store's: holders on several machines share no clock
        with self._errors("take a lease"):
            return bool(
                await self._lease(keys=[self._key(LEASE_PREFIX + name)], args=[holder, max(1, int(ttl * 1000))])
            )

    async def release(self, name: str, holder: str) -> None:
        with self._errors("release a lease"):
            await self._release(keys=[self._key(LEASE_PREFIX + name)], args=[holder])

    async def remember_runs(self, runs: Sequence[tuple[str, Record]], *, ttl: float, max_runs: int) -> None:
        if not runs:
            return
        now = self._clock()
        args: list[_Arg] = [_number(now), max_runs, _backstop_ms(ttl)]
        for run_id, record in runs:
            args += [run_id, _number(now + ttl), orjson.dumps(record)]
        with self._errors("remember runs"):
            await self._remember_runs(keys=[self._key(RUNS_KEY), self._key(_RUN_RECORDS)], args=args)

    async def answered(self, run_id: str) -> Record | None:
        return (await self.answered_many([run_id])).get(run_id)

    async def answered_many(self, run_ids: Sequence[str]) -> dict[str, Record]:
        if not run_ids:
            return {}
        keys = [self._key(RUNS_KEY), self._key(_RUN_RECORDS)]
        with self._errors("read runs"):
            found = await self._answered(keys=keys, args=[_number(self._clock()), *run_ids])
        return {run_id: orjson.loads(data) for run_id, data in zip(run_ids, found, strict=True) if data}

    async def add_score(self, flow: str, key: str, slot: str, record: Record, bounds: ScoreBounds) -> bool:
        return (await self.add_scores(flow, [(key, slot, record)], bounds))[0]

    async def add_scores(self, flow: str, scores: Sequence[tuple[str, str, Record]], bounds: ScoreBounds) -> list[bool]:
        if not scores:
            return []
        now = self._clock()
        args: list[_Arg] = [_number(now), bounds.max_keys, bounds.max_scores, _backstop_ms(bounds.ttl)]
        for key, slot, record in scores:
            args += [key, slot, orjson.dumps(record), _number(now + bounds.ttl)]
        with self._errors("keep scores"):
            kept = await self._add_scores(keys=self._score_keys(flow), args=args)
        return [bool(k) for k in kept]

    async def scores(self, flow: str) -> list[Record]:
        data, at = self._score_keys(flow)[:2]
        found: list[Record] = []
        with self._errors("read scores"):
            slots: list[Any] = list(await self._redis.zrangebyscore(at, f"({_number(self._clock())}", "+inf"))
            for start in range(0, len(slots), _READ_BATCH):
                values = await self._redis.hmget(data, slots[start : start + _READ_BATCH])
                found += [orjson.loads(value) for value in values if value is not None]
        return found

    def _score_keys(self, flow: str) -> list[str]:
        base = self._key(SCORES_PREFIX + flow)
        return [base, base + ":at", base + ":keyof", base + ":keys"]

    def listen(self) -> AsyncIterator[str]:
        """Every message published on this Redis after this call (and after ``open()``), in order, until the store
        closes; this store's own included. The subscription is made in ``open()``, so none is missed for want of
        it. While the connection is lost and being made again, messages are missed: a wake-up is a nudge, and a
        replica that misses one learns of the change at its next poll."""
        queue: asyncio.Queue[str | None] = asyncio.Queue()
        if self._closed:
            queue.put_nowait(None)
        else:
            self._listeners.add(queue)
        return drain(queue, self._listeners)

    def _key(self, name: str) -> str:
        return self.prefix + name

    def _pin_keys(self) -> list[str]:
        return [self._key(_PINS), self._key(_PIN_EXPIRES), self._key(_PIN_COUNT)]

    def _redact(self, text: str) -> str:
        if self._password:
            text = text.replace(self._password, "***").replace(quote(self._password, safe=""), "***")
        return text

    @contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        """The one place Redis and socket errors become StoreError; ``from None``, as their text is not ours."""
        try:
            yield
        except (RedisError, OSError) as exc:
            reason = str(exc) or type(exc).__name__
            raise StoreError(self._redact(f"Redis at {self.url} could not {what}: {reason}")) from None

    async def _subscribe(self) -> PubSub:
        """A connection subscribed to the wake-up channel, returned once Redis has confirmed the subscription."""
        pubsub = self._redis.pubsub()
        try:
            await pubsub.subscribe(self._key(WAKE_CHANNEL))
            loop = asyncio.get_running_loop()
            deadline = loop.time() + self._timeout
            # the confirmation comes first on this connection (a health-check reply may come before it, as None)
            while True:
                message = await pubsub.get_message(timeout=max(deadline - loop.time(), 0.0))
                if message is not None and message["type"] == "subscribe":
                    break
                if loop.time() >= deadline:
                    raise StoreError(f"Redis at {self.url} did not confirm the subscription in {self._timeout} s")
        except BaseException:
            await pubsub.aclose()  # type: ignore[no-untyped-call, unused-ignore]  # unannotated before redis-py 8.2
            raise
        return pubsub

    async def _relay(self, pubsub: PubSub | None) -> None:
        """Hand every wake-up to every listener until the store closes; a lost connection is logged and made again
        with backoff, never raised, since the callers of listen() would only stop hearing wake-ups."""
        delay = _RECONNECT_FIRST
        try:
            while True:
                try:
                    if pubsub is None:
                        pubsub = await self._subscribe()
                        log.warning("listening for wake-ups on Redis at %s again", self.url)
                        delay = _RECONNECT_FIRST
                    message = await pubsub.get_message(timeout=_LISTEN_WAIT)
                except (RedisError, OSError, StoreError) as exc:
                    reason = self._redact(str(exc) or type(exc).__name__)
                    log.warning(
                        "lost the wake-up channel on Redis at %s (%s); retrying in %.1f s", self.url, reason, delay
                    )
                    if pubsub is not None:
                        await _close_quietly(pubsub)
                        pubsub = None
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, _RECONNECT_MAX)
                    continue
                if message is not None and message["type"] == "message":
                    text = _text(message["data"])
                    for queue in self._listeners:
                        queue.put_nowait(text)
        finally:
            if pubsub is not None:
                await _close_quietly(pubsub)


async def _close_quietly(pubsub: PubSub) -> None:
    with suppress(RedisError, OSError):
        await pubsub.aclose()  # type: ignore[no-untyped-call, unused-ignore]  # unannotated before redis-py 8.2


def _without_password(url: str) -> str:
    """``redis://user:secret@host/0`` -> ``redis://user:***@host/0``, for messages and repr; a query parameter named
    like a secret (``?password=``, a mistake the URL check refuses) is masked too."""
    parts = urlsplit(url)
    if parts.password is None:
        return redact_query(url)
    user, _, host = parts.netloc.rpartition("@")
    name = user.partition(":")[0]
    return redact_query(urlunsplit(parts._replace(netloc=f"{name}:***@{host}")))


def _number(value: float) -> str:
    """A time as Lua's tonumber and Redis's scores read it back exactly."""
    return repr(float(value))


def _backstop_ms(ttl: float) -> int:
    return int((ttl + _BACKSTOP) * 1000)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)

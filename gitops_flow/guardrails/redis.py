"""The guardrails' state in Redis, shared by every replica: rates through the ``limits`` library (its Lua scripts, on
our connection pool), runs at once, token windows and cached answers through scripts of our own.

Keys start with the state URL's prefix (``gitops-flow:`` unless ``?prefix=``), then:

    limits:{LIMITER/...}   the ``limits`` library's counters (sliding windows of requests)
    runs:<key>             zset   lease -> the time it expires (a run at once)
    spent:<key>/<w>/<n>    string the tokens spent in window n of w seconds (expires as the window ends)
    cache:<key>            string a cached answer, with its TTL
    cache:index            zset   cached answer's key -> the time it expires (the bounds evict the soonest first)
    cache:sizes            hash   cached answer's key -> its bytes
    cache:bytes            string the bytes of every cached answer
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

from limits import RateLimitItemPerSecond
from limits.aio.storage import RedisStorage
from limits.aio.strategies import SlidingWindowCounterRateLimiter
from limits.errors import StorageError
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from gitops_flow.exceptions import StoreError
from gitops_flow.guardrails.counters import MIN_WAIT, Reserved, Window, window_at
from gitops_flow.security.redaction import redact

DEFAULT_PREFIX = "gitops-flow:"  # the state store's: the guardrails' keys sit beside its keys
CONNECT_TIMEOUT = 3.0
TIMEOUT = 2.0  # seconds: a limit check or a cache read waits no longer for Redis
_BACKSTOP_MS = 86_400_000  # a runs key outlives its last lease by a day at most
_SWEEP = 16  # expired cached answers each write takes out of the index (more than it adds)

# KEYS: runs:<key>. ARGV: now, expires, limit, lease, backstop ms
_ACQUIRE = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return 1
"""
# KEYS: spent:<key>/<window>/<slot>. ARGV: budget, amount, ms until the key expires. The read and the add in one
# script: no replica reserves between them.
# the `limits` library's sliding window counter (its acquire_sliding_window.lua, amount 1), for several keys in one
# call: KEYS previous and current window of each key in turn; ARGV limit, expiry (s). Returns 1 (counted) or 0 each.
_HIT_MANY = """
local limit, expiry = tonumber(ARGV[1]), tonumber(ARGV[2]) * 1000
local counted = {}
for i = 1, #KEYS, 2 do
  local previous, current = KEYS[i], KEYS[i + 1]
  local current_ttl = tonumber(redis.call('pttl', current))
  if current_ttl > 0 and current_ttl < expiry then
    redis.call('rename', current, previous)
    redis.call('set', current, 0, 'PX', current_ttl + expiry)
  end
  local previous_count = tonumber(redis.call('get', previous)) or 0
  local previous_ttl = tonumber(redis.call('pttl', previous)) or 0
  local current_count = tonumber(redis.call('get', current)) or 0
  current_ttl = tonumber(redis.call('pttl', current)) or 0
  if previous_ttl <= 0 then previous_ttl = 0 end
  if current_ttl <= 0 then current_ttl = 0 end
  local weighted = math.floor(previous_count * previous_ttl / expiry) + current_count
  if weighted + 1 > limit then
    counted[#counted + 1] = 0
  else
    if redis.call('exists', current) == 1 then
      redis.call('incrby', current, 1)
    else
      redis.call('set', current, 1, 'PX', expiry * 2)
    end
    counted[#counted + 1] = 1
  end
end
return counted
"""
_RESERVE = """
if tonumber(redis.call('GET', KEYS[1]) or '0') >= tonumber(ARGV[1]) then return 0 end
redis.call('INCRBY', KEYS[1], ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
"""
# KEYS: spent:<key>/<window>/<slot>. ARGV: amount (negative: a refund), ms until the key expires
_ADJUST = """
if redis.call('INCRBY', KEYS[1], ARGV[1]) < 0 then redis.call('SET', KEYS[1], '0') end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
"""
_SKEW_MS = 5_000  # a window's key outlives its end by this much: replicas' clocks differ a little
# KEYS: cache:<key>, cache:index, cache:sizes, cache:bytes. ARGV: value, ttl ms, expires, now, max entries,
# max bytes, sweep limit. Expired entries leave the index (a few per call), then the soonest to expire go while the
# entries or their bytes are past the bounds.
_PUT = """
local entry, index, sizes, total = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local function drop(key)
  local size = redis.call('HGET', sizes, key)
  if size then
    redis.call('DECRBY', total, size)
    redis.call('HDEL', sizes, key)
  end
  redis.call('ZREM', index, key)
  redis.call('DEL', key)
end
for _, key in ipairs(redis.call('ZRANGEBYSCORE', index, '-inf', ARGV[4], 'LIMIT', 0, tonumber(ARGV[7]))) do
  drop(key)
end
drop(entry)
redis.call('SET', entry, ARGV[1], 'PX', ARGV[2])
redis.call('ZADD', index, ARGV[3], entry)
redis.call('HSET', sizes, entry, #ARGV[1])
local bytes = redis.call('INCRBY', total, #ARGV[1])
while redis.call('ZCARD', index) > tonumber(ARGV[5]) or bytes > tonumber(ARGV[6]) do
  local first = redis.call('ZRANGE', index, 0, 0)[1]
  if not first then break end
  drop(first)
  bytes = tonumber(redis.call('GET', total) or '0')
end
"""


class RedisGuardrails:
    """One connection pool to the state's Redis for the counters and the cache (``redis[s]://…[?prefix=]``)."""

    def __init__(self, url: str, *, clock: Callable[[], float] = time.time, cache_max_bytes: int = 64 << 20) -> None:
        parts = urlsplit(url)
        self._password = unquote(parts.password or "")
        self.shown = redact(url)
        prefix = parse_qs(parts.query).get("prefix", [DEFAULT_PREFIX])[0]
        plain = f"{parts.scheme}://{parts.netloc}{parts.path}"
        self.client = Redis.from_url(
            plain,
            socket_connect_timeout=CONNECT_TIMEOUT,
            socket_timeout=TIMEOUT,
            retry=Retry(NoBackoff(), 0),
            client_name="gitops-flow-guardrails",
        )
        storage = RedisStorage(
            f"async+{plain}",
            implementation="redispy",
            key_prefix=prefix + "limits",
            connection_pool=self.client.connection_pool,  # type: ignore[arg-type]  # typed for scalars only
            wrap_exceptions=True,
        )
        self.counters = RedisCounters(self, storage, prefix, clock)
        self.cache = RedisCache(self, prefix, clock, cache_max_bytes)

    def __repr__(self) -> str:
        return f"RedisGuardrails({self.shown!r})"

    async def close(self) -> None:
        with self.errors("close its connections"):
            await self.client.aclose()

    @contextmanager
    def errors(self, what: str) -> Iterator[None]:
        """Redis's and the ``limits`` library's errors become StoreError, without the password."""
        try:
            yield
        except (RedisError, OSError, StorageError) as exc:
            reason = str(exc) or type(exc).__name__
            if self._password:
                reason = reason.replace(self._password, "***").replace(quote(self._password, safe=""), "***")
            raise StoreError(f"Redis at {self.shown} could not {what}: {reason}") from None


class RedisCounters:
    """The Counters of every replica sharing a Redis."""

    def __init__(self, owner: RedisGuardrails, storage: RedisStorage, prefix: str, clock: Callable[[], float]):
        self._owner = owner
        self._limits = prefix + "limits:"  # the key prefix the library's storage is given (RedisGuardrails)
        self._hit_many = owner.client.register_script(_HIT_MANY)
        self._rates = SlidingWindowCounterRateLimiter(storage)
        self._runs = prefix + "runs:"
        self._spent = prefix + "spent:"
        self._clock = clock
        self._acquire = owner.client.register_script(_ACQUIRE)
        self._reserve = owner.client.register_script(_RESERVE)
        self._adjust = owner.client.register_script(_ADJUST)

    def __repr__(self) -> str:
        return f"RedisCounters({self._owner.shown!r})"

    async def open(self) -> None:
        with self._owner.errors("be reached"):
            await self._owner.client.ping()

    async def close(self) -> None:
        await self._owner.close()

    async def hit(self, key: str, window: Window) -> float | None:
        item = RateLimitItemPerSecond(window.amount, window.seconds)
        with self._owner.errors("count a request"):
            if await self._rates.hit(item, key):
                return None
            stats = await self._rates.get_window_stats(item, key)
        # the library's estimate of when a place frees may round to now; a refusal always asks for some wait
        return max(stats.reset_time - time.time(), MIN_WAIT)

    async def hit_many(self, keys: Sequence[str], window: Window) -> list[float | None]:
        """One script for every key, counting as ``hit`` does on the library's own keys (a key's window is
        ``{<prefix>limits:<item key>}`` and its previous one ``.../-1``, as the library names them), so a key hit
        one way or the other counts once; the wait of a refused hit comes from the library, as ``hit``'s does."""
        if not keys:
            return []
        item = RateLimitItemPerSecond(window.amount, window.seconds)
        names: list[str] = []
        for key in keys:
            current = f"{{{item.key_for(key)}}}"
            names += [f"{self._limits}{current}/-1", f"{self._limits}{current}"]
        with self._owner.errors("count requests"):
            counted = await self._hit_many(keys=names, args=[item.amount, item.get_expiry()])
            answers: list[float | None] = []
            for key, ok in zip(keys, counted, strict=True):
                if ok:
                    answers.append(None)
                    continue
                stats = await self._rates.get_window_stats(item, key)
                answers.append(max(stats.reset_time - time.time(), MIN_WAIT))
        return answers

    async def acquire(self, key: str, limit: int, lease: str, ttl: float) -> bool:
        now = self._clock()
        args: list[Any] = [repr(now), repr(now + ttl), limit, lease, int(ttl * 1000) + _BACKSTOP_MS]
        with self._owner.errors("hold a run"):
            return bool(await self._acquire(keys=[self._runs + key], args=args))

    async def release(self, key: str, lease: str) -> None:
        with self._owner.errors("release a run"):
            await self._owner.client.zrem(self._runs + key, lease)

    async def spent(self, key: str, window: float) -> tuple[int, float]:
        slot, left = window_at(self._clock(), window)
        with self._owner.errors("read a token budget"):
            used = await self._owner.client.get(self._window(key, window, slot))
        return int(used or 0), left

    async def reserve(self, key: str, budget: int, window: float, amount: int) -> Reserved | float:
        slot, left = window_at(self._clock(), window)
        args: list[Any] = [budget, amount, _expiry(left)]
        with self._owner.errors("reserve tokens"):
            reserved = await self._reserve(keys=[self._window(key, window, slot)], args=args)
        return Reserved(slot) if reserved else left

    async def adjust(self, key: str, window: float, slot: int, amount: int) -> None:
        current, left = window_at(self._clock(), window)
        if slot < current:  # that window ended: a refund has nothing to take from, a charge counts now
            if amount <= 0:
                return
            slot = current
        if amount != 0:
            with self._owner.errors("count tokens"):
                await self._adjust(keys=[self._window(key, window, slot)], args=[amount, _expiry(left)])

    def _window(self, key: str, window: float, slot: int) -> str:
        return f"{self._spent}{key}/{window:g}/{slot}"


def _expiry(left: float) -> int:
    """Milliseconds a window's key lives: until the window ends, and a little longer (replicas' clocks differ)."""
    return int(left * 1000) + _SKEW_MS


class RedisCache:
    """Cached answers in Redis, at most ``max_entries`` of them and ``max_bytes`` in all, for every replica together
    (those nearest their expiry go first)."""

    def __init__(self, owner: RedisGuardrails, prefix: str, clock: Callable[[], float], max_bytes: int) -> None:
        self._owner = owner
        self._entries = prefix + "cache:"
        # never an entry's key: those go on with a flow name and a colon
        self._keys = [prefix + "cache:index", prefix + "cache:sizes", prefix + "cache:bytes"]
        self._clock = clock
        self.max_bytes = max_bytes
        self._put = owner.client.register_script(_PUT)

    def __repr__(self) -> str:
        return f"RedisCache({self._owner.shown!r})"

    async def get(self, key: str) -> bytes | None:
        with self._owner.errors("read a cached answer"):
            value = await self._owner.client.get(self._entries + key)
        return value.encode() if isinstance(value, str) else value

    async def put(self, key: str, value: bytes, ttl: float, max_entries: int) -> None:
        now = self._clock()
        ms = max(1, int(ttl * 1000))
        args: list[Any] = [value, ms, repr(now + ttl), repr(now), max_entries, self.max_bytes, _SWEEP]
        with self._owner.errors("keep a cached answer"):
            await self._put(keys=[self._entries + key, *self._keys], args=args)

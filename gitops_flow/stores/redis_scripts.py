"""The Lua scripts of the Redis store: the writes that must be atomic across replicas, which Redis runs one at a time.

Times are the store's clock, passed in ARGV as text; a script compares them with tonumber, so expiry is judged by
that clock and never by Redis's. Redis TTLs set here ("backstop ms") only make keys nobody comes back for go away.
"""

from __future__ import annotations

# KEYS: pin:sha, pin:expires, pin:count. Helpers shared by the pin scripts below.
_PIN_LUA = """
local pins, expiries, counts = KEYS[1], KEYS[2], KEYS[3]
local function uncount(sha)
  if redis.call('HINCRBY', counts, sha, -1) <= 0 then redis.call('HDEL', counts, sha) end
end
local function unpin(key)
  local old = redis.call('HGET', pins, key)
  if old then
    redis.call('HDEL', pins, key)
    uncount(old)
  end
  redis.call('ZREM', expiries, key)
end
local function sweep(now, limit)
  local expired = redis.call('ZRANGEBYSCORE', expiries, '-inf', now, 'LIMIT', 0, limit)
  for _, key in ipairs(expired) do unpin(key) end
  return #expired
end
local function live(key, now)
  local expires = redis.call('ZSCORE', expiries, key)
  if expires and tonumber(expires) > tonumber(now) then return redis.call('HGET', pins, key) end
  return false
end
local function pin(key, sha, expires, backstop)
  local old = redis.call('HGET', pins, key)
  if old ~= sha then
    if old then uncount(old) end
    redis.call('HSET', pins, key, sha)
    redis.call('HINCRBY', counts, sha, 1)
  end
  redis.call('ZADD', expiries, expires, key)
  for _, name in ipairs(KEYS) do
    if redis.call('PTTL', name) < backstop then redis.call('PEXPIRE', name, backstop) end
  end
end
"""
# ARGV: key, sha, now, expires, backstop ms, sweep limit
CLAIM_PIN = (
    _PIN_LUA
    + """
local key, sha, now = ARGV[1], ARGV[2], ARGV[3]
sha = live(key, now) or sha
sweep(now, tonumber(ARGV[6]))
pin(key, sha, ARGV[4], tonumber(ARGV[5]))
return sha
"""
)
SET_PIN = (
    _PIN_LUA
    + """
sweep(ARGV[3], tonumber(ARGV[6]))
pin(ARGV[1], ARGV[2], ARGV[4], tonumber(ARGV[5]))
"""
)
# ARGV: key
DROP_PIN = _PIN_LUA + "unpin(ARGV[1])"
# ARGV: now, limit. The live shas once no expired pin is left, or false (nil) when more remain to sweep.
PINNED = (
    _PIN_LUA
    + """
if sweep(ARGV[1], tonumber(ARGV[2])) == tonumber(ARGV[2]) then return false end
return redis.call('HKEYS', counts)
"""
)
# KEYS: version:record, version:order; ARGV: sha, record. HSET counts the fields it added: 1 on the first save.
PUT_VERSION = """
if redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) == 1 then redis.call('RPUSH', KEYS[2], ARGV[1]) end
"""
# KEYS: events, events:seq, once:events; ARGV: event, max events, "1" when there is a once key, the once key
ADD_EVENT = """
local once = ARGV[3] == '1'
if once and redis.call('ZSCORE', KEYS[3], ARGV[4]) then return 0 end
local n = redis.call('INCR', KEYS[2])
local max = tonumber(ARGV[2])
redis.call('LPUSH', KEYS[1], ARGV[1])
redis.call('LTRIM', KEYS[1], 0, max - 1)
if once then redis.call('ZADD', KEYS[3], n, ARGV[4]) end
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', n - max)
return 1
"""
# KEYS: delivery:<id>; ARGV: now, expires, backstop ms
CLAIM_DELIVERY = """
local expires = redis.call('GET', KEYS[1])
if expires and tonumber(expires) > tonumber(ARGV[1]) then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return 1
"""
# ARGV: now, slot, expires, backstop ms, "<prefix>samples:", sweep limit, then per key: key, n, n (field, count)
ADD_SAMPLES = """
local now, slot, expires, backstop, prefix = tonumber(ARGV[1]), ARGV[2], ARGV[3], tonumber(ARGV[4]), ARGV[5]
local i = 7
while i <= #ARGV do
  local key, n = ARGV[i], tonumber(ARGV[i + 1])
  local slots, expiries = prefix .. 'slots:' .. key, prefix .. 'expires:' .. key
  -- the oldest slots go first, until one is still live: slots are written in about the order they expire
  for _, old in ipairs(redis.call('ZRANGE', slots, 0, tonumber(ARGV[6]) - 1)) do
    local expiry = redis.call('HGET', expiries, old)
    if expiry and tonumber(expiry) > now then break end
    redis.call('DEL', prefix .. old .. ':' .. key)
    redis.call('ZREM', slots, old)
    redis.call('HDEL', expiries, old)
  end
  local counts = prefix .. slot .. ':' .. key
  for j = i + 2, i + 2 * n, 2 do redis.call('HINCRBY', counts, ARGV[j], ARGV[j + 1]) end
  redis.call('PEXPIRE', counts, backstop)
  redis.call('ZADD', slots, slot, slot)
  redis.call('HSET', expiries, slot, expires)
  for _, name in ipairs({slots, expiries}) do
    if redis.call('PTTL', name) < backstop then redis.call('PEXPIRE', name, backstop) end
  end
  i = i + 2 + 2 * n
end
"""
# KEYS: samples:slots:<key>, samples:expires:<key>; ARGV: now, since, "<prefix>samples:", key. Flat field, total pairs.
SUM_SAMPLES = """
local now, totals, fields = tonumber(ARGV[1]), {}, {}
for _, slot in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], ARGV[2], '+inf')) do
  local expiry = redis.call('HGET', KEYS[2], slot)
  if expiry and tonumber(expiry) > now then
    local counts = redis.call('HGETALL', ARGV[3] .. slot .. ':' .. ARGV[4])
    for j = 1, #counts, 2 do
      local field = counts[j]
      if not totals[field] then
        totals[field] = 0
        fields[#fields + 1] = field
      end
      totals[field] = totals[field] + tonumber(counts[j + 1])
    end
  end
end
local flat = {}
for _, field in ipairs(fields) do
  flat[#flat + 1] = field
  flat[#flat + 1] = totals[field]
end
return flat
"""
# KEYS: turns:<session>, conversations, conversations:bytes, conversations:total; ARGV: now, expires, backstop ms,
# keep, sweep limit, "<prefix>turns:", session, most sessions, most bytes, then the turns (JSON). Expired
# conversations go first, this one too (it starts anew); a conversation without an expiry (kept by a version before
# they had one) lives until its key's own TTL. Then, while the totals exceed the quota, the others idle longest (the
# lowest expiry) go. A turn counts its text's UTF-8 bytes (decoded from its JSON, as the other stores count it); a
# conversation kept before the quota existed is counted whole at its next turn.
APPEND_TURNS = """
local list, expiries, sizes, total = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local now, session = tonumber(ARGV[1]), ARGV[7]
local function drop(gone)
  redis.call('DEL', ARGV[6] .. gone)
  redis.call('ZREM', expiries, gone)
  local size = tonumber(redis.call('HGET', sizes, gone) or '0')
  redis.call('HDEL', sizes, gone)
  redis.call('DECRBY', total, size)
end
local function size_of(turn) return #cjson.decode(turn)[2] end
for _, old in ipairs(redis.call('ZRANGEBYSCORE', expiries, '-inf', now, 'LIMIT', 0, tonumber(ARGV[5]))) do
  drop(old)
end
local own = redis.call('ZSCORE', expiries, session)
if own and tonumber(own) <= now then drop(session) end
local added = 0
if not redis.call('HGET', sizes, session) then  -- kept by a version before the quota: counted once, now
  for _, turn in ipairs(redis.call('LRANGE', list, 0, -1)) do added = added + size_of(turn) end
end
for i = 10, #ARGV do
  redis.call('RPUSH', list, ARGV[i])
  added = added + size_of(ARGV[i])
end
local excess = redis.call('LLEN', list) - tonumber(ARGV[4])
if excess > 0 then
  for _, gone in ipairs(redis.call('LRANGE', list, 0, excess - 1)) do added = added - size_of(gone) end
  redis.call('LTRIM', list, excess, -1)
end
redis.call('HINCRBY', sizes, session, added)
redis.call('INCRBY', total, added)
redis.call('ZADD', expiries, ARGV[2], session)
local most_sessions, most_bytes = tonumber(ARGV[8]), tonumber(ARGV[9])
while redis.call('ZCARD', expiries) > most_sessions or tonumber(redis.call('GET', total) or '0') > most_bytes do
  local oldest = redis.call('ZRANGE', expiries, 0, 1)
  local victim = oldest[1]
  if victim == session then victim = oldest[2] end
  if not victim then break end
  drop(victim)
end
local backstop = tonumber(ARGV[3])
redis.call('PEXPIRE', list, backstop)
for _, key in ipairs({expiries, sizes, total}) do
  if redis.call('PTTL', key) < backstop then redis.call('PEXPIRE', key, backstop) end
end
"""
# KEYS: events, events:seq; ARGV: limit, before ("" for the newest). {number of the newest event, the page}: the list is
# newest first and every event added took the next number, so the i-th from the top (from 0) is numbered newest - i.
EVENTS_PAGE = """
local newest = tonumber(redis.call('GET', KEYS[2]) or '0')
local skip = 0
if ARGV[2] ~= '' then skip = math.max(newest - tonumber(ARGV[2]) + 1, 0) end
return {newest, redis.call('LRANGE', KEYS[1], skip, skip + tonumber(ARGV[1]) - 1)}
"""

# KEYS: the lease. ARGV: holder, ttl in ms. 1 if the holder holds the lease now (taken or renewed), else 0.
LEASE = """
local current = redis.call('GET', KEYS[1])
if current and current ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""

# KEYS: the lease. ARGV: holder. Deletes it only if the holder still holds it.
RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 0
"""

# runs answered: KEYS runs (zset id -> expires), runs:record (hash id -> JSON); ARGV now, max runs, backstop ms,
# then (id, expires, record) per run. The expired go (a bounded batch per call), then the oldest past the maximum.
REMEMBER_RUNS = """
local order, records = KEYS[1], KEYS[2]
local now, most, backstop = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
for i = 4, #ARGV, 3 do
  redis.call('ZADD', order, ARGV[i + 1], ARGV[i])
  redis.call('HSET', records, ARGV[i], ARGV[i + 2])
end
local gone = redis.call('ZRANGEBYSCORE', order, '-inf', now, 'LIMIT', 0, 1000)
local over = redis.call('ZCARD', order) - #gone - most
if over > 0 then
  for _, id in ipairs(redis.call('ZRANGE', order, #gone, #gone + over - 1)) do gone[#gone + 1] = id end
end
for i = 1, #gone, 500 do
  local batch = {unpack(gone, i, math.min(i + 499, #gone))}
  redis.call('ZREM', order, unpack(batch))
  redis.call('HDEL', records, unpack(batch))
end
redis.call('PEXPIRE', order, backstop)
redis.call('PEXPIRE', records, backstop)
"""

# the records of several runs: KEYS runs, runs:record; ARGV now, then run ids. Returns each record, or false.
ANSWERED_MANY = """
local found = {}
for i = 2, #ARGV do
  local expires = redis.call('ZSCORE', KEYS[1], ARGV[i])
  if expires and tonumber(expires) > tonumber(ARGV[1]) then
    found[i - 1] = redis.call('HGET', KEYS[2], ARGV[i])
  else
    found[i - 1] = false
  end
end
return found
"""

# scores, in turn: KEYS scores (hash slot -> JSON), scores:at (zset slot -> expires), scores:keyof (hash slot -> key),
# scores:keys (hash key -> live scores); ARGV now, max keys, max scores, backstop ms, then per score: key, slot,
# record, expires. Returns per score 1 when kept, 0 when its key is new and the flow has its maximum of keys.
ADD_SCORES = """
local data, at, keyof, keys = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local now, max_keys, max_scores, backstop = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local function drop(s)
  local k = redis.call('HGET', keyof, s)
  if not k then return end
  redis.call('HDEL', data, s)
  redis.call('HDEL', keyof, s)
  redis.call('ZREM', at, s)
  if redis.call('HINCRBY', keys, k, -1) <= 0 then redis.call('HDEL', keys, k) end
end
for _, s in ipairs(redis.call('ZRANGEBYSCORE', at, '-inf', now, 'LIMIT', 0, 256)) do drop(s) end
local kept = {}
for i = 5, #ARGV, 4 do
  local key, slot = ARGV[i], ARGV[i + 1]
  if redis.call('HEXISTS', keys, key) == 0 and redis.call('HLEN', keys) >= max_keys then
    kept[#kept + 1] = 0
  else
    drop(slot)
    redis.call('HSET', data, slot, ARGV[i + 2])
    redis.call('HSET', keyof, slot, key)
    redis.call('ZADD', at, ARGV[i + 3], slot)
    redis.call('HINCRBY', keys, key, 1)
    local over = redis.call('ZCARD', at) - max_scores
    if over > 0 then
      for _, s in ipairs(redis.call('ZRANGE', at, 0, over - 1)) do drop(s) end
    end
    kept[#kept + 1] = 1
  end
end
for _, k in ipairs(KEYS) do redis.call('PEXPIRE', k, backstop) end
return kept
"""

"""The Lua scripts of :class:`~falwrap.backends.redis_journal.RedisJournal`, one per atomic step.

Each script runs alone on the server (Redis runs one script at a time), so a
budget check and the hold or intent it grants, an idempotency claim, and a job's
new state with the aggregates it moves happen as one step for every process.

Conventions: ``ARGV[1]`` is the key prefix (``falwrap:<namespace>:``) and the
scripts build their keys from it (see the key layout in ``redis_journal``).
Money and times travel as the caller's decimal strings of integers
(micro-dollars, microseconds since the epoch): Lua numbers are doubles, exact
below 2**53, but formatting them back (``%.14g``) would not be.
"""

from __future__ import annotations

__all__ = ["ADD_RECORD", "CLAIM", "COMMIT", "HOLD", "OPEN_JOB", "RESERVED"]

# Shared helpers, prepended to every script that needs them.
_HELPERS = """
local P = ARGV[1]

-- Drop the holds that lapsed at or before `now` (microseconds, the caller's clock).
local function sweep_holds(now)
  local expiry = P .. 'holds:expiry'
  local expired = redis.call('ZRANGEBYSCORE', expiry, '-inf', now)
  for _, id in ipairs(expired) do
    redis.call('HDEL', P .. 'holds', id)
  end
  if #expired > 0 then
    redis.call('ZREMRANGEBYSCORE', expiry, '-inf', now)
  end
end

-- Micro-dollars held: open holds plus the estimates of jobs still being submitted.
local function held()
  local total = tonumber(redis.call('GET', P .. 'submitting') or '0')
  for _, v in ipairs(redis.call('HVALS', P .. 'holds')) do
    total = total + tonumber(v)
  end
  return total
end

-- nil when `amount` fits today's budget ('' is no budget), else {spent, held}.
local function refusal(day, amount, budget)
  if budget == '' then
    return nil
  end
  local spent = tonumber(redis.call('HGET', P .. 'day:' .. day, 'cost_micros') or '0')
  local reserved = held()
  if spent + reserved + tonumber(amount) > tonumber(budget) then
    return {spent, reserved}
  end
  return nil
end

-- Move spend by `micros` (a signed integer string) on a day, overall and for a model.
local function add_cost(day, model, micros, day_ttl)
  if micros == '0' then
    return
  end
  local d = P .. 'day:' .. day
  redis.call('HINCRBY', d, 'cost_micros', micros)
  redis.call('EXPIRE', d, day_ttl)
  redis.call('HINCRBY', P .. 'totals', 'cost_micros', micros)
  redis.call('HINCRBY', P .. 'totals', 'm:' .. model .. ':cost_micros', micros)
end

-- Count one call record: the day's calls, the totals, the capped lists of records and durations.
local function count_call(text, day, model, success, duration, max_records, window, day_ttl)
  local d = P .. 'day:' .. day
  redis.call('HINCRBY', d, 'calls', 1)
  redis.call('HINCRBY', d, 'successes', success)
  redis.call('EXPIRE', d, day_ttl)
  for _, scope in ipairs({'', 'm:' .. model .. ':'}) do
    redis.call('HINCRBY', P .. 'totals', scope .. 'calls', 1)
    redis.call('HINCRBY', P .. 'totals', scope .. 'successes', success)
    redis.call('HINCRBYFLOAT', P .. 'totals', scope .. 'duration_ms', duration)
  end
  redis.call('LPUSH', P .. 'records', text)
  redis.call('LTRIM', P .. 'records', 0, tonumber(max_records) - 1)
  for _, list in ipairs({P .. 'durations', P .. 'durations:' .. model}) do
    redis.call('LPUSH', list, duration)
    redis.call('LTRIM', list, 0, tonumber(window) - 1)
  end
end

-- Forget up to `batch` jobs finished at or before `cutoff`, with their index entries.
-- Aggregates keep their money and counts; only the jobs' details go.
local function prune(cutoff, batch)
  local old = redis.call('ZRANGEBYSCORE', P .. 'finished', '-inf', cutoff, 'LIMIT', 0, batch)
  for _, id in ipairs(old) do
    local job = P .. 'job:' .. id
    local f = redis.call('HMGET', job, 'rid', 'key')
    if f[1] and redis.call('HGET', P .. 'requests', f[1]) == id then
      redis.call('HDEL', P .. 'requests', f[1])
    end
    if f[2] and redis.call('GET', P .. 'idem:' .. f[2]) == id then
      redis.call('DEL', P .. 'idem:' .. f[2])
    end
    redis.call('DEL', job)
    redis.call('ZREM', P .. 'jobs', id)
    redis.call('ZREM', P .. 'finished', id)
    redis.call('ZREM', P .. 'provisional', id)
  end
end
"""

#: Journal an intent: refuse a reused job id, answer an idempotency key already held,
#: check the budget, then write the job and hold its estimate.
#: ARGV: prefix, job id, now (us), today, budget ('' none), estimate, idempotency key ('' none),
#: key expiry (us, '' none), key ttl (ms, '' none), entry JSON, created (us), prune cutoff (us),
#: prune batch. Returns {'dup'}, {'key', json of the key's job}, {'budget', spent, held} or {'ok'}.
OPEN_JOB = (
    _HELPERS
    + """
local id = ARGV[2]
local job = P .. 'job:' .. id
if redis.call('EXISTS', job) == 1 then
  return {'dup'}
end
local key = ARGV[7]
if key ~= '' then
  local bound = redis.call('GET', P .. 'idem:' .. key)
  if bound then
    local f = redis.call('HMGET', P .. 'job:' .. bound, 'json', 'state', 'kexp')
    if f[1] and f[2] ~= 'not_sent' and (not f[3] or tonumber(f[3]) > tonumber(ARGV[3])) then
      return {'key', f[1]}
    end
  end
end
prune(ARGV[12], tonumber(ARGV[13]))
sweep_holds(ARGV[3])
local refused = refusal(ARGV[4], ARGV[6], ARGV[5])
if refused then
  return {'budget', refused[1], refused[2]}
end
redis.call('HSET', job, 'v', '1', 'json', ARGV[10], 'state', 'submitting')
if key ~= '' then
  redis.call('HSET', job, 'key', key)
  if ARGV[8] ~= '' then
    redis.call('HSET', job, 'kexp', ARGV[8])
    redis.call('SET', P .. 'idem:' .. key, id, 'PX', ARGV[9])
  else
    redis.call('SET', P .. 'idem:' .. key, id)
  end
end
redis.call('ZADD', P .. 'jobs', ARGV[11], id)
redis.call('ZADD', P .. 'open', ARGV[11], id)
redis.call('INCRBY', P .. 'submitting', ARGV[6])
return {'ok'}
"""
)

#: Write a job's new state if nobody changed it since it was read (its version), moving
#: the held and charged aggregates by the differences and counting its record, if any.
#: ARGV: prefix, job id, version read, entry JSON, state, open 1/0, provisional 1/0,
#: created (us), finished (us, '' unless it just finished), request id ('' none),
#: held delta, charged delta, job day, endpoint, day ttl, record JSON ('' none),
#: record day, record model, success 1/0, duration, max records, window.
#: Returns 1, 0 when the version moved (the caller reads again and retries), or the id of
#: the job that already owns the request id (nothing written: one owner per request).
COMMIT = (
    _HELPERS
    + """
local id = ARGV[2]
local job = P .. 'job:' .. id
if redis.call('HGET', job, 'v') ~= ARGV[3] then
  return 0
end
if ARGV[10] ~= '' then
  local owner = redis.call('HGET', P .. 'requests', ARGV[10])
  if owner and owner ~= id and redis.call('EXISTS', P .. 'job:' .. owner) == 1 then
    return owner
  end
end
redis.call('HSET', job, 'json', ARGV[4], 'state', ARGV[5])
redis.call('HINCRBY', job, 'v', 1)
if ARGV[6] == '1' then
  redis.call('ZADD', P .. 'open', ARGV[8], id)
else
  redis.call('ZREM', P .. 'open', id)
end
if ARGV[7] == '1' then
  redis.call('ZADD', P .. 'provisional', ARGV[8], id)
else
  redis.call('ZREM', P .. 'provisional', id)
end
if ARGV[9] ~= '' then
  redis.call('ZADD', P .. 'finished', ARGV[9], id)
end
if ARGV[10] ~= '' then
  redis.call('HSET', P .. 'requests', ARGV[10], id)
  redis.call('HSET', job, 'rid', ARGV[10])
end
if ARGV[11] ~= '0' then
  redis.call('INCRBY', P .. 'submitting', ARGV[11])
end
add_cost(ARGV[13], ARGV[14], ARGV[12], ARGV[15])
if ARGV[16] ~= '' then
  count_call(ARGV[16], ARGV[17], ARGV[18], ARGV[19], ARGV[20], ARGV[21], ARGV[22], ARGV[15])
end
return 1
"""
)

#: Give an open job to a new owner if nobody changed it since it was read and its owner's
#: heartbeat has lapsed, checked in the same step. ARGV: prefix, job id, version read,
#: entry JSON (with the new owner), current owner ('' none), now (us).
#: Returns 1 (taken), -1 (the owner is alive) or 0 (the job changed: read again).
CLAIM = """
local P = ARGV[1]
local job = P .. 'job:' .. ARGV[2]
if redis.call('HGET', job, 'v') ~= ARGV[3] then
  return 0
end
if ARGV[5] ~= '' then
  local expiry = redis.call('ZSCORE', P .. 'owners', ARGV[5])
  if expiry and tonumber(expiry) > tonumber(ARGV[6]) then
    return -1
  end
end
redis.call('HSET', job, 'json', ARGV[4])
redis.call('HINCRBY', job, 'v', 1)
return 1
"""

#: Hold part of today's budget. ARGV: prefix, hold id, micro-dollars, budget ('' none),
#: now (us), today, expiry (us, or '+inf'). Returns {granted 1/0, spent, held}.
HOLD = (
    _HELPERS
    + """
sweep_holds(ARGV[5])
local refused = refusal(ARGV[6], ARGV[3], ARGV[4])
if refused then
  return {0, refused[1], refused[2]}
end
redis.call('HSET', P .. 'holds', ARGV[2], ARGV[3])
redis.call('ZADD', P .. 'holds:expiry', ARGV[7], ARGV[2])
return {1, 0, 0}
"""
)

#: What is held now, lapsed holds dropped first. ARGV: prefix, now (us).
RESERVED = (
    _HELPERS
    + """
sweep_holds(ARGV[2])
return held()
"""
)

#: Store a call record not tied to a job (or a job's record, without cost) and end its hold.
#: ARGV: prefix, hold id ('' none), record JSON, day, model, success 1/0, duration,
#: max records, window, day ttl, cost micro-dollars ('0' for a job's record).
ADD_RECORD = (
    _HELPERS
    + """
if ARGV[2] ~= '' then
  redis.call('HDEL', P .. 'holds', ARGV[2])
  redis.call('ZREM', P .. 'holds:expiry', ARGV[2])
end
count_call(ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8], ARGV[9], ARGV[10])
add_cost(ARGV[4], ARGV[5], ARGV[11], ARGV[10])
return 1
"""
)

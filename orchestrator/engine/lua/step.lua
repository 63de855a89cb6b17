-- One atomic step for one input to one saga.
-- Every check comes before the first write: Lua scripts do not roll back.
--
-- KEYS, by name in the order of KEY_NAMES (orchestrator/engine/stepargs.py: StepKeys).
-- ARGV[1]: the named arguments as one JSON object (StepArgs), read below as A.<name>;
--          one argument instead of dozens, because packing arguments is the client's main cost.
-- ARGV[2..]: the outbox entries as (key, value, headers) triples, binary-safe.
-- Returns {1, outbox ids...} when applied, {0} for an input seen before,
--         {-1, current version} when another writer got there first,
--         {-2, remembered ids} when the input must be remembered and the saga remembers no more.
--
-- Which inputs are remembered (effectively once, DESIGN invariant 3): replies and timers are
-- not; they carry the step, direction and attempt they answer, attempts only grow, and the
-- core applies one only while the saga waits for exactly that, so a copy that comes again is
-- ignored by the state itself. The start's id is kept in the hash (`start_input`, sent in
-- A.fields), so a replay of the start is not even recorded. Operator commands (retry, resume,
-- skip a compensation) would apply again in a state they apply to: their ids go in the `seen`
-- set, at most A.seen_cap of them. Sagas written by an older version have every id in `seen`.
-- A reply or timer the state ignores as a duplicate (A.skip_recorded) is recorded in the
-- history only the first time its id comes: a copy of an input the history already holds
-- returns {0} and writes nothing, so a storm of copies cannot push real transitions out of
-- the capped history. The scan runs only on that path, never for an input that applies.
-- A saga that only went forward has no history list: its entries are derived from the hash
-- (orchestrator/engine/history.py). An entry the hash implies (A.history_omit) is written only
-- to a list that exists; any other, to a saga with no list yet, comes after the derived ones
-- (A.history_backfill), and from then on the list holds every entry.

local KEY_NAMES = {'saga', 'history', 'seen', 'outbox', 'timers', 'old_index', 'new_index', 'tombstone'}
local K = {}
for i, name in ipairs(KEY_NAMES) do
  K[name] = KEYS[i]
end
local A = cjson.decode(ARGV[1])

if A.message_id ~= '' then
  -- `start_input` is `<event> <id>` (older versions: the id alone)
  local start = redis.call('HGET', K.saga, 'start_input')
  local space = start and string.find(start, ' ', 1, true)
  if start == A.message_id or (space and string.sub(start, space + 1) == A.message_id)
      or redis.call('SISMEMBER', K.seen, A.message_id) == 1 then
    return {0}
  end
end
local current = tonumber(redis.call('HGET', K.saga, 'version') or '0')
if current ~= A.expected_version then
  return {-1, current}
end
local history_kind = redis.call('TYPE', K.history).ok
if A.skip_recorded and A.message_id ~= '' then
  -- a saga with no list yet: its entries are the derived ones (A.history_backfill)
  local entries = A.history_backfill
  if history_kind == 'list' then
    entries = redis.call('LRANGE', K.history, 0, -1)
  elseif history_kind ~= 'none' then
    entries = {}
  end
  for _, e in ipairs(entries) do
    local ok, entry = pcall(cjson.decode, e)  -- an entry written by hand may not be JSON
    if ok and type(entry) == 'table' and entry[6] == A.message_id then
      return {0}
    end
  end
end
if A.remember == 'seen' then
  local remembered = redis.call('SCARD', K.seen)
  if remembered >= A.seen_cap then
    return {-2, remembered}
  end
end

if #A.drop_fields > 0 then
  redis.call('HDEL', K.saga, unpack(A.drop_fields))
end
if #A.fields > 0 then
  redis.call('HSET', K.saga, unpack(A.fields))
end
if A.history ~= '' then
  if history_kind == 'stream' then
    -- written by an older version: the same entries, as the list this version keeps
    local rows = redis.call('XRANGE', K.history, '-', '+')
    redis.call('DEL', K.history)
    for _, row in ipairs(rows) do
      local f = {}
      for i = 1, #row[2], 2 do
        f[row[2][i]] = row[2][i + 1]
      end
      redis.call('RPUSH', K.history, cjson.encode({f.at or '', f.event or '', f.outcome or '',
                                                   f.state or '', f.note or '', f.input or ''}))
    end
    history_kind = 'list'
  end
  if history_kind == 'none' and not A.history_omit then
    -- the first entry the hash does not imply: the derived ones go first (history.py)
    for _, e in ipairs(A.history_backfill) do
      redis.call('RPUSH', K.history, e)
    end
  end
  if history_kind ~= 'none' or not A.history_omit then
    redis.call('RPUSH', K.history, A.history)
    redis.call('LTRIM', K.history, -A.history_cap, -1)
  end
end
local result = {1}
for i = 2, #ARGV, 3 do
  result[#result + 1] = redis.call('XADD', K.outbox, '*', 'k', ARGV[i], 'v', ARGV[i + 1], 'h', ARGV[i + 2])
end
if #A.timers > 0 then
  redis.call('ZADD', K.timers, unpack(A.timers))
end
if #A.cancel_timers > 0 then
  redis.call('ZREM', K.timers, unpack(A.cancel_timers))
end

-- an applied start's id is one of A.fields (`start_input`)
if A.remember == 'seen' then
  redis.call('SADD', K.seen, A.message_id)
end
if A.applied and A.state_changed then
  redis.call('ZREM', K.old_index, A.saga_id)
  redis.call('ZADD', K.new_index, A.entered_ms, A.saga_id)
end

if A.applied then
  if A.final and A.retention_s > 0 then
    redis.call('EXPIRE', K.saga, A.retention_s)
    redis.call('EXPIRE', K.history, A.retention_s)
    redis.call('EXPIRE', K.seen, A.retention_s)
    if A.tombstone_retention_s > 0 then
      -- the id outlives the saga: a late duplicate start is refused, not run again
      redis.call('SET', K.tombstone, '1', 'EX', A.retention_s + A.tombstone_retention_s)
    end
  elseif not A.final then
    redis.call('PERSIST', K.saga)
    redis.call('PERSIST', K.history)
    redis.call('PERSIST', K.seen)
  end
elseif redis.call('TTL', K.saga) > 0 then
  -- an input recorded after the saga finished: let its trace go with the saga
  redis.call('EXPIRE', K.seen, redis.call('TTL', K.saga))
  redis.call('EXPIRE', K.history, redis.call('TTL', K.saga))
end
return result

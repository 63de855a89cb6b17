-- The SDK's idempotency guard. A handler's effect (the body, spliced in at the marker below), the
-- stored outcome, the "done" record and the compensation tombstone are written in ONE atomic step,
-- so a crash can never leave an effect without the record that stops it from being applied twice.
--
-- KEYS[1] outcome    per command id: a command seen again gets this outcome back
-- KEYS[2] done       per (saga, step, action|compensation): a later attempt gets the same success
-- KEYS[3] tombstone  per (saga, step): set once a compensation ran; the forward action is refused
-- KEYS[4..]          the body's keys
-- ARGV[1]            '1' for a compensation, '0' for a forward action
-- ARGV[2]            time to live of the bookkeeping keys, seconds
-- ARGV[3..]          the body's arguments
--
-- Returns {status, outcome_json} with status 'new', 'duplicate', 'done' or 'refused'.
-- The body is function(KEYS, ARGV) returning {'ok', k1, v1, ...} or {'fail', '1'|'0', reason}.
-- It must make every check before its first write: Lua does not roll back.

local outcome_key, done_key, tomb_key = KEYS[1], KEYS[2], KEYS[3]
local compensation = ARGV[1] == '1'
local ttl = tonumber(ARGV[2])

local prior = redis.call('GET', outcome_key)
if prior then return {'duplicate', prior} end

local function store(status, outcome)
  local t = redis.call('TIME')
  outcome['time'] = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  local text = cjson.encode(outcome)
  redis.call('SET', outcome_key, text, 'EX', ttl)
  return {status, text}
end

-- Checked before `done`: an action that completed and was then compensated must not report
-- success again to a later attempt.
if not compensation and redis.call('EXISTS', tomb_key) == 1 then
  return store('refused', {kind = 'failed', retryable = false,
    reason = 'refused: the compensation of this step already ran for this saga'})
end

local done = redis.call('GET', done_key)
if done then
  redis.call('SET', outcome_key, done, 'EX', ttl)
  return {'done', done}
end

local body_keys, body_argv = {}, {}
for i = 4, #KEYS do body_keys[#body_keys + 1] = KEYS[i] end
for i = 3, #ARGV do body_argv[#body_argv + 1] = ARGV[i] end

local function body(KEYS, ARGV)
--BODY--
end

local r = body(body_keys, body_argv)
-- Any compensation attempt closes the door on the forward action, even a failed one: the
-- orchestrator will retry the compensation, and a late action would only have to be undone.
if compensation then redis.call('SET', tomb_key, '1', 'EX', ttl) end
if r[1] == 'ok' then
  local result = {}
  for i = 2, #r, 2 do result[r[i]] = r[i + 1] end
  local stored = store('new', {kind = compensation and 'compensated' or 'completed', result = result})
  redis.call('SET', done_key, stored[2], 'EX', ttl)
  return stored
end
return store('new', {kind = 'failed', retryable = r[2] == '1', reason = r[3]})

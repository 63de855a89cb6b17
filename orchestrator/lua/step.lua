-- One atomic step for one input to one saga.
-- Every check comes before the first write: Lua scripts do not roll back.
--
-- KEYS: 1 saga hash, 2 history stream, 3 seen set, 4 outbox stream, 5 timer zset,
--       6 index of the old state, 7 index of the new state, 8 input offsets hash
-- ARGV: 1 message id ('' = no dedupe), 2 expected version, 3 outcome ('applied'|'ignored'),
--       4 saga id, 5 time entered the new state (ms), 6 state changed ('1'|'0'),
--       7 offset field, 8 offset, 9 final ('1'|'0'), 10 retention seconds (0 = keep),
--       11 hash fields, 12 history fields, 13 timers to set (score, member, ...),
--       14 timers to cancel: each a JSON array of strings (one argument instead of dozens:
--       packing arguments is the client's main cost);
--       then the outbox entries as (key, value, headers) triples, binary-safe.
-- Returns {1, outbox ids...} when applied, {0} for an input seen before,
--         {-1, current version} when another writer got there first.

local msg = ARGV[1]
if msg ~= '' and redis.call('SISMEMBER', KEYS[3], msg) == 1 then
  return {0}
end
local current = tonumber(redis.call('HGET', KEYS[1], 'version') or '0')
if current ~= tonumber(ARGV[2]) then
  return {-1, current}
end

local fields = cjson.decode(ARGV[11])
if #fields > 0 then
  redis.call('HSET', KEYS[1], unpack(fields))
end
local history = cjson.decode(ARGV[12])
if #history > 0 then
  redis.call('XADD', KEYS[2], '*', unpack(history))
end
local result = {1}
for i = 15, #ARGV, 3 do
  result[#result + 1] = redis.call('XADD', KEYS[4], '*', 'k', ARGV[i], 'v', ARGV[i + 1], 'h', ARGV[i + 2])
end
local timers = cjson.decode(ARGV[13])
if #timers > 0 then
  redis.call('ZADD', KEYS[5], unpack(timers))
end
local cancel = cjson.decode(ARGV[14])
if #cancel > 0 then
  redis.call('ZREM', KEYS[5], unpack(cancel))
end

if msg ~= '' then
  redis.call('SADD', KEYS[3], msg)
end
if ARGV[3] == 'applied' and ARGV[6] == '1' then
  redis.call('ZREM', KEYS[6], ARGV[4])
  redis.call('ZADD', KEYS[7], ARGV[5], ARGV[4])
end
local seen_offset = tonumber(redis.call('HGET', KEYS[8], ARGV[7]) or '-1')
if tonumber(ARGV[8]) > seen_offset then
  redis.call('HSET', KEYS[8], ARGV[7], ARGV[8])
end

local retention = tonumber(ARGV[10])
if ARGV[3] == 'applied' then
  if ARGV[9] == '1' and retention > 0 then
    redis.call('EXPIRE', KEYS[1], retention)
    redis.call('EXPIRE', KEYS[2], retention)
    redis.call('EXPIRE', KEYS[3], retention)
  elseif ARGV[9] == '0' then
    redis.call('PERSIST', KEYS[1])
    redis.call('PERSIST', KEYS[2])
    redis.call('PERSIST', KEYS[3])
  end
elseif redis.call('TTL', KEYS[1]) > 0 then
  -- an input recorded after the saga finished: let its trace go with the saga
  redis.call('EXPIRE', KEYS[3], redis.call('TTL', KEYS[1]))
  redis.call('EXPIRE', KEYS[2], redis.call('TTL', KEYS[1]))
end
return result

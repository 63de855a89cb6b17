-- Replace one completed saga's hash, history and seen set by its summary hash, atomically.
--
-- KEYS: the saga's hash, its history, its seen set (one slot: they share the saga's key).
-- ARGV[1]: the version the summary was built from; ARGV[2]: the history entries it was built
-- from; ARGV[3..]: the summary's fields, as field, value, ...
-- Returns 1 when compacted, 0 when there is nothing to do (gone, not completed, compacted
-- already), -1 when the saga changed since it was read (a step, or an input recorded): the
-- caller reads it again. Every check comes before the first write.

local version = redis.call('HGET', KEYS[1], 'version')
if redis.call('HGET', KEYS[1], 'state') ~= 'completed' or not version
    or redis.call('HEXISTS', KEYS[1], 'steps') == 1 then
  return 0
end
-- The summary lists the steps in the hash's order, which only a listpack keeps (a hash table
-- returns its fields in any order): a saga whose hash is a hash table stays as it is.
local encoding = redis.call('OBJECT', 'ENCODING', KEYS[1])
if encoding ~= 'listpack' and encoding ~= 'ziplist' then
  return 0
end
if version ~= ARGV[1] then
  return -1
end
local kind = redis.call('TYPE', KEYS[2]).ok
local entries = 0
if kind == 'list' then
  entries = redis.call('LLEN', KEYS[2])
elseif kind ~= 'none' then  -- a stream of an older version: its step converts it first
  return 0
end
if entries ~= tonumber(ARGV[2]) then
  return -1
end
local ttl = redis.call('PTTL', KEYS[1])
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
redis.call('HSET', KEYS[1], unpack(ARGV, 3))
if ttl > 0 then  -- the summary goes when the saga would have gone
  redis.call('PEXPIRE', KEYS[1], ttl)
end
return 1

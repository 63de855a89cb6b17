-- Take one unit of a counted fault (fail-next, no-reply) in one step, so that replicas of a
-- worker competing for commands never inject it more often than asked.
-- KEYS[1] the faults hash; ARGV[1] the counter field. Returns 1 when a unit was taken.
local n = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
if n and n > 0 then
  redis.call('HINCRBY', KEYS[1], ARGV[1], -1)
  return 1
end
return 0

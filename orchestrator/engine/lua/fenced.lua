-- The relay's read of one partition, fenced: nothing is read (nil) unless the partition's
-- owner is still the token the caller took, so a copy whose partition moved while it was
-- paused reads nothing and so fires nothing. The owner key and the read key share a slot.
-- KEYS[1]: <prefix>:{pN}:_owner   KEYS[2]: the partition's timers (ZSET) or outbox (stream)
-- ARGV[1]: our token   ARGV[2]: 'timers' or 'outbox'
--   timers: ARGV[3] due up to (ms), ARGV[4] how many -> member, score, member, score...
--   outbox: ARGV[3] from id, ARGV[4] to id, ARGV[5] how many -> XRANGE's rows
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return false
end
if ARGV[2] == 'timers' then
  return redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[3], 'WITHSCORES', 'LIMIT', 0, ARGV[4])
end
return redis.call('XRANGE', KEYS[2], ARGV[3], ARGV[4], 'COUNT', ARGV[5])

-- Take a partition's relay work: bump its ownership generation and name ourselves its owner,
-- in one step, so no copy can see the epoch bumped but the old owner still named.
-- KEYS[1]: <prefix>:{pN}:_epoch   KEYS[2]: <prefix>:{pN}:_owner   ARGV[1]: our member id
-- Returns the token `<member>:<epoch>` every fenced read of this partition must present.
local epoch = redis.call('INCR', KEYS[1])
local token = ARGV[1] .. ':' .. epoch
redis.call('SET', KEYS[2], token)
return token

-- RefundPayment: refund exactly the saga's charge, once. No charge = nothing to refund (success),
-- and the saga is marked void so that a charge arriving late is declined.
-- KEYS as in payment_charge.lua; ARGV[1] saga id, ARGV[2] currency.
local charges, ledger = KEYS[1], KEYS[2]
local saga = ARGV[1]

local existing = redis.call('HGET', charges, saga)
if not existing then
  redis.call('HSET', charges, saga, cjson.encode({chargeId = '', amount = '0', currency = ARGV[2],
    status = 'void'}))
  return {'ok', 'refunded', '0'}
end

local c = cjson.decode(existing)
if c.status ~= 'charged' then return {'ok', 'refunded', '0'} end
c.status = 'refunded'
redis.call('HSET', charges, saga, cjson.encode(c))
redis.call('RPUSH', ledger, cjson.encode({type = 'refund', sagaId = saga, chargeId = c.chargeId,
  amount = c.amount, currency = c.currency}))
return {'ok', 'refunded', c.amount}

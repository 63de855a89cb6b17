-- ProcessPayment: one charge per saga, written to the ledger once.
-- KEYS[1] charges (saga id -> JSON {chargeId, amount, currency, customerId, status}),
-- KEYS[2] ledger (a list of JSON entries, charges and refunds in order)
-- ARGV[1] saga id, ARGV[2] charge id, ARGV[3] amount, ARGV[4] currency, ARGV[5] customer id
local charges, ledger = KEYS[1], KEYS[2]
local saga = ARGV[1]

local existing = redis.call('HGET', charges, saga)
if existing then
  local c = cjson.decode(existing)
  if c.status == 'charged' then return {'ok', 'chargeId', c.chargeId, 'amount', c.amount} end
  return {'fail', '0', 'the payment for this order was already ' .. c.status}
end

local charge = {chargeId = ARGV[2], amount = ARGV[3], currency = ARGV[4], customerId = ARGV[5],
  status = 'charged'}
redis.call('HSET', charges, saga, cjson.encode(charge))
redis.call('RPUSH', ledger, cjson.encode({type = 'charge', sagaId = saga, chargeId = ARGV[2],
  amount = ARGV[3], currency = ARGV[4]}))
return {'ok', 'chargeId', ARGV[2], 'amount', ARGV[3]}

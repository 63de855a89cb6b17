-- ReserveItems: all items or none.
-- KEYS[1] stock (product -> available), KEYS[2] reserved (product -> held by reservations),
-- KEYS[3] reservations (saga id -> JSON {id, status, items})
-- ARGV[1] saga id, ARGV[2] reservation id, ARGV[3..] product, quantity pairs (one per product)
local stock, reserved, reservations = KEYS[1], KEYS[2], KEYS[3]
local saga, rid = ARGV[1], ARGV[2]

-- Keyed by saga: reserving again returns the same reservation (the crash window, a retry).
local existing = redis.call('HGET', reservations, saga)
if existing then
  local r = cjson.decode(existing)
  if r.status == 'reserved' then return {'ok', 'reservationId', r.id} end
  return {'fail', '0', 'reservation ' .. r.id .. ' for this order was already released'}
end

-- Every check before the first write.
for i = 3, #ARGV, 2 do
  local product, qty = ARGV[i], tonumber(ARGV[i + 1])
  local have = tonumber(redis.call('HGET', stock, product) or '0') or 0
  if have < qty then
    return {'fail', '0', 'out of stock: ' .. product .. ' (requested ' .. qty ..
      ', available ' .. have .. ')'}
  end
end

local items = {}
for i = 3, #ARGV, 2 do
  local product, qty = ARGV[i], tonumber(ARGV[i + 1])
  redis.call('HINCRBY', stock, product, -qty)
  redis.call('HINCRBY', reserved, product, qty)
  items[product] = qty
end
redis.call('HSET', reservations, saga, cjson.encode({id = rid, status = 'reserved', items = items}))
return {'ok', 'reservationId', rid}
